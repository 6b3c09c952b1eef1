/**
 * Part 3 of `bench:cluster`: a clone storm over two frontends. One storage node (writer of
 * shard `local`; maintenance and snapshots off, so nothing but the storm runs on it) holds the
 * `source` repository, pushed through a frontend and repacked with bitmaps; two frontends with
 * default settings (pack cache on). Each storm follows a push of one new commit (so every
 * cache is cold for it) and sends `--clones` identical `git clone --bare --depth 1
 * --single-branch` at once, alternately to each frontend.
 *
 * What the issue asks: the storage node runs one pack generation. Counted from /metrics: on the
 * node, its pack cache's fetch misses (a miss runs git; a coalesced request shares a running
 * generation; a hit reads a finished one); on each frontend, the same counters of its own
 * cache, whose misses are what reaches the node. A frontend runs no git: the processes seen in
 * the frontends' trees (sampled every 50 ms) and the CPU of children they reaped
 * (cutime+cstime of /proc/<pid>/stat) show it. Wall time is from the first clone's start to
 * the last one's end; server CPU is the three process trees, read when no git child runs.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { partCluster, repoDirOn, repoUrl, SERVING_SHARD, type PartContext, type ServerProcess } from './cluster-processes.js';
import { countByName, reapedChildrenCpuSeconds, sampleProcesses, treeCpuSeconds, waitForTree } from './proc-stats.js';
import { run, stop } from './processes.js';
import { addCommit, repackForServing, type RepoInfo } from './repo-generator.js';
import { spread, table } from './report.js';
import { scrapeMetrics, sumSeries } from './sides.js';

export interface StormOptions {
  storms: number;
  clones: number;
  source: RepoInfo;
}

interface Counts {
  miss: number;
  coalesced: number;
  hit: number;
}

interface StormSample {
  wall: number;
  cpu: number;
  nodeCpu: number;
  /** The storage node's cache, fetches: a miss is a pack generation. */
  node: Counts;
  /** Both frontends' caches, fetches. */
  frontends: Counts;
  /** Distinct processes seen in the frontends' trees, and in the node's (by name). */
  frontendChildren: number;
  nodeChildren: string;
  /** CPU of the children the frontends reaped. */
  frontendReaped: number;
}

export interface StormResult {
  opts: StormOptions;
  samples: StormSample[];
}

const NO_BACKGROUND = ['--maintenance-enabled', 'false', '--snapshots-enabled', 'false'];

async function fetchCounts(procs: ServerProcess[]): Promise<Counts> {
  const out = { miss: 0, coalesced: 0, hit: 0 };
  for (const p of procs) {
    const m = await scrapeMetrics(`${p.url}/metrics`);
    for (const result of ['miss', 'coalesced', 'hit'] as const) out[result] += sumSeries(m, 'gitstratum_pack_cache_requests_total', 'endpoint="fetch"', `result="${result}"`);
  }
  return out;
}

const diff = (a: Counts, b: Counts): Counts => ({ miss: a.miss - b.miss, coalesced: a.coalesced - b.coalesced, hit: a.hit - b.hit });

