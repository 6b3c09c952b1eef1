/**
 * Part 4 of `bench:cluster`: async replicas (issue 11; docs/design/replication.md). One writer of
 * shard `local` and two async replicas of it (`--replica async --replica-interval-seconds 1`),
 * each storage node on a data directory of its own, and one frontend, all on the part's
 * database and bucket prefix. Default settings otherwise, but for the frontend: its pack cache
 * is off, so every clone and fetch goes through read routing to a node (with it on, 60
 * identical clones are one request to a node: part 3 measures that), and its per-client
 * budgets are off (every client of the benchmark is alice, from 127.0.0.1).
 *
 * 1. Lag: `--lag-pushes` small pushes through the frontend, one at a time. For each, the refs
 *    version of the repository is read right after `git push` exited 0, and PostgreSQL is polled
 *    every 10 ms until each replica's position (replica_positions, keyed by the disk id in the
 *    replica's DATA/replica-id) is at least that version: what read routing compares. The lag is
 *    from the push's exit to the poll that saw it, so it is rounded up to the next poll.
 * 2. Read-your-writes: `--ryw-rounds` rounds of commit, push through the frontend, and at once a
 *    `git fetch` through the frontend from another clone; a miss is a fetched origin/main other
 *    than the pushed commit. The frontend's `gitstratum_routing_reads_total` is scraped after
 *    each fetch (a push counts no read), so each fetch's reads are known. A fetch at once goes to
 *    the writer whenever the replicas lag more than it takes to arrive, which leaves the replicas'
 *    side of the guarantee untried: `--ryw-delay-ms MAX` makes round i wait ((i − 1) mod 5) / 4
 *    × MAX ms before its fetch (0, ¼, ½, ¾, all of MAX), so that, with MAX about the lag, many
 *    fetches reach a replica just as it holds the push.
 * 3. A storm: a commit is pushed, and at once 60 `git clone --depth 1` start together through
 *    the frontend. Wall time; where the reads went (the frontend's counter, and each node's
 *    `gitstratum_http_requests_total` by route); when each replica recorded the pushed version
 *    (its position's applied_at, read after the storm: the benchmark's event loop, busy with 60
 *    clients, would poll late); the CPU of each process tree (bench/proc-stats.ts).
 *
 * A benchmark, not a test: it prints figures and verdicts against the issue's targets, and
 * fails only when something it needs does not happen (a replica that never starts, a clone
 * that fails).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { partCluster, repoUrl, SERVING_SHARD, spawnServer, type PartContext, type ServerProcess } from './cluster-processes.js';
import type { Postgres } from './postgres.js';
import { treeCpuSeconds, waitForTree } from './proc-stats.js';
import { run, stop } from './processes.js';
import { median, percentile, table } from './report.js';
import { scrapeMetrics, sumSeries } from './sides.js';

export interface ReplicaOptions {
  lagPushes: number;
  rywRounds: number;
  /** The longest wait between a round's push and its fetch (0: every fetch at once). */
  rywDelayMs: number;
  pg: Postgres;
}

/** The routing counter of the frontend, by target. */
interface Reads {
  replica: number;
  writer: number;
  replicaFailed: number;
}

/** One process over a span: its tree's CPU; a node's git requests from the frontend and replicas' fetches it served; a replica's rounds. */
interface NodeSpan {
  name: string;
  cpu: number;
  requests: Requests;
}

interface Requests {
  /** Git requests of the frontend (the node's repos routes: clones and fetches, and pushes on the writer). */
  git: number;
  /** Replicas' fetches served (the writer's replicate routes: ls-remote and fetch of each round). */
  replication: number;
  /** A replica's rounds (gitstratum_replica_rounds_total), and the failed ones. */
  rounds: number;
  failedRounds: number;
}

interface LagResult {
  /** Per replica, ms from each push's exit to the poll that saw its position reach the version; undefined: not within LAG_BOUND_MS. */
  lags: (number | undefined)[][];
  /** Seconds of each push (the client's wall time). */
  pushes: number[];
  nodes: NodeSpan[];
}

