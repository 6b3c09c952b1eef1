/**
 * The part of a process that serves clients (`serve`, and a frontend): client budgets,
 * authentication, Smart HTTP, Git LFS and the REST API. Git requests go to the repository's
 * host: this process's disk (`serve`, node.ts) or the storage node of its shard, through the
 * frontend's own clone cache (repos/frontend-cache.ts). app.ts puts it together by role.
 */
import { httpOrigin } from './http/origin.js';
import type { Config } from './config/schema.js';
import type { Core } from './core.js';
import { openPackCache } from './git/pack-cache/cache.js';
import { registerGitRoutes } from './http/git-routes.js';
import { registerApiRoutes } from './http/api-routes.js';
import { registerLfsRoutes } from './http/lfs-routes.js';
import { connectRedis, redisReady, registerBudget } from './http/rate-limit.js';
import { timed } from './storage/timed-store.js';
import { createSshServer, type SshServer } from './ssh/server.js';
import { loadHostKeys } from './ssh/host-keys.js';
import { createLfsMetrics } from './lfs/metrics.js';
import { createLfsObjects } from './lfs/objects.js';
import { createSigner, loadSigningKey } from './lfs/signing.js';
import { createRoutingMetrics } from './repos/cluster-hosts.js';
import { SHARD_LEASE_CHANNEL } from './meta/shard-leases.js';
import { cachedHostOf, databaseVersions, RemoteGitServices } from './repos/frontend-cache.js';
import type { Shared } from './node.js';
import type { HostOf } from './repos/host.js';

export interface Edge {
  /** Before listening: waits for Redis; a frontend listens for changes of shard writers; starts the SSH server when configured. */
  start(): Promise<void>;
  /** Beside the HTTP server's close: the SSH server stops accepting and lets running commands finish (up to shutdownTimeoutSeconds). */
  stopServing(): Promise<void>;
  /** After the HTTP server stopped. */
  close(): Promise<void>;
}

/** `local`: the host of every repository when this process holds them all (`serve`); a frontend routes by shard. */
export async function createEdge(config: Config, core: Core, shared: Shared, local: HostOf | undefined): Promise<Edge> {
  const { log, metrics, http, rawStore, locks, limits } = shared;
  const lfsMetrics = createLfsMetrics(metrics.registry);
  const store = timed(rawStore, lfsMetrics.storeLatency);
  const signer = createSigner(await loadSigningKey(core.dataDir, config.signingSecret));
  const lfsObjects = createLfsObjects({
    meta: core.meta,
    store,
    signer,
    metrics: lfsMetrics,
    quota: core.quotas,
    settings: {
      mode: config.lfsTransferMode,
      maxObjectBytes: config.lfsMaxObjectBytes,
      maxBatchObjects: config.lfsMaxBatchObjects,
      actionExpiresSeconds: config.lfsActionExpiresSeconds,
    },
  });
  // A frontend's own cache, keyed by the refs versions storage nodes keep in PostgreSQL: a hit
  // reaches no storage node (repos/frontend-cache.ts).
  const remoteGit = new RemoteGitServices();
  const frontendCache =
    config.packCacheEnabled && config.role === 'frontend'
      ? await openPackCache(remoteGit, { ...shared.packCache.options, handoffPrefix: undefined, versions: databaseVersions(core.meta.db), gitVersion: 'storage-node' }, shared.packCache.deps)
      : undefined;
  // Before every route: the budget of each client (README "Limits"). Connected last, so no
  // failure of the wiring above can leave a Redis connection open.
  const redis = config.redisUrl ? connectRedis(config.redisUrl, log.child({ component: 'rate-limit' })) : undefined;
  const budget = registerBudget(
    http,
    {
      windowSeconds: config.rateLimitWindowSeconds,
      requests: { git: config.rateLimitGitRequests, lfs: config.rateLimitLfsRequests, api: config.rateLimitApiRequests },
      authFailures: config.rateLimitAuthFailures,
      concurrentRequests: config.maxConcurrentRequestsPerClient,
      concurrentGit: config.maxConcurrentGitPerClient,
      gitQueue: { maxWaiting: config.gitMaxQueue, timeoutMs: config.gitQueueTimeoutSeconds * 1000 },
      bodyChunksPerSecond: config.maxBodyChunksPerSecondPerClient,
    },
    { accounts: core.accounts, registry: metrics.registry, log: log.child({ component: 'rate-limit' }), redis, redisKeyPrefix: config.redisKeyPrefix },
  );
  core.routing?.useMetrics(createRoutingMetrics(metrics.registry));
  let stopListening: (() => Promise<void>) | undefined;
  const gitHostOf = local ?? (frontendCache ? cachedHostOf(core.hostOf, frontendCache, remoteGit, limits) : core.hostOf);
  registerGitRoutes(http, {
    accounts: core.accounts,
    repos: core.repos,
    hostOf: gitHostOf,
    maxPushBytes: config.maxPushBytes,
    metrics,
  });
  let ssh: SshServer | undefined;
  registerApiRoutes(http, { meta: core.meta, lfsStore: rawStore, accounts: core.accounts, repos: core.repos, offboarding: core.offboarding, auditTrail: core.auditTrail, quotas: core.quotas, sshKeys: core.sshKeys, protections: core.protections, webhooks: core.webhooks, hub: shared.eventHub, maxEventStreams: config.maxEventStreamsPerClient, ssh: config.sshPort !== undefined ? { publicUrl: config.sshPublicUrl, port: config.sshPort } : undefined });
  registerLfsRoutes(http, { accounts: core.accounts, repos: core.repos, objects: lfsObjects, locks, signer, metrics: lfsMetrics, publicUrl: config.publicUrl, sshKeys: core.sshKeys });

  return {
    async start() {
      // A frontend hears at once when a shard changes writer (its routing cache is the fallback).
      if (config.role === 'frontend' && core.routing && core.meta.listen) {
        const routing = core.routing;
        stopListening = await core.meta.listen(SHARD_LEASE_CHANNEL, (shard) => routing.invalidate(shard));
      }
      if (redis) await redisReady(redis, 5000);
      if (config.sshPort !== undefined) {
        const sshLog = log.child({ component: 'ssh' });
        const hostKeys = await loadHostKeys(core.dataDir, true);
        ssh = createSshServer(
          {
            hostKeys,
            anonymousReads: config.sshAnonymousReads,
            idleTimeoutMs: config.sshIdleTimeoutSeconds * 1000,
            maxConnectionMs: config.sshMaxConnectionSeconds * 1000,
            maxRequestBytes: config.maxFetchRequestBytes,
          },
          {
            budget,
            sshKeys: core.sshKeys,
            repos: core.repos,
            hostOf: gitHostOf,
            signer,
            httpOrigin: () => config.publicUrl ?? httpOrigin(http, config),
            log: sshLog,
            registry: metrics.registry,
          },
        );
        const port = await ssh.listen(config.sshPort, config.sshHost ?? config.host);
        sshLog.info({ port, host_keys: hostKeys.map((k) => `${k.type} ${k.fingerprint}`) }, 'ssh listening');
      }
    },
    async stopServing() {
      await ssh?.close(config.shutdownTimeoutSeconds * 1000);
    },
    async close() {
      await ssh?.close(0);
      await stopListening?.();
      await frontendCache?.close();
      redis?.disconnect();
    },
  };
}
