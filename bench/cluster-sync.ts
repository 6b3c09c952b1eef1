/**
 * Part 5 of `bench:cluster`: the synchronous standby (issue 11; docs/design/replication.md). One
 * frontend and two shards on the part's database and bucket prefix: `plain`, a writer alone, and
 * `syncd`, a writer and a synchronous replica (`--replica sync`), each storage node on a data
 * directory of its own. Default settings but the frontend's per-client budgets (off: every
 * client is alice, from 127.0.0.1) and the storage nodes' lease (`--lease-seconds`).
 *
 * 1. Push latency: `--sync-pushes` rounds, each pushing one small commit to a repository of each
 *    shard through the frontend, in alternating order; client wall time per push, p50 and p99
 *    per shard and their ratio (target ≤ 1.3×).
 * 2. Failover with the writer's disk gone, `--sync-trials` times: 2 clients push small commits in
 *    a loop to their own branches of `syncd`'s repository, keeping a ledger of each one's last
 *    acknowledged commit; once 10 pushes were acknowledged in the trial, the writer is killed with
 *    SIGKILL and its data directory renamed away, the clients stop, and a probe pushes through
 *    the frontend every 100 ms until one succeeds: seconds from the kill to that success. Before
 *    the probe, each client's last acknowledged commit must be in its branch on the standby's
 *    disk (nothing pushed since could carry it there). Then a new synchronous replica starts on a
 *    fresh data directory for the next trial, and the standby that took over is its writer.
 *
 * A benchmark, not a test: it prints figures and verdicts, and fails only when something it needs
 * does not happen (a node that never serves, no acknowledged push).
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { partCluster, repoDirOn, repoUrl, SERVING_SHARD, type PartContext, type ServerProcess } from './cluster-processes.js';
import { run, stop } from './processes.js';
import { median, percentile, table } from './report.js';
import { scrapeMetrics, sumSeries } from './sides.js';

export interface SyncOptions {
  pushes: number;
  trials: number;
  leaseSeconds: number;
}

export interface SyncResult {
  opts: SyncOptions;
  plain: number[];
  synced: number[];
  /** The syncd writer's wait for its standby over the latency part: ref transactions held, and their mean wait in seconds. */
  hold: { count: number; meanSeconds: number };
  trials: { toPush: number; acknowledged: number; lost: number }[];
}

const FRONTEND_ARGS = ['--rate-limit-git-requests', '0', '--max-concurrent-git-per-client', '0'];
const WAITS_FOR_REPLICA = 'pushes wait for this synchronous replica';

/** One client's work tree: commits one file change and pushes it to its branch. */
class Client {
  private n = 0;
  constructor(
    readonly dir: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly url: string,
    readonly ref: string,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await run('git', ['-C', this.dir, 'init', '-q', '-b', 'main'], { env: this.env });
  }

  /** A new commit, pushed; its id and wall seconds when acknowledged, undefined when git reported a failure. */
  async push(): Promise<{ sha: string; seconds: number } | undefined> {
    this.n++;
    await writeFile(path.join(this.dir, 'change.txt'), `${this.ref} ${this.n}\n`);
    await run('git', ['-C', this.dir, 'add', 'change.txt'], { env: this.env });
    await run('git', ['-C', this.dir, 'commit', '-q', '-m', `change ${this.n}`], { env: this.env });
    const sha = (await run('git', ['-C', this.dir, 'rev-parse', 'HEAD'], { env: this.env })).stdout.trim();
    const r = await run('git', ['-C', this.dir, 'push', '--quiet', this.url, `HEAD:${this.ref}`], { env: this.env, check: false, timeoutMs: 120_000 });
    return r.code === 0 ? { sha, seconds: r.seconds } : undefined;
  }
}

