/**
 * `npm run bench:clone-storm`: CI clone storms (issue 4), gitstratum with its response cache
 * and repository maintenance (default settings) against `git http-backend` behind nginx +
 * fcgiwrap, serving the same repository, in one run:
 *
 *   1. cold full clone, protocol v2 and v0 (gitstratum's cache cold: a ref changed just before);
 *   2. storm: 20 concurrent `git clone --depth 1 --single-branch` of the same commit (cold);
 *   3. storm: 10 concurrent full clones (cold);
 *   4. incremental fetch of one new commit just pushed, into an existing clone;
 *   6. fetch storm: 20 CI workspaces at the previous commit fetch the one just pushed, at once
 *      (GitLab Runner's default `fetch` strategy: the same request, `have` lines included);
 *   5. a CI day: pushes of one commit, each followed by 25 concurrent clones of it (15 depth-1,
 *      10 full). gitstratum does all the rounds; the peer, whose clones cost far more, takes part
 *      in a few rounds spread over the day (--ci-peer-rounds) to keep the run short: each round
 *      is a sample (wall time per round, CPU per clone), and the hit ratio covers the whole day.
 *
 * And the cost of a cache hit, server CPU per GB served: sequential full clones of a cached
 * response by git (which reads at its index-pack's pace), and the same v2 fetch posted by a
 * node:http client that reads as fast as the server sends; and Node's floor for the same git
 * clones on this machine (hit-floor.ts: a bare node:http replaying the recorded answers).
 *
 * A second gitstratum runs behind nginx with the hand-off on (`--pack-cache-accel-redirect`:
 * hits are sent by nginx from the cache files); it takes part in scenario 2 and in the cost of
 * a hit, its CPU counted with nginx's.
 *
 * For each: wall time, server CPU per clone (the whole server process tree, git children
 * included, read when no git child runs), server peak RSS, and gitstratum's cache hit ratio
 * from its /metrics: hit and coalesced requests over all upload-pack requests (advertisements,
 * ls-refs and fetches), and over fetches alone (the requests that generate packs). Clones are
 * `--bare` (no checkout: it costs the client, not the server). Method as in
 * /work/shared/BENCHMARKING.md; ratios against http-backend come last, with the targets.
 *
 * Repositories: the generated `source` (about 100 MB of pack, a long-lived source tree: the
 * shape whose shallow clones a plain git server rebuilds at great cost) and, with --generated,
 * `medium` (about 100 MB, mostly incompressible binaries: shallow clones cheap for git, the
 * bytes sent dominate), plus any given with --repo PATH (a copy of it is pushed to both
 * servers and repacked with bitmaps there).
 *
 * Options (flags after `npm run bench:clone-storm --`, or environment):
 *   --runs N            BENCH_RUNS            runs of scenarios 1–4 (default 3, at least 3)
 *   --generated NAMES   BENCH_GENERATED       generated repositories: source (default), medium, source,medium, or none (only --repo)
 *   --scenarios LIST    BENCH_SCENARIOS       run only these: 1,2,3,hit,4,6,5 (default all; hit is the cost of a hit)
 *   --repo PATH         BENCH_REPO            also run every scenario on this repository
 *   --ci-pushes N       BENCH_CI_PUSHES       pushes of the CI day on gitstratum (default 20)
 *   --ci-peer-rounds N  BENCH_CI_PEER_ROUNDS  of which the peer does (default 3; 0 skips it)
 *   --workers N         BENCH_FCGI_WORKERS    fcgiwrap workers (default 26: the largest storm + 1)
 *   --keep              BENCH_KEEP=1          keep the run directory (.bench/run-storm-*)
 */
import { mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGitstratum } from './gitstratum-server.js';
import { startHttpBackend, startNginx } from './http-backend-peer.js';
import { run, runBench, startRun } from './processes.js';
import { startHitFloor } from './hit-floor.js';
import { currentRss, treeCpuSeconds } from './proc-stats.js';
import { addCommit, describeRepo, ensureRepo, repackForServing, SPECS, type RepoInfo } from './repo-generator.js';
import { median, mib, spread, table, type Sample } from './report.js';
import { gitstratumSide, handoffSide, measure, peerPrerequisites, peerSide, rawFetch, scrapeMetrics, sumSeries, waitMaintenanceIdle, waitPersisted, type Side } from './sides.js';
import { describeWakeCost, measureWakeCost } from './wake-cost.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const CLIENT_TIMEOUT_MS = 600_000;
const GB = 1e9;
const MiB = 1024 * 1024;

interface Options {
  runs: number;
  /** Generated repositories to serve, by name (repo-generator's SPECS). */
  generated: GeneratedName[];
  /** Which parts run: 1–5 and `hit` (the cost of a hit); all by default. */
  scenarios: Set<string>;
  repo?: string;
  ciPushes: number;
  ciPeerRounds: number;
  workers: number;
  keep: boolean;
  timeoutS: number;
}

