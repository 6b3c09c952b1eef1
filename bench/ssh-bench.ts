/**
 * `npm run bench:ssh`: git over SSH (issue 14), gitstratum's built-in SSH server against
 * OpenSSH's `sshd` running `git-shell` (Debian's openssh-server, started here on a spare port
 * with a config of its own; install it with `apt-get install openssh-server`), in one run, on
 * the clone-storm benchmark's `source` repository (bench/repo-generator.ts):
 *
 *   1. full clone (`git clone --bare`, protocol v2), cold: a new commit just before each run
 *      on both sides, so gitstratum's clone cache cannot answer it;
 *   2. storm: 20 concurrent `git clone --depth 1 --bare` of one new commit;
 *   3. push of every branch and tag into an empty repository (a fresh one each run).
 *
 * Per run: the client's wall time, the server's CPU (its process tree, git children included,
 * read when no git child runs: gitstratum's Node process, or sshd with its per-connection
 * processes) and the peak of the tree's summed RSS (sampled every 100 ms). Sides alternate
 * A B, B A. gitstratum runs with default settings (its cache on) plus --ssh-port, and
 * maintenance off (a push's follow-up repack would count as the push's CPU); the peer's
 * repositories get gitstratum's git settings (fsck on receive, fsync). Both serve the same
 * repository, repacked with bitmaps as a served one is.
 * Method: /work/shared/BENCHMARKING.md. Targets: full clone and push wall ≤ 1.1× of sshd;
 * storm server CPU per clone ≤ 0.2× of sshd's.
 *
 * Options (flags after `npm run bench:ssh --`, or environment):
 *   --runs N   BENCH_RUNS   runs of each scenario (default 3, at least 3)
 *   --keep     BENCH_KEEP=1 keep the run directory (.bench/run-ssh-*)
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startGitstratum } from './gitstratum-server.js';
import { findExecutable, freePort, run, runBench, startRun, track } from './processes.js';
import { currentRss, treeCpuSeconds, treeOf, waitForTree } from './proc-stats.js';
import { addCommit, ensureRepo, repackForServing, SPECS } from './repo-generator.js';
import { repositoryConfig } from '../src/repos/local-host.js';
import { median, spread, table, type Cell, type Sample } from './report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const STORM = 20;

interface Side {
  name: string;
  /** The server's root process (gitstratum, or the sshd listener). */
  pid: number;
  /** The clone URL of a repository of this side. */
  url(repo: string): string;
  /** A new empty repository; its directory. */
  create(repo: string): Promise<string>;
  /** The directory of an existing repository. */
  dir(repo: string): string;
}