interface RywResult {
  rounds: number;
  misses: string[];
  reads: Reads;
  /** Fetches whose reads all went to replicas, all to the writer, or to both. */
  allReplica: number;
  allWriter: number;
  mixed: number;
  /** Per wait before the fetch (ms): rounds, and those whose fetch read from a replica at least once. */
  byDelay: Map<number, { rounds: number; onReplica: number }>;
  push: number[];
  fetch: number[];
}

interface StormResult {
  clones: number;
  wall: number;
  /** The same storm against `gitstratum serve` alone (one process, default settings, budgets off), in the same run. */
  singleNodeWall: number;
  reads: Reads;
  /** Per replica, ms from the push's exit to its recording a position of the pushed version (its applied_at); undefined: not by the storm's end. */
  reached: (number | undefined)[];
  nodes: NodeSpan[];
  pgCpu: number;
}

export interface ReplicaResult {
  opts: Omit<ReplicaOptions, 'pg'>;
  lag: LagResult;
  ryw: RywResult;
  storm: StormResult;
}

const REPLICAS = 2;
const STORM_CLONES = 60;
const POLL_MS = 10;
/** How long a replica may take to reach a version before the push counts as not reached. */
const LAG_BOUND_MS = 30_000;
const LAG_TARGET_MS = 1000;
const REPLICA_ARGS = ['--replica', 'async', '--replica-interval-seconds', '1'];
const FRONTEND_ARGS = ['--pack-cache-enabled', 'false', '--rate-limit-git-requests', '0', '--max-concurrent-git-per-client', '0'];
/** The log line of a replica whose loop runs (its disk id is written by then). */
const REPLICA_FOLLOWING = 'replica following the shard writer';
const READS = 'gitstratum_routing_reads_total';

/** A work tree that pushes one small commit at a time to the frontend. */
class Pusher {
  private n = 0;
  constructor(
    readonly dir: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly url: string,
  ) {}

  private git(args: string[]) {
    return run('git', ['-C', this.dir, ...args], { env: this.env, timeoutMs: 120_000 });
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.git(['init', '-q', '-b', 'main']);
  }

  /** Commits a change of one file and pushes it to main; the commit and the push's wall seconds. */
  async push(): Promise<{ sha: string; seconds: number }> {
    this.n++;
    await writeFile(path.join(this.dir, 'change.txt'), `change ${this.n}\n`);
    await this.git(['add', 'change.txt']);
    await this.git(['commit', '-q', '-m', `change ${this.n}`]);
    const sha = (await this.git(['rev-parse', 'HEAD'])).stdout.trim();
    const r = await this.git(['push', '--quiet', this.url, 'HEAD:refs/heads/main']);
    return { sha, seconds: r.seconds };
  }
}

/** The replicas' positions and the repository's version, read straight from PostgreSQL. */
class Positions {
  constructor(
    private readonly db: pg.Client,
    private readonly repoId: string,
    private readonly diskIds: string[],
  ) {}

  /** The repository's refs version now (a bigint column: compared as BigInt). */
  async version(): Promise<bigint> {
    const r = await this.db.query<{ version: string }>('select version from repository_refs_versions where repository_id = $1', [this.repoId]);
    return BigInt(r.rows[0]?.version ?? 0);
  }

  /** Which replicas hold at least `version`, in the order of `diskIds`. */
  async reached(version: bigint): Promise<boolean[]> {
    const r = await this.db.query<{ disk_id: string; version: string }>('select disk_id, version from replica_positions where repository_id = $1 and disk_id = any($2)', [this.repoId, this.diskIds]);
    const at = new Map(r.rows.map((row) => [row.disk_id, BigInt(row.version)]));
    return this.diskIds.map((id) => (at.get(id) ?? -1n) >= version);
  }

  /**
   * Polls every POLL_MS until every replica holds `version`, or `boundMs` from `t0`
   * (performance.now()); per replica, ms from `t0` to the poll that first saw it there (the
   * poll's end: the position was reached before it).
   */
  async follow(version: bigint, t0: number, boundMs: number): Promise<(number | undefined)[]> {
    const seen: (number | undefined)[] = this.diskIds.map(() => undefined);
    while (seen.some((x) => x === undefined) && performance.now() - t0 < boundMs) {
      const now = await this.reached(version);
      const at = performance.now() - t0;
      now.forEach((ok, i) => {
        if (ok && seen[i] === undefined) seen[i] = at;
      });
      if (seen.some((x) => x === undefined)) await sleep(POLL_MS);
    }
    return seen;
  }

