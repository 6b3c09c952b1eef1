/**
 * The background jobs a process may run besides serving requests: the snapshot worker and the
 * scheduled jobs (docs/design/snapshots.md). `serve` runs them inside the server (the snapshot
 * worker when `snapshotsEnabled`); `gitstratum worker` runs them alone, without HTTP. Both
 * build them here from the one configuration, so the two roles behave alike.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Registry } from 'prom-client';
import type { Config } from './config/schema.js';
import type { Core } from './core.js';
import type { Logger } from './shared/log.js';
import type { ObjectStore } from './storage/object-store.js';
import { dirtyRepositories } from './meta/snapshots.js';
import { createSnapshotMetrics, SnapshotWorker } from './snapshots/worker.js';
import { createDrillMetrics, runDrill } from './snapshots/drill.js';
import { repoDir, repositoryConfig } from './repos/local-host.js';
import { createDeliveryMetrics, Deliverer } from './events/delivery.js';
import { allowList } from './events/url-safety.js';
import { pruneDeliveries } from './meta/webhooks.js';
import { changeFeed, type ChangeFeed } from './meta/changes.js';
import { backupMeta, listMetaBackups, postgresBackupMessage } from './snapshots/meta-backup.js';

export interface BackgroundDeps {
  core: Core;
  store: ObjectStore;
  registry: Registry;
  log: Logger;
  /** A storage node's fence for the metadata its snapshots write (repos/cluster-hosts.ts). */
  fence?: (trx: Core['meta']['db']) => Promise<void>;
}

export interface Background {
  /** Present when this process snapshots repositories; the post-receive hook wakes it. */
  snapshots: SnapshotWorker | undefined;
  /** Present when this process sends webhook deliveries; whoever writes an event wakes it. */
  deliveries: Deliverer | undefined;
  /** What wakes idle loops on a change to the database, whoever wrote it (meta/changes.ts). */
  changes: ChangeFeed | undefined;
  start(): void;
  /** Stops every job: a snapshot upload in flight is aborted and leaves nothing behind. */
  close(): Promise<void>;
}

