/**
 * What a killed git leaves in a repository, found and removed (docs/design/snapshots.md,
 * "Crash recovery"). A git process that dies keeps its lock files and temporary directories;
 * git never removes another process's, so each one blocks the work that needs it for good:
 *
 * - ref locks (`refs/**\/*.lock`, `logs/**\/*.lock`, `packed-refs.lock`, `HEAD.lock`, and the
 *   other `*.lock` at the top such as `config.lock`): every later push to that ref is refused
 *   ("cannot lock ref … File exists");
 * - maintenance locks (`objects/pack/multi-pack-index.lock`, `objects/info/commit-graph.lock`,
 *   the commit-graph chain's lock, any other `*.lock` under `objects/info`): every later repack
 *   or commit-graph write fails; and `gc.pid`, which makes `git gc --auto` skip the repository
 *   while git thinks its holder lives;
 * - quarantine directories (`objects/tmp_objdir-incoming-*`, `objects/incoming-*`) of killed
 *   pushes, and temporary packs (`objects/pack/tmp_*`, `objects/pack/.tmp-*`) of a killed
 *   pack-objects or index-pack: only disk space, but without end.
 *
 * Removing one is safe exactly when no git process can be using it: at start, before the server
 * listens (this process owns the repositories, and a repository some other live process works
 * in is left for later, see busyRepositories()), and while running only for files older than a
 * bound in repositories no request or maintenance of ours holds. Nothing here removes an object,
 * a pack or a ref: only what git itself would write again.
 */
import { lstat, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../shared/log.js';
import { processAlive, scratchOwner } from '../shared/pid.js';

export type LeftoverKind = 'ref_lock' | 'maintenance_lock' | 'quarantine' | 'temp_pack';

export interface Leftover {
  kind: LeftoverKind;
  /** Relative to the repository directory. */
  path: string;
}

export interface FindOptions {
  /** Only what was last modified this long ago or more (0: everything, at start). */
  olderThanMs: number;
  now?: number;
}

/** git treats a gc.pid older than this as stale whatever it says (builtin/gc.c). */
const GC_PID_STALE_MS = 12 * 3600_000;

/** Unnamed scratch under <data>/tmp older than this is an interrupted job's (see Recovery.scratch). */
const SCRATCH_STALE_MS = 24 * 3600_000;

const MAINTENANCE_LOCKS = new Set(['objects/pack/multi-pack-index.lock', 'objects/info/commit-graph.lock', 'objects/info/commit-graphs/commit-graph-chain.lock']);

async function entries(dir: string) {
  return readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
    throw err;
  });
}

/** Every `*.lock` file below `dir` (relative to `root`). */
async function locksBelow(root: string, dir: string, out: string[]): Promise<void> {
  for (const e of await entries(path.join(root, dir))) {
    const rel = path.posix.join(dir, e.name);
    if (e.isDirectory()) await locksBelow(root, rel, out);
    else if (e.name.endsWith('.lock')) out.push(rel);
  }
}

/** Lists the leftovers of killed git processes in one repository; removes nothing. */
export async function findLeftovers(repoPath: string, opts: FindOptions): Promise<Leftover[]> {
  const now = opts.now ?? Date.now();
  const found: Leftover[] = [];
  const add = (kind: LeftoverKind, rel: string) => found.push({ kind, path: rel });

  const refLocks: string[] = [];
  await locksBelow(repoPath, 'refs', refLocks);
  await locksBelow(repoPath, 'logs', refLocks);
  for (const e of await entries(repoPath)) if (e.isFile() && e.name.endsWith('.lock')) refLocks.push(e.name);
  for (const rel of refLocks) add('ref_lock', rel);

  const infoLocks: string[] = [];
  await locksBelow(repoPath, 'objects/info', infoLocks);
  for (const rel of new Set([...MAINTENANCE_LOCKS, ...infoLocks])) add('maintenance_lock', rel);

  for (const e of await entries(path.join(repoPath, 'objects'))) {
    if (e.isDirectory() && (e.name.startsWith('tmp_objdir-') || e.name.startsWith('incoming-'))) add('quarantine', `objects/${e.name}`);
  }
  for (const e of await entries(path.join(repoPath, 'objects', 'pack'))) {
    if (e.isFile() && (e.name.startsWith('tmp_') || e.name.startsWith('.tmp-'))) add('temp_pack', `objects/pack/${e.name}`);
  }

  const kept: Leftover[] = [];
  for (const item of found) {
    const st = await lstat(path.join(repoPath, item.path)).catch(() => undefined);
    if (st && now - st.mtimeMs >= opts.olderThanMs) kept.push(item);
  }
  if (await gcPidStale(repoPath, now, opts.olderThanMs === 0)) kept.push({ kind: 'maintenance_lock', path: 'gc.pid' });
  return kept;
}