  /**
   * When each replica recorded a position of at least `version` (applied_at: epoch ms by the
   * database's clock, this machine's), or undefined. Exact where polling is not: during a storm
   * the benchmark's own event loop is busy with its clients. Valid while no later version exists.
   */
  async appliedAt(version: bigint): Promise<(number | undefined)[]> {
    const r = await this.db.query<{ disk_id: string; version: string; applied_at: string }>(
      'select disk_id, version, applied_at from replica_positions where repository_id = $1 and disk_id = any($2)',
      [this.repoId, this.diskIds],
    );
    const rows = new Map(r.rows.map((row) => [row.disk_id, row]));
    return this.diskIds.map((id) => {
      const row = rows.get(id);
      return row && BigInt(row.version) >= version ? Number(row.applied_at) : undefined;
    });
  }
}

async function readsOf(frontend: ServerProcess): Promise<Reads> {
  const m = await scrapeMetrics(`${frontend.url}/metrics`);
  return {
    replica: sumSeries(m, READS, 'target="replica"'),
    writer: sumSeries(m, READS, 'target="writer"'),
    replicaFailed: sumSeries(m, READS, 'target="replica_failed"'),
  };
}

const readsDiff = (a: Reads, b: Reads): Reads => ({ replica: a.replica - b.replica, writer: a.writer - b.writer, replicaFailed: a.replicaFailed - b.replicaFailed });

/** A process's counters so far (a frontend has none of these series: zeros). */
async function requestsOf(node: ServerProcess): Promise<Requests> {
  const m = await scrapeMetrics(`${node.url}/metrics`);
  const route = (r: string) => sumSeries(m, 'gitstratum_http_requests_total', `route="${r}"`);
  return {
    git: route('/_node/v1/repos/:id/info/refs') + route('/_node/v1/repos/:id/rpc'),
    replication: route('/_node/v1/replicate/:id/info/refs') + route('/_node/v1/replicate/:id/git-upload-pack'),
    rounds: sumSeries(m, 'gitstratum_replica_rounds_total'),
    failedRounds: sumSeries(m, 'gitstratum_replica_rounds_total', 'result="failed"'),
  };
}

/** CPU and requests of each process over `action`: read before, and after once their git children are gone. */
async function span<T>(procs: ServerProcess[], names: string[], action: () => Promise<T>): Promise<{ result: T; nodes: NodeSpan[] }> {
  const before = await Promise.all(procs.map(async (p) => ({ cpu: treeCpuSeconds([p.pid]), requests: await requestsOf(p) })));
  const result = await action();
  // The git children of the last requests exit (and are reaped, so their CPU reaches their
  // parent's cutime) just after the clients; a replica's round may still be running, whose
  // live processes count as they are: not waiting for those.
  const resident = new Set(procs.map((p) => p.pid));
  await waitForTree([...resident], resident, 5000).catch(() => {});
  const nodes = await Promise.all(
    procs.map(async (p, i) => {
      const [after, b] = [await requestsOf(p), before[i]!.requests];
      const requests = { git: after.git - b.git, replication: after.replication - b.replication, rounds: after.rounds - b.rounds, failedRounds: after.failedRounds - b.failedRounds };
      return { name: names[i]!, cpu: treeCpuSeconds([p.pid]) - before[i]!.cpu, requests };
    }),
  );
  return { result, nodes };
}

