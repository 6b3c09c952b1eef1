/**
 * The one configuration schema. Every setting has a default, an environment variable
 * (GITSTRATUM_ + the key in SCREAMING_SNAKE_CASE) and, for the common ones, a flag.
 * Load order: defaults → config file (JSON) → environment → flags. A bad value stops the
 * program at start with a message naming the setting and where it came from.
 */
import { z } from 'zod';

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();

export const configSchema = z
  .object({
    data: z.string().min(1).default('./data'),
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(8080),
    databaseUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL (leave unset for SQLite in the data directory)')
      .optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    /** true, false, a hop count, or a comma-separated list of proxy addresses/CIDRs. */
    trustProxy: z.string().default('false'),
    /** Git processes (upload-pack/receive-pack) allowed to run at once; more wait in a queue. */
    gitMaxProcesses: positiveInt.default(32),
    /** Requests allowed to wait for a git process slot; beyond this they get 503. */
    gitMaxQueue: z.coerce.number().int().min(0).default(256),
    /** How long a request may wait in the queue before it gets 503. */
    gitQueueTimeoutSeconds: positiveInt.default(30),
    /** Wall-clock limit of one git process; it is killed after this. */
    gitTimeoutSeconds: positiveInt.default(3600),
    /** Pack generations (upload-pack cache misses that build a pack) allowed at once; cache hits never count. */
    gitMaxGenerations: positiveInt.default(8),
    /** Pack generations allowed at once for one repository. */
    gitMaxGenerationsPerRepo: positiveInt.default(4),
    /** How long a cache miss may wait for a generation slot before it gets 503 + Retry-After. */
    gitGenerationQueueSeconds: positiveInt.default(15),
    /** Cache complete upload-pack responses under <data>/cache (see docs/design/pack-cache.md). */
    packCacheEnabled: z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')]).default(true),
    /** Disk the cache may use; least recently used entries (stale ones first) are evicted beyond it. */
    packCacheMaxBytes: positiveInt.default(4 * 1024 ** 3),
    /** Largest response kept; larger ones are still shared by concurrent requests, then dropped. */
    packCacheMaxEntryBytes: positiveInt.default(1024 ** 3),
    /** Below this much free space on the cache's filesystem, requests bypass the cache. */
    packCacheMinFreeBytes: z.coerce.number().int().min(0).default(2 * 1024 ** 3),
    /** 1: store a response the first time its request is seen; 2: only when seen again within the window. */
    packCacheAdmitAfter: z.coerce.number().int().min(1).max(2).default(1),
    /** The window of packCacheAdmitAfter=2. */
    packCacheAdmitWindowSeconds: positiveInt.default(300),
    /** Larger upload-pack request bodies (after gzip decoding) are not cached. */
    packCacheMaxRequestBytes: positiveInt.default(64 * 1024),
    /**
     * Behind nginx: a URI prefix (e.g. /_gitstratum/cache/) of an `internal` location aliased to
     * <data>/cache/entries/; cache hits are then sent by nginx (X-Accel-Redirect), not by Node.
     */
    packCacheAccelRedirect: z
      .string()
      .regex(/^\/([A-Za-z0-9._~-]+\/)*$/, 'a URI path that starts and ends with "/", e.g. /_gitstratum/cache/')
      .optional(),
    /** Largest push accepted (bytes git receives, after gzip decoding). */
    maxPushBytes: positiveInt.default(5 * 1024 ** 3),
    /** On SIGTERM/SIGINT, how long in-flight requests (pushes) may take to finish. */
    shutdownTimeoutSeconds: positiveInt.default(60),
    /** After pushes, keep each repository's bitmaps and commit-graph fresh in the background (docs/design/maintenance.md). */
    maintenanceEnabled: z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')]).default(true),
    /** Quiet time after a repository's last push before it is maintained; a burst of pushes costs one run. */
    maintenanceDelaySeconds: z.coerce.number().int().min(0).default(5),
    /** Repositories maintained at once. */
    maintenanceConcurrency: positiveInt.default(1),
    /** A maintenance run is killed after this long (and tried again after the next push). */
    maintenanceTimeoutSeconds: positiveInt.default(3600),
    /** While running, look for leftovers of killed git processes (stale locks, quarantines) this often; 0: only at start. */
    recoveryIntervalSeconds: z.coerce.number().int().min(0).default(300),
    /** While running, only leftovers older than this are removed, and only in repositories nothing of ours is using. */
    recoveryStaleSeconds: positiveInt.default(600),
    /** Externally visible scheme://host[:port], when the request's own (or X-Forwarded-*) is not it. */
    publicUrl: z.string().url().optional(),
    /** Where LFS objects (and later snapshots) live: `filesystem` under <data>/objects, or `s3`. */
    objectStore: z.enum(['filesystem', 's3']).default('filesystem'),
    s3Endpoint: z.string().url().optional(),
    s3Region: z.string().min(1).default('us-east-1'),
    s3Bucket: z.string().min(1).optional(),
    s3ForcePathStyle: z.enum(['true', 'false']).default('false'),
    /** Credentials; when unset the standard AWS environment variables and profiles apply. */
    s3AccessKeyId: z.string().min(1).optional(),
    s3SecretAccessKey: z.string().min(1).optional(),
    /** Key prefix inside the bucket, for sharing one bucket between deployments. */
    s3Prefix: z.string().regex(/^([a-z0-9][a-z0-9._-]*\/)*$/, 'must be empty or end with /').default(''),
    /** LFS transfers: `proxy` streams bytes through gitstratum; `direct` hands out pre-signed S3 URLs. */
    lfsTransferMode: z.enum(['proxy', 'direct']).default('proxy'),
    lfsMaxObjectBytes: positiveInt.default(50 * 1024 ** 3),
    lfsMaxBatchObjects: positiveInt.default(1000),
    /** Lifetime of LFS transfer actions; the client treats anything within 5 s of expiry as expired. */
    lfsActionExpiresSeconds: z.coerce.number().int().min(60).max(7 * 86400).default(3600),
    /** Secret for signed LFS transfer authorizations; every frontend needs the same. Default: <data>/signing.key. */
    signingSecret: z.string().min(32).optional(),
    /**
     * Persist every repository to the object store as snapshots, in `serve` (docs/design/snapshots.md).
     * Set it false in `serve` when a separate `gitstratum worker` does it (a worker always does).
     */
    snapshotsEnabled: z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')]).default(true),
    /** Quiet time after a repository's last push before it is snapshotted; a burst of pushes costs one snapshot. */
    snapshotDebounceSeconds: z.coerce.number().min(0).default(2),
    /**
     * Longest a repository pushed to without pause waits before its snapshot starts. With the
     * 1 s poll and the snapshot job itself, 6 keeps push-to-durable within 10 s under a push a second.
     */
    snapshotMaxDelaySeconds: z.coerce.number().min(0).default(6),
    /** Repositories snapshotted at once. */
    snapshotConcurrency: positiveInt.default(1),
    /** Longest wait between retries of a failing snapshot (the backoff doubles from 1 s up to this). */
    snapshotRetryMaxSeconds: positiveInt.default(60),
    /**
     * Evict a repository from local disk once no git request has touched it for this long and
     * every push is in a snapshot; its next request restores it. 0: never (the default).
     */
    snapshotEvictIdleSeconds: z.coerce.number().int().min(0).default(0),
    /** Run the DR drill (restore and compare, docs/design/snapshots.md) every this many seconds in serve or worker; 0, never. */
    drDrillIntervalSeconds: z.coerce.number().int().min(0).default(0),
    /** Repositories a scheduled DR drill checks, chosen at random; unset, all that have snapshots. */
    drDrillSample: positiveInt.optional(),
    /** SQLite only: back the metadata database up to the object store (backups/meta/) every this many seconds in serve or worker; 0, never. */
    metaBackupIntervalSeconds: z.coerce.number().int().min(0).default(900),
    /** Metadata backups kept in the object store; older ones are deleted after each backup. */
    metaBackupKeep: positiveInt.default(96),
    /** `gitstratum worker` only: serve /metrics (and /healthz) on this port of `host`; unset, none. 0 picks a free port. */
    metricsPort: port.optional(),
    /** Compact a repository's snapshots (one full in place of a chain) once its latest chain is longer than this; 0: never by length. */
    snapshotChainMaxLength: z.coerce.number().int().min(0).default(20),
    /** … or once the chain's incrementals together are larger than this many times its full snapshot; 0: never by size. */
    snapshotChainMaxSizeRatio: z.coerce.number().min(0).default(1),
    /** Chains whose incrementals total fewer bytes than this restore fast anyway: compacted by length only. */
    snapshotCompactMinBytes: z.coerce.number().int().min(0).default(64 * 1024 ** 2),
    /** Default branch of new repositories. */
    defaultBranch: z.string().regex(/^[A-Za-z0-9._/-]+$/).default('main'),
  })
  .strict()
  .superRefine((c, ctx) => {
    // Reported against the one that was given, so the message names where it came from.
    if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
      const [given, missing] = c.tlsCert !== undefined ? ['tlsCert', 'tlsKey'] : ['tlsKey', 'tlsCert'];
      ctx.addIssue({ code: 'custom', path: [given], message: `needs ${missing} too (a certificate and its key go together)` });
    }
  })
  .refine((c) => c.objectStore !== 's3' || c.s3Bucket !== undefined, {
    message: 'objectStore s3 needs s3Bucket',
    path: ['s3Bucket'],
  })
  .refine((c) => c.snapshotEvictIdleSeconds === 0 || c.snapshotsEnabled, {
    message: 'snapshotEvictIdleSeconds needs snapshotsEnabled (only persisted repositories can leave the disk)',
    path: ['snapshotEvictIdleSeconds'],
  })
  .refine((c) => c.lfsTransferMode !== 'direct' || c.objectStore === 's3', {
    message: 'lfsTransferMode direct needs objectStore s3 (pre-signed URLs)',
    path: ['lfsTransferMode'],
  });

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

export const configKeys = Object.keys(configSchema.shape) as (keyof ConfigInput)[];

export function envName(key: string): string {
  return 'GITSTRATUM_' + key.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();
}