export async function storm(ctx: PartContext, opts: StormOptions): Promise<StormResult> {
  const { env, say } = ctx;
  const git = (args: string[]) => run('git', args, { env, timeoutMs: 900_000 });
  const started: ServerProcess[] = [];
  try {
    say('storm: starting a storage node and two frontends');
    const c = await partCluster(ctx, 'storm');
    const volume = path.join(ctx.dir, 'node');
    const node = await c.startStorageNode({ dataDir: volume, args: NO_BACKGROUND });
    started.push(node);
    await node.waitForLog(SERVING_SHARD);
    const frontends = [await c.startFrontend(), await c.startFrontend()];
    started.push(...frontends);
    const token = await c.bootstrap();
    const dir = repoDirOn(volume, await c.createRepo('source'));
    const copy = path.join(ctx.dir, 'source-copy.git');
    await git(['clone', '--bare', '--quiet', '--local', opts.source.path, copy]);
    const url = (f: ServerProcess) => repoUrl(f.url, token, 'source');
    say('storm: pushing `source` through a frontend, then repacking it with bitmaps on the storage node');
    await git(['--git-dir', copy, 'push', '--quiet', url(frontends[0]!), '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*']);
    await repackForServing(dir, env);

    const pids = started.map((p) => p.pid);
    const resident = new Set(pids);
    const frontendPids = frontends.map((f) => f.pid);
    const clones = path.join(ctx.dir, 'clones');
    await mkdir(clones, { recursive: true });
    const samples: StormSample[] = [];
    for (let s = 1; s <= opts.storms; s++) {
      const head = await addCommit(copy, env, s);
      await git(['--git-dir', copy, 'push', '--quiet', url(frontends[s % 2]!), 'main']);
      await waitForTree(pids, resident, 120_000);
      const [nodeBefore, frontBefore] = [await fetchCounts([node]), await fetchCounts(frontends)];
      const [cpu0, nodeCpu0, reaped0] = [treeCpuSeconds(pids), treeCpuSeconds([node.pid]), frontendPids.reduce((a, p) => a + reapedChildrenCpuSeconds(p), 0)];
      const frontSampler = sampleProcesses(frontendPids);
      const nodeSampler = sampleProcesses([node.pid]);
      const t0 = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: opts.clones }, async (_, k) => {
          const dest = path.join(clones, `storm-${s}-${k}.git`);
          await git(['-c', 'protocol.version=2', 'clone', '--bare', '--quiet', '--depth', '1', '--single-branch', url(frontends[k % 2]!), dest]);
          const got = (await git(['--git-dir', dest, 'rev-parse', 'HEAD'])).stdout.trim();
          if (got !== head) throw new Error(`storm ${s}, clone ${k}: HEAD ${got}, expected ${head}`);
        }),
      );
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      await waitForTree(pids, resident, 120_000);
      const frontendChildren = frontSampler.stop().size;
      const nodeChildren = countByName(nodeSampler.stop().values());
      const sample: StormSample = {
        wall,
        cpu: treeCpuSeconds(pids) - cpu0,
        nodeCpu: treeCpuSeconds([node.pid]) - nodeCpu0,
        node: diff(await fetchCounts([node]), nodeBefore),
        frontends: diff(await fetchCounts(frontends), frontBefore),
        frontendChildren,
        nodeChildren,
        frontendReaped: frontendPids.reduce((a, p) => a + reapedChildrenCpuSeconds(p), 0) - reaped0,
      };
      samples.push(sample);
      say(
        `storm ${s}/${opts.storms}: ${opts.clones} clones in ${wall.toFixed(2)} s, server CPU ${sample.cpu.toFixed(2)} s (node ${sample.nodeCpu.toFixed(2)} s); ` +
          `node fetches ${fmt(sample.node)}; frontends ${fmt(sample.frontends)}; processes under frontends ${frontendChildren}`,
      );
      await rm(clones, { recursive: true, force: true });
      await mkdir(clones, { recursive: true });
    }
    return { opts, samples };
  } finally {
    for (const p of [...started].reverse()) await stop(p.pid);
  }
}

const fmt = (c: Counts) => `${c.miss} miss / ${c.coalesced} coalesced / ${c.hit} hit`;

export function stormReport(r: StormResult): string[] {
  const rows = [['storm', 'wall s', 'server CPU s', 'of which node s', 'node: pack generations', 'node fetches: miss / coalesced / hit', 'frontends: miss / coalesced / hit', 'processes under frontends', 'processes seen under the node']];
  r.samples.forEach((x, i) => {
    rows.push([
      String(i + 1),
      x.wall.toFixed(2),
      x.cpu.toFixed(2),
      x.nodeCpu.toFixed(2),
      String(x.node.miss),
      fmt(x.node),
      fmt(x.frontends),
      `${x.frontendChildren} (reaped CPU ${x.frontendReaped.toFixed(2)} s)`,
      x.nodeChildren,
    ]);
  });
  const v = (f: (x: StormSample) => number) => r.samples.map(f);
  rows.push(['median [min–max]', spread(v((x) => x.wall), 2), spread(v((x) => x.cpu), 2), spread(v((x) => x.nodeCpu), 2), '', '', '', '', '']);
  const ones = r.samples.filter((x) => x.node.miss === 1).length;
  const none = r.samples.filter((x) => x.frontendChildren === 0 && x.frontendReaped === 0).length;
  return [
    `3. storm: ${r.opts.clones} identical \`git clone --depth 1\` at once over 2 frontends (${r.opts.clones / 2} each), pack cache on; ${r.samples.length} storms, each after a new commit`,
    '   (storage node: maintenance and snapshots off; frontends: default settings)',
    '',
    table(rows),
    '',
    'node fetches: its pack cache\'s fetch requests (each a frontend\'s miss): a miss runs a pack generation, coalesced shares a running one, a hit reads',
    '  a finished one. frontends: both frontends\' caches, the clients\' fetches. Processes under frontends: distinct PIDs seen in their trees every 50 ms;',
    '  processes under the node: the same sampling (short-lived ones may be missed; the miss count is exact).',
    '',
    `target: the storage node runs one pack generation per storm — ${ones}/${r.samples.length} storms: ${ones === r.samples.length ? 'met' : 'missed'}; ` +
      `frontends ran no process in ${none}/${r.samples.length} storms`,
  ];
}
