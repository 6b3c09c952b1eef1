/**
 * The snapshot worker (docs/design/snapshots.md): keeps every repository persisted to object
 * storage within a bounded delay of its last acknowledged push.
 *
 * State lives in SQL, not here: a repository is dirty while a push event (begin or end) follows its last
 * completed snapshot's begin (meta/snapshots.ts), so a restart, a crash mid-upload or a failed
 * attempt all leave it dirty and it is simply taken again. The worker polls that list (and is
 * woken early by notify() from the post-receive hook) and snapshots a dirty repository once it
 * has been quiet for `debounceMs`, or at the latest `maxDelayMs` after its oldest unpersisted
 * push (a push still being received is waited for: `openPushGraceMs`), at most `concurrency` at once, one job per repository at a time. A failed job backs off
 * exponentially (1 s, 2 s, … up to `retryMaxMs`) for that repository only.
 *
 * Several workers (in `serve` and in `gitstratum worker` processes) may share one database: a
 * job first takes the repository's lease (meta/leases.ts), then checks that the repository is
 * still dirty (another worker may have just persisted it), and keeps renewing the lease while
 * it writes. A job whose lease is lost is aborted; a finished or aborted job deletes its lease.
 * A repository whose lease another holder has is left alone and looked at again later (1 s,
 * 2 s, … up to 8 s), while the others are served: the worker never spins on it. A holder is
 * `<node>/<pid>/<nonce>`, the node naming this host and data directory, so a restarted process
 * recognises the leases its killed predecessor held and releases them at start.
 *
 * After a snapshot, the same job (still holding the lease) compacts the repository's chain
 * when it grew past the configured limits.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { MetaStore } from '../meta/db.js';
import { dirtyRepositories, isDirty, type DirtyRepository } from '../meta/snapshots.js';
import { acquireLease, releaseDeadLeases, releaseLease, renewLease } from '../meta/leases.js';
import { processAlive } from '../shared/pid.js';
import type { ObjectStore } from '../storage/object-store.js';
import type { Logger } from '../shared/log.js';
import type { Changes } from '../shared/alarm.js';
import { IDLE_POLL_MS } from '../meta/changes.js';
import { createSnapshot } from './create.js';
import { compactionDue, compactRepository, type CompactionLimits } from './compact.js';
import { snapshotChain } from './restore.js';
import type { SnapshotRow } from '../meta/snapshots.js';

const OPEN_PUSH_GRACE_MS = 60_000;

export interface SnapshotWorkerSettings {
  debounceMs: number;
  maxDelayMs: number;
  concurrency: number;
  retryMaxMs: number;
  /**
   * How long a repository whose only pending push has begun but not ended waits (default 60 s):
   * snapshotting it meanwhile would only be followed by another snapshot when it ends. A server
   * that restarts marks the pushes its predecessor left open at once (reconcile.ts).
   */
  openPushGraceMs?: number;
  /** How often the dirty list is read when nothing wakes the worker. */
  pollMs?: number;
  /** How often, at most, with nothing dirty and a live change feed (default IDLE_POLL_MS). */
  idlePollMs?: number;
  /** Lifetime of a repository's lease; renewed every third of it while the job runs. */
  leaseMs?: number;
  /**
   * Compact a repository after a snapshot once its chain exceeds these limits (compact.ts),
   * restoring it under `scratchRoot` (<data>/tmp); never without.
   */
  compaction?: CompactionLimits & { scratchRoot: string };
  /** Only this shard's repositories (a storage node's); every repository without it. */
  shard?: string | undefined;
  /** This host and data directory, the same across restarts (default: the host name). */
  node?: string;
}

export interface SnapshotWorkerDeps {
  meta: MetaStore;
  store: ObjectStore;
  repoPath: (repositoryId: string) => string;
  log: Logger;
  metrics?: SnapshotMetrics;
  /** A storage node's fence for the rows it writes (CreateSnapshotDeps). */
  fence?: (trx: MetaStore['db']) => Promise<void>;
  /** With a live feed, a worker with nothing dirty sleeps until a change (meta/changes.ts). */
  changes?: Changes | undefined;
}

