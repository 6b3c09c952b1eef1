/**
 * `npm run bench:git`: gitstratum against `git http-backend` behind nginx + fcgiwrap, serving
 * the same generated repository (about 100 MB of pack, repacked with bitmaps on both sides).
 * Method as in /work/shared/BENCHMARKING.md: the peers alternate (A B A B …), every cell is a
 * median with its min–max over several runs, server CPU is the CPU of the whole server process
 * tree, and the ratios come last.
 *
 * Scenarios: push of the whole repository to an empty repository (a fresh one each run; the
 * first run's target, `big`, becomes the served copy), then full clones with protocol v2 and
 * v0. With --large (or BENCH_LARGE=1), a streaming-memory check follows: a 1 GB repository
 * pushed to and cloned from gitstratum while the Node server's RSS is sampled every 100 ms.
 *
 * Options (flags after `npm run bench:git --`, or environment):
 *   --runs N     BENCH_RUNS     runs per cell (default 5, at least 3)
 *   --large      BENCH_LARGE=1  add the 1 GB streaming check
 *   --keep       BENCH_KEEP=1   keep the run directory (.bench/run-*) for inspection
 *   --workers N  BENCH_FCGI_WORKERS  fcgiwrap workers (default 4)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGitstratum } from './gitstratum-server.js';
import { startHttpBackend } from './http-backend-peer.js';
import { run, runBench, startRun } from './processes.js';
import { currentRss, sampleRss } from './proc-stats.js';
import { ensureRepo, repackForServing, SPECS, type RepoInfo } from './repo-generator.js';
import { mib, ratiosTable, resultsTable, type Cell, type Sample } from './report.js';
import { gitstratumSide, measure, peerPrerequisites, peerSide, type Side } from './sides.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const TARGET_RATIO = 1.1;
const CLIENT_TIMEOUT_MS = 300_000;
/** Clones per server in the 1 GB check (each writes 1 GB on the client). */
const LARGE_RUNS = 3;

