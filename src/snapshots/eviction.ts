/**
 * Cold repositories off the local disk (docs/design/snapshots.md, "Eviction").
 *
 * A repository that no git request has touched for `idleMs`, and whose every acknowledged push
 * is in a snapshot (no push-end after its latest snapshot began, and its live refs hash to that
 * snapshot's refs digest), is removed from local disk; `repository_residency.evicted_at` says
 * so. The next request restores it from its snapshots before any git process is spawned.
 *
 * Invariants, all within this process (the one writer of a data directory):
 * - A request holds the repository (acquire → release) from before it looks at the disk until
 *   its git process has finished; eviction starts only when nobody holds it, and blocks new
 *   holders until it is over. So a request finds the directory whole or waits; a git process
 *   never runs in a directory being removed.
 * - One transition at a time per repository: concurrent requests for an evicted repository
 *   wait on the same restore.
 * - The directory is renamed away (atomic) before it is deleted, and `evicted_at` is written
 *   before the rename: a crash leaves either a resident repository marked evicted (harmless: a
 *   present directory is always served) or a missing directory marked evicted (restored on the
 *   next request), never a half-deleted repository in place.
 * - A missing directory without the mark is a lost disk: refused with a message naming
 *   `gitstratum restore`, never silently restored. A marked one with pushes after its latest
 *   snapshot is refused the same way (a restore would lose them).
 *
 * Last access: kept in memory per request, and written to SQL at most once a minute per
 * repository, so idleness survives restarts to within a minute. A repository first seen by the
 * sweep (no row) starts its idle clock then.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { now, type MetaStore } from '../meta/db.js';
import * as residency from '../meta/residency.js';
import { latestSnapshot, pushesAfter } from '../meta/snapshots.js';
import type { ObjectStore } from '../storage/object-store.js';
import type { Logger } from '../shared/log.js';
import { conflict, isDomainError, unavailable } from '../shared/errors.js';
import { readRefs } from './create.js';
import { encodeRefs, refsDigest } from './format.js';
import { restoreRepository } from './restore.js';
import { scratchPrefix } from '../shared/pid.js';

/** The persisted last access lags the real one by at most this much. */
const ACCESS_WRITE_INTERVAL_MS = 60_000;

export interface EvictDeps {
  meta: MetaStore;
  dataDir: string;
  repoPath: (repositoryId: string) => string;
}

export interface EvictResult {
  repositoryId: string;
  /** The snapshot that holds everything the evicted directory held. */
  snapshot: string;
  evictedAt: string;
}

const exists = (p: string) => stat(p).then(() => true, () => false);

/**
 * Checks that a resident repository is fully persisted, marks it evicted, renames its
 * directory away and deletes it. The caller guarantees that nothing uses it meanwhile.
 */
export async function evictRepository(deps: EvictDeps, repositoryId: string, label = repositoryId): Promise<EvictResult> {
  const { db } = deps.meta;
  const dir = deps.repoPath(repositoryId);
  if (!(await exists(dir))) {
    if ((await residency.findResidency(db, repositoryId))?.evictedAt) throw conflict('repo_evicted', `repository ${label} is already evicted`, { repository: label });
    throw missingOnDisk(label);
  }
  const latest = await latestSnapshot(db, repositoryId);
  if (!latest) throw conflict('repo_not_persisted', `repository ${label} has no snapshot yet; it stays on disk`, { repository: label });
  if ((await pushesAfter(db, repositoryId, latest.beginEventId)).length > 0) {
    throw conflict('repo_not_persisted', `repository ${label} has pushes not yet in a snapshot; it stays on disk`, { repository: label });
  }
  // Catches what the event log cannot: a change made on the disk behind the server's back.
  if (refsDigest(encodeRefs(await readRefs(dir))) !== latest.refsDigest) {
    throw conflict('repo_not_persisted', `repository ${label} has refs that differ from its latest snapshot ${latest.id}; it stays on disk`, { repository: label });
  }
  const at = now();
  await residency.markEvicted(db, repositoryId, at);
  const trash = path.join(deps.dataDir, 'tmp', `${scratchPrefix(`evicted-${repositoryId}`)}${Date.now()}`);
  try {
    await mkdir(path.dirname(trash), { recursive: true });
    await rename(dir, trash);
  } catch (err) {
    await residency.clearEvicted(db, repositoryId, at).catch(() => {});
    throw err;
  }
  await rm(trash, { recursive: true, force: true });
  return { repositoryId, snapshot: latest.id, evictedAt: at };
}

