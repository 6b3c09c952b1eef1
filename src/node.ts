/**
 * The part of a process that owns a disk of repositories (`serve`, and a storage node): git
 * and its hooks, the clone cache over git, maintenance, snapshots, eviction and crash recovery,
 * and on a storage node the shard lease, the fencing of its metadata writes and the takeover
 * (README "Running on several machines"). It serves repositories through `localHost`; a
 * storage node also answers frontends on the signed node routes. The client-facing routes are
 * the edge's (edge.ts); app.ts puts the two together by role.
 */
import path from 'node:path';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { chmod, stat } from 'node:fs/promises';
import { Counter, Gauge } from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { Config } from './config/schema.js';
import type { Logger } from './shared/log.js';
import type { Core } from './core.js';
import type { Limiter } from './git/limiter.js';
import { createMaintenanceMetrics, maintainRepository, MaintenanceScheduler } from './git/maintenance.js';
import { gitServices, type ServiceLimits } from './git/smart-http.js';
import { openPackCache, type PackCacheOptions } from './git/pack-cache/cache.js';
import { HOOK_NAMES, HookServer, hookRepoId, installHooks, parseRefLines, SERVER_HOOKS, type HookAnswer, type HookCall } from './git/hooks.js';
import { createMetrics } from './http/metrics.js';
import type { ObjectStore } from './storage/object-store.js';
import { createLocks } from './lfs/locks.js';
import { now, type Db } from './meta/db.js';
import { appendEvent } from './meta/snapshots.js';
import { appendEvents, type NewEvent } from './meta/webhooks.js';
import { pushEvents } from './events/payloads.js';
import type { EventHub } from './events/stream.js';
import { eventOrigin } from './http/origin.js';
import { createBackground, Periodic } from './background.js';
import { collectGarbage } from './lfs/gc.js';
import { createResidencyMetrics, Residency } from './snapshots/eviction.js';
import { countEvicted } from './meta/residency.js';
import { LocalRepoHost, repoDir, repoIdsOnDisk, repositoryConfig } from './repos/local-host.js';
import { findRepositoryById, listRepositories } from './meta/repositories.js';
import { pushLimitHooks } from './repos/push-limits.js';
import { createRecoveryMetrics, Recovery } from './repos/recovery.js';
import { closeCutOffPushes, markChangedRepositoriesDirty } from './snapshots/reconcile.js';
import { registerNodeRoutes, SYNC_PACK_MAX_BYTES } from './http/node-routes.js';
import { createShardWriterMetrics, ReplicaHost, ShardWriter, WriterHost } from './repos/cluster-hosts.js';
import { isDomainError, unavailable } from './shared/errors.js';
import { createShardLeases } from './meta/shard-leases.js';
import { forget, heartbeat } from './meta/storage-nodes.js';
import { bumpRefsVersion, bumpShardRefsVersions } from './meta/refs-versions.js';
import { appendAudit } from './meta/audit.js';
import { markEvicted } from './meta/residency.js';
import { adoptFromSnapshots, lostPushAudit } from './snapshots/takeover.js';
import { crashPoint, pausePoint } from './shared/crash.js';
import { createMirrorMetrics, Mirror, replicaDiskId } from './replication/mirror.js';
import { createSyncMetrics, SYNC_HOLD_TIMEOUT_MS, SyncTarget } from './replication/sync.js';
import { committedRefs, recordCommitted, recordPrepared, transactionKey } from './meta/sync-refs.js';
import { packOfNewObjects, presentObjects, readRefsForSnapshot, updateRefsTransaction } from './git/command.js';
import { refTransaction, type RefChange } from './replication/follow.js';
import { copyState, MoveCopies } from './replication/move-copies.js';
import { pushAdmission } from './meta/moves.js';
import { createPublishMetrics, enqueuePushPublishing, Publisher } from './lfs/publisher.js';
import { countPendingJobs } from './meta/lfs-publish.js';

/** What app.ts builds once for the whole process and hands to the node and the edge. */
export interface Shared {
  log: Logger;
  metrics: ReturnType<typeof createMetrics>;
  limiter: Limiter;
  http: FastifyInstance;
  rawStore: ObjectStore & { destroy?(): void };
  locks: ReturnType<typeof createLocks>;
  limits: ServiceLimits;
  packCache: { options: PackCacheOptions; deps: Parameters<typeof openPackCache>[2] };
  /** The live event streams' reader of the outbox (events/stream.ts); a push written here wakes it. */
  eventHub: EventHub;
}

export interface DiskNode {
  /** The repositories on this disk: every one (`serve`) or those of the shard this node writes. */
  localHost: LocalRepoHost;
  hooks: HookServer;
  /** `serve`: claims and heals the disk now. A storage node: starts its lease loop (a standby waits). */
  start(): Promise<void>;
  onDeposed(handler: (why: string) => void): void;
  /** After the HTTP server stopped: releases the lease, stops background work, closes the hook socket. */
  close(): Promise<void>;
}

