/**
 * `npm run bench:maintenance`: what repository maintenance after pushes buys and what it costs;
 * docs/design/maintenance.md quotes the figures and the choice they support.
 *
 * Part 1, strategies, with git alone on copies of each repository (no server). A push into an
 * empty repository leaves one pack without bitmap or commit-graph (the import); every later small
 * push leaves loose objects. For each strategy: the first run after the import and one run after
 * each 1-commit push (wall, CPU, bytes written), and what a full clone then costs the server (the
 * CPU of the `pack-objects` that upload-pack runs for it).
 *   - geometric (gitstratum's): `repack -d --geometric=2 --write-midx --write-bitmap-index`, then
 *     `commit-graph write --reachable --split`;
 *   - full: `repack -adb --write-bitmap-index`, then `commit-graph write --reachable`;
 *   - none.
 *
 * Part 2, end to end: gitstratum with maintenance (2 s delay), gitstratum without, and git
 * http-backend behind nginx + fcgiwrap (no maintenance: a plain git server), each serving the
 * same repository. The first full clone after the import, then the first full clone after each
 * push of one commit onto a fully repacked, bitmapped copy. gitstratum's response cache is cold
 * for every measured clone (each follows a ref change). Method as in BENCHMARKING.md: medians
 * with min–max, server CPU of the whole process tree, the sides interleaved.
 *
 * Repositories: the generated `medium` (about 100 MB, few objects) and `history` (about 30 MB,
 * 126,000 objects), plus any given with --repo PATH.
 *
 * Options (flags after `npm run bench:maintenance --`, or environment):
 *   --runs N     BENCH_RUNS     runs per cell (default 5, at least 3)
 *   --repo PATH  BENCH_REPO     also measure this repository (a bare or non-bare git directory)
 *   --keep       BENCH_KEEP=1   keep the run directory (.bench/run-maint-*)
 */
import { readdirSync, statSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGitstratum } from './gitstratum-server.js';
import { startHttpBackend } from './http-backend-peer.js';
import { run, runBench, startRun } from './processes.js';
import { reapedChildrenCpuSeconds } from './proc-stats.js';
import { addCommit, describeRepo, ensureRepo, repackForServing, SPECS, type RepoInfo } from './repo-generator.js';
import { median, ratiosTable, resultsTable, spread, table, type Cell } from './report.js';
import { gitstratumSide, measure, peerPrerequisites, peerSide, scrapeMetrics, sumSeries, waitMaintenanceIdle, type Side } from './sides.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const CLIENT_TIMEOUT_MS = 600_000;
const MAINTENANCE_DELAY_S = 2;

interface Options {
  runs: number;
  repo?: string;
  keep: boolean;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const opts: Options = { runs: Number(env['BENCH_RUNS'] ?? 5), keep: env['BENCH_KEEP'] === '1', ...(env['BENCH_REPO'] && { repo: env['BENCH_REPO'] }) };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') opts.keep = true;
    else if (arg === '--runs') opts.runs = Number(argv[++i]);
    else if (arg === '--repo') opts.repo = path.resolve(argv[++i] ?? '');
    else throw new Error(`unknown option: ${arg} (known: --runs N, --repo PATH, --keep)`);
  }
  if (!Number.isInteger(opts.runs) || opts.runs < 3 || opts.runs > 50) throw new Error('--runs must be an integer from 3 to 50');
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

interface Strategy {
  name: string;
  commands: string[][];
}

const STRATEGIES: Strategy[] = [
  {
    name: 'geometric',
    commands: [
      ['repack', '-d', '-q', '--geometric=2', '--write-midx', '--write-bitmap-index'],
      ['commit-graph', 'write', '--reachable', '--split', '--no-progress'],
    ],
  },
  {
    name: 'full',
    commands: [
      ['repack', '-a', '-d', '-q', '--write-bitmap-index'],
      ['commit-graph', 'write', '--reachable', '--no-progress'],
    ],
  },
  { name: 'none', commands: [] },
];