function missingOnDisk(label: string, why = 'is missing from local disk and was not evicted') {
  return unavailable('repo_missing_on_disk', `repository ${label} ${why}; an operator must run: gitstratum restore ${label}`, { repository: label });
}

export function createResidencyMetrics(registry: Registry, countEvicted: () => Promise<number>) {
  return {
    evictions: new Counter({ name: 'gitstratum_repository_evictions_total', help: 'Repositories removed from local disk, by reason (idle, admin)', labelNames: ['reason'] as const, registers: [registry] }),
    restores: new Counter({ name: 'gitstratum_repository_lazy_restores_total', help: 'Evicted repositories restored on request, by result', labelNames: ['result'] as const, registers: [registry] }),
    restoreDuration: new Histogram({
      name: 'gitstratum_repository_lazy_restore_duration_seconds',
      help: 'Duration of successful lazy restores (the wait of the request that found the repository evicted)',
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
      registers: [registry],
    }),
    evicted: new Gauge({
      name: 'gitstratum_repositories_evicted',
      help: 'Repositories currently evicted from local disk',
      registers: [registry],
      async collect() {
        this.set(await countEvicted());
      },
    }),
  };
}
export type ResidencyMetrics = ReturnType<typeof createResidencyMetrics>;

export interface ResidencySettings {
  /** Evict repositories idle this long; 0: never evict by idleness (an admin still may). */
  idleMs: number;
  /** How often idle repositories are looked for; default a quarter of idleMs, 1 s to 60 s. */
  sweepMs?: number;
}

export interface ResidencyDeps extends EvictDeps {
  store: ObjectStore;
  repoConfig: readonly (readonly [string, string])[];
  log: Logger;
  metrics?: ResidencyMetrics;
  /** Background work (maintenance) running in or queued for the repository. */
  busy?: (repositoryId: string) => boolean;
}

export interface ResidentRepo {
  id: string;
  defaultBranch: string;
  /** OWNER/SPACE/REPO, for messages. */
  label: string;
}

export class Residency {
  private readonly holders = new Map<string, number>();
  private readonly transitions = new Map<string, Promise<void>>();
  private readonly lastUse = new Map<string, number>();
  private readonly lastWritten = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private closed = false;
  /** Repositories a failover from snapshots took over: restored even with pushes after their latest snapshot (reported lost). */
  private readonly lossAccepted = new Set<string>();

  constructor(
    private readonly settings: ResidencySettings,
    private readonly deps: ResidencyDeps,
  ) {}

  /**
   * Makes sure the repository is on disk (restoring it if it was evicted) and keeps it there
   * until the returned release is called.
   */
  async acquire(repo: ResidentRepo): Promise<() => void> {
    for (;;) {
      const pending = this.transitions.get(repo.id);
      if (pending) {
        await pending.catch(() => {});
        continue;
      }
      // Held before the disk is looked at, so no eviction can start in between.
      this.holders.set(repo.id, (this.holders.get(repo.id) ?? 0) + 1);
      // Synchronous: one stat of a local directory costs about 2 µs inline and 25 µs of CPU
      // through libuv's thread pool, on every git request (issue 12's fetch storm).
      if (existsSync(this.deps.repoPath(repo.id))) {
        this.touch(repo.id);
        let released = false;
        return () => {
          if (released) return;
          released = true;
          this.release(repo.id);
          this.touch(repo.id);
        };
      }
      this.release(repo.id);
      let restore = this.transitions.get(repo.id);
      if (!restore) {
        restore = this.restore(repo).finally(() => this.transitions.delete(repo.id));
        this.transitions.set(repo.id, restore);
      }
      await restore;
    }
  }

  /** Evicts one repository now if it is fully persisted and nothing uses it. */
  evict(repositoryId: string, reason: 'idle' | 'admin', label = repositoryId): Promise<EvictResult> {
    if (this.transitions.has(repositoryId) || this.holders.has(repositoryId) || this.deps.busy?.(repositoryId)) {
      return Promise.reject(conflict('repo_busy', `repository ${label} is in use; try again when it is idle`, { repository: label }));
    }
    const job = evictRepository(this.deps, repositoryId, label);
    this.transitions.set(
      repositoryId,
      job.then(
        () => {},
        () => {},
      ).finally(() => this.transitions.delete(repositoryId)),
    );
    return job.then((result) => {
      this.deps.metrics?.evictions.inc({ reason });
      this.deps.log.info({ repo_id: repositoryId, snapshot: result.snapshot, reason }, 'repository evicted from local disk');
      return result;
    });
  }