export async function replica(ctx: PartContext, opts: ReplicaOptions): Promise<ReplicaResult> {
  const { env, say } = ctx;
  const clientEnv = { ...env, GIT_AUTHOR_NAME: 'Bench', GIT_AUTHOR_EMAIL: 'bench@example.com', GIT_COMMITTER_NAME: 'Bench', GIT_COMMITTER_EMAIL: 'bench@example.com' };
  const started: ServerProcess[] = [];
  let db: pg.Client | undefined;
  try {
    say(`replica: starting a writer, ${REPLICAS} async replicas and a frontend`);
    const c = await partCluster(ctx, 'replica');
    const writer = await c.startStorageNode({ dataDir: path.join(ctx.dir, 'writer') });
    started.push(writer);
    await writer.waitForLog(SERVING_SHARD);
    // After the writer: a replica's heartbeat needs the shard, which the writer's lease makes.
    const replicas: ServerProcess[] = [];
    for (let i = 1; i <= REPLICAS; i++) {
      const r = await c.startStorageNode({ dataDir: path.join(ctx.dir, `replica-${i}`), args: REPLICA_ARGS });
      started.push(r);
      replicas.push(r);
    }
    const diskIds: string[] = [];
    for (const r of replicas) {
      await r.waitForLog(REPLICA_FOLLOWING);
      diskIds.push((await readFile(path.join(r.dataDir, 'replica-id'), 'utf8')).trim());
    }
    const frontend = await c.startFrontend(FRONTEND_ARGS);
    started.push(frontend);
    const token = await c.bootstrap();
    const repoId = await c.createRepo('r');
    const url = repoUrl(frontend.url, token, 'r');
    db = new pg.Client({ connectionString: c.env['GITSTRATUM_DATABASE_URL'] });
    await db.connect();
    const positions = new Positions(db, repoId, diskIds);

    // A first push, a reader's clone of it, and both replicas holding it before anything is timed
    // (a replica's first round restores the repository from snapshots or makes it empty).
    const pusher = new Pusher(path.join(ctx.dir, 'pusher'), clientEnv, url);
    await pusher.init();
    await pusher.push();
    const reader = path.join(ctx.dir, 'reader');
    await run('git', ['clone', '--quiet', url, reader], { env: clientEnv, timeoutMs: 120_000 });
    const first = await positions.follow(await positions.version(), performance.now(), 120_000);
    if (first.some((x) => x === undefined)) throw new Error(`replica: a replica did not reach the first push within 120 s; see ${replicas.map((r) => r.logFile).join(', ')}`);

    const nodes = [writer, ...replicas, frontend];
    const names = ['writer', ...replicas.map((_, i) => `replica ${i + 1}`), 'frontend'];
    const lag = await lagPart(opts, pusher, positions, nodes, names, say);
    const ryw = await rywPart(opts, pusher, reader, frontend, clientEnv, say);
    const storm = await stormPart(ctx, pusher, positions, frontend, nodes, names, url, clientEnv, opts.pg);
    return { opts: { lagPushes: opts.lagPushes, rywRounds: opts.rywRounds, rywDelayMs: opts.rywDelayMs }, lag, ryw, storm };
  } finally {
    await db?.end().catch(() => {});
    // The frontend first (no request in flight), then the replicas, then the writer they follow.
    for (const p of [...started].reverse()) await stop(p.pid);
  }
}

async function lagPart(opts: ReplicaOptions, pusher: Pusher, positions: Positions, nodes: ServerProcess[], names: string[], say: (msg: string) => void): Promise<LagResult> {
  const lags: (number | undefined)[][] = Array.from({ length: REPLICAS }, () => []);
  const pushes: number[] = [];
  const { nodes: spans } = await span(nodes, names, async () => {
    for (let i = 1; i <= opts.lagPushes; i++) {
      const { seconds } = await pusher.push();
      // run() resolves on the push's exit: the clock starts there.
      const t0 = performance.now();
      pushes.push(seconds);
      const seen = await positions.follow(await positions.version(), t0, LAG_BOUND_MS);
      seen.forEach((ms, r) => lags[r]!.push(ms));
      if (i % 10 === 0 || i === opts.lagPushes) say(`replica lag: ${i}/${opts.lagPushes} pushes; last ${seen.map((ms) => (ms === undefined ? 'not reached' : `${ms.toFixed(0)} ms`)).join(', ')}`);
    }
  });
  return { lags, pushes, nodes: spans };
}

