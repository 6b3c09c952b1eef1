/**
 * Part 2 of `bench:cluster`: what the frontend hop costs. The clone-storm benchmark's `source`
 * repository (bench/repo-generator.ts) is pushed and cloned
 *   (a) through a frontend to a storage node (the writer of shard `local`), and
 *   (b) straight: `gitstratum serve` (role all) on a database of its own in the same PostgreSQL
 *       and a prefix of the same S3 bucket. A storage node itself serves no client (its routes
 *       need the cluster signature), so this is the nearest thing to "straight to the node":
 *       the same git work on the same kind of disk, without the frontend and the internal hop.
 * Pack cache off on all three processes (every clone runs git); maintenance and snapshots off
 * on both sides, so a push's figure is the push alone, not the background work it triggers.
 *
 * Push: every branch and tag into an empty repository, a fresh one each run; run 1's target is
 * then repacked with bitmaps and a commit graph on both sides (as a served repository is) and
 * cloned: `git clone --bare` with protocol v2. Sides alternate A B, B A. Per run: the client's
 * wall time, the CPU of the side's gitstratum process trees (frontend + storage node, or serve;
 * git children included, read when none runs: bench/proc-stats.ts), of which their Node
 * processes, and PostgreSQL's CPU over the same span (its own process tree).
 */
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { startGitstratum } from './gitstratum-server.js';
import { partCluster, repoDirOn, repoUrl, SERVING_SHARD, type PartContext } from './cluster-processes.js';
import type { Postgres } from './postgres.js';
import { ownCpuSeconds, sampleProcesses, treeCpuSeconds, waitForTree } from './proc-stats.js';
import { run, stop } from './processes.js';
import { repackForServing, type RepoInfo } from './repo-generator.js';
import { median, spread, table } from './report.js';

export interface HopOptions {
  runs: number;
  source: RepoInfo;
  pg: Postgres;
}

interface HopSample {
  wall: number;
  cpu: number;
  /** Of which the Node processes themselves, and the frontend's tree (cluster side). */
  node: number;
  front?: number;
  pg: number;
  /** Processes seen in the side's trees (sampled every 25 ms), by name: pushes only. */
  spawned?: Map<string, number>;
}

interface HopSide {
  name: string;
  /** The gitstratum processes of this side (a frontend first). */
  pids: number[];
  frontend?: number;
  url(repo: string): string;
  /** Creates alice/bench/<repo>; returns its directory on disk. */
  create(repo: string): Promise<string>;
}

export interface HopResult {
  runs: number;
  source: RepoInfo;
  /** `${operation} ${side}` → samples */
  cells: Map<string, HopSample[]>;
  sides: string[];
}

const OPERATIONS = ['full clone (v2)', 'push (to empty)'] as const;
const TARGETS: Record<(typeof OPERATIONS)[number], number> = { 'full clone (v2)': 1.05, 'push (to empty)': 1.1 };
const OFF = ['--pack-cache-enabled', 'false', '--maintenance-enabled', 'false', '--snapshots-enabled', 'false'];
const CLUSTER_SIDE = 'frontend → storage node';
const STRAIGHT_SIDE = 'straight (serve, role all)';

async function measure(side: HopSide, pg: Postgres, action: () => Promise<number>, opts: { sample?: boolean } = {}): Promise<HopSample> {
  const resident = new Set(side.pids);
  await waitForTree(side.pids, resident, 120_000);
  const front = () => (side.frontend === undefined ? 0 : treeCpuSeconds([side.frontend]));
  const [cpu0, node0, front0, pg0] = [treeCpuSeconds(side.pids), ownCpuSeconds(side.pids), front(), pg.cpuSeconds()];
  const sampler = opts.sample ? sampleProcesses(side.pids, 25) : undefined;
  const wall = await action();
  await waitForTree(side.pids, resident, 120_000);
  const seen = sampler?.stop();
  const spawned = seen && new Map<string, number>();
  for (const name of seen?.values() ?? []) spawned!.set(name, (spawned!.get(name) ?? 0) + 1);
  return {
    wall,
    cpu: treeCpuSeconds(side.pids) - cpu0,
    node: ownCpuSeconds(side.pids) - node0,
    ...(side.frontend !== undefined && { front: front() - front0 }),
    pg: pg.cpuSeconds() - pg0,
    ...(spawned && { spawned }),
  };
}