export async function sync(ctx: PartContext, opts: SyncOptions): Promise<SyncResult> {
  const { env, say } = ctx;
  const clientEnv = { ...env, GIT_AUTHOR_NAME: 'Bench', GIT_AUTHOR_EMAIL: 'bench@example.com', GIT_COMMITTER_NAME: 'Bench', GIT_COMMITTER_EMAIL: 'bench@example.com' };
  const started: ServerProcess[] = [];
  const nodeArgs = ['--shard-lease-seconds', String(opts.leaseSeconds)];
  try {
    say('sync: a writer of shard plain; a writer and a synchronous replica of shard syncd; a frontend');
    const c = await partCluster(ctx, 'sync');
    const node = async (shard: string, name: string, extra: string[] = []) => {
      const n = await c.startStorageNode({ shard, dataDir: path.join(ctx.dir, name), args: [...nodeArgs, ...extra] });
      started.push(n);
      return n;
    };
    // The shards exist before their nodes register.
    await c.cli('shard', 'create', 'plain');
    await c.cli('shard', 'create', 'syncd');
    const plainWriter = await node('plain', 'plain-writer');
    let writer = await node('syncd', 'syncd-writer-0');
    await Promise.all([plainWriter.waitForLog(SERVING_SHARD), writer.waitForLog(SERVING_SHARD)]);
    // Default settings for the standby of the latency part; the trials' new standbys pass every
    // second, so each holds the repository's refs before its trial.
    let standby = await node('syncd', 'syncd-replica-0', ['--replica', 'sync']);
    await writer.waitForLog(WAITS_FOR_REPLICA, 60_000);
    const frontend = await c.startFrontend(FRONTEND_ARGS);
    started.push(frontend);
    await c.cli('user', 'create', 'alice');
    const token = (await c.cli('token', 'create', 'alice', '--scope', 'write')).trim().split('\n').pop()!;
    const ids = new Map<string, string>();
    for (const shard of ['plain', 'syncd']) {
      await c.cli('space', 'create', `alice/${shard}`);
      await c.cli('shard', 'pin', `alice/${shard}`, shard);
      ids.set(shard, (JSON.parse(await c.cli('repo', 'create', `alice/${shard}/r`, '--json')) as { id: string }).id);
    }
    const url = (shard: string) => repoUrl(frontend.url, token, 'r').replace('/alice/bench/', `/alice/${shard}/`);

    // 1. Push latency, the two shards in alternating order; one untimed push each first.
    const clients = { plain: new Client(path.join(ctx.dir, 'c-plain'), clientEnv, url('plain'), 'refs/heads/main'), syncd: new Client(path.join(ctx.dir, 'c-syncd'), clientEnv, url('syncd'), 'refs/heads/main') };
    for (const cl of Object.values(clients)) {
      await cl.init();
      if (!(await cl.push())) throw new Error('sync: the first push failed');
    }
    const plain: number[] = [];
    const synced: number[] = [];
    const holdAt = async () => {
      const m = await scrapeMetrics(`${writer.url}/metrics`);
      return { count: sumSeries(m, 'gitstratum_sync_hold_seconds_count'), sum: sumSeries(m, 'gitstratum_sync_hold_seconds_sum') };
    };
    const holdBefore = await holdAt();
    for (let i = 1; i <= opts.pushes; i++) {
      const order = i % 2 === 0 ? (['plain', 'syncd'] as const) : (['syncd', 'plain'] as const);
      for (const shard of order) {
        const r = await clients[shard].push();
        if (!r) throw new Error(`sync: a push to ${shard} failed`);
        (shard === 'plain' ? plain : synced).push(r.seconds);
      }
      if (i % 25 === 0 || i === opts.pushes) say(`sync latency: ${i}/${opts.pushes} rounds; p50 plain ${median(plain).toFixed(3)} s, sync ${median(synced).toFixed(3)} s`);
    }

    const holdAfter = await holdAt();
    const held = holdAfter.count - holdBefore.count;
    const hold = { count: held, meanSeconds: held > 0 ? (holdAfter.sum - holdBefore.sum) / held : NaN };

    // 2. Failover with the writer's disk gone.
    const trials: SyncResult['trials'] = [];
    const pushers = [0, 1].map((p) => new Client(path.join(ctx.dir, `f-${p}`), clientEnv, url('syncd'), `refs/heads/f${p}`));
    for (const p of pushers) await p.init();
    const probe = new Client(path.join(ctx.dir, 'f-probe'), clientEnv, url('syncd'), 'refs/heads/probe');
    await probe.init();
    for (let t = 1; t <= opts.trials; t++) {
      const last = new Map<Client, string>();
      let acknowledged = 0;
      let running = true;
      const loops = pushers.map(async (p) => {
        while (running) {
          const r = await p.push();
          if (r) {
            last.set(p, r.sha);
            acknowledged++;
          } else await sleep(100);
        }
      });
      for (const deadline = Date.now() + 120_000; acknowledged < 10 && Date.now() < deadline; ) await sleep(20);
      if (acknowledged < 10) throw new Error(`sync: trial ${t}: fewer than 10 pushes acknowledged in 120 s`);
      const killedAt = performance.now();
      writer.kill9();
      await rename(writer.dataDir, `${writer.dataDir}-lost`);
      running = false;
      await Promise.all(loops);
      await standby.waitForLog(SERVING_SHARD, 120_000);
      let lost = 0;
      for (const [p, sha] of last) {
        const dir = repoDirOn(standby.dataDir, ids.get('syncd')!);
        const ok = await run('git', ['--git-dir', dir, 'merge-base', '--is-ancestor', sha, p.ref], { env, check: false });
        if (ok.code !== 0) lost++;
      }
      let toPush: number | undefined;
      for (const deadline = Date.now() + 120_000; toPush === undefined && Date.now() < deadline; ) {
        if (await probe.push()) toPush = (performance.now() - killedAt) / 1000;
        else await sleep(100);
      }
      if (toPush === undefined) throw new Error(`sync: trial ${t}: no push succeeded within 120 s of the kill`);
      trials.push({ toPush, acknowledged, lost });
      say(`sync failover: trial ${t}/${opts.trials}: first push ${toPush.toFixed(2)} s after the kill; ${acknowledged} acknowledged, ${lost} lost`);
      // The standby writes now; a new synchronous replica on a fresh disk for the next trial.
      await stop(writer.pid);
      writer = standby;
      if (t < opts.trials) {
        standby = await node('syncd', `syncd-replica-${t}`, ['--replica', 'sync', '--replica-interval-seconds', '1']);
        await standby.waitForLog('replica following the shard writer', 60_000);
        for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
          const held = await run('git', ['--git-dir', repoDirOn(standby.dataDir, ids.get('syncd')!), 'rev-parse', '--verify', '-q', 'refs/heads/probe'], { env, check: false });
          if (held.code === 0) break;
        }
        // The writer connects to its new replica within a second or two (its refresh).
        await sleep(3000);
      }
    }
    return { opts, plain, synced, hold, trials };
  } finally {
    for (const p of [...started].reverse()) await stop(p.pid);
  }
}

