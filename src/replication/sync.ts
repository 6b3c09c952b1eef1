/**
 * The writer's side of a synchronous standby (issue 11; docs/design/replication.md): which
 * synchronous replica its pushes wait for, and what happens when there is none.
 *
 * Every SYNC_REFRESH_MS it reads the shard's synchronous replicas and its `sync_missing`
 * setting. A push runs "sync" (GITSTRATUM_SYNC in git's environment, so its
 * reference-transaction hook reports both phases) while the shard has a synchronous replica
 * registered, connected or not, or the setting is `refuse`: at `prepared` the replica must hold
 * the transaction's objects before the refs commit (hold()). With none connected, `accept` lets
 * the push commit unsynced (counted, logged), `refuse` refuses it. A shard that never had a
 * synchronous replica (and accepts) pays nothing for this.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../shared/log.js';
import type { MetaStore } from '../meta/db.js';
import { REPLICA_SEEN_WITHIN_MS, syncReplicas } from '../meta/replication.js';
import { shardSyncMissing, type SyncMissing } from '../meta/shards.js';
import { RemoteRepoHost } from '../repos/remote-host.js';

export const SYNC_REFRESH_MS = 1000;
/** How long a push's `prepared` waits for the synchronous replica to hold its objects. */
export const SYNC_HOLD_TIMEOUT_MS = 30_000;

export interface SyncMetrics {
  transactions: { inc(labels: { result: 'held' | 'unsynced' | 'refused' }): void };
  commitFailures: { inc(): void };
  connected: { set(value: number): void };
  holdSeconds: { observe(value: number): void };
}

export function createSyncMetrics(registry: Registry): SyncMetrics {
  return {
    transactions: new Counter({
      name: 'gitstratum_sync_transactions_total',
      help: 'Ref transactions of pushes run with a synchronous standby, by result: held (the replica held the objects before the refs committed), unsynced (no replica; committed anyway: sync_missing=accept), refused (no replica: sync_missing=refuse).',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    holdSeconds: new Histogram({
      name: 'gitstratum_sync_hold_seconds',
      help: 'How long a ref transaction waited at `prepared` for the synchronous replica to hold its objects (held ones only; a send begun at pre-receive counts from `prepared`).',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    connected: new Gauge({ name: 'gitstratum_sync_replica_connected', help: 'Whether a synchronous replica of this writer\'s shard is connected (1) or not (0): pushes wait for it.', registers: [registry] }),
    commitFailures: new Counter({
      name: 'gitstratum_sync_commit_failures_total',
      help: 'Committed ref transactions whose record could not be written before the acknowledgement: their push was stopped (the client sees a failure).',
      registers: [registry],
    }),
  };
}

/** What hold() found: held, or why not (with what to do about the push). */
export type HoldResult = { held: true } | { held: false; refuse: boolean; reason: string };

export class SyncTarget {
  private replica: { url: string; host: RemoteRepoHost } | undefined;
  private missing: SyncMissing = 'accept';
  /** A synchronous replica is registered for the shard, connected or not. */
  private configured = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: { shard: string; secret: string; timeoutMs: number; self: string },
    private readonly deps: { meta: MetaStore; log: Logger; metrics: SyncMetrics },
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), SYNC_REFRESH_MS);
    this.timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.replica?.host.close();
    this.replica = undefined;
  }

  /** Whether a synchronous replica is connected now. */
  get connected(): boolean {
    return this.replica !== undefined;
  }

  /** Whether a push starting now runs sync (read when its git starts). */
  get active(): boolean {
    return this.replica !== undefined || this.configured || this.missing === 'refuse';
  }

  /**
   * Sends a transaction's objects to the synchronous replica (`pack`, made only when one is
   * connected; without it, or when it cannot be made, the replica fetches them) and resolves
   * once it holds them; rejects when there is no replica or it does not take them. Counts
   * nothing: hold() does, for the transaction that waits.
   */
  async send(repoId: string, oids: readonly string[], pack?: () => Promise<Buffer | undefined>): Promise<void> {
    const replica = this.replica;
    if (!replica) throw new Error(`shard ${this.opts.shard} has no synchronous replica connected`);
    const packed = pack ? await pack().catch((err: unknown) => (this.deps.log.warn({ err, repo_id: repoId }, 'no pack for the synchronous replica; it fetches the objects'), undefined)) : undefined;
    try {
      await replica.host.holdObjects(repoId, oids, AbortSignal.timeout(this.opts.timeoutMs), packed);
    } catch (err) {
      throw new Error(`the synchronous replica ${replica.url} of shard ${this.opts.shard} did not take the push's objects: ${(err as Error).message}`);
    }
  }

  /**
   * A prepared transaction's wait for the synchronous replica to hold its objects: `early`, a
   * send begun before (at pre-receive, from the quarantine), or a send now (again, when the
   * early one failed). Resolves held, or with why not (the caller refuses the push or lets it
   * commit unsynced).
   */
  async hold(repoId: string, oids: readonly string[], pack?: () => Promise<Buffer | undefined>, early?: Promise<void>): Promise<HoldResult> {
    if (!this.replica) return this.without(`shard ${this.opts.shard} has no synchronous replica connected`);
    const started = performance.now();
    try {
      await (early ? early.catch(() => this.send(repoId, oids, pack)) : this.send(repoId, oids, pack));
    } catch (err) {
      return this.without((err as Error).message);
    }
    this.deps.metrics.holdSeconds.observe((performance.now() - started) / 1000);
    this.deps.metrics.transactions.inc({ result: 'held' });
    return { held: true };
  }

  private without(reason: string): HoldResult {
    const refuse = this.missing === 'refuse';
    this.deps.metrics.transactions.inc({ result: refuse ? 'refused' : 'unsynced' });
    this.deps.log.warn({ shard: this.opts.shard, sync_missing: this.missing }, `${reason}; ${refuse ? 'push refused' : 'push committed without it (not safe from the loss of this disk until replicated)'}`);
    return { held: false, refuse, reason };
  }

  private async refresh(): Promise<void> {
    try {
      const [replicas, missing] = await Promise.all([syncReplicas(this.deps.meta, this.opts.shard, REPLICA_SEEN_WITHIN_MS), shardSyncMissing(this.deps.meta.db, this.opts.shard)]);
      this.missing = missing;
      // A sync replica that took the shard over left the table, but this is read concurrently.
      const others = replicas.filter((r) => r.url !== this.opts.self);
      this.configured = others.length > 0;
      this.deps.metrics.connected.set(others.some((r) => r.live) ? 1 : 0);
      const url = others.find((r) => r.live)?.url;
      if (url === this.replica?.url) return;
      const old = this.replica;
      this.replica = url === undefined ? undefined : { url, host: new RemoteRepoHost({ url, secret: this.opts.secret, connectTimeoutMs: this.opts.timeoutMs }) };
      this.deps.log.info({ shard: this.opts.shard, replica: url ?? null }, url ? 'pushes wait for this synchronous replica' : 'no synchronous replica connected');
      void old?.host.close();
    } catch (err) {
      this.deps.log.warn({ err }, 'synchronous replicas not read; keeping the last known');
    }
  }
}