/** Reads every pack of the repository once, so both sides start with it in the page cache. */
async function warm(dir: string): Promise<void> {
  const packs = path.join(dir, 'objects', 'pack');
  for (const name of await readdir(packs)) {
    await pipeline(createReadStream(path.join(packs, name), { highWaterMark: 1 << 20 }), new Writable({ write: (_c, _e, done) => done() }));
  }
}

export async function hop(ctx: PartContext, opts: HopOptions): Promise<HopResult> {
  const { env, say } = ctx;
  const { pg, source } = opts;
  const git = (args: string[]) => run('git', args, { env, timeoutMs: 900_000 });
  const pids: number[] = [];
  try {
    say('hop: starting a storage node and a frontend, and `gitstratum serve` (pack cache, maintenance and snapshots off)');
    const c = await partCluster(ctx, 'hop');
    const volume = path.join(ctx.dir, 'node');
    const node = await c.startStorageNode({ dataDir: volume, args: OFF });
    pids.push(node.pid);
    await node.waitForLog(SERVING_SHARD);
    const frontend = await c.startFrontend(['--pack-cache-enabled', 'false']);
    pids.unshift(frontend.pid);
    const token = await c.bootstrap();
    const clusterSide: HopSide = {
      name: CLUSTER_SIDE,
      pids: [frontend.pid, node.pid],
      frontend: frontend.pid,
      url: (repo) => repoUrl(frontend.url, token, repo),
      create: async (repo) => repoDirOn(volume, await c.createRepo(repo)),
    };
    const straightEnv = { ...env, ...ctx.storeEnv('hop-straight/'), GITSTRATUM_DATABASE_URL: await ctx.createDatabase('hop_straight') };
    const straight = await startGitstratum(ctx.root, path.join(ctx.dir, 'straight'), straightEnv, OFF);
    pids.push(straight.pid);
    const straightSide: HopSide = { name: STRAIGHT_SIDE, pids: [straight.pid], url: (repo) => `${straight.authUrl}/alice/bench/${repo}.git`, create: (repo) => straight.createRepo(repo) };
    const sides = [clusterSide, straightSide];
    const ordered = (i: number) => (i % 2 ? sides : [...sides].reverse());
    const cells = new Map<string, HopSample[]>();
    const record = (op: string, side: HopSide, s: HopSample) => {
      cells.set(`${op} ${side.name}`, [...(cells.get(`${op} ${side.name}`) ?? []), s]);
      const spawned = s.spawned ? `; processes seen: ${[...s.spawned].map(([name, n]) => `${n} ${name}`).join(', ')}` : '';
      say(`hop: ${op} ${side.name}: ${s.wall.toFixed(2)} s, CPU ${s.cpu.toFixed(2)} s (Node ${s.node.toFixed(2)} s), PostgreSQL ${s.pg.toFixed(2)} s${spawned}`);
    };

    const refsOf = async (dir: string) => (await git(['--git-dir', dir, 'for-each-ref', '--format=%(objectname) %(refname)'])).stdout;
    const sourceRefs = await refsOf(source.path);
    await warm(source.path);
    const served = new Map<HopSide, string>();
    for (let i = 1; i <= opts.runs; i++) {
      for (const side of ordered(i)) {
        const name = i === 1 ? 'big' : `push-${i}`;
        const dir = await side.create(name);
        if (i === 1) served.set(side, dir);
        const s = await measure(side, pg, async () => (await git(['--git-dir', source.path, 'push', '--quiet', side.url(name), '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*'])).seconds, {
          sample: true,
        });
        if ((await refsOf(dir)) !== sourceRefs) throw new Error(`${side.name}: pushed refs differ from the source's`);
        record(OPERATIONS[1], side, s);
      }
    }

    say('hop: repacking the first push on both sides with bitmaps and a commit graph');
    for (const dir of served.values()) {
      await repackForServing(dir, env);
      await warm(dir);
    }
    const clones = path.join(ctx.dir, 'clones');
    await mkdir(clones, { recursive: true });
    const cloneOnce = async (side: HopSide, tag: string) => {
      const dest = path.join(clones, tag);
      const r = await git(['-c', 'protocol.version=2', 'clone', '--bare', '--quiet', side.url('big'), dest]);
      const head = (await git(['--git-dir', dest, 'rev-parse', 'HEAD'])).stdout.trim();
      await rm(dest, { recursive: true, force: true });
      if (head !== source.head) throw new Error(`${side.name}: cloned HEAD ${head}, expected ${source.head}`);
      return r.seconds;
    };
    for (const side of sides) await cloneOnce(side, `warm-up-${sides.indexOf(side)}`);
    for (let i = 1; i <= opts.runs; i++) {
      for (const side of ordered(i)) record(OPERATIONS[0], side, await measure(side, pg, () => cloneOnce(side, `clone-${i}`)));
    }
    return { runs: opts.runs, source, cells, sides: sides.map((x) => x.name) };
  } finally {
    for (const pid of pids) await stop(pid);
  }
}