export function syncReport(r: SyncResult): string[] {
  const f = (n: number, d = 3) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
  const ratio50 = median(r.synced) / median(r.plain);
  const ratio99 = percentile(r.synced, 99) / percentile(r.plain, 99);
  const toPush = r.trials.map((t) => t.toPush);
  const lost = r.trials.reduce((n, t) => n + t.lost, 0);
  return [
    `5. synchronous standby: shard plain (a writer alone) and shard syncd (a writer and a --replica sync), one frontend; lease ${r.opts.leaseSeconds} s`,
    '',
    `push latency: ${r.opts.pushes} rounds of one small commit pushed to each shard through the frontend, in alternating order; client wall seconds`,
    table([
      ['shard', 'p50 s', 'p99 s', 'min–max s'],
      ['plain (no standby)', f(median(r.plain)), f(percentile(r.plain, 99)), `${f(Math.min(...r.plain))}–${f(Math.max(...r.plain))}`],
      ['syncd (sync standby)', f(median(r.synced)), f(percentile(r.synced, 99)), `${f(Math.min(...r.synced))}–${f(Math.max(...r.synced))}`],
      ['ratio syncd ÷ plain', `${f(ratio50, 2)}×`, `${f(ratio99, 2)}×`, `target ≤ 1.3×: ${ratio50 <= 1.3 && ratio99 <= 1.3 ? 'met' : 'MISSED'}`],
    ]),
    `  the syncd writer waited for its standby ${r.hold.count} times (once per ref transaction), ${f(r.hold.meanSeconds * 1000, 0)} ms on average (gitstratum_sync_hold_seconds)`,
    '',
    `failover with the writer's disk gone: ${r.trials.length} trials; 2 clients pushing in a loop, SIGKILL of the writer after 10 acknowledged pushes, its data directory renamed away`,
    table([
      ['measure', 'value', 'target', 'verdict'],
      ['seconds from the kill to the first successful push (p50, p99, max)', `${f(median(toPush), 2)}, ${f(percentile(toPush, 99), 2)}, ${f(Math.max(...toPush), 2)}`, '', ''],
      ['acknowledged pushes in the trials', String(r.trials.reduce((n, t) => n + t.acknowledged, 0)), '', ''],
      ["clients' last acknowledged commits missing on the standby", String(lost), '0', lost === 0 ? 'met' : 'MISSED'],
    ]),
  ];
}