  /**
   * A repository missing from this disk after a failover from snapshots (snapshots/takeover.ts):
   * restored from its latest snapshot on its next request, although pushes came after it (they
   * are lost, and were reported so). Call after marking it evicted.
   */
  adopt(repositoryId: string): void {
    this.lossAccepted.add(repositoryId);
  }

  /** A request, a transition or background work holds the repository: git may run in it. */
  inUse(repositoryId: string): boolean {
    return this.holders.has(repositoryId) || this.transitions.has(repositoryId) || (this.deps.busy?.(repositoryId) ?? false);
  }

  start(): void {
    if (this.settings.idleMs <= 0) return;
    const every = this.settings.sweepMs ?? Math.min(60_000, Math.max(1000, this.settings.idleMs / 4));
    const tick = () => {
      this.sweeping = this.sweep()
        .catch((err: unknown) => this.deps.log.error({ err }, 'eviction sweep failed'))
        .finally(() => {
          this.sweeping = undefined;
          if (!this.closed) this.timer = setTimeout(tick, every).unref();
        });
    };
    this.timer = setTimeout(tick, every).unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.sweeping;
    await Promise.allSettled(this.transitions.values());
  }

  private release(id: string): void {
    const left = (this.holders.get(id) ?? 1) - 1;
    if (left > 0) this.holders.set(id, left);
    else this.holders.delete(id);
  }

  private touch(id: string): void {
    const t = Date.now();
    this.lastUse.set(id, t);
    if (this.settings.idleMs <= 0 || t - (this.lastWritten.get(id) ?? 0) < ACCESS_WRITE_INTERVAL_MS) return;
    this.lastWritten.set(id, t);
    residency.recordAccess(this.deps.meta.db, id, new Date(t).toISOString()).catch((err: unknown) => {
      this.lastWritten.delete(id);
      this.deps.log.warn({ err, repo_id: id }, 'last access not recorded');
    });
  }

  private async sweep(): Promise<void> {
    const { db } = this.deps.meta;
    const t = Date.now();
    await residency.startIdleClocks(db, new Date(t).toISOString());
    const cutoff = t - this.settings.idleMs;
    for (const id of await residency.idleSince(db, new Date(cutoff).toISOString())) {
      if (this.closed) return;
      // The persisted time lags by up to a minute; this process knows better.
      if ((this.lastUse.get(id) ?? 0) > cutoff) continue;
      try {
        await this.evict(id, 'idle');
        this.lastUse.delete(id);
        this.lastWritten.delete(id);
      } catch (err) {
        if (isDomainError(err)) this.deps.log.debug({ repo_id: id, code: err.code }, 'idle repository kept on disk');
        else this.deps.log.warn({ err, repo_id: id }, 'eviction failed');
      }
    }
  }

  private async restore(repo: ResidentRepo): Promise<void> {
    const { db } = this.deps.meta;
    const target = this.deps.repoPath(repo.id);
    if (!(await residency.findResidency(db, repo.id))?.evictedAt) throw missingOnDisk(repo.label);
    const latest = await latestSnapshot(db, repo.id);
    if (!latest) throw missingOnDisk(repo.label, 'is marked evicted but has no snapshot');
    // A stale mark (a crash after a restore) on a disk lost since: restoring would drop pushes.
    if (!this.lossAccepted.has(repo.id) && (await pushesAfter(db, repo.id, latest.beginEventId)).length > 0) {
      throw missingOnDisk(repo.label, 'is missing from local disk with pushes not in any snapshot');
    }
    const started = process.hrtime.bigint();
    const log = this.deps.log.child({ repo_id: repo.id });
    try {
      await restoreRepository(this.deps, {
        repositoryId: repo.id,
        defaultBranch: repo.defaultBranch,
        target,
        scratchRoot: path.join(this.deps.dataDir, 'tmp'),
        config: this.deps.repoConfig,
      });
    } catch (err) {
      // Restored meanwhile by `gitstratum restore`: what the request wanted.
      if (await exists(target)) return;
      this.deps.metrics?.restores.inc({ result: 'failed' });
      log.error({ err }, 'lazy restore failed');
      throw unavailable('repo_restore_failed', `repository ${repo.label} is evicted and could not be restored from its snapshots; retry later`, { repository: repo.label });
    }
    await residency.clearEvicted(db, repo.id, now());
    this.lossAccepted.delete(repo.id);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    this.deps.metrics?.restores.inc({ result: 'ok' });
    this.deps.metrics?.restoreDuration.observe(seconds);
    log.info({ snapshot: latest.id, duration_ms: Math.round(seconds * 1000) }, 'evicted repository restored');
  }
}