export function createBackground(config: Config, deps: BackgroundDeps, opts: { snapshots: boolean }): Background {
  const { core, store, registry, log } = deps;
  // Stable across restarts: a restarted process recognises its predecessor's leases.
  const node = `${hostname()}:${createHash('sha256').update(path.resolve(core.dataDir)).digest('hex').slice(0, 12)}`;
  const changes = changeFeed(core.meta, log.child({ component: 'changes' }));
  const snapshots = opts.snapshots
    ? new SnapshotWorker(
        {
          debounceMs: config.snapshotDebounceSeconds * 1000,
          maxDelayMs: config.snapshotMaxDelaySeconds * 1000,
          concurrency: config.snapshotConcurrency,
          retryMaxMs: config.snapshotRetryMaxSeconds * 1000,
          compaction: {
            maxChainLength: config.snapshotChainMaxLength,
            maxSizeRatio: config.snapshotChainMaxSizeRatio,
            minBytes: config.snapshotCompactMinBytes,
            scratchRoot: path.join(core.dataDir, 'tmp'),
          },
          // A storage node persists its own shard's repositories; `serve` and `worker` every one.
          shard: config.role === 'storage' ? config.shard : undefined,
          node,
        },
        {
          meta: core.meta,
          store,
          repoPath: (id) => repoDir(core.dataDir, id),
          log: log.child({ component: 'snapshots' }),
          metrics: createSnapshotMetrics(registry, () => dirtyRepositories(core.meta.db, { shard: config.role === 'storage' ? config.shard : undefined })),
          ...(deps.fence && { fence: deps.fence }),
          changes,
        },
      )
    : undefined;
  const deliveries = config.webhooksEnabled
    ? new Deliverer(
        {
          holder: `${node}:${process.pid}`,
          concurrency: config.webhookConcurrency,
          timeoutMs: config.webhookTimeoutSeconds * 1000,
          maxAttempts: config.webhookMaxAttempts,
          backoffBaseMs: config.webhookBackoffSeconds * 1000,
          maxBackoffMs: config.webhookMaxBackoffSeconds * 1000,
          disableAfterFailures: config.webhookDisableAfterFailures,
          pollMs: 500,
          retentionMs: config.webhookRetentionDays * 86_400_000,
          allowed: allowList(config.webhookAllowedHosts.split(',')),
        },
        { meta: core.meta, log: log.child({ component: 'webhooks' }), metrics: createDeliveryMetrics(registry), changes },
      )
    : undefined;
  const jobs: Periodic[] = [];
  if (!deliveries) {
    // The Deliverer prunes the outbox and the delivery log as it goes; without one, this does.
    const hourly = 3_600_000;
    jobs.push(
      new Periodic(hourly, 60_000, log.child({ component: 'webhooks' }), async () => {
        await pruneDeliveries(core.meta.db, new Date(Date.now() - config.webhookRetentionDays * 86_400_000).toISOString());
      }),
    );
  }
  if (config.drDrillIntervalSeconds > 0) {
    const drillLog = log.child({ component: 'dr-drill' });
    const metrics = createDrillMetrics(registry);
    const deps = { meta: core.meta, store, dataDir: core.dataDir, repoPath: (id: string) => repoDir(core.dataDir, id), repoConfig: repositoryConfig() };
    const intervalMs = config.drDrillIntervalSeconds * 1000;
    jobs.push(
      new Periodic(intervalMs, intervalMs, drillLog, async (signal) => {
        const report = await runDrill(deps, { sample: config.drDrillSample, signal });
        metrics.record(report);
        const fields = { checked: report.checked, ...report.counts, bytes: report.bytes, bytes_per_second: Math.round(report.bytesPerSecond) };
        if (report.passed) drillLog.info(fields, 'dr drill passed');
        else drillLog.error({ ...fields, problems: report.repositories.filter((r) => r.status === 'mismatch' || r.status === 'failed') }, 'dr drill found problems');
      }),
    );
  }
  if (config.metaBackupIntervalSeconds > 0 && core.meta.dialect === 'postgres') {
    log.info({ component: 'meta-backup' }, `metadata backup skipped: ${postgresBackupMessage}`);
  } else if (config.metaBackupIntervalSeconds > 0) {
    const backupLog = log.child({ component: 'meta-backup' });
    const intervalMs = config.metaBackupIntervalSeconds * 1000;
    // Checked every interval (the first time a minute after start, sooner for short intervals);
    // a backup younger than the interval, written by another process on this database, counts.
    jobs.push(
      new Periodic(intervalMs, Math.min(intervalMs, 60_000), backupLog, async () => {
        const newest = (await listMetaBackups(store)).pop();
        if (newest && Date.now() - Date.parse(newest.at) < intervalMs * 0.9) return;
        const started = Date.now();
        const b = await backupMeta({ meta: core.meta, store, dataDir: core.dataDir }, { keep: config.metaBackupKeep });
        backupLog.info({ key: b.key, bytes: b.size, pruned: b.pruned, duration_ms: Date.now() - started }, 'metadata backed up');
      }),
    );
  }
  return {
    snapshots,
    deliveries,
    changes,
    start() {
      snapshots?.start();
      deliveries?.start();
      for (const job of jobs) job.start();
    },
    async close() {
      await Promise.all([snapshots?.close(), deliveries?.close(), ...jobs.map((j) => j.close())]);
      await changes?.close();
    },
  };
}

/**
 * A task run every `intervalMs` (the first time after `firstMs`), never two runs at once. A
 * failure is logged and the task runs again at the next interval. close() stops the timer,
 * signals a running task to stop and waits for it.
 */
export class Periodic {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly abort = new AbortController();

  constructor(
    private readonly intervalMs: number,
    private readonly firstMs: number,
    private readonly log: Logger,
    private readonly task: (signal: AbortSignal) => Promise<void>,
  ) {}

  start(): void {
    this.schedule(this.firstMs);
  }

  private schedule(ms: number): void {
    if (this.abort.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.running = this.task(this.abort.signal)
        .catch((err: unknown) => this.log.error({ err }, 'scheduled job failed'))
        .finally(() => {
          this.running = undefined;
          this.schedule(this.intervalMs);
        });
    }, ms);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.abort.abort(new Error('closing'));
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