/**
 * The dirty gauges read the event log at scrape time (one grouped query), so they are exact
 * whatever the worker is doing, and present even when it is stopped or failing.
 */
export function createSnapshotMetrics(registry: Registry, readDirty: () => Promise<DirtyRepository[]>) {
  let scraped: Promise<DirtyRepository[]> | undefined;
  // Both gauges are collected in one scrape: one query serves them.
  const dirtyNow = () => (scraped ??= readDirty().finally(() => setImmediate(() => (scraped = undefined))));
  return {
    runs: new Counter({ name: 'gitstratum_snapshots_total', help: 'Snapshot jobs by result', labelNames: ['result'] as const, registers: [registry] }),
    compactions: new Counter({
      name: 'gitstratum_snapshot_compactions_total',
      help: 'Snapshot chains compacted into one full snapshot, by result',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    bytes: new Counter({ name: 'gitstratum_snapshot_bytes_total', help: 'Bytes written to object storage by snapshots', registers: [registry] }),
    duration: new Histogram({
      name: 'gitstratum_snapshot_duration_seconds',
      help: 'Duration of successful snapshot jobs',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
      registers: [registry],
    }),
    dirty: new Gauge({
      name: 'gitstratum_snapshot_dirty_repositories',
      help: 'Repositories with acknowledged pushes not yet in object storage',
      registers: [registry],
      async collect() {
        this.set((await dirtyNow()).length);
      },
    }),
    oldest: new Gauge({
      name: 'gitstratum_snapshot_oldest_unpersisted_push_seconds',
      help: 'Age of the oldest acknowledged push not yet in object storage (the current RPO); 0 when none',
      registers: [registry],
      async collect() {
        const oldest = Math.min(...(await dirtyNow()).map((d) => Date.parse(d.oldestPushAt)));
        this.set(Number.isFinite(oldest) ? Math.max(0, (Date.now() - oldest) / 1000) : 0);
      },
    }),
  };
}
export type SnapshotMetrics = ReturnType<typeof createSnapshotMetrics>;

export class SnapshotWorker {
  private readonly running = new Map<string, Promise<void>>();
  private readonly failures = new Map<string, { count: number; nextAt: number }>();
  /** Repositories whose lease another holder had: when to look again. */
  private readonly leasedElsewhere = new Map<string, { count: number; nextAt: number }>();
  private timer: NodeJS.Timeout | undefined;
  /** When the pending timer fires. */
  private timerAt = 0;
  private ticking: Promise<void> | undefined;
  private again = false;
  private closed = false;
  /** The last poll found nothing dirty and nothing running. */
  private idle = false;
  private lastTick = 0;
  /** The feed reported a change while a poll was reading. */
  private changed = false;
  private unsubscribe: (() => void) | undefined;
  private readonly abort = new AbortController();
  /** Who holds a lease, in the snapshot_leases table: node, process and this worker. */
  readonly holder: string;
  private readonly node: string;

  constructor(
    private readonly settings: SnapshotWorkerSettings,
    private readonly deps: SnapshotWorkerDeps,
  ) {
    this.node = settings.node ?? hostname();
    this.holder = `${this.node}/${process.pid}/${randomBytes(4).toString('hex')}`;
    this.unsubscribe = deps.changes?.subscribe(() => this.changedElsewhere());
  }

  /** A commit that may have marked a repository dirty: look no later than a poll would have. */
  private changedElsewhere(): void {
    if (this.ticking) {
      this.changed = true;
      return;
    }
    const at = Math.max(Date.now(), this.lastTick + this.pollMs());
    if (this.timer && at < this.timerAt) this.schedule(at - Date.now());
  }

  /** Releases what a killed predecessor on this node held, then starts polling. */
  start(): void {
    // Our own pid in an old holder is a predecessor's (pid namespaces restart at 1): dead.
    releaseDeadLeases(this.deps.meta.db, this.node, (pid) => pid !== process.pid && processAlive(pid))
      .then(
        (released) => released > 0 && this.deps.log.info({ released }, 'snapshot leases of a dead process released'),
        (err: unknown) => this.deps.log.warn({ err }, 'snapshot leases of dead processes not released; they expire'),
      )
      .finally(() => this.schedule(0));
  }

  /** A push ended: look at the dirty list soon rather than at the next poll. */
  notify(_repositoryId: string): void {
    this.schedule(Math.min(this.settings.debounceMs, this.pollMs()));
  }

  /** Stops polling, aborts running jobs (their uploads leave nothing) and waits for them. */
  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribe?.();
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort(new Error('snapshot worker closing'));
    await this.ticking;
    await Promise.allSettled(this.running.values());
  }

  private pollMs(): number {
    return this.settings.pollMs ?? 1000;
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = Date.now() + ms;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.ticking = this.tick()
        .catch((err: unknown) => this.deps.log.error({ err }, 'snapshot worker poll failed'))
        .finally(() => {
          this.ticking = undefined;
          const soon = this.again;
          const sleep = this.idle && !this.changed && this.deps.changes?.live() === true;
          this.again = false;
          this.changed = false;
          this.schedule(soon ? 0 : sleep ? (this.settings.idlePollMs ?? IDLE_POLL_MS) : this.pollMs());
        });
    }, ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.lastTick = Date.now();
    this.idle = false;
    const dirty = await dirtyRepositories(this.deps.meta.db, { shard: this.settings.shard });
    this.idle = dirty.length === 0 && this.running.size === 0;
    const t = Date.now();
    for (const d of dirty) {
      if (this.closed || this.running.size >= this.settings.concurrency) break;
      if (this.running.has(d.repositoryId)) continue;
      if ((this.failures.get(d.repositoryId)?.nextAt ?? 0) > t) continue;
      if ((this.leasedElsewhere.get(d.repositoryId)?.nextAt ?? 0) > t) continue;
      if (d.openPushSince !== undefined) {
        // Nothing acknowledged to persist yet: wait for the push's end (which wakes the worker),
        // or for the grace, after which a push that never ends is taken as cut off.
        if (t - Date.parse(d.openPushSince) < Math.max(this.settings.debounceMs, this.settings.openPushGraceMs ?? OPEN_PUSH_GRACE_MS)) continue;
      } else {
        const quiet = t - Date.parse(d.newestPushAt) >= this.settings.debounceMs;
        const overdue = t - Date.parse(d.oldestPushAt) >= this.settings.maxDelayMs;
        if (!quiet && !overdue) continue;
      }
      const job = this.run(d.repositoryId).finally(() => {
        this.running.delete(d.repositoryId);
        this.schedule(0);
      });
      this.running.set(d.repositoryId, job);
    }
  }

  private async run(repositoryId: string): Promise<void> {
    const { db, dialect } = this.deps.meta;
    const leaseMs = this.settings.leaseMs ?? 60_000;
    const log = this.deps.log.child({ repo_id: repositoryId });
    let leased = false;
    try {
      leased = await acquireLease(db, dialect, repositoryId, this.holder, leaseMs);
      if (!leased) {
        // Another holder has it (or a dead one whose lease has not expired): look again later.
        const count = (this.leasedElsewhere.get(repositoryId)?.count ?? 0) + 1;
        const delay = Math.min(8000, leaseMs, 1000 * 2 ** (count - 1));
        this.leasedElsewhere.set(repositoryId, { count, nextAt: Date.now() + delay });
        log.debug({ attempt: count, retry_in_ms: delay }, 'snapshot lease held elsewhere; retrying later');
        return;
      }
      this.leasedElsewhere.delete(repositoryId);
      // Another worker has just persisted it: nothing to do here.
      if (!(await isDirty(db, repositoryId))) return;
      await this.snapshot(repositoryId, leaseMs, log);
    } catch (err) {
      if (!this.closed) log.error({ err }, 'snapshot lease failed');
    } finally {
      if (leased) await releaseLease(db, repositoryId, this.holder).catch((err: unknown) => log.warn({ err }, 'snapshot lease not released; it expires'));
    }
  }

  private async snapshot(repositoryId: string, leaseMs: number, log: Logger): Promise<void> {
    const started = Date.now();
    const { db, dialect } = this.deps.meta;
    const job = new AbortController();
    const onClose = () => job.abort(this.abort.signal.reason);
    this.abort.signal.addEventListener('abort', onClose, { once: true });
    const renewal = setInterval(() => {
      renewLease(db, dialect, repositoryId, this.holder, leaseMs).then(
        (held) => held || job.abort(new Error('snapshot lease lost')),
        (err: unknown) => log.warn({ err }, 'snapshot lease not renewed'),
      );
    }, Math.max(10, leaseMs / 3));
    renewal.unref();
    let row: SnapshotRow | undefined;
    try {
      row = await createSnapshot(
        { meta: this.deps.meta, store: this.deps.store, ...(this.deps.fence && { fence: this.deps.fence }) },
        { repositoryId, repoPath: this.deps.repoPath(repositoryId), signal: job.signal },
      );
      this.failures.delete(repositoryId);
      this.deps.metrics?.runs.inc({ result: 'ok' });
      this.deps.metrics?.bytes.inc(row.byteSize);
      this.deps.metrics?.duration.observe((Date.now() - started) / 1000);
      log.info({ snapshot: row.id, kind: row.kind, bytes: row.byteSize, objects: row.objectCount, duration_ms: Date.now() - started }, 'snapshot written');
    } catch (err) {
      if (this.closed) return;
      const count = (this.failures.get(repositoryId)?.count ?? 0) + 1;
      const delay = Math.min(this.settings.retryMaxMs, 1000 * 2 ** (count - 1));
      this.failures.set(repositoryId, { count, nextAt: Date.now() + delay });
      this.deps.metrics?.runs.inc({ result: 'failed' });
      log.warn({ err, attempt: count, retry_in_ms: delay }, 'snapshot failed; repository stays dirty');
      return;
    } finally {
      if (!row) {
        clearInterval(renewal);
        this.abort.signal.removeEventListener('abort', onClose);
      }
    }
    try {
      await this.compactIfDue(repositoryId, row, log, job.signal);
    } finally {
      clearInterval(renewal);
      this.abort.signal.removeEventListener('abort', onClose);
    }
  }

  /**
   * After a snapshot, in the same job (so never alongside another job on the repository): one
   * full snapshot in place of a chain grown past the limits. A failure costs nothing but the
   * attempt; the next snapshot looks again.
   */
  private async compactIfDue(repositoryId: string, latest: SnapshotRow, log: Logger, signal: AbortSignal): Promise<void> {
    const limits = this.settings.compaction;
    if (!limits || this.closed) return;
    const started = Date.now();
    try {
      if (!compactionDue(await snapshotChain(this.deps.meta.db, latest), limits)) return;
      const result = await compactRepository(
        { meta: this.deps.meta, store: this.deps.store, scratchRoot: limits.scratchRoot, ...(this.deps.fence && { fence: this.deps.fence }) },
        { repositoryId, at: latest.id, signal },
      );
      this.deps.metrics?.compactions.inc({ result: 'ok' });
      log.info(
        { snapshot: result.full.id, replaced: latest.id, deleted: result.deleted.length, kept: result.kept.length, orphans: result.orphans.length, duration_ms: Date.now() - started },
        'snapshots compacted',
      );
    } catch (err) {
      if (this.closed) return;
      this.deps.metrics?.compactions.inc({ result: 'failed' });
      log.warn({ err }, 'snapshot compaction failed');
    }
  }
}
