/**
 * kill -9 trials (issue 16), shared by the suite's bounded loop (test/e2e/crash-loop.test.ts)
 * and `npm run bench:crash`: concurrent pushers push to their own branches of a few
 * repositories while the server snapshots and maintains them; at a random moment the server is
 * killed with SIGKILL and restarted on the same data directory. After each restart:
 *
 * - every acknowledged push (git exited 0) is present or superseded by a later push of the same
 *   pusher (the ledger: each pusher's last acknowledged commit must be an ancestor of the ref);
 * - no repository is corrupt (fsck);
 * - no push is refused for a leftover of the crash (a lock git calls "File exists");
 * - every repository is persisted (its latest snapshot's refs digest equals its live refs)
 *   within a measured time; the pushers wait meanwhile, so the target stands still;
 * - nothing of the crash is left once orphans of the killed server are gone.
 *
 * Every process is stopped by its PID: the server through its ChildProcess, each git command
 * by the harness's timeout.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, seedAlice, tempDir } from '../e2e/harness.js';
import { openMetaStore, type MetaStore } from '../../src/meta/db.js';
import { latestSnapshot } from '../../src/meta/snapshots.js';
import { readRefs } from '../../src/snapshots/create.js';
import { encodeRefs, refsDigest } from '../../src/snapshots/format.js';
import { busyRepositories, findLeftovers } from '../../src/repos/recovery.js';

export interface TrialOptions {
  trials: number;
  repositories: number;
  pushers: number;
  /** After the trial's first acknowledged push, the server runs this long more (uniformly at random within) before the kill. */
  runMs: [number, number];
  /** How long to wait for a repository to be persisted after a restart before calling it late. */
  persistBoundMs: number;
  seed?: number;
  /** Called with each server process's PID as soon as it is spawned (to register it for clean-up). */
  onServer?: (pid: number) => void;
  onTrial?: (trial: number, result: TrialResult) => void;
}

export interface TrialResult {
  /** From the restart (the new server listening) to every repository persisted; undefined if never. */
  persistMs: number | undefined;
  lost: string[];
  corrupt: string[];
  leftovers: string[];
}

export interface CrashRunResult {
  trials: TrialResult[];
  acknowledged: number;
  /** Pushes refused with a lock git found in place ("File exists", "cannot lock ref"). */
  refusedForLeftover: string[];
  failedPushes: number;
}

/** Flags that make the background work follow pushes closely, as in production but faster. */
export const TRIAL_SERVER_ARGS = [
  '--maintenance-delay-seconds',
  '0',
  '--snapshot-debounce-seconds',
  '0',
  '--snapshot-max-delay-seconds',
  '2',
  '--recovery-interval-seconds',
  '2',
  '--recovery-stale-seconds',
  '5',
];

/** How long a trial waits for its first acknowledged push before killing the server anyway. */
const PROGRESS_BOUND_MS = 120_000;

const LEFTOVER_REFUSAL = /cannot lock ref|Unable to create '[^']*\.lock'|\.lock': File exists/;

