/**
 * The one place that wires adapters → services → edges. `createApp` builds on the core
 * (core.ts: metadata and services, all the admin CLI needs) what every role shares (the HTTP
 * server, git limits, the object store, LFS locks, the clone cache settings), then by role
 * (README "Running on several machines"): the disk node (node.ts: git, hooks, maintenance,
 * snapshots, recovery, and a storage node's lease) unless a frontend, and the edge (edge.ts:
 * client budgets, Smart HTTP, LFS, the REST API) unless a storage node.
 */
import { EventHub } from './events/stream.js';
import path from 'node:path';
import { sql } from 'kysely';
import type { FastifyInstance } from 'fastify';
import type { Config } from './config/schema.js';
import type { Logger } from './shared/log.js';
import { openCore, type Core } from './core.js';
import { Limiter } from './git/limiter.js';
import { createPackCacheMetrics } from './git/pack-cache/metrics.js';
import { HookServer } from './git/hooks.js';
import { createMetrics } from './http/metrics.js';
import { createHttpServer } from './http/server.js';
import type { ObjectStore } from './storage/object-store.js';
import { createFsStore } from './storage/fs-store.js';
import { createLocks } from './lfs/locks.js';
import { createUsageMetrics } from './repos/usage-metrics.js';
import { createDiskNode, type DiskNode, type Shared } from './node.js';
import { createEdge, type Edge } from './edge.js';

/** The configured ObjectStore adapter: the filesystem under <data>/objects, or S3. */
export async function createObjectStore(config: Config, dataDir: string): Promise<ObjectStore & { destroy?(): void }> {
  if (config.objectStore === 's3') {
    // Loaded only when configured: the AWS SDK costs ~13 MiB of resident memory.
    const { createS3Store } = await import('./storage/s3-store.js');
    return createS3Store({
      ...(config.s3Endpoint && { endpoint: config.s3Endpoint }),
      region: config.s3Region,
      bucket: config.s3Bucket!,
      forcePathStyle: config.s3ForcePathStyle === 'true',
      ...(config.s3AccessKeyId && { accessKeyId: config.s3AccessKeyId }),
      ...(config.s3SecretAccessKey && { secretAccessKey: config.s3SecretAccessKey }),
      ...(config.s3Prefix && { prefix: config.s3Prefix.replace(/\/+$/, '') }),
    });
  }
  return createFsStore(path.join(dataDir, 'objects'));
}

export interface App {
  core: Core;
  http: FastifyInstance;
  /** The hook server of the process that holds repositories (none on a frontend). */
  hooks: HookServer | undefined;
  limiter: Limiter;
  /** Installs hooks, opens the hook socket and starts listening; returns the bound URL. */
  listen(): Promise<string>;
  /**
   * A storage node that loses its shard lease stops serving at once and calls `handler`; the
   * process should then close and exit (a supervisor starts it again, as a standby).
   */
  onDeposed(handler: (why: string) => void): void;
  close(): Promise<void>;
}

export async function createApp(config: Config, log: Logger): Promise<App> {
  const core = await openCore(config);
  try {
    return await assemble(config, log, core);
  } catch (err) {
    // A failure after the database opened must not leave its handle (and the process) alive.
    await core.close().catch(() => {});
    throw err;
  }
}

async function assemble(config: Config, log: Logger, core: Core): Promise<App> {
  const limiter = new Limiter({
    maxRunning: config.gitMaxProcesses,
    maxQueue: config.gitMaxQueue,
    queueTimeoutMs: config.gitQueueTimeoutSeconds * 1000,
  });
  const metrics = createMetrics({ gitRunning: () => limiter.runningCount, gitQueued: () => limiter.queuedCount });
  createUsageMetrics(metrics.registry, core.quotas);
  const rawStore = await createObjectStore(config, core.dataDir);
  const http = createHttpServer({
    config,
    log,
    metrics,
    ready: async () => {
      await sql`select 1`.execute(core.meta.db);
      return true;
    },
  });
  const limits = {
    timeoutMs: config.gitTimeoutSeconds * 1000,
    niceness: config.gitNiceness,
    maxPushBytes: config.maxPushBytes,
    maxFetchRequestBytes: config.maxFetchRequestBytes,
    push: { maxRefUpdates: config.gitMaxRefUpdates, maxPushOptions: config.gitMaxPushOptions, maxCommandBytes: config.gitMaxPushCommandBytes, maxPushOptionBytes: config.gitMaxPushOptionBytes },
  };
  const shared: Shared = {
    log,
    metrics,
    limiter,
    http,
    rawStore,
    locks: createLocks(core.meta, { publicUrl: config.publicUrl }),
    limits,
    packCache: {
      options: {
        dir: path.join(core.dataDir, 'cache'),
        limits: { maxBytes: config.packCacheMaxBytes, maxEntryBytes: config.packCacheMaxEntryBytes, minFreeBytes: config.packCacheMinFreeBytes },
        admitAfter: config.packCacheAdmitAfter,
        admitWindowMs: config.packCacheAdmitWindowSeconds * 1000,
        maxRequestBytes: config.packCacheMaxRequestBytes,
        handoffPrefix: config.packCacheAccelRedirect,
        admission: {
          maxRunning: config.gitMaxGenerations,
          maxRunningPerRepo: config.gitMaxGenerationsPerRepo,
          maxQueue: config.gitMaxQueue,
          queueTimeoutMs: config.gitGenerationQueueSeconds * 1000,
        },
      },
      deps: { metrics: createPackCacheMetrics(metrics.registry), log: log.child({ component: 'pack-cache' }) },
    },
    eventHub: new EventHub(core.meta, log.child({ component: 'event-stream' })),
  };
  // A cluster's roles (README "Running on several machines"): a frontend serves clients and
  // runs no git; a storage node serves its shard's repositories to frontends only; `all` both.
  const node: DiskNode | undefined = config.role === 'frontend' ? undefined : await createDiskNode(config, core, shared);
  let edge: Edge | undefined;
  try {
    edge = config.role === 'storage' ? undefined : await createEdge(config, core, shared, node && (() => node.localHost));
  } catch (err) {
    await node?.close().catch(() => {});
    throw err;
  }

  return {
    core,
    http,
    hooks: node?.hooks,
    limiter,
    async listen() {
      await node?.start();
      await edge?.start();
      return http.listen({ host: config.host, port: config.port });
    },
    onDeposed(handler) {
      node?.onDeposed(handler);
    },
    async close() {
      // Order matters: in-flight pushes (HTTP or SSH) still need the hook socket and the database.
      await Promise.all([http.close(), edge?.stopServing()]);
      await node?.close();
      await edge?.close();
      rawStore.destroy?.();
      await core.close();
    },
  };
}
