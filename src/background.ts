/**
 * The background jobs a process may run besides serving requests: the snapshot worker and the
 * scheduled jobs (docs/design/snapshots.md). `serve` runs them inside the server (the snapshot
 * worker when `snapshotsEnabled`); `gitstratum worker` runs them alone, without HTTP. Both
 * build them here from the one configuration, so the two roles behave alike.
 */
import type { Registry } from 'prom-client';
import type { Config } from './config/schema.js';
import type { Core } from './core.js';
import type { Logger } from './shared/log.js';
import type { ObjectStore } from './storage/object-store.js';
import { dirtyRepositories } from './meta/snapshots.js';
import { createSnapshotMetrics, SnapshotWorker } from './snapshots/worker.js';

export interface BackgroundDeps {
  core: Core;
  store: ObjectStore;
  registry: Registry;
  log: Logger;
}

export interface Background {
  /** Present when this process snapshots repositories; the post-receive hook wakes it. */
  snapshots: SnapshotWorker | undefined;
  start(): void;
  /** Stops every job: a snapshot upload in flight is aborted and leaves nothing behind. */
  close(): Promise<void>;
}

export function createBackground(config: Config, deps: BackgroundDeps, opts: { snapshots: boolean }): Background {
  const { core, store, registry, log } = deps;
  const snapshots = opts.snapshots
    ? new SnapshotWorker(
        {
          debounceMs: config.snapshotDebounceSeconds * 1000,
          maxDelayMs: config.snapshotMaxDelaySeconds * 1000,
          concurrency: config.snapshotConcurrency,
          retryMaxMs: config.snapshotRetryMaxSeconds * 1000,
        },
        {
          meta: core.meta,
          store,
          repoPath: (id) => core.repos.diskPath(id),
          log: log.child({ component: 'snapshots' }),
          metrics: createSnapshotMetrics(registry, () => dirtyRepositories(core.meta.db)),
        },
      )
    : undefined;
  return {
    snapshots,
    start() {
      snapshots?.start();
    },
    async close() {
      await snapshots?.close();
    },
  };
}
