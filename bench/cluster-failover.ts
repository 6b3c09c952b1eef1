/**
 * Part 1 of `bench:cluster`: same-volume failover of a shard's writer (issue 10). One frontend,
 * a writer and a standby of shard `local` on one data directory (the volume a cloud would move
 * to the standby), default settings but for the lease (`--lease-seconds`) and the frontend's
 * per-address request budget (off: every client of the benchmark comes from 127.0.0.1).
 *
 * Pushers (`--pushers`, default 3) commit and push in a loop through the frontend, each to its
 * own branch of one of two repositories, keeping a ledger of every acknowledged ref update
 * (`git push` exited 0). Each trial: the pushers run, one baseline push probe and clone probe
 * are timed with no failover, the writer is killed with SIGKILL, and two probes separate from
 * the pushers retry every 100 ms until one push and one clone through the frontend succeed; the
 * times are from the kill to each probe's success (the probe's own duration included, which the
 * baseline shows). The clone probe clones a repository the pushers changed after the last
 * clone, so the frontend's cache cannot answer it without the storage node (counted anyway).
 * Then the pushers stop and every update acknowledged in the trial is looked for ref by ref in
 * the ref's reflog on the volume (core.logAllRefUpdates is on: an update whose ref transaction
 * was lost is missing there, even when a later push carried its commit), the last acknowledged
 * commit of each ref must be in it, and both repositories must pass `git fsck` (once the new
 * writer's maintenance is idle). The killed node comes back as the next trial's standby.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { partCluster, repoDirOn, repoUrl, SERVING_SHARD, type PartContext, type ServerProcess } from './cluster-processes.js';
import { run, stop } from './processes.js';
import { median, percentile, table } from './report.js';
import { scrapeMetrics, sumSeries, waitMaintenanceIdle } from './sides.js';

export interface FailoverOptions {
  trials: number;
  pushers: number;
  leaseSeconds: number;
}

interface Ack {
  repo: string;
  ref: string;
  sha: string;
}

interface Trial {
  /** Seconds from the kill: the new writer's "serving" log line, the first push and clone that succeeded. */
  serving: number;
  push: number;
  clone: number;
  pushAttempts: number;
  cloneAttempts: number;
  /** Baseline probes just before the kill, seconds. */
  basePush: number;
  baseClone: number;
  acked: number;
  failed: number;
  lost: string[];
  corrupt: string[];
  /** Clone probes the frontend answered from its cache (fetch hits during the probes). */
  cacheHits: number;
}

export interface FailoverResult {
  opts: FailoverOptions;
  trials: Trial[];
}

const PROBE_BOUND_MS = 120_000;
const REPOS = ['r0', 'r1'];
/** The clone probe's repository (pushers change it all the time); the push probe pushes to the other. */
const CLONE_REPO = 'r0';
const PUSH_REPO = 'r1';

/** A work tree that makes one small commit at a time. */
class Committer {
  private n = 0;
  constructor(
    readonly dir: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly tag: string,
  ) {}

  private git(args: string[]) {
    return run('git', ['-C', this.dir, ...args], { env: this.env, timeoutMs: 60_000 });
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.git(['init', '-q', '-b', 'main']);
    await this.commit();
  }

  /** A new commit changing one file; returns its id. */
  async commit(): Promise<string> {
    this.n++;
    await writeFile(path.join(this.dir, `${this.tag}.txt`), `${this.tag} change ${this.n}\n`);
    await this.git(this.n === 1 ? ['add', '-A'] : ['add', '-u']);
    await this.git(['commit', '-q', '-m', `${this.tag} ${this.n}`]);
    return (await this.git(['rev-parse', 'HEAD'])).stdout.trim();
  }
}

interface Pushers {
  acked: number;
  failed: number;
  /** Acknowledged updates not yet verified. */
  unverified: Ack[];
  /** Acknowledged pushes to each repository, for "has it changed since". */
  ackedOn: Map<string, number>;
  stop(): Promise<void>;
}

