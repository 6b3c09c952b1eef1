/**
 * `npm run bench:cluster`: gitstratum as a cluster (issues 10 and 11), six parts on one PostgreSQL
 * and one S3 server that the benchmark starts itself (bench/postgres.ts, bench/s3-server.ts),
 * each part with a database and a bucket prefix of its own:
 *
 *   1. failover (bench/cluster-failover.ts): kill -9 of a shard's writer with a same-volume
 *      standby, while pushers push through a frontend: time to the first successful push and
 *      clone through the frontend, p50/p99 over the trials; acknowledged pushes lost;
 *   2. the frontend hop (bench/cluster-hop.ts): full clone and push of the `source` repository
 *      through a frontend to a storage node vs straight to `gitstratum serve`; wall and CPU;
 *   3. a storm (bench/cluster-storm.ts): identical depth-1 clones spread over 2 frontends; how
 *      many pack generations the storage node ran and how many git processes the frontends ran;
 *   4. replicas (bench/cluster-replica.ts): a writer and two async replicas of a shard behind a
 *      frontend: each replica's lag after a push (p50/p99), read-your-writes misses of a fetch
 *      right after each push, and a storm of 60 depth-1 clones: where the reads went, CPU per node;
 *   5. sync (bench/cluster-sync.ts): push latency with a synchronous standby against a writer
 *      alone, and failovers with the writer's disk gone: time to the first push, pushes lost;
 *   6. move (bench/cluster-move.ts): a repository moved between two shards' writers again and
 *      again while clients push and clone it: how long pushes were paused, clones failed.
 *
 * Options (flags after `npm run bench:cluster --`, or environment):
 *   --parts LIST         BENCH_PARTS          failover,hop,storm,replica,sync,move (default all)
 *   --trials N           BENCH_TRIALS         failover trials (default 10)
 *   --pushers N          BENCH_PUSHERS        failover pushers (default 3)
 *   --lease-seconds N    BENCH_LEASE_SECONDS  the shard lease (default 5, gitstratum's default)
 *   --runs N             BENCH_RUNS           hop runs per side and operation (default 5, minimum 3)
 *   --storms N           BENCH_STORMS         storms, each after a new commit (default 3)
 *   --clones N           BENCH_CLONES         clones per storm (default 40, even)
 *   --lag-pushes N       BENCH_LAG_PUSHES     replica part: pushes whose lag is measured (default 50)
 *   --ryw-rounds N       BENCH_RYW_ROUNDS     replica part: push-then-fetch rounds (default 200)
 *   --ryw-delay-ms N     BENCH_RYW_DELAY_MS   replica part: longest wait between push and fetch (default 0: at once)
 *   --sync-pushes N      BENCH_SYNC_PUSHES    sync part: pushes per shard whose latency is measured (default 100)
 *   --sync-trials N      BENCH_SYNC_TRIALS    sync part: failovers with the writer's disk gone (default 20)
 *   --moves N            BENCH_MOVES          move part: moves of the repository (default 10)
 *   --keep               BENCH_KEEP=1         keep the run directory (.bench/run-cluster-*: every log)
 *                        BENCH_TIMEOUT_S      whole-run limit (default 1800)
 *
 * Every process it starts (PostgreSQL, s3rver, every gitstratum, every git) is registered by
 * PID and stopped by it at the end, on error, on SIGINT/SIGTERM and at the time limit.
 */
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { failover, failoverReport, type FailoverResult } from './cluster-failover.js';
import { moveBench, moveReport, type MoveBenchResult } from './cluster-move.js';
import { hop, hopReport, type HopResult } from './cluster-hop.js';
import type { PartContext } from './cluster-processes.js';
import { replica, replicaReport, type ReplicaResult } from './cluster-replica.js';
import { sync, syncReport, type SyncResult } from './cluster-sync.js';
import { storm, stormReport, type StormResult } from './cluster-storm.js';
import { startPostgres } from './postgres.js';
import { run, runBench, startRun } from './processes.js';
import { ensureRepo, SPECS } from './repo-generator.js';
import { startS3Server } from './s3-server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const PARTS = ['failover', 'hop', 'storm', 'replica', 'sync', 'move'] as const;
type Part = (typeof PARTS)[number];