interface Options {
  runs: number;
  large: boolean;
  keep: boolean;
  workers: number;
  timeoutS: number;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const opts: Options = {
    runs: Number(env['BENCH_RUNS'] ?? 5),
    large: env['BENCH_LARGE'] === '1',
    keep: env['BENCH_KEEP'] === '1',
    workers: Number(env['BENCH_FCGI_WORKERS'] ?? 4),
    timeoutS: Number(env['BENCH_TIMEOUT_S'] ?? 1800),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--large') opts.large = true;
    else if (arg === '--keep') opts.keep = true;
    else if (arg === '--runs') opts.runs = Number(argv[++i]);
    else if (arg === '--workers') opts.workers = Number(argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --runs N, --large, --keep, --workers N)`);
  }
  if (!Number.isInteger(opts.runs) || opts.runs < 3 || opts.runs > 50) throw new Error('--runs must be an integer from 3 to 50');
  if (!Number.isInteger(opts.workers) || opts.workers < 1) throw new Error('--workers must be a positive integer');
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const tools = await peerPrerequisites(say);
  // Clients and both servers' git see the same, isolated configuration.
  const { workDir, home, env, finish } = await startRun(CACHE, 'run', { keep: opts.keep, timeoutS: opts.timeoutS });

  try {
    const medium = await ensureRepo(SPECS.medium, CACHE, env, say);
    const large = opts.large ? await ensureRepo(SPECS.large, CACHE, env, say) : undefined;

    say('starting gitstratum and nginx + fcgiwrap + git http-backend');
    const gs = await startGitstratum(ROOT, path.join(workDir, 'gitstratum'), env);
    const gsSide = gitstratumSide(gs);
    const gsBig = await gsSide.createRepo('big');
    // The peer's repositories get gitstratum's per-repository git settings (receive.fsckObjects,
    // core.fsync, …) so both servers do the same git work; only the hooks path differs.
    const gsConfig = (await run('git', ['config', '--file', path.join(gsBig, 'config'), '--list'], { env })).stdout
      .split('\n')
      .filter((l) => /^(receive|uploadpack|transfer|pack|core\.(fsync|logallrefupdates|compression))/i.test(l))
      .map((l) => l.split('=', 2) as [string, string]);
    const peer = await startHttpBackend(ROOT, path.join(workDir, 'peer'), { ...tools, workers: opts.workers, repoConfig: gsConfig, gitHome: home }, env);

    const gsIdleRss = currentRss(gs.pid);
    const loadBefore = os.loadavg()[0]!;
    const sides: Side[] = [gsSide, peerSide(peer)];
    if (!sides.every((s) => s.resetPeak())) say('warning: cannot reset VmHWM (/proc/<pid>/clear_refs); peaks are per process lifetime');
    if (!peer.addsWrapperCpu) say('note: fcgiwrap workers reap their CGIs themselves; the wrapper figures are not added (already in cutime)');

    const cells: Cell[] = [];
    const cell = (scenario: string, side: string) => {
      let c = cells.find((x) => x.scenario === scenario && x.side === side);
      if (!c) cells.push((c = { scenario, side, samples: [] }));
      return c;
    };
    const git = (args: string[], cwd?: string) => run('git', args, { env, timeoutMs: CLIENT_TIMEOUT_MS, ...(cwd && { cwd }) });
    const refsOf = async (dir: string) => (await git(['--git-dir', dir, 'for-each-ref', '--format=%(objectname) %(refname)'])).stdout;
    const sourceRefs = await refsOf(medium.path);
    const pushArgs = (source: RepoInfo, url: string) => ['--git-dir', source.path, 'push', '--quiet', url, '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*'];

    // Push: run 1 targets `big`, the copy served afterwards; later runs fresh repositories.
    for (let i = 1; i <= opts.runs; i++) {
      for (const side of sides) {
        const name = i === 1 ? 'big' : `push-${i}`;
        const dir = await side.createRepo(name);
        const sample = await measure(side, async () => (await git(pushArgs(medium, side.repoUrl(name)))).seconds);
        if ((await refsOf(dir)) !== sourceRefs) throw new Error(`${side.name}: pushed refs differ from the source's`);
        cell('push (to empty)', side.name).samples.push(sample);
        say(`push ${i}/${opts.runs} ${side.name}: ${sample.wall.toFixed(2)} s, CPU ${sample.cpu.toFixed(2)} s`);
      }
    }

    say('repacking the served copies (repack -adb --write-bitmap-index, commit-graph) and warming the page cache');
    for (const side of sides) {
      await repackForServing(side.repoPath('big'), env);
      await run('sh', ['-c', 'cat "$1"/objects/pack/* > /dev/null', 'sh', side.repoPath('big')]);
    }
    const clones = path.join(workDir, 'clones');
    await mkdir(clones, { recursive: true });
    const cloneOnce = async (side: Side, protocol: number, tag: string, repo = 'big', expect = medium.head) => {
      const dest = path.join(clones, `${side.name}-${tag}.git`);
      const r = await git(['-c', `protocol.version=${protocol}`, 'clone', '--bare', '--quiet', side.repoUrl(repo), dest]);
      const head = (await git(['--git-dir', dest, 'rev-parse', 'HEAD'])).stdout.trim();
      await rm(dest, { recursive: true, force: true });
      if (head !== expect) throw new Error(`${side.name}: cloned HEAD ${head}, expected ${expect}`);
      return r.seconds;
    };
    for (const side of sides) await cloneOnce(side, 2, 'warm-up');

    for (const protocol of [2, 0]) {
      for (let i = 1; i <= opts.runs; i++) {
        for (const side of sides) {
          const sample = await measure(side, () => cloneOnce(side, protocol, `v${protocol}-${i}`));
          cell(`full clone v${protocol}`, side.name).samples.push(sample);
          say(`clone v${protocol} ${i}/${opts.runs} ${side.name}: ${sample.wall.toFixed(2)} s, CPU ${sample.cpu.toFixed(2)} s`);
        }
      }
    }

    const streaming = large ? await streamingCheck(sides, large, env, git, pushArgs, cloneOnce) : undefined;

    const nginxVersion = spawnSync(tools.nginx, ['-v'], { encoding: 'utf8' }).stderr.trim().replace('nginx version: ', '');
    const gitVersion = execFileSync('git', ['--version'], { encoding: 'utf8' }).trim().replace('git version ', 'git ');
    const versions = `${gitVersion}, Node ${process.version}, ${nginxVersion}, ${os.cpus().length} CPUs`;
    const out: string[] = [];
    out.push('');
    out.push(`gitstratum vs git http-backend behind nginx + fcgiwrap (${opts.workers} workers) — ${versions}`);
    out.push(
      `repository: ${mib(medium.packBytes)} of pack, ${medium.objects} objects, ${medium.commits} commits (seeded, repacked with bitmaps on both servers), HEAD ${medium.head.slice(0, 12)}`,
    );
    out.push(`${opts.runs} runs per cell, peers interleaved; median [min–max]; load average ${loadBefore.toFixed(1)} at start, ${os.loadavg()[0]!.toFixed(1)} at end`);
    out.push('');
    out.push(resultsTable(cells));
    out.push('');
    out.push('wall: the client command. full clone = `git clone --bare` into an empty directory (client cold);');
    out.push('  push = all branches and tags to an empty repository (fresh each run); server page cache warm.');
    out.push('server CPU: utime+stime+cutime+cstime over the server process tree, read when no git child runs');
    out.push('  (gitstratum: the Node process and its git children; http-backend: nginx and fcgiwrap trees');
    out.push(`  + ${peer.addsWrapperCpu ? 'rusage of git http-backend and its children, reported by the CGI wrapper' : 'their reaped CGIs'}).`);
    out.push('non-git CPU: of that, the server processes themselves (utime+stime): the Node process; nginx + fcgiwrap');
    out.push('  (the http-backend CGI process is counted with its git children).');
    out.push('peak RSS: gitstratum = VmHWM of the Node server process; http-backend = largest VmHWM among the nginx');
    out.push('  and fcgiwrap processes; git children excluded on both sides (the same git programs); reset per run.');
    out.push(`  gitstratum's Node process had ${mib(gsIdleRss)} resident after start, before any request.`);
    if (streaming) {
      out.push('');
      out.push(...streaming.lines);
    }
    out.push('');
    out.push('ratios, gitstratum ÷ http-backend (medians)');
    out.push(ratiosTable([...cells, ...(streaming?.cells ?? [])], 'gitstratum', 'http-backend', TARGET_RATIO));
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await finish();
  }
}