type GeneratedName = 'source' | 'medium';
const SCENARIOS = ['1', '2', '3', 'hit', '4', '6', '5'];
/** Workspaces of scenario 6. */
const FETCH_STORM = 20;

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const generated = (value: string | undefined): GeneratedName[] => {
    // `none`: only the repository given with --repo.
    if (value === 'none') return [];
    const names = (value ?? '').split(',').filter(Boolean);
    if (names.length === 0 || names.some((n) => n !== 'source' && n !== 'medium')) throw new Error('--generated takes source, medium, both (comma-separated) or none (with --repo)');
    return names as GeneratedName[];
  };
  const scenarios = (value: string): Set<string> => {
    const parts = value.split(',').filter(Boolean);
    if (parts.length === 0 || parts.some((p) => !SCENARIOS.includes(p))) throw new Error(`--scenarios takes a comma-separated list of ${SCENARIOS.join(', ')}`);
    return new Set(parts);
  };
  const opts: Options = {
    runs: Number(env['BENCH_RUNS'] ?? 3),
    scenarios: scenarios(env['BENCH_SCENARIOS'] ?? SCENARIOS.join(',')),
    generated: generated(env['BENCH_GENERATED'] ?? 'source'),
    ciPushes: Number(env['BENCH_CI_PUSHES'] ?? 20),
    ciPeerRounds: Number(env['BENCH_CI_PEER_ROUNDS'] ?? 3),
    workers: Number(env['BENCH_FCGI_WORKERS'] ?? 26),
    keep: env['BENCH_KEEP'] === '1',
    timeoutS: Number(env['BENCH_TIMEOUT_S'] ?? 3600),
    ...(env['BENCH_REPO'] && { repo: path.resolve(env['BENCH_REPO']) }),
  };
  const int = (flag: string, value: string | undefined) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${flag} needs a non-negative integer`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') opts.keep = true;
    else if (arg === '--runs') opts.runs = int(arg, argv[++i]);
    else if (arg === '--repo') opts.repo = path.resolve(argv[++i] ?? '');
    else if (arg === '--generated') opts.generated = generated(argv[++i]);
    else if (arg === '--scenarios') opts.scenarios = scenarios(argv[++i] ?? '');
    else if (arg === '--ci-pushes') opts.ciPushes = int(arg, argv[++i]);
    else if (arg === '--ci-peer-rounds') opts.ciPeerRounds = int(arg, argv[++i]);
    else if (arg === '--workers') opts.workers = int(arg, argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --runs N, --generated NAMES, --scenarios LIST, --repo PATH, --ci-pushes N, --ci-peer-rounds N, --workers N, --keep)`);
  }
  if (opts.runs < 3 || opts.runs > 50) throw new Error('--runs must be an integer from 3 to 50');
  if (opts.generated.length === 0 && !opts.repo) throw new Error('--generated none needs --repo PATH');
  if (opts.ciPushes < 1 || opts.ciPeerRounds > opts.ciPushes) throw new Error('--ci-pushes must be at least 1 and at least --ci-peer-rounds');
  if (opts.workers < 26) throw new Error('--workers must be at least 26 (25 concurrent clones in scenario 5; fcgiwrap serialises beyond its workers)');
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

/** One measured run of a scenario on one side. */
interface StormSample extends Sample, CacheCounts {
  clones: number;
}

interface Row {
  repo: string;
  scenario: string;
  /** Targets for the ratios table. */
  key: 'cold-v2' | 'cold-v0' | 'storm-shallow' | 'storm-full' | 'fetch' | 'fetch-storm' | 'ci-day';
  side: string;
  samples: StormSample[];
  /** CI day: wall time of each round (the sample's wall is their sum). */
  roundWalls?: number[];
}

/** gitstratum's cache counters (zero for the peer). */
interface CacheCounts {
  /** Upload-pack requests, of which hit or coalesced; the same for fetches alone. */
  requests: number;
  hits: number;
  fetches: number;
  fetchHits: number;
  /** Response bytes served from cache files on hits (by Node, or by nginx when handed off). */
  hitBytes: number;
  /** Hits answered with X-Accel-Redirect for the front proxy to send. */
  handoffs: number;
}

async function cacheCounts(side: Side): Promise<CacheCounts> {
  if (!side.metricsUrl) return { requests: 0, hits: 0, fetches: 0, fetchHits: 0, hitBytes: 0, handoffs: 0 };
  const m = await scrapeMetrics(side.metricsUrl);
  const name = 'gitstratum_pack_cache_requests_total';
  const hits = (...labels: string[]) => sumSeries(m, name, 'result="hit"', ...labels) + sumSeries(m, name, 'result="coalesced"', ...labels);
  return {
    requests: sumSeries(m, name),
    hits: hits(),
    fetches: sumSeries(m, name, 'endpoint="fetch"'),
    fetchHits: hits('endpoint="fetch"'),
    hitBytes: sumSeries(m, 'gitstratum_pack_cache_served_bytes_total', 'result="hit"'),
    handoffs: sumSeries(m, 'gitstratum_pack_cache_handoffs_total'),
  };
}