interface Options {
  parts: Set<Part>;
  trials: number;
  pushers: number;
  leaseSeconds: number;
  runs: number;
  storms: number;
  clones: number;
  lagPushes: number;
  rywRounds: number;
  rywDelayMs: number;
  syncPushes: number;
  syncTrials: number;
  moves: number;
  keep: boolean;
  timeoutS: number;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const parts = (value: string): Set<Part> => {
    const list = value.split(',').filter(Boolean);
    if (list.length === 0 || list.some((p) => !(PARTS as readonly string[]).includes(p))) throw new Error(`--parts takes a comma-separated list of ${PARTS.join(', ')}`);
    return new Set(list as Part[]);
  };
  const opts: Options = {
    parts: parts(env['BENCH_PARTS'] ?? PARTS.join(',')),
    trials: Number(env['BENCH_TRIALS'] ?? 10),
    pushers: Number(env['BENCH_PUSHERS'] ?? 3),
    leaseSeconds: Number(env['BENCH_LEASE_SECONDS'] ?? 5),
    runs: Number(env['BENCH_RUNS'] ?? 5),
    storms: Number(env['BENCH_STORMS'] ?? 3),
    clones: Number(env['BENCH_CLONES'] ?? 40),
    lagPushes: Number(env['BENCH_LAG_PUSHES'] ?? 50),
    rywRounds: Number(env['BENCH_RYW_ROUNDS'] ?? 200),
    rywDelayMs: Number(env['BENCH_RYW_DELAY_MS'] ?? 0),
    syncPushes: Number(env['BENCH_SYNC_PUSHES'] ?? 100),
    syncTrials: Number(env['BENCH_SYNC_TRIALS'] ?? 20),
    moves: Number(env['BENCH_MOVES'] ?? 10),
    keep: env['BENCH_KEEP'] === '1',
    timeoutS: Number(env['BENCH_TIMEOUT_S'] ?? 1800),
  };
  const flags: Record<string, keyof Options> = {
    '--trials': 'trials',
    '--pushers': 'pushers',
    '--lease-seconds': 'leaseSeconds',
    '--runs': 'runs',
    '--storms': 'storms',
    '--clones': 'clones',
    '--lag-pushes': 'lagPushes',
    '--ryw-rounds': 'rywRounds',
    '--ryw-delay-ms': 'rywDelayMs',
    '--sync-pushes': 'syncPushes',
    '--sync-trials': 'syncTrials',
    '--moves': 'moves',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') opts.keep = true;
    else if (arg === '--parts') opts.parts = parts(argv[++i] ?? '');
    else if (flags[arg]) (opts[flags[arg]] as number) = Number(argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --parts LIST, ${Object.keys(flags).map((f) => `${f} N`).join(', ')}, --keep)`);
  }
  const bad = (n: number, min: number, max: number) => !Number.isInteger(n) || n < min || n > max;
  if (bad(opts.trials, 1, 1000)) throw new Error('--trials must be an integer from 1 to 1000');
  if (bad(opts.pushers, 1, 20)) throw new Error('--pushers must be an integer from 1 to 20');
  if (bad(opts.leaseSeconds, 1, 300)) throw new Error('--lease-seconds must be an integer from 1 to 300');
  if (bad(opts.runs, 3, 50)) throw new Error('--runs must be an integer from 3 to 50');
  if (bad(opts.storms, 1, 50)) throw new Error('--storms must be an integer from 1 to 50');
  if (bad(opts.clones, 2, 48) || opts.clones % 2 !== 0) throw new Error('--clones must be an even integer from 2 to 48 (a frontend lets one address run 24 git requests at once)');
  if (bad(opts.lagPushes, 1, 1000)) throw new Error('--lag-pushes must be an integer from 1 to 1000');
  if (bad(opts.rywRounds, 1, 5000)) throw new Error('--ryw-rounds must be an integer from 1 to 5000');
  if (bad(opts.rywDelayMs, 0, 10_000)) throw new Error('--ryw-delay-ms must be an integer from 0 to 10000');
  if (bad(opts.syncPushes, 1, 5000)) throw new Error('--sync-pushes must be an integer from 1 to 5000');
  if (bad(opts.syncTrials, 1, 200)) throw new Error('--sync-trials must be an integer from 1 to 200');
  if (bad(opts.moves, 1, 200)) throw new Error('--moves must be an integer from 1 to 200');
  if (bad(opts.timeoutS, 60, 86_400)) throw new Error('BENCH_TIMEOUT_S must be an integer from 60 to 86400');
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (process.platform !== 'linux') throw new Error('this benchmark reads /proc: it runs on Linux only');
  const loadStart = load();
  const started = Date.now();
  say(`load average at start: ${loadStart}`);
  const { workDir, env, finish } = await startRun(CACHE, 'run-cluster', { keep: opts.keep, timeoutS: opts.timeoutS });
  try {
    const source = opts.parts.has('hop') || opts.parts.has('storm') || opts.parts.has('move') ? await ensureRepo(SPECS.source, CACHE, env, say) : undefined;
    const pg = await startPostgres(path.join(workDir, 'postgres'), env, say);
    const s3 = await startS3Server(path.join(workDir, 's3'), env);
    say(`PostgreSQL ${pg.version} on port ${pg.port} (pid ${pg.pid}), s3rver at ${s3.endpoint} (pid ${s3.pid})`);
    const ctx = (part: string): PartContext => ({
      root: ROOT,
      dir: path.join(workDir, part),
      env,
      createDatabase: (name) => pg.createDatabase(name),
      storeEnv: (prefix) => s3.storeEnv(prefix),
      say,
    });

    let failed: FailoverResult | undefined;
    let hopped: HopResult | undefined;
    let stormed: StormResult | undefined;
    let replicated: ReplicaResult | undefined;
    let synced: SyncResult | undefined;
    let moved: MoveBenchResult | undefined;
    // The load average as each part starts: the machine may be shared, and the storm's own
    // clients make the load at the end of a run high.
    const partLoad = new Map<Part, string>();
    const begin = (part: Part) => partLoad.set(part, load());
    if (opts.parts.has('failover')) {
      begin('failover');
      failed = await failover(ctx('failover'), { trials: opts.trials, pushers: opts.pushers, leaseSeconds: opts.leaseSeconds });
    }
    if (opts.parts.has('hop')) {
      begin('hop');
      hopped = await hop(ctx('hop'), { runs: opts.runs, source: source!, pg });
    }
    if (opts.parts.has('storm')) {
      begin('storm');
      stormed = await storm(ctx('storm'), { storms: opts.storms, clones: opts.clones, source: source! });
    }
    if (opts.parts.has('replica')) {
      begin('replica');
      replicated = await replica(ctx('replica'), { lagPushes: opts.lagPushes, rywRounds: opts.rywRounds, rywDelayMs: opts.rywDelayMs, pg });
    }
    if (opts.parts.has('sync')) {
      begin('sync');
      synced = await sync(ctx('sync'), { pushes: opts.syncPushes, trials: opts.syncTrials, leaseSeconds: opts.leaseSeconds });
    }
    if (opts.parts.has('move')) {
      begin('move');
      moved = await moveBench(ctx('move'), { moves: opts.moves, source: source! });
    }
    const withLoad = (part: Part, lines: string[]) => [lines[0]!, `   load average at the part's start: ${partLoad.get(part)}`, ...lines.slice(1)];

    const head = (await run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { env })).stdout.trim();
    const dirty = (await run('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { env })).stdout.trim() !== '';
    const git = (await run('git', ['--version'], { env })).stdout.trim().replace('git version ', '');
    const out: string[] = [
      `cluster: gitstratum ${head}${dirty ? ' (with uncommitted changes)' : ''}; ${os.cpus().length} CPUs; load average (1, 5, 15 min) ${loadStart} at start, ${load()} at end; ` +
        `${((Date.now() - started) / 60000).toFixed(1)} min`,
      `  PostgreSQL ${pg.version} and s3rver ${await s3rverVersion()} started by the benchmark (one database and bucket prefix per part); git ${git}; Node ${process.versions.node}`,
    ];
    if (failed) out.push('', ...withLoad('failover', failoverReport(failed)));
    if (hopped) out.push('', ...withLoad('hop', hopReport(hopped)));
    if (stormed) out.push('', ...withLoad('storm', stormReport(stormed)));
    if (replicated) out.push('', ...withLoad('replica', replicaReport(replicated)));
    if (synced) out.push('', ...withLoad('sync', syncReport(synced)));
    if (moved) out.push('', ...withLoad('move', moveReport(moved)));
    process.stdout.write(out.join('\n') + '\n');
    if (opts.keep) say(`kept ${workDir} (logs of every process: ${(await readdir(workDir)).join(', ')})`);
  } finally {
    await finish();
  }
}

async function s3rverVersion(): Promise<string> {
  try {
    return (JSON.parse(await readFile(path.join(ROOT, 'node_modules', 's3rver', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

runBench(main);