function startPushers(clients: { committer: Committer; repo: string; ref: string }[], url: (repo: string) => string, env: NodeJS.ProcessEnv, ledger: Pushers | undefined): Pushers {
  const state: Pushers = ledger ?? { acked: 0, failed: 0, unverified: [], ackedOn: new Map(), stop: async () => {} };
  let running = true;
  const loops = clients.map(async ({ committer, repo, ref }) => {
    while (running) {
      const sha = await committer.commit();
      const r = await run('git', ['-C', committer.dir, 'push', '--quiet', '--force', url(repo), `HEAD:${ref}`], { env, check: false, timeoutMs: 120_000 });
      if (r.code === 0) {
        state.acked++;
        state.unverified.push({ repo, ref, sha });
        state.ackedOn.set(repo, (state.ackedOn.get(repo) ?? 0) + 1);
      } else {
        state.failed++;
        await sleep(100);
      }
    }
  });
  state.stop = async () => {
    running = false;
    await Promise.all(loops);
  };
  return state;
}

/** Retries `attempt` every 100 ms until it succeeds; seconds from `t0` (performance.now()) to that success. */
async function untilOk(t0: number, attempt: () => Promise<boolean>): Promise<{ seconds: number; attempts: number }> {
  for (let attempts = 1; ; attempts++) {
    if (await attempt()) return { seconds: (performance.now() - t0) / 1000, attempts };
    if (performance.now() - t0 > PROBE_BOUND_MS) throw new Error(`no success within ${PROBE_BOUND_MS / 1000} s of the kill (${attempts} attempts)`);
    await sleep(100);
  }
}