export function hopReport(r: HopResult): string[] {
  const MiB = 1024 * 1024;
  const rows = [['operation', 'path', 'wall s', 'server CPU s', 'of which Node s', 'of which frontend s', 'PostgreSQL CPU s', 'processes seen per run (median)']];
  for (const op of OPERATIONS) {
    r.sides.forEach((side, i) => {
      const v = r.cells.get(`${op} ${side}`) ?? [];
      if (v.length === 0) return;
      const fronts = v.flatMap((x) => (x.front === undefined ? [] : [x.front]));
      // Named processes only ('?': gone before its name was read), and those of most runs.
      const names = [...new Set(v.flatMap((x) => [...(x.spawned?.keys() ?? [])]))].filter((name) => name !== '?');
      const spawned = names
        .map((name) => [name, median(v.map((x) => x.spawned?.get(name) ?? 0))] as const)
        .filter(([, n]) => n > 0)
        .sort((a, b) => b[1] - a[1])
        .map(([name, n]) => `${n} ${name}`)
        .join(', ');
      rows.push([
        i === 0 ? op : '',
        side,
        spread(v.map((x) => x.wall), 2),
        spread(v.map((x) => x.cpu), 2),
        spread(v.map((x) => x.node), 2),
        fronts.length > 0 ? spread(fronts, 2) : '—',
        spread(v.map((x) => x.pg), 2),
        v.some((x) => x.spawned) ? spawned || 'none' : 'not sampled',
      ]);
    });
  }
  const ratios = [['operation', 'wall', 'server CPU', 'Node CPU', 'target (wall)', 'verdict']];
  for (const op of OPERATIONS) {
    const [a, b] = r.sides.map((side) => r.cells.get(`${op} ${side}`) ?? []);
    if (!a?.length || !b?.length) continue;
    const ratio = (f: (x: HopSample) => number) => median(a.map(f)) / median(b.map(f));
    const wall = ratio((x) => x.wall);
    ratios.push([op, `${wall.toFixed(3)}×`, `${ratio((x) => x.cpu).toFixed(2)}×`, `${ratio((x) => x.node).toFixed(2)}×`, `≤ ${TARGETS[op].toFixed(2)}×`, wall <= TARGETS[op] ? 'met' : 'missed']);
  }
  return [
    `2. the frontend hop: ${r.source.commits} commits, ${r.source.objects} objects, ${(r.source.packBytes / MiB).toFixed(1)} MiB of pack (\`source\`); median [min–max] of ${r.runs} runs, sides alternated`,
    '   "straight" is `gitstratum serve` (role all) on its own database in the same PostgreSQL and S3: a storage node serves no client without the',
    '   cluster signature. Pack cache, maintenance and snapshots off on both sides.',
    '',
    table(rows),
    '',
    "server CPU: utime+stime+cutime+cstime of the side's gitstratum process trees (frontend + storage node, or serve), git children and hooks",
    '  included, read when no git child runs; of which Node: those processes themselves; of which frontend: its whole tree. PostgreSQL: its',
    '  whole tree over the same span. Processes seen: below the side\'s gitstratum processes, sampled every 25 ms during pushes, by name (a',
    '  hook is its script, e.g. `reference-trans[action]`, then a `node` process, hook-relay.js; short-lived ones fall between samples).',
    '',
    `ratios, ${CLUSTER_SIDE} ÷ straight (medians)`,
    table(ratios),
  ];
}