/**
 * The 1 GB check: push the large repository to gitstratum (its import), repack it there, give
 * the peer a hard-linked copy of the repacked repository, then clone it through both, A B A B,
 * sampling the Node server's RSS every 100 ms throughout.
 */
async function streamingCheck(
  sides: Side[],
  large: RepoInfo,
  env: NodeJS.ProcessEnv,
  git: (args: string[]) => Promise<{ seconds: number }>,
  pushArgs: (source: RepoInfo, url: string) => string[],
  cloneOnce: (side: Side, protocol: number, tag: string, repo: string, expect: string) => Promise<number>,
): Promise<{ lines: string[]; cells: Cell[] }> {
  const [gs, peer] = sides as [Side, Side];
  const sampled = async (side: Side, action: () => Promise<number>) => {
    const sampler = sampleRss(side.samplePid!, 100);
    try {
      const sample = await measure(side, action);
      return { sample, peak: sampler.stop(), samples: sampler.samples() };
    } finally {
      sampler.stop();
    }
  };

  say('1 GB push to gitstratum (its import)');
  const gsDir = await gs.createRepo('large');
  const push = await sampled(gs, async () => (await git(pushArgs(large, gs.repoUrl('large')))).seconds);

  say('1 GB: repacking the served copy, linking it into the peer, warming the page cache');
  // Big blobs stay whole: no delta search over 50 MiB random files.
  await run('git', ['-c', 'core.bigFileThreshold=16m', '--git-dir', gsDir, 'repack', '-adb', '--write-bitmap-index', '-q'], { env, timeoutMs: 900_000 });
  await run('git', ['--git-dir', gsDir, 'commit-graph', 'write', '--reachable', '--no-progress'], { env });
  const peerDir = await peer.createRepo('large');
  const refs = (await run('git', ['--git-dir', gsDir, 'for-each-ref', '--format=create %(refname) %(objectname)'], { env })).stdout;
  await run('sh', ['-c', 'ln "$1"/objects/pack/* "$2"/objects/pack/ && ln "$1"/objects/info/commit-graph "$2"/objects/info/', 'sh', gsDir, peerDir]);
  await run('git', ['--git-dir', peerDir, 'update-ref', '--stdin'], { env, input: refs });
  await run('sh', ['-c', 'cat "$1"/objects/pack/* > /dev/null', 'sh', gsDir]);

  const cells: Cell[] = [
    { scenario: '1 GB clone v2', side: gs.name, samples: [] },
    { scenario: '1 GB clone v2', side: peer.name, samples: [] },
  ];
  let peak = 0;
  let samples = 0;
  for (let i = 1; i <= LARGE_RUNS; i++) {
    for (const [k, side] of [gs, peer].entries()) {
      const action = () => cloneOnce(side, 2, `large-${i}`, 'large', large.head);
      let sample: Sample;
      if (side.samplePid) {
        const r = await sampled(side, action);
        sample = r.sample;
        peak = Math.max(peak, r.peak, sample.rss);
        samples += r.samples;
      } else sample = await measure(side, action);
      cells[k]!.samples.push(sample);
      say(`1 GB clone ${i}/${LARGE_RUNS} ${side.name}: ${sample.wall.toFixed(2)} s, CPU ${sample.cpu.toFixed(2)} s`);
    }
  }
  const target = 150 * 1024 * 1024;
  const lines = [
    `streaming check: 1 GB repository (${mib(large.packBytes)} of pack, 20 × 50 MiB random blobs)`,
    `  push to gitstratum (import, one run): wall ${push.sample.wall.toFixed(2)} s, server CPU ${push.sample.cpu.toFixed(2)} s, ` +
      `Node RSS peak ${mib(Math.max(push.peak, push.sample.rss))} (sampled every 100 ms, ${push.samples} samples, and VmHWM)`,
    `  gitstratum Node RSS during the 1 GB clones: peak ${mib(peak)} (sampled every 100 ms, ${samples} samples, and VmHWM)` +
      ` — target < 150 MiB: ${peak < target ? 'met' : 'missed'}`,
    '',
    resultsTable(cells),
  ];
  return { lines, cells };
}

runBench(main);