/**
 * `gc.pid` as git judges it: stale when older than 12 hours, or when it names this host and a
 * process that no longer runs. At start every one is stale: no git of ours runs yet.
 */
async function gcPidStale(repoPath: string, now: number, atStart: boolean): Promise<boolean> {
  const file = path.join(repoPath, 'gc.pid');
  const st = await lstat(file).catch(() => undefined);
  if (!st) return false;
  if (atStart || now - st.mtimeMs > GC_PID_STALE_MS) return true;
  const [pid, host] = (await readFile(file, 'utf8').catch(() => '')).trim().split(/\s+/);
  return host === hostname() && !processAlive(Number(pid));
}

/** Removes the leftovers (a file already gone counts as removed) and returns them. */
export async function removeLeftovers(repoPath: string, leftovers: readonly Leftover[]): Promise<Leftover[]> {
  for (const item of leftovers) await rm(path.join(repoPath, item.path), { recursive: true, force: true });
  return [...leftovers];
}

/**
 * The repository directories (of `repoPaths`) that a live process other than this one works in:
 * as its working directory (git, its hooks) or named on its command line (`--git-dir <repo>`,
 * `receive-pack <repo>`). At start these are the orphans of a killed server, still running;
 * their repositories are left to the scheduled pass. Linux only: elsewhere, none.
 */
export async function busyRepositories(repoPaths: readonly string[]): Promise<Set<string>> {
  const busy = new Set<string>();
  const wanted = new Set(repoPaths.map((p) => path.resolve(p)));
  const pids = await readdir('/proc').catch(() => [] as string[]);
  for (const pid of pids) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => undefined);
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    for (const candidate of [cwd, ...argv]) {
      if (!candidate) continue;
      // A hook runs in the repository itself; git may be given it with a trailing slash.
      const resolved = path.resolve(candidate);
      if (wanted.has(resolved)) busy.add(resolved);
    }
  }
  return busy;
}

export type RemovedKind = LeftoverKind | 'scratch';