/** measure() plus the cache counters' change over the action. */
async function measureStorm(side: Side, clones: number, action: () => Promise<number>): Promise<StormSample> {
  const before = await cacheCounts(side);
  const sample = await measure(side, action);
  const after = await cacheCounts(side);
  return {
    ...sample,
    clones,
    requests: after.requests - before.requests,
    hits: after.hits - before.hits,
    fetches: after.fetches - before.fetches,
    fetchHits: after.fetchHits - before.fetchHits,
    hitBytes: after.hitBytes - before.hitBytes,
    handoffs: after.handoffs - before.handoffs,
  };
}

const pct = (part: number, whole: number) => (whole > 0 ? `${((100 * part) / whole).toFixed(1)} %` : '—');

function resultsTable(rows: Row[]): string {
  const out = [['repository', 'scenario', 'server', 'wall s', 'server CPU s per clone', 'non-git CPU s per clone', 'peak RSS MiB', 'cache hits: all / fetch']];
  let lastRepo = '';
  let lastScenario = '';
  for (const r of rows) {
    const s = r.samples;
    const sum = (pick: (x: StormSample) => number) => s.reduce((a, x) => a + pick(x), 0);
    const cached = r.side.startsWith('gitstratum') ? `${pct(sum((x) => x.hits), sum((x) => x.requests))} / ${pct(sum((x) => x.fetchHits), sum((x) => x.fetches))}` : '';
    out.push([
      r.repo === lastRepo ? '' : r.repo,
      r.repo === lastRepo && r.scenario === lastScenario ? '' : r.scenario,
      r.side,
      r.roundWalls ? `${spread(r.roundWalls, 2)} per round (${r.roundWalls.length})` : spread(s.map((x) => x.wall), 2),
      spread(s.map((x) => x.cpu / x.clones), 3),
      spread(s.map((x) => x.own / x.clones), 3),
      spread(s.map((x) => x.rss), 1, MiB),
      cached,
    ]);
    lastRepo = r.repo;
    lastScenario = r.scenario;
  }
  return table(out);
}

function ratiosTable(rows: Row[]): string {
  const out = [['repository', 'scenario', 'wall', 'server CPU per clone', 'peak RSS', 'target', 'verdict']];
  const subject = rows.filter((r) => r.side !== 'http-backend');
  for (const a of subject) {
    const b = rows.find((r) => r.repo === a.repo && r.scenario === a.scenario && r.side === 'http-backend');
    if (!b) continue;
    const wallOf = (r: Row) => median(r.roundWalls ?? r.samples.map((x) => x.wall));
    const wall = wallOf(a) / wallOf(b);
    const peerCpu = median(b.samples.map((x) => x.cpu / x.clones));
    // The peer's CPU is read in 10 ms steps (the wrapper's times()): a tiny fetch can read as 0.
    const cpu = peerCpu > 0 ? median(a.samples.map((x) => x.cpu / x.clones)) / peerCpu : NaN;
    const rss = median(a.samples.map((x) => x.rss)) / median(b.samples.map((x) => x.rss));
    let target = '';
    let verdict = '';
    const met = (ok: boolean) => (ok ? 'met' : 'missed');
    if (a.key === 'cold-v2' || a.key === 'cold-v0') {
      // Issue 12: a cold clone no dearer than plain git.
      target = 'CPU ≤ 1.10×, wall ≤ 1.02×';
      verdict = `CPU ${met(cpu <= 1.1)}, wall ${met(wall <= 1.02)}`;
    } else if (a.key === 'storm-shallow') {
      // Issue 4's targets; issue 12 asks ≤ 0.2× of CPU on a repository of incompressible files.
      target = a.repo === 'medium' ? 'CPU ≤ 0.20×' : 'CPU ≤ 0.10×, wall ≤ 0.33×';
      verdict = a.repo === 'medium' ? `CPU ${met(cpu <= 0.2)}` : `CPU ${met(cpu <= 0.1)}, wall ${met(wall <= 1 / 3)}`;
    } else if (a.key === 'fetch-storm') {
      target = 'CPU ≤ 0.15×, wall ≤ 0.50×';
      verdict = `CPU ${met(cpu <= 0.15)}, wall ${met(wall <= 0.5)}`;
    } else if (a.key === 'ci-day') {
      const hits = a.samples.reduce((x, s) => x + s.hits, 0);
      const requests = a.samples.reduce((x, s) => x + s.requests, 0);
      const fetchHits = a.samples.reduce((x, s) => x + s.fetchHits, 0);
      const fetches = a.samples.reduce((x, s) => x + s.fetches, 0);
      const pushes = a.roundWalls?.length ?? 1;
      target = 'hit ratio ≥ 95 %';
      verdict =
        `${met(hits >= 0.95 * requests)} on all requests (${pct(hits, requests)}), ${met(fetchHits >= 0.95 * fetches)} on fetches (${pct(fetchHits, fetches)}); ` +
        `misses per push: ${((requests - hits) / pushes).toFixed(1)} of ${(requests / pushes).toFixed(0)} requests, ${((fetches - fetchHits) / pushes).toFixed(1)} of ${(fetches / pushes).toFixed(0)} fetches`;
    }
    out.push([a.repo, a.side === 'gitstratum' ? a.scenario : `${a.scenario}, ${a.side}`, `${wall.toFixed(2)}×`, Number.isNaN(cpu) ? '— (peer ≈ 0)' : `${cpu.toFixed(3)}×`, `${rss.toFixed(2)}×`, target, verdict]);
  }
  return table(out);
}