export async function crashTrials(opts: TrialOptions): Promise<CrashRunResult> {
  let state = (opts.seed ?? 16) >>> 0 || 1;
  const random = () => ((state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const onSpawn = opts.onServer;
  let server = await Server.start({ args: TRIAL_SERVER_ARGS, ...(onSpawn && { onSpawn }) });
  const dataDir = server.dataDir;
  const token = await seedAlice(server);
  const repos: { name: string; path: string }[] = [];
  for (let i = 0; i < opts.repositories; i++) {
    const created = JSON.parse(await server.cliOk(['repo', 'create', `alice/main/r${i}`, '--json'])) as { path: string };
    repos.push({ name: `alice/main/r${i}`, path: created.path });
  }
  const git = await Git.create();
  const scratch = await tempDir('gitstratum-crash-');
  const result: CrashRunResult = { trials: [], acknowledged: 0, refusedForLeftover: [], failedPushes: 0 };

  // Pushers: each commits and pushes to its own branch of one repository, in a loop.
  const ledger = new Map<number, { repo: number; ref: string; acked?: string; work: string }>();
  let running = true;
  let paused = true;
  /** Pushes in flight (git processes the pushers wait for). */
  let pushing = 0;
  const pushers = Array.from({ length: opts.pushers }, async (_, p) => {
    const work = path.join(scratch, `p${p}`);
    await mkdir(work, { recursive: true });
    await git.ok(['init', '-q', '-b', 'main', work]);
    const entry: { repo: number; ref: string; acked?: string; work: string } = { repo: p % opts.repositories, ref: `refs/heads/p${p}/b1`, work };
    ledger.set(p, entry);
    for (let n = 0; running; n++) {
      if (paused) {
        await sleep(50);
        continue;
      }
      // Distinct non-zero seeds: the generator treats 0 as 1, and equal content commits nothing.
      await git.commits(work, 1, { files: 2, seed: p * 100_000 + n + 1, prefix: `p${p}` });
      const sha = await git.revParse(work, 'HEAD');
      const url = server.repoUrl(`${repos[entry.repo]!.name}.git`, token);
      pushing++;
      const r = await git.run(['push', '-q', '--force', url, `HEAD:${entry.ref}`], { cwd: work, timeoutMs: 60_000 }).finally(() => pushing--);
      if (r.code === 0) {
        entry.acked = sha;
        result.acknowledged++;
      } else {
        result.failedPushes++;
        if (LEFTOVER_REFUSAL.test(r.stderr)) result.refusedForLeftover.push(r.stderr.trim().split('\n').slice(-2).join(' '));
        await sleep(100);
      }
    }
  });

  let meta: MetaStore | undefined;
  try {
    meta = await openMetaStore({ dataDir, databaseUrl: undefined });
    for (let t = 0; t < opts.trials; t++) {
      paused = false;
      // The kill comes at a random moment once this trial has made progress: on a loaded host a
      // push may take longer than the whole window, and a trial with none would prove nothing.
      const before = result.acknowledged;
      for (const deadline = Date.now() + PROGRESS_BOUND_MS; result.acknowledged === before && Date.now() < deadline; ) await sleep(20);
      await sleep(opts.runMs[0] + random() * (opts.runMs[1] - opts.runMs[0]));
      const dead = server.process;
      const exited = new Promise((resolve) => dead.once('exit', resolve));
      dead.kill('SIGKILL');
      await exited;
      paused = true;
      server = await Server.start({ dataDir, args: TRIAL_SERVER_ARGS, ...(onSpawn && { onSpawn }) });
      const restarted = Date.now();
      const trial: TrialResult = { persistMs: undefined, lost: [], corrupt: [], leftovers: [] };
      // The pushes in flight at the kill end (failed or acknowledged) before the checks.
      for (let i = 0; i < 600 && pushing > 0; i++) await sleep(100);
      trial.persistMs = await persisted(meta, repos, restarted, opts.persistBoundMs);
      for (const [p, entry] of ledger) {
        if (!entry.acked) continue;
        const repo = repos[entry.repo]!;
        const live = await git.run(['--git-dir', repo.path, 'rev-parse', '--verify', '-q', entry.ref]);
        const contains = live.code === 0 && (await git.run(['--git-dir', repo.path, 'merge-base', '--is-ancestor', entry.acked, live.stdout.trim()])).code === 0;
        if (!contains) trial.lost.push(`p${p} ${repo.name} ${entry.ref} ${entry.acked}`);
      }
      for (const repo of repos) {
        const fsck = await git.run(['--git-dir', repo.path, 'fsck', '--no-progress', '--no-dangling']);
        if (fsck.code !== 0) trial.corrupt.push(`${repo.name}: ${fsck.stderr.trim().split('\n')[0]}`);
      }
      trial.leftovers = await leftoversOnceOrphansEnd(repos.map((r) => r.path), opts.persistBoundMs);
      result.trials.push(trial);
      opts.onTrial?.(t + 1, trial);
    }
  } finally {
    running = false;
    paused = false;
    await Promise.allSettled(pushers);
    await meta?.close();
    await server.cleanup();
    await rm(scratch, { recursive: true, force: true });
    await rm(git.home, { recursive: true, force: true });
  }
  return result;
}

/** Milliseconds from `since` until every repository's latest snapshot holds its live refs. */
async function persisted(meta: MetaStore, repos: { path: string }[], since: number, boundMs: number): Promise<number | undefined> {
  const ids = repos.map((r) => path.basename(r.path, '.git'));
  for (const deadline = since + boundMs; Date.now() < deadline; await sleep(100)) {
    let all = true;
    for (const [i, repo] of repos.entries()) {
      const latest = await latestSnapshot(meta.db, ids[i]!);
      const refs = await readRefs(repo.path);
      // A repository nobody has pushed to yet has nothing to persist.
      if (!latest && !refs.some((r) => r.oid !== undefined)) continue;
      if (latest?.refsDigest !== refsDigest(encodeRefs(refs))) {
        all = false;
        break;
      }
    }
    if (all) return Date.now() - since;
  }
  return undefined;
}

/**
 * Leftovers of the crash still present once no other process works in the repositories (an
 * orphaned repack of the killed server finishes by itself, removing its own locks) and the
 * server's scheduled pass has had its chance.
 */
async function leftoversOnceOrphansEnd(paths: string[], boundMs: number): Promise<string[]> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const found: string[] = [];
    for (const p of paths) for (const l of await findLeftovers(p, { olderThanMs: 0 })) found.push(`${path.basename(p)} ${l.kind} ${l.path}`);
    if (found.length === 0) return [];
    if (Date.now() > deadline) return found;
    // A leftover in a repository a live process works in is that process's, not the crash's.
    if ((await busyRepositories(paths)).size > 0) await sleep(200);
    else await sleep(500);
  }
}