async function rywPart(opts: ReplicaOptions, pusher: Pusher, reader: string, frontend: ServerProcess, env: NodeJS.ProcessEnv, say: (msg: string) => void): Promise<RywResult> {
  const git = (args: string[]) => run('git', ['-C', reader, ...args], { env, timeoutMs: 120_000 });
  const result: RywResult = { rounds: opts.rywRounds, misses: [], reads: { replica: 0, writer: 0, replicaFailed: 0 }, allReplica: 0, allWriter: 0, mixed: 0, byDelay: new Map(), push: [], fetch: [] };
  const start = await readsOf(frontend);
  let last = start;
  for (let i = 1; i <= opts.rywRounds; i++) {
    const { sha, seconds } = await pusher.push();
    result.push.push(seconds);
    const delay = (((i - 1) % 5) / 4) * opts.rywDelayMs;
    if (delay > 0) await sleep(delay);
    result.fetch.push((await git(['fetch', '--quiet', 'origin'])).seconds);
    const got = (await git(['rev-parse', 'refs/remotes/origin/main'])).stdout.trim();
    if (got !== sha) result.misses.push(`round ${i}: fetched ${got}, pushed ${sha}`);
    // After the fetch, not between push and fetch: the scrape would widen the gap the replicas get.
    const now = await readsOf(frontend);
    const d = readsDiff(now, last);
    last = now;
    if (d.writer === 0 && d.replicaFailed === 0) result.allReplica++;
    else if (d.replica === 0) result.allWriter++;
    else result.mixed++;
    const slot = result.byDelay.get(delay) ?? { rounds: 0, onReplica: 0 };
    result.byDelay.set(delay, { rounds: slot.rounds + 1, onReplica: slot.onReplica + (d.replica > 0 ? 1 : 0) });
    if (i % 50 === 0 || i === opts.rywRounds) say(`read-your-writes: ${i}/${opts.rywRounds} rounds, ${result.misses.length} misses`);
  }
  result.reads = readsDiff(last, start);
  return result;
}

async function stormPart(
  ctx: PartContext,
  pusher: Pusher,
  positions: Positions,
  frontend: ServerProcess,
  nodes: ServerProcess[],
  names: string[],
  url: string,
  env: NodeJS.ProcessEnv,
  postgres: Postgres,
): Promise<StormResult> {
  const clones = path.join(ctx.dir, 'storm');
  await mkdir(clones, { recursive: true });
  const readsBefore = await readsOf(frontend);
  const pg0 = postgres.cpuSeconds();
  let wall = 0;
  let reached: (number | undefined)[] = [];
  const { nodes: spans } = await span(nodes, names, async () => {
    const { sha } = await pusher.push();
    const [t0, pushedAt] = [performance.now(), Date.now()];
    const version = await positions.version();
    await Promise.all(
      Array.from({ length: STORM_CLONES }, async (_, k) => {
        const dest = path.join(clones, `clone-${k}.git`);
        await run('git', ['clone', '--bare', '--quiet', '--depth', '1', url, dest], { env, timeoutMs: 300_000 });
        const got = (await run('git', ['--git-dir', dest, 'rev-parse', 'HEAD'], { env })).stdout.trim();
        if (got !== sha) throw new Error(`storm clone ${k}: HEAD ${got}, expected the pushed ${sha}`);
      }),
    );
    wall = (performance.now() - t0) / 1000;
    // The replicas' progress meanwhile (not waited for): when each recorded the pushed version.
    reached = (await positions.appliedAt(version)).map((at) => (at === undefined ? undefined : at - pushedAt));
  });
  await rm(clones, { recursive: true, force: true });
  const reads = readsDiff(await readsOf(frontend), readsBefore);
  ctx.say(`storm: ${STORM_CLONES} clones in ${wall.toFixed(2)} s; reads: ${reads.replica} replica, ${reads.writer} writer, ${reads.replicaFailed} replica failed`);
  const singleNodeWall = await singleNodeStorm(ctx, env);
  ctx.say(`storm: the same against one \`gitstratum serve\`: ${singleNodeWall.toFixed(2)} s`);
  return { clones: STORM_CLONES, wall, singleNodeWall, reads, reached, nodes: spans, pgCpu: postgres.cpuSeconds() - pg0 };
}

/**
 * The storm against `gitstratum serve` alone (SQLite, its own disk, default settings but the
 * per-client budgets, as the cluster's frontend): a repository with one commit, then a push and
 * at once the same clones. Its wall seconds.
 */