interface Context {
  env: NodeJS.ProcessEnv;
  opts: Options;
  gs: Side;
  peer: Side;
  /** gitstratum behind nginx, hits handed to nginx: measured in scenario 2 and for the cost of a hit. */
  handoff: Side;
  clonesDir: string;
  git(args: string[], cwd?: string): ReturnType<typeof run>;
}

/** Clones `repo` from `side` into a fresh directory, checks HEAD, removes it; returns the wall seconds. */
async function cloneOnce(ctx: Context, side: Side, repo: string, expect: string, opts: { protocol?: number; shallow?: boolean; tag: string }): Promise<number> {
  const dest = path.join(ctx.clonesDir, `${side.name}-${opts.tag}.git`);
  const args = ['-c', `protocol.version=${opts.protocol ?? 2}`, 'clone', '--bare', '--quiet', ...(opts.shallow ? ['--depth', '1', '--single-branch'] : []), side.repoUrl(repo), dest];
  const r = await ctx.git(args);
  const head = (await ctx.git(['--git-dir', dest, 'rev-parse', 'HEAD'])).stdout.trim();
  await rm(dest, { recursive: true, force: true });
  if (head !== expect) throw new Error(`${side.name}: cloned HEAD ${head}, expected ${expect}`);
  return r.seconds;
}

/** `count` clones at once (`shallow(i)` decides each one's kind); the wall time until the last ended. */
async function storm(ctx: Context, side: Side, repo: string, expect: string, count: number, shallow: (i: number) => boolean, tag: string): Promise<number> {
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: count }, (_, i) => cloneOnce(ctx, side, repo, expect, { shallow: shallow(i), tag: `${tag}-${i}` })));
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/**
 * A new tag at HEAD written on disk on both sides: gitstratum's refs version changes (its cache
 * is cold for this repository), the objects to send do not, and both sides keep identical refs.
 */
let coldCount = 0;
async function makeCold(ctx: Context, repo: string, head: string): Promise<void> {
  coldCount++;
  for (const side of [ctx.gs, ctx.peer, ctx.handoff]) await ctx.git(['--git-dir', side.repoPath(repo), 'update-ref', `refs/tags/bench-cold-${coldCount}`, head]);
}