export function createRecoveryMetrics(registry: Registry) {
  return {
    removed: new Counter({
      name: 'gitstratum_recovery_removed_total',
      help: 'Leftovers of killed git processes removed by crash recovery, by kind (ref_lock, maintenance_lock, quarantine, temp_pack, scratch)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
  };
}
export type RecoveryMetrics = ReturnType<typeof createRecoveryMetrics>;

export interface RecoverySettings {
  /** How often the running server looks again; 0: only at start. */
  intervalMs: number;
  /** While running, only leftovers (and scratch directories) older than this are removed. */
  staleMs: number;
}

export interface RecoveryDeps {
  /** The resident repositories' ids and directories (an evicted one has none: it is skipped). */
  repositories: () => Promise<{ id: string; path: string }[]>;
  /** <data>/tmp: scratch of restores, compactions, evictions and repository creation. */
  scratchDir: string;
  /** A request or maintenance of this process holds the repository (it may run git in it). */
  held: (repositoryId: string) => boolean;
  log: Logger;
  metrics?: RecoveryMetrics;
}

export interface RecoveryReport {
  repositories: number;
  removed: number;
  /** Repositories some other live process works in: left to the scheduled pass. */
  skipped: number;
}

/**
 * Runs the clean-up at start (everything, before the server listens) and every `intervalMs`
 * (only what is older than `staleMs`, in repositories nobody holds). One log line per
 * repository that had something removed; the counter by kind.
 */
export class Recovery {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private closed = false;
  /** atStart() has run: scratch named for this pid is now this process's own. */
  private started = false;

  constructor(
    private readonly settings: RecoverySettings,
    private readonly deps: RecoveryDeps,
  ) {}

  /** At start: no git process of this server runs yet. */
  async atStart(): Promise<RecoveryReport> {
    const repos = await this.deps.repositories();
    const busy = await busyRepositories(repos.map((r) => r.path));
    try {
      return await this.pass(repos, { olderThanMs: 0, skip: (r) => busy.has(path.resolve(r.path)) });
    } finally {
      this.started = true;
    }
  }

  /** One scheduled pass (also for tests): only stale leftovers in repositories nobody holds. */
  async sweep(): Promise<RecoveryReport> {
    return this.pass(await this.deps.repositories(), { olderThanMs: this.settings.staleMs, skip: (r) => this.deps.held(r.id) });
  }

  start(): void {
    if (this.settings.intervalMs <= 0) return;
    const tick = () => {
      this.running = this.sweep()
        .catch((err: unknown) => this.deps.log.error({ err }, 'crash recovery sweep failed'))
        .finally(() => {
          this.running = undefined;
          if (!this.closed) this.timer = setTimeout(tick, this.settings.intervalMs).unref();
        });
    };
    this.timer = setTimeout(tick, this.settings.intervalMs).unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private async pass(
    repos: { id: string; path: string }[],
    opts: { olderThanMs: number; skip: (r: { id: string; path: string }) => boolean },
  ): Promise<RecoveryReport> {
    const report: RecoveryReport = { repositories: repos.length, removed: 0, skipped: 0 };
    for (const repo of repos) {
      if (this.closed) break;
      if (opts.skip(repo)) {
        report.skipped++;
        continue;
      }
      try {
        const removed = await removeLeftovers(repo.path, await findLeftovers(repo.path, { olderThanMs: opts.olderThanMs }));
        if (removed.length === 0) continue;
        report.removed += removed.length;
        const byKind: Partial<Record<LeftoverKind, number>> = {};
        for (const item of removed) {
          byKind[item.kind] = (byKind[item.kind] ?? 0) + 1;
          this.deps.metrics?.removed.inc({ kind: item.kind });
        }
        this.deps.log.info({ repo_id: repo.id, ...byKind, files: removed.slice(0, 20).map((i) => i.path) }, 'crash leftovers removed');
      } catch (err) {
        this.deps.log.warn({ err, repo_id: repo.id }, 'crash leftovers not removed');
      }
    }
    report.removed += await this.scratch();
    return report;
  }

  /**
   * Scratch directories under <data>/tmp that a crash interrupted. One named for its process
   * (scratchPrefix: restores, compactions, evictions) goes as soon as that process is dead;
   * any other only after a day, since a `gitstratum worker` or an admin command on this data
   * directory may be using a fresh one, and its age says little while git writes inside it.
   */
  private async scratch(): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for (const e of await entries(this.deps.scratchDir)) {
      const full = path.join(this.deps.scratchDir, e.name);
      const owner = scratchOwner(e.name);
      if (owner !== undefined) {
        if (owner !== process.pid && processAlive(owner)) continue;
        // Our own pid on a directory at start is a predecessor's; later it may be ours.
        if (owner === process.pid && this.started) continue;
      } else {
        const st = await lstat(full).catch(() => undefined);
        if (!st || now - st.mtimeMs < SCRATCH_STALE_MS) continue;
      }
      await rm(full, { recursive: true, force: true });
      removed++;
      this.deps.metrics?.removed.inc({ kind: 'scratch' });
    }
    if (removed > 0) this.deps.log.info({ scratch: removed }, 'crash leftovers removed');
    return removed;
  }
}