/** The peak of the summed RSS of a process tree, sampled every 100 ms until stopped. */
function sampleTreeRss(root: number): { stop(): number } {
  let peak = 0;
  const take = () => {
    let sum = 0;
    for (const p of treeOf([root])) {
      try {
        sum += currentRss(p.pid);
      } catch {
        // gone meanwhile
      }
    }
    peak = Math.max(peak, sum);
  };
  take();
  const timer = setInterval(take, 100);
  return {
    stop() {
      clearInterval(timer);
      take();
      return peak;
    },
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const runs = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : (process.env['BENCH_RUNS'] ?? 3));
  if (!Number.isInteger(runs) || runs < 3) throw new Error('--runs must be an integer of at least 3');
  const keep = argv.includes('--keep') || process.env['BENCH_KEEP'] === '1';
  const sshd = findExecutable('sshd');
  if (!sshd) throw new Error('sshd not found: install Debian’s openssh-server (apt-get install openssh-server)');
  const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
  const { workDir, env, finish } = await startRun(CACHE, 'run-ssh', { keep, timeoutS: 3600 });
  try {
    const source = await ensureRepo(SPECS.source, CACHE, env, say);
    const keyFile = path.join(workDir, 'client_key');
    execFileSync('ssh-keygen', ['-q', '-N', '', '-t', 'ed25519', '-f', keyFile]);
    const sshCommand = `ssh -i ${keyFile} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR`;
    const gitEnv = { ...env, GIT_SSH_COMMAND: sshCommand };
    const git = (args: string[]) => run('git', args, { env: gitEnv, timeoutMs: 900_000 });

    // gitstratum, default settings plus SSH.
    const gsPort = await freePort();
    // Maintenance off: a push's follow-up repack would count as the push's CPU (sshd has none).
    const gs = await startGitstratum(ROOT, path.join(workDir, 'gs'), env, ['--ssh-port', String(gsPort), '--maintenance-enabled', 'false']);
    await gs.cli('ssh-key', 'add', 'alice', `${keyFile}.pub`);
    const gsDirs = new Map<string, string>();
    const gsSide: Side = {
      name: 'gitstratum ssh',
      pid: gs.pid,
      url: (repo) => `ssh://git@127.0.0.1:${gsPort}/alice/bench/${repo}.git`,
      create: async (repo) => {
        const dir = await gs.createRepo(repo);
        gsDirs.set(repo, dir);
        return dir;
      },
      dir: (repo) => gsDirs.get(repo)!,
    };

    // sshd with git-shell on a spare port, its own host key and authorized_keys.
    const sshdDir = path.join(workDir, 'sshd');
    const repos = path.join(workDir, 'sshd-repos');
    await mkdir(sshdDir, { recursive: true });
    await mkdir(repos, { recursive: true });
    await mkdir('/run/sshd', { recursive: true }).catch(() => undefined);
    execFileSync('ssh-keygen', ['-q', '-N', '', '-t', 'ed25519', '-f', path.join(sshdDir, 'host_key')]);
    await writeFile(path.join(sshdDir, 'authorized_keys'), await readFile(`${keyFile}.pub`, 'utf8'), { mode: 0o600 });
    const sshdPort = await freePort();
    const user = os.userInfo().username;
    await writeFile(
      path.join(sshdDir, 'sshd_config'),
      [
        `Port ${sshdPort}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${path.join(sshdDir, 'host_key')}`,
        `AuthorizedKeysFile ${path.join(sshdDir, 'authorized_keys')}`,
        `PidFile ${path.join(sshdDir, 'sshd.pid')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        `PermitRootLogin ${user === 'root' ? 'prohibit-password' : 'no'}`,
        // git sends GIT_PROTOCOL=version=2 this way; without it sshd would serve protocol v0.
        'AcceptEnv GIT_PROTOCOL',
        // The storm opens 20 connections at once; the default (10:30:100) drops some at random.
        'MaxStartups 100',
        `ForceCommand ${findExecutable('git-shell') ?? '/usr/bin/git-shell'} -c "$SSH_ORIGINAL_COMMAND"`,
        '',
      ].join('\n'),
    );
    const sshdChild = spawn(sshd, ['-D', '-e', '-f', path.join(sshdDir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let sshdLog = '';
    sshdChild.stderr.setEncoding('utf8').on('data', (d: string) => (sshdLog += d));
    track(sshdChild.pid!, 'sshd');
    for (let i = 0; ; i++) {
      const probe = await run('ssh', [...sshCommand.split(' ').slice(1), '-p', String(sshdPort), `${user}@127.0.0.1`, `git-upload-pack '${source.path}'`], { check: false, input: '0000' });
      if (probe.code === 0) break;
      if (i > 50) throw new Error(`sshd did not answer: ${sshdLog}${probe.stderr}`);
      await sleep(200);
    }
    const sshdSide: Side = {
      name: 'sshd + git-shell',
      pid: sshdChild.pid!,
      url: (repo) => `ssh://${user}@127.0.0.1:${sshdPort}${path.join(repos, `${repo}.git`)}`,
      create: async (repo) => {
        const dir = path.join(repos, `${repo}.git`);
        await run('git', ['init', '--bare', '-q', dir], { env });
        // The same git settings as gitstratum's repositories (fsck on receive, fsync, …): the
        // ratio is then the servers', not the settings'. Hooks are gitstratum's own.
        for (const [key, value] of repositoryConfig()) if (key !== 'core.hooksPath') await run('git', ['--git-dir', dir, 'config', key, value], { env });
        return dir;
      },
      dir: (repo) => path.join(repos, `${repo}.git`),
    };
    const sides = [gsSide, sshdSide];
    const ordered = (i: number) => (i % 2 ? sides : [...sides].reverse());
    say(`gitstratum (pid ${gs.pid}) SSH on ${gsPort}; sshd (pid ${sshdChild.pid}) on ${sshdPort}`);

    // The served repository: source pushed over SSH, then repacked with bitmaps (as a served one is).
    for (const side of sides) {
      await side.create('big');
      await git(['--git-dir', source.path, 'push', '--quiet', side.url('big'), '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*']);
      await repackForServing(side.dir('big'), env);
    }

    const cells: Cell[] = [];
    const record = (scenario: string, side: Side, s: Sample) => {
      let cell = cells.find((c) => c.scenario === scenario && c.side === side.name);
      if (!cell) cells.push((cell = { scenario, side: side.name, samples: [] }));
      cell.samples.push(s);
      say(`${scenario}, ${side.name}: ${s.wall.toFixed(2)} s, CPU ${s.cpu.toFixed(2)} s, peak RSS ${(s.rss / 2 ** 20).toFixed(0)} MiB`);
    };
    const measure = async (side: Side, op: () => Promise<void>, perClone = 1): Promise<Sample> => {
      await waitForTree([side.pid], new Set([side.pid]));
      const cpu0 = treeCpuSeconds([side.pid]);
      const rss = sampleTreeRss(side.pid);
      const started = performance.now();
      let peak: number;
      let wall: number;
      try {
        await op();
        wall = (performance.now() - started) / 1000;
      } finally {
        // Also when the operation failed: a sampler left running keeps the process alive.
        peak = rss.stop();
      }
      await waitForTree([side.pid], new Set([side.pid]));
      const cpu = (treeCpuSeconds([side.pid]) - cpu0) / perClone;
      return { wall, cpu, own: 0, rss: peak };
    };
    const clones = path.join(workDir, 'clones');
    let commit = 0;
    for (let i = 1; i <= runs; i++) {
      // A new commit on both sides first: neither has answered this clone before.
      for (const side of sides) await addCommit(side.dir('big'), env, ++commit);
      for (const side of ordered(i)) {
        const dest = path.join(clones, `full-${i}`);
        record('full clone (v2)', side, await measure(side, async () => void (await git(['clone', '--bare', '--quiet', side.url('big'), dest]))));
        await rm(dest, { recursive: true, force: true });
      }
    }
    for (let i = 1; i <= runs; i++) {
      for (const side of sides) await addCommit(side.dir('big'), env, ++commit);
      for (const side of ordered(i)) {
        const s = await measure(
          side,
          async () => {
            await Promise.all(Array.from({ length: STORM }, (_, n) => git(['clone', '--bare', '--quiet', '--depth', '1', side.url('big'), path.join(clones, `storm-${i}-${n}`)])));
          },
          STORM,
        );
        record(`storm: ${STORM} depth-1 clones (CPU per clone)`, side, s);
        await rm(clones, { recursive: true, force: true });
      }
    }
    for (let i = 1; i <= runs; i++) {
      for (const side of ordered(i)) {
        await side.create(`push-${i}`);
        record('push (to empty)', side, await measure(side, async () => void (await git(['--git-dir', source.path, 'push', '--quiet', side.url(`push-${i}`), '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*']))));
      }
    }

    const lines = [
      `ssh: gitstratum's SSH server against sshd + git-shell; ${source.commits} commits, ${source.objects} objects, ${(source.packBytes / 2 ** 20).toFixed(1)} MiB of pack (\`source\`); median [min–max] of ${runs} runs, sides alternated`,
      `  load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; ${os.cpus().length} cores`,
      '',
      table([
        ['scenario', 'server', 'wall s', 'server CPU s', 'tree peak RSS MiB'],
        ...cells.map((c, i) => [i % 2 ? '' : c.scenario, c.side, spread(c.samples.map((x) => x.wall), 2), spread(c.samples.map((x) => x.cpu), 2), spread(c.samples.map((x) => x.rss), 1, 2 ** 20)]),
      ]),
      '',
      'ratios, gitstratum ÷ sshd (medians)',
      table([
        ['scenario', 'wall', 'server CPU', 'tree peak RSS'],
        ...[...new Set(cells.map((c) => c.scenario))].map((scenario) => {
          const of = (side: Side, pick: (x: Sample) => number) => median(cells.find((c) => c.scenario === scenario && c.side === side.name)!.samples.map(pick));
          const ratio = (pick: (x: Sample) => number) => `${(of(gsSide, pick) / of(sshdSide, pick)).toFixed(2)}×`;
          return [scenario, ratio((x) => x.wall), ratio((x) => x.cpu), ratio((x) => x.rss)];
        }),
      ]),
      '',
      ...[
        ['full clone (v2)', 'wall', 1.1],
        ['push (to empty)', 'wall', 1.1],
        [`storm: ${STORM} depth-1 clones (CPU per clone)`, 'cpu', 0.2],
      ].map(([scenario, what, target]) => {
        const of = (side: Side) => median(cells.find((c) => c.scenario === scenario && c.side === side.name)!.samples.map((x) => (what === 'wall' ? x.wall : x.cpu)));
        const ratio = of(gsSide) / of(sshdSide);
        return `target: ${scenario}, ${what === 'wall' ? 'wall' : 'server CPU'} ≤ ${target}× of sshd: ${ratio.toFixed(3)}×, ${ratio <= (target as number) ? 'met' : 'MISSED'}`;
      }),
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await finish();
  }
}

runBench(main);