async function scenarios(ctx: Context, label: string, info: RepoInfo, rows: Row[], hitCost: string[]): Promise<void> {
  const { gs, peer, handoff, opts } = ctx;
  const sides = [gs, peer];
  const row = (scenario: string, key: Row['key'], side: Side) => {
    let r = rows.find((x) => x.repo === label && x.scenario === scenario && x.side === side.name);
    if (!r) rows.push((r = { repo: label, scenario, key, side: side.name, samples: [] }));
    return r;
  };
  // A B, then B A: drift and page-cache order hit both alike.
  const ordered = (i: number) => (i % 2 ? sides : [...sides].reverse());
  const log = (what: string, side: Side, s: StormSample) =>
    say(`${label} ${what} ${side.name}: ${s.wall.toFixed(2)} s, CPU ${s.cpu.toFixed(2)} s${side.metricsUrl ? `, cache ${s.hits}/${s.requests}` : ''}${s.handoffs ? `, ${s.handoffs} handed off` : ''}`);

  const source = path.join(ctx.clonesDir, `source-${label}.git`);
  await ctx.git(['clone', '--bare', '--quiet', '--local', info.path, source]);
  // The scenarios clone, commit to and fetch `main`, the servers' default branch: a repository
  // whose HEAD is another branch (git/git's master) gets a `main` at its HEAD.
  if ((await ctx.git(['--git-dir', source, 'symbolic-ref', 'HEAD'])).stdout.trim() !== 'refs/heads/main') {
    if ((await ctx.git(['--git-dir', source, 'for-each-ref', 'refs/heads/main'])).stdout.trim() === '') await ctx.git(['--git-dir', source, 'update-ref', 'refs/heads/main', 'HEAD']);
    await ctx.git(['--git-dir', source, 'symbolic-ref', 'HEAD', 'refs/heads/main']);
  }
  say(`${label}: pushing ${(info.packBytes / MiB).toFixed(0)} MiB to both servers, then repacking both with bitmaps`);
  for (const side of [...sides, handoff]) {
    await side.createRepo(label);
    await ctx.git(['--git-dir', source, 'push', '--quiet', side.repoUrl(label), '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*']);
  }
  await waitMaintenanceIdle(gs.metricsUrl!);
  await waitMaintenanceIdle(handoff.metricsUrl!);
  for (const side of [...sides, handoff]) {
    await repackForServing(side.repoPath(label), ctx.env);
    await run('sh', ['-c', 'cat "$1"/objects/pack/* > /dev/null', 'sh', side.repoPath(label)]);
  }
  let head = info.head;
  for (const side of [...sides, handoff]) await cloneOnce(ctx, side, label, head, { tag: 'warm-up' });

  const want = (part: string) => opts.scenarios.has(part);

  // 1. Cold full clones.
  for (const protocol of want('1') ? [2, 0] : []) {
    const scenario = `1. cold full clone v${protocol}`;
    for (let i = 1; i <= opts.runs; i++) {
      await makeCold(ctx, label, head);
      for (const side of ordered(i)) {
        const s = await measureStorm(side, 1, () => cloneOnce(ctx, side, label, head, { protocol, tag: `v${protocol}-${i}` }));
        row(scenario, protocol === 2 ? 'cold-v2' : 'cold-v0', side).samples.push(s);
        log(`${scenario} ${i}/${opts.runs}`, side, s);
      }
    }
  }

  // 2 and 3. Storms, each run starting cold.
  for (const [part, scenario, key, count, shallow] of [
    ['2', '2. storm: 20 × depth-1 clone', 'storm-shallow', 20, true],
    ['3', '3. storm: 10 × full clone', 'storm-full', 10, false],
  ] as const) {
    if (!want(part)) continue;
    for (let i = 1; i <= opts.runs; i++) {
      await makeCold(ctx, label, head);
      // The shallow storm also behind nginx with hits handed to it (after the two, outside their order).
      for (const side of key === 'storm-shallow' ? [...ordered(i), handoff] : ordered(i)) {
        const s = await measureStorm(side, count, () => storm(ctx, side, label, head, count, () => shallow, `${key}-${i}`));
        row(scenario, key, side).samples.push(s);
        log(`${scenario} ${i}/${opts.runs}`, side, s);
      }
    }
  }

  // The cost of a hit: the full clone of scenario 3's last run is cached; clone it again, one at a time.
  if (want('hit')) {
    // Without scenario 3, two clones first: the second stores the response (a key seen twice).
    if (!want('3')) for (const tag of ['hit-prime-1', 'hit-prime-2']) await cloneOnce(ctx, gs, label, head, { tag });
    const n = 5;
    const s = await measureStorm(gs, n, async () => {
      let wall = 0;
      for (let i = 0; i < n; i++) wall += await cloneOnce(ctx, gs, label, head, { tag: `hit-${i}` });
      return wall;
    });
    const gb = s.hitBytes / GB;
    hitCost.push(
      `  ${label}: ${n} full clones served from the cache (${s.hits}/${s.requests} requests hit), ${(gb * 1000).toFixed(0)} MB sent from cache files: ` +
        (gb > 0 ? `${(s.cpu / gb).toFixed(2)} server CPU-s per GB (non-git ${(s.own / gb).toFixed(2)}) — target ≤ 0.45 (issue 12): ${s.cpu / gb <= 0.45 ? 'met' : 'missed'}` : 'no bytes served from cache (is the cache enabled and merged?)'),
    );
    say(hitCost[hitCost.length - 1]!.trim());

    // Node's floor on this machine for the same clones (hit-floor.ts): what is left of the hit
    // cost without gitstratum, to read the target against. Its first clone records the answers.
    const recordings = path.join(ctx.clonesDir, `floor-${label}`);
    await mkdir(recordings, { recursive: true });
    const floor = await startHitFloor(gs.repoUrl(label), recordings, ctx.env);
    try {
      const floorSide = { ...gs, name: 'floor', repoUrl: () => floor.url };
      await cloneOnce(ctx, floorSide, label, head, { tag: 'floor-record' });
      const b0 = await floor.replayedBytes();
      const c0 = treeCpuSeconds([floor.pid]);
      for (let i = 0; i < n; i++) await cloneOnce(ctx, floorSide, label, head, { tag: `floor-${i}` });
      const floorCpu = treeCpuSeconds([floor.pid]) - c0;
      const floorGb = ((await floor.replayedBytes()) - b0) / GB;
      hitCost.push(
        `  ${label}: the same ${n} clones from Node's floor (a bare node:http replaying the recorded answers with the same 1 MiB reads), ${(floorGb * 1000).toFixed(0)} MB: ` +
          (floorGb > 0 && gb > 0 ? `${(floorCpu / floorGb).toFixed(2)} CPU-s per GB; gitstratum's hit ${(s.cpu / gb / (floorCpu / floorGb)).toFixed(2)}× of it` : 'nothing replayed'),
      );
      say(hitCost[hitCost.length - 1]!.trim());
    } finally {
      await floor.stop();
    }

    // The same behind nginx with hits handed to it: the first clone stores the response.
    await cloneOnce(ctx, handoff, label, head, { tag: 'handoff-miss' });
    const h = await measureStorm(handoff, n, async () => {
      let wall = 0;
      for (let i = 0; i < n; i++) wall += await cloneOnce(ctx, handoff, label, head, { tag: `handoff-hit-${i}` });
      return wall;
    });
    const hgb = h.hitBytes / GB;
    // The side exists to measure the hand-off: a run where nginx only proxied must not pass for one.
    if (h.handoffs < n) throw new Error(`behind nginx: ${h.handoffs} of ${n} clones were handed off (is --pack-cache-accel-redirect set?)`);
    hitCost.push(
      `  ${label}: the same ${n} clones behind nginx, hits handed to it (${h.hits}/${h.requests} requests hit), ${(hgb * 1000).toFixed(0)} MB sent by nginx from cache files: ` +
        (hgb > 0 ? `${(h.cpu / hgb).toFixed(2)} server CPU-s per GB, gitstratum and nginx together — target ≤ 1: ${h.cpu / hgb <= 1 ? 'met' : 'missed'}` : 'no bytes handed off'),
    );
    say(hitCost[hitCost.length - 1]!.trim());

    // The same with a fast reader: the v2 fetch of a full clone sent by a node:http client that discards the bytes.
    const wants = [...new Set((await ctx.git(['--git-dir', gs.repoPath(label), 'for-each-ref', '--format=%(objectname)'])).stdout.split('\n').filter(Boolean))];
    const fetch = () => rawFetch(gs.repoUrl(label), wants);
    await fetch(); // a miss, stored: a different key from git's own request
    const m = 10;
    let bytes = 0;
    const f = await measureStorm(gs, m, async () => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < m; i++) bytes += await fetch();
      return Number(process.hrtime.bigint() - t0) / 1e9;
    });
    const fgb = bytes / GB;
    hitCost.push(
      `  ${label}: ${m} v2 fetches of the same full pack by a fast reader (${f.hits}/${f.requests} hit), ${(fgb * 1000).toFixed(0)} MB at ${(fgb / f.wall).toFixed(2)} GB/s: ` +
        `${(f.cpu / fgb).toFixed(2)} server CPU-s per GB`,
    );
    say(hitCost[hitCost.length - 1]!.trim());
  }

  let commitNo = 0;
  if (want('4')) {
    // 4. Incremental fetch of one new commit into an existing clone.
    const fetchers = new Map<Side, string>();
    for (const side of sides) {
      const dir = path.join(ctx.clonesDir, `fetcher-${side.name}-${label}.git`);
      await ctx.git(['clone', '--bare', '--quiet', side.repoUrl(label), dir]);
      fetchers.set(side, dir);
    }
    for (let i = 1; i <= opts.runs; i++) {
      head = await addCommit(source, ctx.env, ++commitNo);
      for (const side of sides) await ctx.git(['--git-dir', source, 'push', '--quiet', side.repoUrl(label), 'main']);
      for (const side of ordered(i)) {
        const dir = fetchers.get(side)!;
        const s = await measureStorm(side, 1, async () => (await ctx.git(['--git-dir', dir, 'fetch', '--quiet', side.repoUrl(label), '+refs/heads/*:refs/heads/*'])).seconds);
        const got = (await ctx.git(['--git-dir', dir, 'rev-parse', 'refs/heads/main'])).stdout.trim();
        if (got !== head) throw new Error(`${side.name}: fetched main ${got}, expected ${head}`);
        row('4. incremental fetch, 1 new commit', 'fetch', side).samples.push(s);
        log(`4. fetch ${i}/${opts.runs}`, side, s);
      }
      // The push's maintenance runs between measurements, not inside the next one.
      await waitMaintenanceIdle(gs.metricsUrl!);
    }
  }

  if (want('6')) {
    // 6. A fetch storm: FETCH_STORM workspaces at the same commit (copies of one clone, as
    // runners that built the previous commit keep them) fetch the commit just pushed, all at
    // once, with the same request. Each run starts from where the last left them.
    const workspaces = new Map<Side, string[]>();
    for (const side of sides) {
      const seed = path.join(ctx.clonesDir, `ws-${side.name}-${label}-seed.git`);
      await ctx.git(['clone', '--bare', '--quiet', side.repoUrl(label), seed]);
      const dirs: string[] = [];
      for (let k = 0; k < FETCH_STORM; k++) {
        const dir = path.join(ctx.clonesDir, `ws-${side.name}-${label}-${k}.git`);
        await ctx.git(['clone', '--bare', '--quiet', '--local', seed, dir]);
        dirs.push(dir);
      }
      await rm(seed, { recursive: true, force: true });
      workspaces.set(side, dirs);
    }
    for (let i = 1; i <= opts.runs; i++) {
      head = await addCommit(source, ctx.env, ++commitNo);
      for (const side of sides) await ctx.git(['--git-dir', source, 'push', '--quiet', side.repoUrl(label), 'main']);
      // The push's maintenance and snapshot run before the storm, not inside it.
      await waitMaintenanceIdle(gs.metricsUrl!);
      await waitPersisted(gs.metricsUrl!);
      for (const side of ordered(i)) {
        const dirs = workspaces.get(side)!;
        const fetchAll = () => Promise.all(dirs.map((dir) => ctx.git(['--git-dir', dir, 'fetch', '--quiet', side.repoUrl(label), '+refs/heads/*:refs/heads/*'])));
        const s = await measureStorm(side, FETCH_STORM, async () => {
          const started = process.hrtime.bigint();
          await fetchAll();
          return Number(process.hrtime.bigint() - started) / 1e9;
        });
        for (const dir of dirs) {
          const got = (await ctx.git(['--git-dir', dir, 'rev-parse', 'refs/heads/main'])).stdout.trim();
          if (got !== head) throw new Error(`${side.name}: a workspace fetched main ${got}, expected ${head}`);
        }
        row(`6. fetch storm: ${FETCH_STORM} workspaces fetch 1 new commit`, 'fetch-storm', side).samples.push(s);
        log(`6. fetch storm ${i}/${opts.runs}`, side, s);
      }
    }
    for (const dirs of workspaces.values()) for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  }

  if (want('5')) {
    // 5. The CI day: a push, then 25 clones of it, ciPushes times on gitstratum; the peer takes
    // part in ciPeerRounds of the rounds, spread over the day, so drift hits both alike.
    const scenario = `5. CI day: push + 25 clones (15 depth-1, 10 full)`;
    const peerRounds = new Set(Array.from({ length: opts.ciPeerRounds }, (_, k) => 1 + Math.floor(((k + 0.5) * opts.ciPushes) / opts.ciPeerRounds)));
    for (let r = 1; r <= opts.ciPushes; r++) {
      head = await addCommit(source, ctx.env, ++commitNo);
      const measured = peerRounds.has(r) ? (r % 2 ? [gs, peer] : [peer, gs]) : [gs];
      for (const side of measured) {
        const s = await measureStorm(side, 25, async () => {
          const started = process.hrtime.bigint();
          await ctx.git(['--git-dir', source, 'push', '--quiet', side.repoUrl(label), 'main']);
          // Interleaved kinds (2 of every 5 full), as CI jobs of different shapes start together.
          await storm(ctx, side, label, head, 25, (k) => k % 5 !== 1 && k % 5 !== 3, `ci-${r}`);
          const wall = Number(process.hrtime.bigint() - started) / 1e9;
          // The maintenance this push caused is part of the round's CPU (not of its wall time).
          if (side.metricsUrl) await waitMaintenanceIdle(side.metricsUrl);
          return wall;
        });
        const row5 = row(scenario, 'ci-day', side);
        row5.samples.push(s);
        (row5.roundWalls ??= []).push(s.wall);
        log(`5. CI day round ${r}/${opts.ciPushes}`, side, s);
      }
      // Keeps the peer's repository identical in rounds it sits out; outside every measurement.
      if (!peerRounds.has(r)) await ctx.git(['--git-dir', source, 'push', '--quiet', peer.repoUrl(label), 'main']);
    }
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const tools = await peerPrerequisites(say);
  const { workDir, home, env, finish } = await startRun(CACHE, 'run-storm', { keep: opts.keep, timeoutS: opts.timeoutS });
  const started = Date.now();

  try {
    const repos: [string, RepoInfo][] = [];
    for (const name of opts.generated) repos.push([name, await ensureRepo(SPECS[name], CACHE, env, say)]);
    if (opts.repo) repos.push([path.basename(opts.repo).replace(/\.git$/, '') || 'repo', { path: opts.repo, ...(await describeRepo(opts.repo, env)) }]);

    // Before anything else runs: what waking up costs on this machine (wake-cost.ts).
    const wakeCost = await measureWakeCost();
    say(describeWakeCost(wakeCost));
    say('starting gitstratum (default settings) and nginx + fcgiwrap + git http-backend');
    const gsServer = await startGitstratum(ROOT, path.join(workDir, 'gitstratum'), env);
    const gs = gitstratumSide(gsServer);
    const probe = await gs.createRepo('probe');
    // The peer's repositories get gitstratum's per-repository git settings, so both do the same git work.
    const gsConfig = (await run('git', ['config', '--file', path.join(probe, 'config'), '--list'], { env })).stdout
      .split('\n')
      .filter((l) => /^(receive|uploadpack|transfer|pack|core\.(fsync|logallrefupdates|compression))/i.test(l))
      .map((l) => l.split('=', 2) as [string, string]);
    // A second gitstratum behind nginx with the hand-off on (its own data directory and nginx).
    const handoffPrefix = '/_gitstratum/cache/';
    const gs2 = await startGitstratum(ROOT, path.join(workDir, 'gitstratum-handoff'), env, ['--pack-cache-accel-redirect', handoffPrefix]);
    const front = await startNginx(
      tools.nginx,
      path.join(workDir, 'handoff-nginx'),
      {
        // Cache files are group-readable; as root, nginx's workers would otherwise run as nobody.
        main: process.getuid?.() === 0 ? 'user root;' : '',
        // sendfile is off unless turned on (nginx's default; Debian's packaged config turns it on).
        server: `    location ${handoffPrefix} { internal; sendfile on; tcp_nopush on; alias ${path.join(gs2.dataDir, 'cache', 'entries')}/; }
    location / {
      proxy_pass ${gs2.url};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }`,
      },
      env,
    );
    const handoff = handoffSide(gs2, front);
    const peer = peerSide(await startHttpBackend(ROOT, path.join(workDir, 'peer'), { ...tools, workers: opts.workers, repoConfig: gsConfig, gitHome: home }, env));
    if (!gs.resetPeak() || !peer.resetPeak()) say('warning: cannot reset VmHWM (/proc/<pid>/clear_refs); peaks are per process lifetime');
    const gsIdleRss = currentRss(gsServer.pid);
    const loadBefore = os.loadavg()[0]!;
    const head = (await run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { env })).stdout.trim();
    const dirty = (await run('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { env })).stdout.trim() !== '';

    const clonesDir = path.join(workDir, 'clones');
    await mkdir(clonesDir, { recursive: true });
    const ctx: Context = { env, opts, gs, peer, handoff, clonesDir, git: (args, cwd) => run('git', args, { env, timeoutMs: CLIENT_TIMEOUT_MS, ...(cwd && { cwd }) }) };
    const rows: Row[] = [];
    const hitCost: string[] = [];
    for (const [label, info] of repos) await scenarios(ctx, label, info, rows, hitCost);

    const out: string[] = [];
    out.push(
      `clone storms: gitstratum ${head}${dirty ? ' (with uncommitted changes)' : ''} (default settings: response cache and maintenance on) ` +
        `vs git http-backend (nginx + fcgiwrap, ${opts.workers} workers); ${os.cpus().length} CPUs, load ${loadBefore.toFixed(2)} at start, ` +
        `${((Date.now() - started) / 60000).toFixed(1)} min`,
    );
    for (const [label, info] of repos) {
      out.push(`  ${label}: ${(info.packBytes / MiB).toFixed(1)} MiB of pack, ${info.objects} objects, ${info.commits} commits; repacked with bitmaps on both sides`);
    }
    out.push(`  machine: ${describeWakeCost(wakeCost)}`);
    out.push(`scenarios 1–4: median [min–max] of ${opts.runs} runs; scenario 5: median [min–max] over its rounds, ${opts.ciPushes} on gitstratum, ${opts.ciPeerRounds} of them on http-backend too`);
    out.push('');
    out.push(resultsTable(rows));
    out.push('');
    out.push('server CPU: the whole process tree (utime+stime+cutime+cstime), read when no git child runs, ÷ clones; scenario 5 includes');
    out.push('  the pushes and, for gitstratum, the maintenance they caused. non-git: the Node process, or nginx + fcgiwrap.');
    out.push(`peak RSS: VmHWM of the Node process (idle after start: ${mib(gsIdleRss)}), or the largest of nginx's and fcgiwrap's.`);
    out.push('cache hits: hit + coalesced ÷ upload-pack requests seen by the cache (all: advertisements, ls-refs, fetches; fetch: pack requests).');
    out.push('');
    out.push('ratios, gitstratum ÷ http-backend (medians)');
    out.push(ratiosTable(rows));
    out.push('');
    out.push('target without a peer: a cache hit costs ≤ 0.45 server CPU-seconds per GB sent to git clients (sequential full clones of a cached response; issue 12)');
    out.push(...hitCost);
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await finish();
  }
}

runBench(main);