export async function createDiskNode(config: Config, core: Core, shared: Shared): Promise<DiskNode> {
  const { log, metrics, limiter, http, rawStore, locks, limits } = shared;
  // This node's own modules (maintenance, snapshots, recovery, hooks) work on the disk itself.
  const repoPath = (id: string) => repoDir(core.dataDir, id);
  // Size quotas and the refs cap at push time; sizes measured again after pushes and maintenance (docs/design/quotas.md).
  const pushLimits = pushLimitHooks(core.quotas, { repoPath, log: log.child({ component: 'quotas' }) });
  // Bitmaps and commit-graph kept fresh after pushes, off the request path (docs/design/maintenance.md).
  const maintenance = config.maintenanceEnabled
    ? new MaintenanceScheduler(
        {
          concurrency: config.maintenanceConcurrency,
          delayMs: config.maintenanceDelaySeconds * 1000,
          // A repository pushed to without pause is still maintained at least this often.
          maxDelayMs: Math.max(60_000, config.maintenanceDelaySeconds * 10_000),
          timeoutMs: config.maintenanceTimeoutSeconds * 1000,
        },
        {
          log: log.child({ component: 'maintenance' }),
          metrics: createMaintenanceMetrics(metrics.registry),
          task: (target, signal) => maintainRepository(target, signal).then(() => pushLimits.measure(target.repoId, target.repoPath)),
        },
      )
    : undefined;
  const hooks = new HookServer(core.dataDir, log.child({ component: 'hooks' }));
  // A storage node's claim on its shard (repos/cluster-hosts.ts): it recovers the shard's disk
  // and starts its background work only once it holds the lease, and stops when deposed.
  const shardLeases = config.role === 'storage' ? createShardLeases(core.meta) : undefined;
  const deposedHandlers: ((why: string) => void)[] = [];
  // What pushes of a writer wait for: the shard's synchronous replica (replication/sync.ts).
  const syncMetrics = createSyncMetrics(metrics.registry);
  const syncTarget = shardLeases
    ? new SyncTarget({ shard: config.shard!, secret: config.clusterSecret!, timeoutMs: SYNC_HOLD_TIMEOUT_MS, self: config.advertiseUrl! }, { meta: core.meta, log: log.child({ component: 'sync' }), metrics: syncMetrics })
    : undefined;
  // An async replica never takes the lease: it follows the writer (replication/mirror.ts,
  // below). A sync replica follows too, and stands by for the lease.
  const writer = shardLeases && config.replica !== 'async'
    ? new ShardWriter(
        { shard: config.shard!, advertiseUrl: config.advertiseUrl!, leaseMs: config.shardLeaseSeconds * 1000 },
        {
          leases: shardLeases,
          log: log.child({ component: 'shard-lease' }),
          metrics: createShardWriterMetrics(metrics.registry),
          nodes: { heartbeat: (node) => heartbeat(core.meta, node), forget: (holder) => forget(core.meta, holder) },
          events: { takeover: (epoch) => (config.replica === 'sync' ? takeOverAsSyncStandby(epoch) : takeOverDisk(epoch)), deposed: (why) => deposedHandlers.forEach((handler) => handler(why)) },
        },
      )
    : undefined;
  /**
   * Every metadata write a storage node makes for its shard carries its lease epoch (a push's
   * own, else the one held now) and is refused once another node took the shard.
   */
  const fence = shardLeases
    ? async (trx: Db, epoch = writer!.leaseEpoch): Promise<void> => {
        if (epoch === undefined) throw unavailable('not_shard_writer', `this node does not hold shard ${config.shard} now`);
        await shardLeases.fenced(trx, config.shard!, epoch);
      }
    : undefined;
  const fencedWrite = <T>(write: (db: Db) => Promise<T>, epoch?: number): Promise<T> =>
    core.meta.db.transaction().execute(async (trx) => (await fence?.(trx, epoch), write(trx)));
  const pushEpoch = (call: HookCall): number | undefined => (call.env['GITSTRATUM_SHARD_EPOCH'] ? Number(call.env['GITSTRATUM_SHARD_EPOCH']) : undefined);
  const isFenced = (err: unknown) => isDomainError(err) && (err.code === 'stale_epoch' || err.code === 'not_shard_writer');
  const deposedMessage = `gitstratum: this storage node is no longer the writer of shard ${config.shard ?? ''}; the push was not applied. Retry it.`;
  // Every repository persisted to the object store after pushes, and the scheduled jobs
  // (docs/design/snapshots.md); `gitstratum worker` runs the same without HTTP.
  const background = createBackground(
    config,
    { core, store: rawStore, registry: metrics.registry, log, ...(fence && { fence: (trx: Db) => fence(trx) }) },
    { snapshots: config.snapshotsEnabled },
  );
  // Repositories held on disk while git runs in them; evicted when idle (if configured) and
  // restored on their next request (docs/design/snapshots.md, "Eviction"). Always present: an
  // admin may evict one with `gitstratum repo evict` even when idle eviction is off.
  const residency = new Residency(
    { idleMs: config.snapshotEvictIdleSeconds * 1000 },
    {
      meta: core.meta,
      store: rawStore,
      dataDir: core.dataDir,
      repoPath,
      repoConfig: repositoryConfig(),
      log: log.child({ component: 'eviction' }),
      metrics: createResidencyMetrics(metrics.registry, () => countEvicted(core.meta.db)),
      ...(maintenance && { busy: (id: string) => maintenance.busy(id) }),
    },
  );
  // The readable LFS layout's publish jobs, for the repositories on this disk (lfs/publisher.ts).
  const publisher = rawStore.versions
    ? new Publisher(
        { holder: `lfs-publish:${hostname()}:${createHash('sha256').update(path.resolve(core.dataDir)).digest('hex').slice(0, 12)}`, leaseMs: 5 * 60_000, pollMs: 2_000, shard: config.role === 'storage' ? config.shard : undefined },
        {
          meta: core.meta,
          store: rawStore,
          prefix: config.lfsReadablePrefix,
          repoPath,
          hold: (repo) => residency.acquire({ id: repo.id, defaultBranch: repo.defaultBranch, label: `${repo.ownerName}/${repo.spaceName}/${repo.name}` }),
          log: log.child({ component: 'lfs-publish' }),
          metrics: createPublishMetrics(metrics.registry, () => countPendingJobs(core.meta.db)),
          changes: background.changes,
        },
      )
    : undefined;
  // LFS garbage collection on a schedule (off by default), where every repository is on this disk.
  const lfsGc = config.lfsGcIntervalSeconds > 0 && config.role === 'all' ? scheduledLfsGc() : undefined;
  function scheduledLfsGc(): Periodic {
    const gcLog = log.child({ component: 'lfs-gc' });
    const reclaimable = new Gauge({ name: 'gitstratum_lfs_gc_reclaimable_bytes', help: 'Bytes of LFS objects and published versions the last LFS GC scan found unreachable and past the grace period', registers: [metrics.registry] });
    const deleted = new Counter({ name: 'gitstratum_lfs_gc_deleted_bytes_total', help: 'Bytes of LFS objects and published versions deleted by scheduled LFS GC', registers: [metrics.registry] });
    const intervalMs = config.lfsGcIntervalSeconds * 1000;
    return new Periodic(intervalMs, Math.min(intervalMs, 10 * 60_000), gcLog, async (signal) => {
      const deps = { meta: core.meta, store: rawStore, repoPath, prefix: config.lfsReadablePrefix, log: gcLog };
      const report = await collectGarbage(deps, { dryRun: config.lfsGcDryRun, graceMs: config.lfsGcGraceSeconds * 1000, signal });
      reclaimable.set(config.lfsGcDryRun ? report.bytes.deleted : 0);
      if (!config.lfsGcDryRun) deleted.inc(report.bytes.deleted);
      gcLog.info({ ...report.objects, bytes: report.bytes.deleted, versions: report.versions, multipart_aborted: report.multipartAborted, unreadable: report.unreadable.length, dry_run: report.dryRun }, 'LFS GC done');
    });
  }
  // Leftovers of killed git processes removed at start and on a schedule, and refs that moved
  // past the latest snapshot marked dirty (docs/design/snapshots.md, "Crash recovery").
  // A storage node holds its shard's repositories only.
  const repositoriesOnDisk = async () =>
    (await listRepositories(core.meta.db)).filter((r) => config.role !== 'storage' || r.shard === config.shard).map((r) => ({ id: r.id, path: repoPath(r.id) }));
  const recoveryLog = log.child({ component: 'recovery' });
  const recovery = new Recovery(
    { intervalMs: config.recoveryIntervalSeconds * 1000, staleMs: config.recoveryStaleSeconds * 1000 },
    {
      repositories: repositoriesOnDisk,
      scratchDir: path.join(core.dataDir, 'tmp'),
      held: (id) => residency.inUse(id),
      log: recoveryLog,
      metrics: createRecoveryMetrics(metrics.registry),
    },
  );
  const reconcileAbort = new AbortController();
  let reconciling: Promise<void> | undefined;
  hooks.onControl('evict', async (args) => {
    const id = String(args['repositoryId']);
    const repo = await findRepositoryById(core.meta.db, id);
    return residency.evict(id, 'admin', repo ? `${repo.ownerName}/${repo.spaceName}/${repo.name}` : id);
  });
  /**
   * Event-log writes from hooks. A failure is logged, never turned into a failed push, except
   * on a storage node that has lost its shard: false then, and pre-receive refuses the push.
   */
  const pushEvent = async (repoId: string, kind: 'push-begin' | 'push-end', call: HookCall, events: NewEvent[] = []): Promise<boolean> => {
    try {
      // push-end and the push's repository events (the webhook outbox) commit together.
      let publishing = 0;
      await fencedWrite(async (db) => {
        await appendEvent(db, repoId, kind, now(), { request_id: call.env['GITSTRATUM_REQUEST_ID'] || null });
        await appendEvents(db, core.meta.dialect, events, now());
        // The readable LFS layout's publish jobs, once per push, with the push's end.
        if (kind === 'push-end') publishing = (await enqueuePushPublishing(db, core.meta.dialect, repoId, parseRefLines(call.stdin), now())).length;
      }, pushEpoch(call));
      if (publishing > 0) publisher?.wake();
      if (events.length > 0) {
        background.deliveries?.wake();
        shared.eventHub.wake();
      }
      return true;
    } catch (err) {
      // push-end marks the repository for its next snapshot: without its events, if need be.
      if (events.length > 0 && !isFenced(err)) {
        log.error({ err, repo_id: repoId }, 'push events not recorded; webhooks and event streams will not see this push');
        return pushEvent(repoId, kind, call);
      }
      log.error({ err, repo_id: repoId, kind }, 'push event not recorded');
      return !isFenced(err);
    }
  };

  /**
   * A synchronous push's objects sent to the standby from pre-receive on, out of the quarantine,
   * while the push's checks and git's own steps go on; its ref transactions wait for this at
   * `prepared` (by request id) instead of starting a hold of their own.
   */
  const earlyHolds = new Map<string, { oids: Set<string>; sent: Promise<void> }>();
  const holdEarly = (repoId: string, call: HookCall, quarantine: Record<string, string>) => {
    const requestId = call.env['GITSTRATUM_REQUEST_ID'];
    if (call.env['GITSTRATUM_SYNC'] !== '1' || !syncTarget || !requestId || earlyHolds.has(requestId)) return;
    const oids = [...new Set(parseRefLines(call.stdin).map((u) => u.newOid).filter((oid) => !/^0+$/.test(oid)))];
    if (oids.length === 0) return;
    if (!syncTarget.connected) return;
    const sent = syncTarget.send(repoId, oids, () => packOfNewObjects(repoPath(repoId), oids, SYNC_PACK_MAX_BYTES, quarantine));
    // Awaited at `prepared`, which sends again when this failed; never an unhandled rejection.
    sent.catch(() => {});
    earlyHolds.set(requestId, { oids: new Set(oids), sent });
    // Forgotten at post-receive; a push refused before it, after this long.
    setTimeout(() => earlyHolds.delete(requestId), SYNC_HOLD_TIMEOUT_MS * 4).unref();
  };

  hooks.on('pre-receive', async (call) => {
    const repoId = hookRepoId(call);
    if (!repoId) return { code: 0 };
    crashPoint('receive-after-unpack');
    const quarantine: Record<string, string> = {};
    for (const key of ['GIT_QUARANTINE_PATH', 'GIT_OBJECT_DIRECTORY', 'GIT_ALTERNATE_OBJECT_DIRECTORIES']) {
      if (call.env[key]) quarantine[key] = call.env[key]!;
    }
    holdEarly(repoId, call, quarantine);
    if (!(await pushEvent(repoId, 'push-begin', call))) return { code: 1, message: deposedMessage };
    const pusher = { id: call.env['GITSTRATUM_ACTOR_ID'] || null, name: call.env['GITSTRATUM_ACTOR_NAME'] || 'local', requestId: call.env['GITSTRATUM_REQUEST_ID'] || null };
    const unprotected = await core.protections.refusedByProtection({ id: repoId, path: repoPath(repoId) }, pusher, parseRefLines(call.stdin), quarantine);
    if (unprotected) return { code: 1, message: unprotected };
    const refusal = await locks.refusedByLocks(
      { id: repoId, path: repoPath(repoId) },
      call.env['GITSTRATUM_ACTOR_ID'] || null,
      parseRefLines(call.stdin),
      quarantine,
    );
    return refusal ? { code: 1, message: refusal } : { code: 0 };
  });

  hooks.on('pre-receive', pushLimits.preReceive);

  /** The repository events of a push (events/payloads.ts); none, logged, when they cannot be read. */
  const eventsOfPush = async (repoId: string, call: HookCall): Promise<NewEvent[]> => {
    try {
      const repo = await findRepositoryById(core.meta.db, repoId);
      if (!repo) return [];
      const pusher = { id: call.env['GITSTRATUM_ACTOR_ID'] || null, name: call.env['GITSTRATUM_ACTOR_NAME'] || 'local' };
      return await pushEvents(repo, repoPath(repoId), parseRefLines(call.stdin), pusher, { origin: eventOrigin(config, http), requestId: call.env['GITSTRATUM_REQUEST_ID'] || null });
    } catch (err) {
      log.error({ err, repo_id: repoId }, 'push events not built; webhooks and event streams will not see this push');
      return [];
    }
  };

  /** The second bump of a push (see meta/refs-versions.ts), or the one after a push cut short. */
  const refsChanged = (repoId: string) =>
    bumpRefsVersion(core.meta.db, core.meta.dialect, repoId).catch((err: unknown) => log.error({ err, repo_id: repoId }, 'refs version not bumped after a push; frontends may serve the refs before it until the next push'));

  hooks.on('post-receive', async (call) => {
    const repoId = hookRepoId(call);
    earlyHolds.delete(call.env['GITSTRATUM_REQUEST_ID'] ?? '');
    if (repoId) {
      crashPoint('receive-after-ref-commit');
      // Read from git while the refs version is bumped: the client waits for all of this.
      const events = eventsOfPush(repoId, call);
      // Before git acknowledges the push: frontends' caches must not answer from the refs before it.
      if (pushEpoch(call) !== undefined) await refsChanged(repoId);
      // First: it cannot fail, and the audit write below may.
      maintenance?.notify(repoId, repoPath(repoId));
      crashPoint('receive-before-push-end');
      // Before the audit write, which may fail: push-end is what marks the repository dirty.
      await pushEvent(repoId, 'push-end', call, await events);
      crashPoint('receive-after-push-end');
      background.snapshots?.notify(repoId);
      await fencedWrite(
        (db) =>
          core.repos.recordPush(
            repoId,
            { actorId: call.env['GITSTRATUM_ACTOR_ID'] || null, actorName: call.env['GITSTRATUM_ACTOR_NAME'] || 'local' },
            parseRefLines(call.stdin),
            call.env['GITSTRATUM_REQUEST_ID'] || null,
            db,
          ),
        pushEpoch(call),
      );
    }
    return { code: 0 };
  });

  // A storage node's last word before a push's refs commit: the lease it was received under
  // must still be this node's, by the database (a writer paused past its lease and resumed
  // never acknowledges a push). Installed on storage nodes only (SERVER_HOOKS). A push run with
  // a synchronous replica (GITSTRATUM_SYNC) also has the replica hold its objects here, and its
  // record in PostgreSQL made pending here and committed at `committed` (replication/sync.ts).
  hooks.on('reference-transaction', async (call) => {
    const epoch = pushEpoch(call);
    const repoId = hookRepoId(call);
    if (epoch === undefined || !repoId) return { code: 0 };
    const sync = call.env['GITSTRATUM_SYNC'] === '1';
    const key = () => transactionKey(call.env['GITSTRATUM_REQUEST_ID'] ?? '', call.stdin);
    // A transaction of HEAD alone (never a push's, but git may make one) has nothing recorded.
    const recorded = () => parseRefLines(call.stdin).some((u) => u.ref.startsWith('refs/'));
    if (call.args[0] === 'committed' && sync) return recorded() ? syncCommitted(repoId, key(), epoch) : { code: 0 };
    if (call.args[0] !== 'prepared') return { code: 0 };
    pausePoint('receive-before-ref-commit');
    const updates = parseRefLines(call.stdin);
    // The synchronous replica takes the transaction's objects while the record is written: both
    // must be done before the refs commit, neither needs the other.
    const oids = sync ? [...new Set(updates.map((u) => u.newOid).filter((oid) => !/^0+$/.test(oid)))] : [];
    const early = earlyHolds.get(call.env['GITSTRATUM_REQUEST_ID'] ?? '');
    // The send begun at pre-receive, when it covers these objects; again here if it failed (the
    // objects are out of quarantine now, so the standby may fetch what it lacks).
    const covered = early && oids.every((oid) => early.oids.has(oid)) ? early.sent : undefined;
    const holding = oids.length === 0 ? undefined : syncTarget!.hold(repoId, oids, () => packOfNewObjects(repoPath(repoId), oids, SYNC_PACK_MAX_BYTES), covered);
    try {
      if (writer?.heldEpoch !== epoch) throw unavailable('not_shard_writer', 'lease moved');
      await fencedWrite(async (db) => {
        await bumpRefsVersion(db, core.meta.dialect, repoId, { announce: false });
        // HEAD shows up beside the branch it points to; a symbolic ref follows its target.
        if (sync) await recordPrepared(db, core.meta.dialect, repoId, key(), updates.filter((u) => u.ref.startsWith('refs/')).map((u) => ({ ref: u.ref, new: u.newOid })));
      }, epoch);
    } catch (err) {
      await holding;
      log.warn({ err, repo_id: hookRepoId(call), epoch }, 'push refused before its refs commit: the shard lease it was received under is not confirmed');
      return { code: 1, message: deposedMessage };
    }
    const held = holding ? await holding : { held: true as const };
    if (held.held || !held.refuse) return { code: 0 };
    return { code: 1, message: `gitstratum: push refused: ${held.reason}, and shard ${config.shard} accepts pushes only with one (sync_missing refuse). Retry later.` };
  });

  /**
   * A synchronous push's transaction committed on disk: recorded before git acknowledges the
   * push, or the push is stopped (git ignores this hook's exit status, so the relay stops git).
   */
  async function syncCommitted(repoId: string, key: string, epoch: number): Promise<HookAnswer> {
    try {
      const recorded = await fencedWrite((db) => recordCommitted(db, core.meta.dialect, repoId, key, epoch), epoch);
      if (recorded > 0) return { code: 0 };
      throw new Error('no prepared record of this transaction');
    } catch (err) {
      syncMetrics.commitFailures.inc();
      log.error({ err, repo_id: repoId, epoch }, 'a committed ref transaction was not recorded for the synchronous standby: its push is stopped before git reports it');
      return { code: 1, abort: true, message: 'gitstratum: this push could not be recorded for the shard\'s synchronous standby; it is reported as failed (its refs may have moved: fetch to see)' };
    }
  }

  hooks.on('post-receive', pushLimits.postReceive);

  const plainGit = gitServices(limiter);
  // nginx (in the server's group) opens hits by path: it must pass through the data directory.
  if (config.packCacheEnabled && config.packCacheAccelRedirect) await chmod(core.dataDir, 0o710);
  const packCache = config.packCacheEnabled ? await openPackCache(plainGit, shared.packCache.options, shared.packCache.deps) : undefined;
  // The repositories on this disk: those of `serve`, or of the shard this storage node writes.
  const localHost = new LocalRepoHost(core.dataDir, {
    git: packCache ?? plainGit,
    limits,
    // Read per request: for a long data path the socket's place is chosen at listen().
    hookSocket: () => hooks.socketPath,
    residency,
    ...(writer && { epoch: () => writer.heldEpoch, sync: () => syncTarget?.active ?? false }),
  });
  // An async replica answers frontends' clones and fetches of its copies.
  if (config.replica === 'async') registerNodeRoutes(http, { host: new ReplicaHost(localHost, config.shard!), secret: config.clusterSecret! });
  /**
   * A push runs on this writer only while its repository is on this shard and no move is
   * finishing (meta/moves.ts): otherwise 503 with when to retry.
   */
  const admitPush = async (repoId: string): Promise<void> => {
    const admission = await pushAdmission(core.meta, repoId);
    if (!admission || admission.shard !== config.shard) {
      throw unavailable('repo_moved', 'this repository has just moved to another storage shard; retry the push', { retryAfterSeconds: 1 });
    }
    if (admission.pausedForMs > 0) {
      const seconds = Math.min(30, Math.max(1, Math.ceil(admission.pausedForMs / 1000)));
      throw unavailable('repo_moving', 'this repository is being moved to another storage shard: pushes are paused for a few seconds (clones and fetches go on); retry the push shortly', {
        retryAfterSeconds: seconds,
      });
    }
  };
  const writerHost = writer ? new WriterHost(localHost, writer, config.shard!, { pushCutShort: refsChanged, admitPush }) : undefined;
  // Moving repositories between shards: this writer copies them in, or lets them go (replication/move-copies.ts).
  const moveCopies = writer
    ? new MoveCopies({
        meta: core.meta,
        store: rawStore,
        dataDir: core.dataDir,
        shard: config.shard!,
        repoPath,
        repoConfig: repositoryConfig(),
        leases: shardLeases!,
        secret: config.clusterSecret!,
        inUse: (id) => residency.inUse(id),
        copies: () => repoIdsOnDisk(core.dataDir),
        removeCopy: (id) => localHost.remove(id),
        log: log.child({ component: 'moves' }),
      })
    : undefined;
  const moveGraceMs = config.moveGraceSeconds * 1000;
  let moveSweeper: NodeJS.Timeout | undefined;
  let sweeping: Promise<unknown> | undefined;
  if (writer) {
    registerNodeRoutes(http, {
      host: writerHost!,
      moves: {
        copy: async (id, from) => {
          if (writer.heldEpoch === undefined) throw unavailable('not_shard_writer', `this node does not hold shard ${config.shard} now; retry shortly`);
          return moveCopies!.copy(id, from);
        },
        quiesce: async (id, waitMs) => {
          if (writer.heldEpoch === undefined) throw unavailable('not_shard_writer', `this node does not hold shard ${config.shard} now; retry shortly`);
          if (!(await writerHost!.quiesce(id, waitMs))) throw unavailable('push_running', `a push of the repository still runs after ${waitMs} ms`);
          pausePoint('move-quiesce');
          return copyState(repoPath(id));
        },
      },
      secret: config.clusterSecret!,
      // Replicas' fetches name the repository by id only.
      hostedRepo: async (id) => {
        const r = await findRepositoryById(core.meta.db, id);
        return r && r.shard === config.shard ? { id: r.id, defaultBranch: r.defaultBranch, label: `${r.ownerName}/${r.spaceName}/${r.name}` } : undefined;
      },
      // A sync replica, while it stands by: the writer's pushes wait for it to hold their objects.
      ...(config.replica === 'sync' && { holdObjects: (id: string, oids: string[], pack?: Buffer) => mirror!.holdObjects(id, oids, pack) }),
    });
  }

  /**
   * Claims the disk and heals it: `serve` at start, a storage node once it holds its shard's
   * lease (same-volume standbys share the directory, so never before). The hook socket first:
   * `serve`'s refuses to start when another server runs on this data directory; only then is
   * it safe to clear what killed git processes left behind, before any request can start one.
   */
  async function takeOverDisk(epoch?: number): Promise<void> {
    await hooks.listen({ shared: writer !== undefined });
    await installHooks(core.dataDir, hooks.socketPath, writer ? HOOK_NAMES : SERVER_HOOKS);
    const started = Date.now();
    // A sync standby has its own disk too: a repository it never copied comes from snapshots.
    const ownDisk = config.failoverFrom === 'snapshots' || config.replica === 'sync';
    const restoreRest = epoch !== undefined && ownDisk ? await adoptMissing(epoch) : undefined;
    // Refs may differ from what frontends cached (a push cut between its two bumps, or refs
    // brought back in time from snapshots): every repository of the shard gets a new version.
    if (epoch !== undefined) await fencedWrite((db) => bumpShardRefsVersions(db, core.meta.dialect, config.shard!), epoch);
    const recovered = await recovery.atStart();
    const cutOff = await closeCutOffPushes({ meta: core.meta, repositories: repositoriesOnDisk });
    recoveryLog.info({ ...recovered, cut_off_pushes: cutOff.length, duration_ms: Date.now() - started }, 'crash recovery at start done');
    restoreRest?.();
    if (moveCopies) {
      const sweep = () => {
        sweeping ??= moveCopies
          .sweep(moveGraceMs)
          .catch((err: unknown) => log.warn({ err }, 'copies of repositories moved away not swept; trying again later'))
          .finally(() => (sweeping = undefined));
      };
      moveSweeper = setInterval(sweep, Math.min(60_000, Math.max(1000, moveGraceMs / 4)));
      moveSweeper.unref();
    }
    background.start();
    residency.start();
    publisher?.start();
    lfsGc?.start();
    recovery.start();
    reconciling = markChangedRepositoriesDirty({ meta: core.meta, repositories: repositoriesOnDisk }, reconcileAbort.signal).then(
      (marked) => marked.length > 0 && recoveryLog.info({ repositories: marked.length, repo_ids: marked.slice(0, 20) }, 'repositories with refs past their latest snapshot marked dirty'),
      (err: unknown) => recoveryLog.error({ err }, 'refs not compared with the latest snapshots'),
    ).then(() => {});
  }

  const lostPushes = new Counter({
    name: 'gitstratum_failover_lost_pushes_total',
    help: 'Acknowledged pushes found missing from the snapshots when this storage node took its shard over from snapshots (also in the log and the audit log, action push.lost).',
    registers: [metrics.registry],
  });
  /**
   * A failover from snapshots (snapshots/takeover.ts): the shard's repositories missing from
   * this disk are marked evicted, so the first request restores them (a background pass restores
   * the rest), or created empty when they have no snapshot; the acknowledged pushes that are
   * not in their latest snapshot are reported lost in the log, the audit log and a metric.
   */
  async function adoptMissing(epoch: number): Promise<() => void> {
    const failoverLog = log.child({ component: 'failover' });
    const missing: Awaited<ReturnType<typeof listRepositories>> = [];
    for (const r of await listRepositories(core.meta.db)) {
      if (r.shard === config.shard && !(await stat(repoPath(r.id)).catch(() => undefined))) missing.push(r);
    }
    let lost = 0;
    for (const r of missing) {
      const label = `${r.ownerName}/${r.spaceName}/${r.name}`;
      const adopted = await adoptFromSnapshots({ meta: core.meta, store: rawStore }, r.id);
      for (const push of adopted.lost) await fencedWrite((db) => appendAudit(db, lostPushAudit(r.id, label, config.shard!, epoch, push)), epoch);
      if (adopted.lost.length > 0) {
        lost += adopted.lost.length;
        lostPushes.inc(adopted.lost.length);
        failoverLog.error({ repository: label, repo_id: r.id, snapshot: adopted.snapshot ?? null, lost_pushes: adopted.lost }, 'acknowledged pushes lost: not in any snapshot when the shard was taken over');
      }
      if (adopted.snapshot) {
        await markEvicted(core.meta.db, r.id, now());
        residency.adopt(r.id);
      } else {
        await localHost.create({ id: r.id, defaultBranch: r.defaultBranch });
      }
    }
    failoverLog.info({ shard: config.shard, epoch, missing: missing.length, lost_pushes: lost }, 'shard taken over from snapshots: missing repositories restored on first request');
    // The rest in the background, one at a time, so the snapshot worker finds them on disk:
    // started by the caller once crash recovery is done, which removes scratch directories
    // this process's pid owns at start (a restore's among them, mid-way: a broken repository).
    return () => void (async () => {
      for (const r of missing) {
        const release = await residency.acquire({ id: r.id, defaultBranch: r.defaultBranch, label: `${r.ownerName}/${r.spaceName}/${r.name}` }).catch((err: unknown) => {
          failoverLog.warn({ err, repo_id: r.id }, 'repository not restored in the background; its next request tries again');
          return undefined;
        });
        release?.();
      }
    })();
  }

  /**
   * A sync replica takes its shard over (docs/design/replication.md): it stops following, sets
   * every ref the writer recorded as committed to that value (their objects were fetched before
   * the refs committed), reports the values whose objects it lacks (pushes committed while no
   * sync replica held them) as lost, and only then claims the disk as any new writer does.
   */
  async function takeOverAsSyncStandby(epoch: number): Promise<void> {
    await mirror!.becomeWriter();
    const failoverLog = log.child({ component: 'failover' });
    const recorded = await committedRefs(core.meta.db, config.shard!);
    let applied = 0;
    let lost = 0;
    for (const [repoId, refs] of recorded) {
      const target = repoPath(repoId);
      // A copy it never made comes from snapshots in takeOverDisk, which reports what they lack.
      if (!(await stat(target).catch(() => undefined))) continue;
      const local = new Map<string, string>();
      for (const r of await readRefsForSnapshot(target)) if (!r.symref) local.set(r.name, r.oid);
      const present = await presentObjects(target, refs.filter((r) => !/^0+$/.test(r.value)).map((r) => r.value));
      const changes: RefChange[] = [];
      const missing: string[] = [];
      for (const r of refs) {
        if (!r.ref.startsWith('refs/')) continue;
        const have = local.get(r.ref);
        const deleted = /^0+$/.test(r.value);
        if (deleted ? have === undefined : have === r.value) continue;
        if (!deleted && !present.has(r.value)) missing.push(`${r.ref} ${r.value}`);
        else changes.push(deleted ? { ref: r.ref, old: have } : { ref: r.ref, ...(have !== undefined && { old: have }), new: r.value });
      }
      if (changes.length > 0) await updateRefsTransaction(target, refTransaction(changes));
      applied += changes.length;
      if (missing.length > 0) {
        lost += missing.length;
        lostPushes.inc(missing.length);
        failoverLog.error({ repo_id: repoId, shard: config.shard, epoch, lost_refs: missing }, 'acknowledged ref updates lost: committed while no synchronous replica held their objects');
        const repo = await findRepositoryById(core.meta.db, repoId);
        const details = { shard: config.shard, epoch, refs: missing, reason: 'synchronous standby took over without their objects (committed unsynced)' };
        await fencedWrite(
          (db) => appendAudit(db, { at: now(), actorId: null, actorName: 'system', action: 'push.lost', repositoryId: repoId, target: repo ? `${repo.ownerName}/${repo.spaceName}/${repo.name}` : repoId, details, requestId: null }),
          epoch,
        );
      }
    }
    failoverLog.info({ shard: config.shard, epoch, repositories: recorded.size, refs_applied: applied, refs_lost: lost }, 'synchronous standby took the shard over with the committed ref transactions applied');
    await takeOverDisk(epoch);
  }

  const mirror =
    config.replica && shardLeases
      ? new Mirror(
          {
            shard: config.shard!,
            diskId: await replicaDiskId(core.dataDir),
            mode: config.replica,
            advertiseUrl: config.advertiseUrl!,
            intervalMs: config.replicaIntervalSeconds * 1000,
            reconcileMs: config.replicaReconcileSeconds * 1000,
            concurrency: config.replicaConcurrency,
            moveGraceMs: config.moveGraceSeconds * 1000,
          },
          {
            meta: core.meta,
            store: rawStore,
            dataDir: core.dataDir,
            repoPath,
            copies: () => repoIdsOnDisk(core.dataDir),
            removeCopy: (id) => localHost.remove(id),
            repoConfig: repositoryConfig(),
            secret: config.clusterSecret!,
            writerUrl: async () => {
              const lease = await shardLeases.current(config.shard!);
              return lease && lease.expiresInMs > 0 ? lease.url : undefined;
            },
            log: log.child({ component: 'replica' }),
            metrics: createMirrorMetrics(metrics.registry),
          },
        )
      : undefined;

  return {
    localHost,
    hooks,
    start: async () => {
      if (mirror) {
        // Its own disk: what a killed fetch left is cleared before the first round.
        const recovered = await recovery.atStart();
        recoveryLog.info(recovered, 'crash recovery at start done');
        recovery.start();
        await mirror.start();
      }
      // A storage node that is a standby (a sync replica among them) listens at once and
      // answers 503 until it takes over.
      if (writer) {
        await syncTarget?.start();
        await writer.start();
      } else if (!mirror) await takeOverDisk();
    },
    onDeposed(handler) {
      deposedHandlers.push(handler);
    },
    async close() {
      clearInterval(moveSweeper);
      await sweeping;
      await mirror?.close();
      await syncTarget?.close();
      // Released at once, so a standby takes the shard without waiting for the lease to run out.
      await writer?.close();
      await packCache?.close();
      // Aborts a running repack (killing its process group) rather than waiting for it.
      await maintenance?.close();
      // Aborts a snapshot upload in flight: it leaves no object and no row, the repository dirty.
      await Promise.all([background.close(), publisher?.close(), lfsGc?.close()]);
      reconcileAbort.abort();
      await Promise.all([reconciling, recovery.close()]);
      // Waits for an eviction or a lazy restore in flight (each leaves a consistent state anyway).
      await residency.close();
      await hooks.close();
    },
  };
}