async function singleNodeStorm(ctx: PartContext, env: NodeJS.ProcessEnv): Promise<number> {
  const dataDir = path.join(ctx.dir, 'single');
  const server = await spawnServer(ctx.root, { name: 'single node', dataDir, env, args: ['--port', '0', '--rate-limit-git-requests', '0', '--max-concurrent-git-per-client', '0'], logFile: path.join(ctx.dir, 'single.log') });
  try {
    const cli = (...args: string[]) => run(process.execPath, [path.join(ctx.root, 'bin', 'gitstratum.js'), ...args, '--data', dataDir], { env, timeoutMs: 120_000 });
    await cli('user', 'create', 'alice');
    await cli('space', 'create', 'alice/bench');
    await cli('repo', 'create', 'alice/bench/r');
    const token = (await cli('token', 'create', 'alice', '--scope', 'write')).stdout.trim().split('\n').pop()!;
    const url = repoUrl(server.url, token, 'r');
    const pusher = new Pusher(path.join(ctx.dir, 'single-pusher'), env, url);
    await pusher.init();
    await pusher.push();
    const clones = path.join(ctx.dir, 'single-storm');
    await mkdir(clones, { recursive: true });
    const { sha } = await pusher.push();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: STORM_CLONES }, async (_, k) => {
        const dest = path.join(clones, `clone-${k}.git`);
        await run('git', ['clone', '--bare', '--quiet', '--depth', '1', url, dest], { env, timeoutMs: 300_000 });
        const got = (await run('git', ['--git-dir', dest, 'rev-parse', 'HEAD'], { env })).stdout.trim();
        if (got !== sha) throw new Error(`single-node storm clone ${k}: HEAD ${got}, expected the pushed ${sha}`);
      }),
    );
    const wall = (performance.now() - t0) / 1000;
    await rm(clones, { recursive: true, force: true });
    return wall;
  } finally {
    await stop(server.pid);
  }
}

const ms = (x: number) => x.toFixed(0);
const share = (part: number, whole: number) => (whole === 0 ? '—' : `${((100 * part) / whole).toFixed(0)}%`);
const readsLine = (r: Reads) => {
  const all = r.replica + r.writer + r.replicaFailed;
  return `${r.replica} to replicas (${share(r.replica, all)}), ${r.writer} to the writer (${share(r.writer, all)}), ${r.replicaFailed} replica failed → writer`;
};

function lagRow(name: string, values: (number | undefined)[], verdict = ''): string[] {
  const got = values.filter((x): x is number => x !== undefined);
  const missing = values.length - got.length;
  if (got.length === 0) return [name, '—', '—', '—', String(missing), verdict];
  return [name, ms(median(got)), ms(percentile(got, 99)), `${ms(Math.min(...got))}–${ms(Math.max(...got))}`, String(missing), verdict];
}