/** Bytes of files under objects/ that were not there before (packs, indexes, bitmaps, graphs are never rewritten in place). */
function objectFiles(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const file = path.join(d, entry.name);
      if (entry.isDirectory()) walk(file);
      else {
        const st = statSync(file);
        out.set(`${file}:${st.ino}`, st.size);
      }
    }
  };
  for (const sub of ['pack', 'info']) walk(path.join(dir, 'objects', sub));
  return out;
}

interface Cost {
  wall: number;
  cpu: number;
  written: number;
}

/** Runs a strategy's commands on `dir`: wall, CPU of the git processes, bytes written. */
async function maintain(strategy: Strategy, dir: string, env: NodeJS.ProcessEnv): Promise<Cost> {
  const before = objectFiles(dir);
  const cpu0 = reapedChildrenCpuSeconds(process.pid);
  let wall = 0;
  for (const args of strategy.commands) wall += (await run('git', ['--git-dir', dir, ...args], { env, timeoutMs: CLIENT_TIMEOUT_MS })).seconds;
  let written = 0;
  for (const [key, size] of objectFiles(dir)) if (!before.has(key)) written += size;
  return { wall, cpu: reapedChildrenCpuSeconds(process.pid) - cpu0, written };
}

/** The server's work for a full clone: pack-objects as upload-pack runs it, for every ref tip; its CPU seconds. */
async function fullClonePackCpu(dir: string, env: NodeJS.ProcessEnv): Promise<number> {
  const tips = (await run('git', ['--git-dir', dir, 'for-each-ref', '--format=%(objectname)'], { env })).stdout;
  const cpu0 = reapedChildrenCpuSeconds(process.pid);
  await run('sh', ['-c', 'git --git-dir "$1" pack-objects --revs --thin --stdout --delta-base-offset --include-tag -q > /dev/null', 'sh', dir], { env, input: tips, timeoutMs: CLIENT_TIMEOUT_MS });
  return reapedChildrenCpuSeconds(process.pid) - cpu0;
}

interface StrategyResult {
  strategy: string;
  afterImport: Cost;
  perPush: Cost[];
  cloneCpu: number[];
}

/** Part 1 for one repository. */
async function compareStrategies(repo: RepoInfo, label: string, workDir: string, env: NodeJS.ProcessEnv, runs: number): Promise<StrategyResult[]> {
  say(`${label}: importing into an empty repository (a mirror push, as a first push leaves it)`);
  const imported = path.join(workDir, `import-${label}.git`);
  await run('git', ['init', '--bare', '-q', imported], { env });
  await run('git', ['--git-dir', repo.path, 'push', '-q', '--mirror', imported], { env, timeoutMs: CLIENT_TIMEOUT_MS });
  const results: StrategyResult[] = [];
  for (const strategy of STRATEGIES) {
    const dir = path.join(workDir, `${strategy.name}-${label}.git`);
    // Hard links: packs are never modified in place, and repack replaces files rather than writing into them.
    await run('cp', ['-al', imported, dir]);
    const afterImport = await maintain(strategy, dir, env);
    const cloneCpu = [await fullClonePackCpu(dir, env)];
    const perPush: Cost[] = [];
    for (let i = 1; i <= runs; i++) {
      await addCommit(dir, env, i);
      perPush.push(await maintain(strategy, dir, env));
    }
    cloneCpu.push(await fullClonePackCpu(dir, env));
    results.push({ strategy: strategy.name, afterImport, perPush, cloneCpu });
    say(`${label} ${strategy.name}: after import ${afterImport.wall.toFixed(2)} s, per push ${median(perPush.map((c) => c.wall)).toFixed(2)} s; clone pack CPU ${cloneCpu.map((c) => c.toFixed(2)).join(' / ')} s`);
    await rm(dir, { recursive: true, force: true });
  }
  await rm(imported, { recursive: true, force: true });
  return results;
}