async function waitFor(what: string, boundMs: number, done: () => boolean): Promise<void> {
  for (const deadline = Date.now() + boundMs; !done(); await sleep(50)) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${boundMs / 1000} s`);
  }
}

/** Every acknowledged update in its ref's reflog on disk, and each ref's last one in the ref. */
async function verify(acks: Ack[], dirOf: (repo: string) => string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const lost: string[] = [];
  const byRef = new Map<string, Ack[]>();
  for (const a of acks) byRef.set(`${a.repo} ${a.ref}`, [...(byRef.get(`${a.repo} ${a.ref}`) ?? []), a]);
  for (const list of byRef.values()) {
    const { repo, ref } = list[0]!;
    const dir = dirOf(repo);
    const logged = new Set(
      (await readFile(path.join(dir, 'logs', ref), 'utf8').catch(() => ''))
        .split('\n')
        .map((line) => line.split(' ')[1])
        .filter(Boolean),
    );
    for (const a of list) if (!logged.has(a.sha)) lost.push(`${repo} ${ref} ${a.sha}: not in the reflog`);
    const last = list[list.length - 1]!.sha;
    const ancestor = await run('git', ['--git-dir', dir, 'merge-base', '--is-ancestor', last, ref], { env, check: false });
    if (ancestor.code !== 0) lost.push(`${repo} ${ref}: last acknowledged ${last} is not in the ref`);
  }
  return lost;
}

export async function failover(ctx: PartContext, opts: FailoverOptions): Promise<FailoverResult> {
  const { env, say } = ctx;
  const c = await partCluster(ctx, 'failover');
  const lease = ['--shard-lease-seconds', String(opts.leaseSeconds)];
  const volume = path.join(ctx.dir, 'volume');
  const nodes: ServerProcess[] = [];
  const node = async () => {
    const n = await c.startStorageNode({ dataDir: volume, args: lease });
    nodes.push(n);
    return n;
  };
  let frontend: ServerProcess | undefined;
  let writer: ServerProcess | undefined;
  const clientEnv = { ...env, GIT_AUTHOR_NAME: 'Bench', GIT_AUTHOR_EMAIL: 'bench@example.com', GIT_COMMITTER_NAME: 'Bench', GIT_COMMITTER_EMAIL: 'bench@example.com' };
  const trials: Trial[] = [];
  let pushers: Pushers | undefined;
  try {
    writer = await node();
    await writer.waitForLog(SERVING_SHARD);
    let standby = await node();
    frontend = await c.startFrontend([...lease, '--rate-limit-git-requests', '0']);
    const front = frontend;
    const token = await c.bootstrap();
    const dirs = new Map<string, string>();
    for (const name of REPOS) dirs.set(name, repoDirOn(volume, await c.createRepo(name)));
    const dirOf = (repo: string) => dirs.get(repo)!;
    const url = (repo: string) => repoUrl(front.url, token, repo);

    const work = path.join(ctx.dir, 'clients');
    const clients = Array.from({ length: opts.pushers }, (_, p) => ({ committer: new Committer(path.join(work, `p${p}`), clientEnv, `p${p}`), repo: REPOS[p % REPOS.length]!, ref: `refs/heads/p${p}` }));
    const probe = new Committer(path.join(work, 'probe'), clientEnv, 'probe');
    for (const cl of [...clients.map((x) => x.committer), probe]) await cl.init();
    let clones = 0;
    const cloneOnce = async () => {
      const dest = path.join(work, `clone-${++clones}.git`);
      const r = await run('git', ['clone', '--bare', '--quiet', url(CLONE_REPO), dest], { env: clientEnv, check: false, timeoutMs: 60_000 });
      await rm(dest, { recursive: true, force: true });
      return r;
    };
    let probeAcks: Ack[] = [];
    const pushOnce = async (sha: string) => {
      const r = await run('git', ['-C', probe.dir, 'push', '--quiet', '--force', url(PUSH_REPO), 'HEAD:refs/heads/probe'], { env: clientEnv, check: false, timeoutMs: 60_000 });
      if (r.code === 0) probeAcks.push({ repo: PUSH_REPO, ref: 'refs/heads/probe', sha });
      return r;
    };
    const fetchHits = async () => sumSeries(await scrapeMetrics(`${front.url}/metrics`), 'gitstratum_pack_cache_requests_total', 'endpoint="fetch"', 'result="hit"');

    for (let t = 1; t <= opts.trials; t++) {
      // Pushers at work, then the baseline probes, then one more push to the clone probe's repository.
      pushers = startPushers(clients, url, clientEnv, pushers);
      const [acked0, failed0] = [pushers.acked, pushers.failed];
      const since = Date.now();
      await waitFor('pushes acknowledged before the kill', 60_000, () => pushers!.acked - acked0 >= opts.pushers && Date.now() - since >= 1500);
      const basePush = await pushOnce(await probe.commit());
      const baseClone = await cloneOnce();
      if (basePush.code !== 0 || baseClone.code !== 0) throw new Error(`trial ${t}: a baseline probe failed: ${basePush.stderr}${baseClone.stderr}`);
      const onCloneRepo = pushers.ackedOn.get(CLONE_REPO) ?? 0;
      await waitFor(`a push to ${CLONE_REPO} after the baseline clone`, 30_000, () => (pushers!.ackedOn.get(CLONE_REPO) ?? 0) > onCloneRepo);
      let pending: string | undefined = await probe.commit();
      const hitsBefore = await fetchHits();

      const killedAt = Date.now();
      const t0 = performance.now();
      writer!.kill9();
      const [push, clone] = await Promise.all([
        untilOk(t0, async () => {
          const sha = pending ?? (await probe.commit());
          pending = undefined;
          return (await pushOnce(sha)).code === 0;
        }),
        untilOk(t0, async () => (await cloneOnce()).code === 0),
      ]);
      // pino's time: an ISO string (or epoch milliseconds, its own default).
      const servingLine = await standby.waitForLog(SERVING_SHARD, PROBE_BOUND_MS);
      const serving = (new Date(servingLine['time'] as string | number).getTime() - killedAt) / 1000;
      const cacheHits = (await fetchHits()) - hitsBefore;
      // The pushers go on against the new writer (one of them acknowledged), then stop for the checks.
      const after = pushers.acked;
      await waitFor('pushes acknowledged after the takeover', 60_000, () => pushers!.acked > after);
      await pushers.stop();
      const acks = [...pushers.unverified, ...probeAcks];
      pushers.unverified = [];
      probeAcks = [];
      const lost = await verify(acks, dirOf, clientEnv);
      writer = standby;
      // The killed node comes back, as the next trial's standby, while the new writer's
      // maintenance (5 s after the last push) runs: fsck once nothing else works in the repositories.
      const comeback = node();
      comeback.catch(() => {}); // awaited below; a failure there is reported there
      await waitMaintenanceIdle(`${writer.url}/metrics`, 300_000);
      const corrupt: string[] = [];
      for (const [name, dir] of dirs) {
        const r = await run('git', ['--git-dir', dir, 'fsck', '--no-progress'], { env: clientEnv, check: false, timeoutMs: 300_000 });
        if (r.code !== 0 || r.stdout.trim() !== '') corrupt.push(`${name}: ${(r.stdout + r.stderr).trim().split('\n').slice(0, 3).join('; ')}`);
      }
      standby = await comeback;

      const trial: Trial = {
        serving,
        push: push.seconds,
        clone: clone.seconds,
        pushAttempts: push.attempts,
        cloneAttempts: clone.attempts,
        basePush: basePush.seconds,
        baseClone: baseClone.seconds,
        acked: pushers.acked - acked0,
        failed: pushers.failed - failed0,
        lost,
        corrupt,
        cacheHits,
      };
      trials.push(trial);
      say(
        `failover ${t}/${opts.trials}: serving ${serving.toFixed(2)} s, push ${push.seconds.toFixed(2)} s (${push.attempts} attempts), clone ${clone.seconds.toFixed(2)} s ` +
          `(${clone.attempts}); baseline push ${trial.basePush.toFixed(2)} s, clone ${trial.baseClone.toFixed(2)} s; ${trial.acked} acknowledged, ${trial.failed} failed, ` +
          `lost ${lost.length}, corrupt ${corrupt.length}${[...lost, ...corrupt].length ? `: ${[...lost, ...corrupt].slice(0, 5).join('; ')}` : ''}`,
      );
    }
  } finally {
    await pushers?.stop();
    // Frontend first, then the standbys (none takes over a writer that is stopping), then the writer.
    for (const p of [frontend, ...nodes.filter((n) => n !== writer), writer]) if (p) await stop(p.pid);
  }
  return { opts, trials };
}

const s = (x: number) => x.toFixed(2);

export function failoverReport(r: FailoverResult): string[] {
  const t = r.trials;
  const pick = (f: (x: Trial) => number) => t.map(f);
  const sum = (f: (x: Trial) => number) => t.reduce((a, x) => a + f(x), 0);
  const lost = sum((x) => x.lost.length);
  const corrupt = sum((x) => x.corrupt.length);
  const verdict = (p99: number) => (p99 <= 5 ? 'met (goal too)' : p99 <= 10 ? 'met; goal ≤ 5 s missed' : 'missed');
  const p99 = (f: (x: Trial) => number) => percentile(pick(f), 99);
  const row = (name: string, f: (x: Trial) => number, target = '', v = '') => {
    const values = pick(f);
    return [name, s(median(values)), s(percentile(values, 99)), `${s(Math.min(...values))}–${s(Math.max(...values))}`, target, v];
  };
  const out = [
    `1. failover, same volume: kill -9 of the writer → first success through the frontend; ${t.length} trials, lease ${r.opts.leaseSeconds} s, ${r.opts.pushers} pushers on 2 repositories`,
    '',
    table([
      ['seconds from the kill', 'p50', 'p99', 'min–max', 'target', 'verdict'],
      row('new writer serving (its log line)', (x) => x.serving),
      row('first successful push', (x) => x.push, 'p99 ≤ 10 (goal ≤ 5)', verdict(p99((x) => x.push))),
      row('first successful clone', (x) => x.clone, 'p99 ≤ 10 (goal ≤ 5)', verdict(p99((x) => x.clone))),
      row('baseline push probe, no failover', (x) => x.basePush),
      row('baseline clone probe, no failover', (x) => x.baseClone),
    ]),
    '',
    table([
      ['count', 'value', 'target', 'verdict'],
      ['acknowledged ref updates (pushers)', String(sum((x) => x.acked)), '', ''],
      ['  pushes that failed (cut by the kill, or refused while no writer)', String(sum((x) => x.failed)), '', ''],
      ['probe attempts until success: push, clone (median)', `${median(pick((x) => x.pushAttempts))}, ${median(pick((x) => x.cloneAttempts))}`, '', ''],
      ['lost acknowledged updates (reflog, ref by ref)', String(lost), '0', lost === 0 ? 'met' : 'missed'],
      ['corrupt repositories (fsck after each trial)', String(corrupt), '0', corrupt === 0 ? 'met' : 'missed'],
      ['clone probes answered from the frontend cache', String(sum((x) => x.cacheHits)), '0 expected', ''],
    ]),
  ];
  const problems = t.flatMap((x, i) => [...x.lost, ...x.corrupt].map((p) => `  trial ${i + 1}: ${p}`));
  if (problems.length > 0) out.push('', ...problems.slice(0, 20));
  return out;
}