/** The processes' table, indented under its section. */
function nodesTable(nodes: NodeSpan[], extra?: string[]): string {
  const rows = [['process', 'CPU s', 'git requests from the frontend', "replicas' fetch requests served", 'replica rounds (failed)']];
  for (const n of nodes) {
    const r = n.requests;
    const node = n.name !== 'frontend';
    const isReplica = n.name.startsWith('replica');
    rows.push([n.name, n.cpu.toFixed(2), node ? String(r.git) : '—', node && !isReplica ? String(r.replication) : '—', isReplica ? `${r.rounds} (${r.failedRounds})` : '—']);
  }
  if (extra) rows.push(extra);
  return table(rows)
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

export function replicaReport(r: ReplicaResult): string[] {
  const { lag, ryw, storm } = r;
  const pooled = lag.lags.flat();
  const got = pooled.filter((x): x is number => x !== undefined);
  const p99 = got.length === pooled.length ? percentile(got, 99) : Infinity;
  // Per push, the later of the two replicas: when every replica held it.
  const both = lag.lags[0]!.map((_, i) => (lag.lags.some((l) => l[i] === undefined) ? undefined : Math.max(...lag.lags.map((l) => l[i]!))));
  const verdict = `${p99 <= LAG_TARGET_MS ? 'met' : 'missed'} (p99 ≤ ${LAG_TARGET_MS} ms)`;
  const fetches = ryw.rounds;
  const readsPerFetch = (ryw.reads.replica + ryw.reads.writer + ryw.reads.replicaFailed) / fetches;
  const reachedText = storm.reached.map((x, i) => `replica ${i + 1} ${x === undefined ? 'not by its end' : `${ms(x)} ms`}`).join(', ');
  return [
    `4. replicas: a writer and ${REPLICAS} async replicas of shard \`local\` (--replica-interval-seconds 1), each on a data directory of its own; one frontend`,
    '   (pack cache off: every clone and fetch is routed to a node; per-client budgets off). Default settings otherwise (writer: snapshots, maintenance).',
    '',
    `lag after a push: ${r.opts.lagPushes} pushes of one small commit through the frontend, one at a time; ms from \`git push\` exiting 0 to the replica's`,
    '  position (replica_positions) ≥ the refs version read right after the push, PostgreSQL polled every 10 ms (a figure is rounded up to its poll)',
    table([
      ['ms after the push', 'p50', 'p99', 'min–max', `not reached in ${LAG_BOUND_MS / 1000} s`, 'verdict'],
      ...lag.lags.map((l, i) => lagRow(`replica ${i + 1}`, l)),
      lagRow(`all (${pooled.length}: both replicas, every push)`, pooled, verdict),
      lagRow('both replicas (the later, per push)', both),
    ]),
    `  push (client wall time): p50 ${median(lag.pushes).toFixed(2)} s, p99 ${percentile(lag.pushes, 99).toFixed(2)} s. Over the ${r.opts.lagPushes} pushes and waits:`,
    nodesTable(lag.nodes),
    '',
    r.opts.rywDelayMs === 0
      ? `read-your-writes: ${ryw.rounds} rounds of commit, push through the frontend, and at once \`git fetch\` through it from another clone`
      : `read-your-writes: ${ryw.rounds} rounds of commit, push through the frontend, and \`git fetch\` through it from another clone after 0, ${[1, 2, 3, 4].map((k) => ms((k * r.opts.rywDelayMs) / 4)).join(', ')} ms in turn`,
    table([
      ['', 'value', 'target', 'verdict'],
      ['misses (fetched origin/main ≠ the pushed commit)', String(ryw.misses.length), '0', ryw.misses.length === 0 ? 'met' : 'missed'],
      ['reads routed (frontend: gitstratum_routing_reads_total)', readsLine(ryw.reads), '', ''],
      [`fetches (${readsPerFetch.toFixed(1)} reads each): all reads on replicas / all on the writer / both`, `${ryw.allReplica} / ${ryw.allWriter} / ${ryw.mixed}`, '', ''],
      ['push, fetch (client wall time, p50)', `${median(ryw.push).toFixed(2)} s, ${median(ryw.fetch).toFixed(2)} s`, '', ''],
    ]),
    ...(r.opts.rywDelayMs === 0 ? [] : [`  fetches that read from a replica, by wait before the fetch: ${[...ryw.byDelay].map(([d, x]) => `${ms(d)} ms ${x.onReplica}/${x.rounds}`).join(', ')}`]),
    ...ryw.misses.slice(0, 10).map((m) => `  ${m}`),
    '',
    `storm: ${storm.clones} \`git clone --bare --depth 1\` at once through the frontend, started as the push of a new commit exited`,
    `  wall ${storm.wall.toFixed(2)} s; reads: ${readsLine(storm.reads)}`,
    `  the same storm against one \`gitstratum serve\` (SQLite, default settings but the budgets), in this run: wall ${storm.singleNodeWall.toFixed(2)} s; cluster ÷ single node ${(storm.wall / storm.singleNodeWall).toFixed(2)}×`,
    `  the replicas recorded the pushed version (replica_positions.applied_at, ms after the push): ${reachedText}`,
    nodesTable(storm.nodes, ['PostgreSQL', storm.pgCpu.toFixed(2), '', '', '']),
    '',
    'CPU: utime+stime+cutime+cstime of each process tree (git children included), read before and after (after their last git child of the',
    '  span exited, up to 5 s); the storm\'s from just before its push, so the push and the replicas\' rounds after it are in. Git requests',
    '  from the frontend: the node\'s gitstratum_http_requests_total on its repos routes (info/refs, rpc): clones and fetches, and on the writer',
    '  the pushes (2 requests each). Replicas\' fetch requests: the writer\'s replicate routes (a round\'s ls-remote, and its fetch when refs',
    '  differ: 2 requests each). Replica rounds: gitstratum_replica_rounds_total.',
  ];
}