function strategyTable(label: string, results: StrategyResult[]): string {
  const MiB = 1024 * 1024;
  const rows = [['repository', 'strategy', 'first run after import: wall s / CPU s / MiB written', 'each run after a 1-commit push: wall s / CPU s / MiB written', 'full clone pack-objects CPU s: after import / after pushes']];
  for (const r of results) {
    rows.push([
      r === results[0] ? label : '',
      r.strategy,
      r.strategy === 'none' ? '—' : `${r.afterImport.wall.toFixed(2)} / ${r.afterImport.cpu.toFixed(2)} / ${(r.afterImport.written / MiB).toFixed(1)}`,
      r.strategy === 'none'
        ? '—'
        : `${spread(r.perPush.map((c) => c.wall), 2)} / ${spread(r.perPush.map((c) => c.cpu), 2)} / ${spread(r.perPush.map((c) => c.written), 1, MiB)}`,
      r.cloneCpu.map((c) => c.toFixed(2)).join(' / '),
    ]);
  }
  return table(rows);
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const tools = await peerPrerequisites(say);
  const { workDir, home, env, finish } = await startRun(CACHE, 'run-maint', { keep: opts.keep });

  try {
    const repos: [string, RepoInfo][] = [
      ['medium', await ensureRepo(SPECS.medium, CACHE, env, say)],
      ['history', await ensureRepo(SPECS.history, CACHE, env, say)],
    ];
    if (opts.repo) repos.push([path.basename(opts.repo).replace(/\.git$/, ''), { path: opts.repo, ...(await describeRepo(opts.repo, env)) }]);

    const out: string[] = [];
    out.push('part 1: maintenance strategies, git alone on copies (CPU = the git processes; clone = pack-objects for all refs)');
    const strategyLines: string[] = [];
    for (const [label, repo] of repos) strategyLines.push(strategyTable(label, await compareStrategies(repo, label, workDir, env, opts.runs)));
    out.push(strategyLines.join('\n\n'));

    say('starting gitstratum with maintenance, gitstratum without, and nginx + fcgiwrap + git http-backend');
    const gsMaint = await startGitstratum(ROOT, path.join(workDir, 'gs-maint'), { ...env, GITSTRATUM_MAINTENANCE_DELAY_SECONDS: String(MAINTENANCE_DELAY_S) });
    const gsPlain = await startGitstratum(ROOT, path.join(workDir, 'gs-plain'), { ...env, GITSTRATUM_MAINTENANCE_ENABLED: 'false' });
    const maintained = gitstratumSide(gsMaint, 'gitstratum');
    const plain = gitstratumSide(gsPlain, 'gitstratum (maintenance off)');
    const first = await maintained.createRepo('probe');
    const gsConfig = (await run('git', ['config', '--file', path.join(first, 'config'), '--list'], { env })).stdout
      .split('\n')
      .filter((l) => /^(receive|uploadpack|transfer|pack|core\.(fsync|logallrefupdates|compression))/i.test(l))
      .map((l) => l.split('=', 2) as [string, string]);
    const peer = peerSide(await startHttpBackend(ROOT, path.join(workDir, 'peer'), { ...tools, workers: 4, repoConfig: gsConfig, gitHome: home }, env));
    const sides: Side[] = [maintained, plain, peer];
    const git = (args: string[]) => run('git', args, { env, timeoutMs: CLIENT_TIMEOUT_MS });
    const clones = path.join(workDir, 'clones');
    await mkdir(clones, { recursive: true });
    const cloneOnce = async (side: Side, name: string, expect: string) => {
      const dest = path.join(clones, `${side.name.replace(/\W+/g, '-')}.git`);
      const r = await git(['-c', 'protocol.version=2', 'clone', '--bare', '--quiet', side.repoUrl(name), dest]);
      const head = (await git(['--git-dir', dest, 'rev-parse', 'HEAD'])).stdout.trim();
      await rm(dest, { recursive: true, force: true });
      if (head !== expect) throw new Error(`${side.name}: cloned HEAD ${head}, expected ${expect}`);
      return r.seconds;
    };

    const cells: Cell[] = [];
    const cell = (scenario: string, side: string) => {
      let c = cells.find((x) => x.scenario === scenario && x.side === side);
      if (!c) cells.push((c = { scenario, side, samples: [] }));
      return c;
    };
    const maintenanceCosts: string[] = [];
    for (const [label, repo] of repos) {
      const source = path.join(workDir, `source-${label}.git`);
      await git(['clone', '--bare', '--quiet', '--local', repo.path, source]);
      say(`${label}: importing into all three servers`);
      for (const side of sides) {
        await side.createRepo(label);
        await git(['--git-dir', source, 'push', '--quiet', side.repoUrl(label), '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*']);
      }
      await waitMaintenanceIdle(maintained.metricsUrl!);
      let head = repo.head;
      // Rotating the order spreads drift and page-cache effects over all three.
      const rotated = (i: number) => sides.map((_, k) => sides[(k + i) % sides.length]!);
      for (let i = 1; i <= opts.runs; i++) {
        for (const side of rotated(i)) {
          // A new tag at HEAD, written on disk: gitstratum's cache is cold, the objects unchanged.
          await git(['--git-dir', side.repoPath(label), 'update-ref', `refs/tags/bench-cold-${i}`, head]);
          const sample = await measure(side, () => cloneOnce(side, label, head));
          cell(`${label}: first clone after import`, side.name).samples.push(sample);
          say(`${label} after import ${i}/${opts.runs} ${side.name}: ${sample.wall.toFixed(2)} s, CPU ${sample.cpu.toFixed(2)} s`);
        }
      }

      say(`${label}: full repack with bitmaps on all three, then pushes of one commit`);
      for (const side of sides) {
        await repackForServing(side.repoPath(label), env);
        await run('sh', ['-c', 'cat "$1"/objects/pack/* > /dev/null', 'sh', side.repoPath(label)]);
      }
      const pushCpu: number[] = [];
      const maintCpu: number[] = [];
      const maintWall: number[] = [];
      for (let i = 1; i <= opts.runs; i++) {
        head = await addCommit(source, env, i);
        // The maintained side last, so its maintenance (due MAINTENANCE_DELAY_S after the push) starts after the reading below.
        for (const side of [...sides].reverse()) {
          const sample = await measure(side, async () => (await git(['--git-dir', source, 'push', '--quiet', side.repoUrl(label), 'main'])).seconds);
          if (side === maintained) pushCpu.push(sample.cpu);
        }
        // The maintenance the push caused: server CPU until the scheduler is idle again; its duration from the server's histogram.
        const durationSum = async () => sumSeries(await scrapeMetrics(maintained.metricsUrl!), 'gitstratum_maintenance_duration_seconds_sum');
        const d0 = await durationSum();
        const m = await measure(maintained, async () => {
          await waitMaintenanceIdle(maintained.metricsUrl!);
          return (await durationSum()) - d0;
        });
        maintCpu.push(m.cpu);
        maintWall.push(m.wall);
        for (const side of rotated(i)) {
          const sample = await measure(side, () => cloneOnce(side, label, head));
          cell(`${label}: first clone after a 1-commit push`, side.name).samples.push(sample);
          say(`${label} after push ${i}/${opts.runs} ${side.name}: ${sample.wall.toFixed(2)} s, CPU ${sample.cpu.toFixed(2)} s`);
        }
      }
      maintenanceCosts.push(
        `  ${label}: push of 1 commit, gitstratum server CPU ${spread(pushCpu, 2)} s; the maintenance it caused: ` +
          `run time ${spread(maintWall, 2)} s (after the ${MAINTENANCE_DELAY_S} s delay), server CPU ${spread(maintCpu, 2)} s`,
      );
    }

    out.push('');
    out.push(`part 2: end to end, full clones (protocol v2, --bare), median [min–max] of ${opts.runs}; gitstratum's response cache cold for each`);
    out.push(resultsTable(cells));
    out.push('');
    out.push('maintenance after each 1-commit push (gitstratum, geometric repack + split commit-graph, nice 10):');
    out.push(...maintenanceCosts);
    out.push('');
    out.push('ratios ÷ http-backend (medians)');
    const renamed = cells.map((c) => ({ ...c, side: c.side === plain.name ? 'off' : c.side }));
    out.push('gitstratum with maintenance:');
    out.push(ratiosTable(renamed, maintained.name, peer.name, 1.1));
    out.push('gitstratum with maintenance off:');
    out.push(ratiosTable(renamed, 'off', peer.name, 1.1));
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await finish();
  }
}

runBench(main);
