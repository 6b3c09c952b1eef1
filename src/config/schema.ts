/**
 * The one configuration schema. Every setting has a default, an environment variable
 * (GITSTRATUM_ + the key in SCREAMING_SNAKE_CASE) and, for the common ones, a flag.
 * Load order: defaults → config file (JSON) → environment → flags. A bad value stops the
 * program at start with a message naming the setting and where it came from.
 *
 * Sizes and durations use the types below (`bytes`, `seconds` …), so every such setting
 * takes `5GiB` or `15m` as well as a plain number of bytes or seconds.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { parseBytes, parseSeconds } from './units.js';

/** A number from JSON, or text (environment, flags) read by `parse`; `expected` says what it may look like. */
function unitNumber(parse: (text: string) => number | undefined, expected: string) {
  return z.union([z.number(), z.string()], { error: expected }).transform((value, ctx) => {
    const n = typeof value === 'number' ? value : parse(value);
    if (n === undefined) {
      ctx.addIssue({ code: 'custom', message: expected });
      return z.NEVER;
    }
    return n;
  });
}

/** A plain decimal number such as `8` or `1.5` (z.coerce would take "", "0x10" and "1e3", and say "NaN" for the rest). */
const number = unitNumber((text) => (/^\s*\d+(\.\d+)?\s*$/.test(text) ? Number(text) : undefined), 'expected a number');
/** A whole number ≥ 0 (counts, limits where 0 means none). */
export const count = number.pipe(z.number().int().min(0));
/** A whole number > 0. */
export const positiveInt = number.pipe(z.number().int().positive());
const port = number.pipe(z.number().int().min(0).max(65535));

/** A duration in seconds, possibly fractional: `90`, `30s`, `15m`, `1h`, `7d`. */
export const duration = unitNumber(parseSeconds, 'expected a duration such as 30s, 15m, 1h, 7d, or a number of seconds');
/** Whole seconds ≥ 0 (`30s`, `15m`, `1h`, `7d`, or a number of seconds): the type of *Seconds settings. */
export const seconds = duration.pipe(z.number().int().min(0));
/** Whole seconds > 0. */
export const positiveSeconds = duration.pipe(z.number().int().positive());
/** Bytes ≥ 0: a number of bytes, or `500MB`, `64KiB`, `5GiB` (KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024). */
export const bytes = unitNumber(
  parseBytes,
  'expected a size such as 5GiB, 500MB, 64KiB (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), or a number of bytes',
).pipe(z.number().int().min(0));
/** Bytes > 0. */
export const positiveBytes = bytes.pipe(z.number().positive());

/** true/false from JSON, or the text `true`/`false`. */
export const bool = z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')], { error: 'expected true or false' });

/** `loopback`, `linklocal` and `uniquelocal` are proxy-addr's names for those ranges (Fastify's trustProxy). */
const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** An address, a CIDR (`10.0.0.0/8`, `fd00::/8`) or an IPv4 netmask (`10.0.0.0/255.0.0.0`). */
function isProxyAddress(text: string): boolean {
  if (PROXY_RANGE_NAMES.has(text)) return true;
  const [address = '', range, ...rest] = text.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (range === undefined) return true;
  if (/^\d{1,3}$/.test(range)) return Number(range) <= (family === 4 ? 32 : 128);
  return family === 4 && isIP(range) === 4;
}

const TRUST_PROXY_EXPECTED = 'expected true, false, a hop count, or comma-separated proxy addresses/CIDRs (e.g. 10.0.0.0/8,127.0.0.1)';

/** `true`, `false`, a hop count, or a comma-separated list of proxy addresses/CIDRs. */
export function isTrustProxy(value: string): boolean {
  if (value === 'true' || value === 'false' || /^\d+$/.test(value)) return true;
  return value.split(',').every((part) => isProxyAddress(part.trim()));
}

export const configSchema = z
  .object({
    data: z.string().min(1).default('./data'),
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(8080),
    databaseUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL (leave unset for SQLite in the data directory)')
      .refine((v) => URL.canParse(v), 'not a valid URL')
      .optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    /** true, false, a hop count, or a comma-separated list of proxy addresses/CIDRs. */
    trustProxy: z
      .union([z.boolean(), z.number().int().min(0), z.string()], { error: TRUST_PROXY_EXPECTED })
      .transform(String)
      .pipe(z.string().refine(isTrustProxy, TRUST_PROXY_EXPECTED))
      .default('false'),
    /** Git processes (upload-pack/receive-pack) allowed to run at once; more wait in a queue. */
    gitMaxProcesses: positiveInt.default(32),
    /** Requests allowed to wait for a git process slot; beyond this they get 503. */
    gitMaxQueue: count.default(256),
    /** How long a request may wait in the queue before it gets 503. */
    gitQueueTimeoutSeconds: positiveSeconds.default(30),
    /** Wall-clock limit of one git process; it is killed after this. */
    gitTimeoutSeconds: positiveSeconds.default(3600),
    /**
     * How much lower than the server's own CPU priority the git processes serving requests run
     * (added to its niceness, as nice(1) does): however much git work clients ask for, the event
     * loop that answers every client stays first in line for a CPU. Maintenance runs lower still
     * (15). 0: the server's own priority.
     */
    gitNiceness: count.pipe(z.number().max(19)).default(5),
    /** Pack generations (upload-pack cache misses that build a pack) allowed at once; cache hits never count. */
    gitMaxGenerations: positiveInt.default(8),
    /** Pack generations allowed at once for one repository. */
    gitMaxGenerationsPerRepo: positiveInt.default(4),
    /** How long a cache miss may wait for a generation slot before it gets 503 + Retry-After. */
    gitGenerationQueueSeconds: positiveSeconds.default(15),
    /** Cache complete upload-pack responses under <data>/cache (see docs/design/pack-cache.md). */
    packCacheEnabled: bool.default(true),
    /** Disk the cache may use; least recently used entries (stale ones first) are evicted beyond it. */
    packCacheMaxBytes: positiveBytes.default(4 * 1024 ** 3),
    /** Largest response kept; larger ones are still shared by concurrent requests, then dropped. */
    packCacheMaxEntryBytes: positiveBytes.default(1024 ** 3),
    /** Below this much free space on the cache's filesystem, requests bypass the cache. */
    packCacheMinFreeBytes: bytes.default(2 * 1024 ** 3),
    /** 1: store a response the first time its request is seen; 2: only when seen again within the window. */
    packCacheAdmitAfter: count.pipe(z.number().min(1).max(2)).default(1),
    /** The window of packCacheAdmitAfter=2. */
    packCacheAdmitWindowSeconds: positiveSeconds.default(300),
    /** Larger upload-pack request bodies (after gzip decoding) are not cached. */
    packCacheMaxRequestBytes: positiveBytes.default(64 * 1024),
    /**
     * Behind nginx: a URI prefix (e.g. /_gitstratum/cache/) of an `internal` location aliased to
     * <data>/cache/entries/; cache hits are then sent by nginx (X-Accel-Redirect), not by Node.
     */
    packCacheAccelRedirect: z
      .string()
      .regex(/^\/([A-Za-z0-9._~-]+\/)*$/, 'a URI path that starts and ends with "/", e.g. /_gitstratum/cache/')
      .optional(),
    /** Length of a rate-limit window; each budget below is per client per window (README "Limits"). */
    rateLimitWindowSeconds: positiveSeconds.default(60),
    /** Git requests (info/refs, upload-pack, receive-pack) per client per window; 0: no limit. A clone or fetch makes 2–3. */
    rateLimitGitRequests: count.default(3000),
    /** LFS requests (batch, each object transfer, verify, locks) per client per window; 0: no limit. */
    rateLimitLfsRequests: count.default(12000),
    /** REST API (and any other non-health) requests per client per window; 0: no limit. */
    rateLimitApiRequests: count.default(3000),
    /** Failed authentications per client address per window; beyond it, credentials from the address are refused until the window ends. 0: no limit. */
    rateLimitAuthFailures: count.default(100),
    /** Requests one client (user, or address when anonymous) may have in flight on one server; 0: no limit. */
    maxConcurrentRequestsPerClient: count.default(256),
    /** Git requests (each runs at most one git process) one client may run at once on one server; more wait (gitMaxQueue, gitQueueTimeoutSeconds). 0: no limit. */
    maxConcurrentGitPerClient: count.default(24),
    /**
     * Pieces (HTTP chunks or network reads) of git and LFS upload bodies one client may send per
     * second to one server; beyond it the server reads its bodies more slowly. Each piece costs
     * the event loop a few microseconds whatever its size. 0: no limit.
     */
    maxBodyChunksPerSecondPerClient: count.default(100_000),
    /** redis:// URL: share the rate-limit budgets among every frontend through Redis; unset, each server counts alone. */
    redisUrl: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
    /** Prefix of the rate-limit keys in Redis, for deployments sharing one Redis. */
    redisKeyPrefix: z.string().default('gitstratum:'),
    /** Largest push accepted (bytes git receives, after gzip decoding). */
    maxPushBytes: positiveBytes.default(5 * 1024 ** 3),
    /** Largest fetch (upload-pack) request body, after gzip decoding; git-http-backend's own default is 10 MiB. */
    maxFetchRequestBytes: positiveBytes.default(10 * 1024 ** 2),
    /** Ref updates allowed in one push. */
    gitMaxRefUpdates: positiveInt.default(50_000),
    /** Push options (`git push -o`) allowed in one push. */
    gitMaxPushOptions: count.default(100),
    /** Bytes of a push's push options together; a push option is a word or a short setting. */
    gitMaxPushOptionBytes: positiveBytes.default(64 * 1024),
    /** Bytes of a push's commands and push options together (everything before the pack). */
    gitMaxPushCommandBytes: positiveBytes.default(8 * 1024 ** 2),
    /** A request that sends nothing (headers or body) for this long is ended and its git process stopped. */
    requestIdleTimeoutSeconds: positiveSeconds.default(30),
    /** Largest JSON body (LFS batch and locks, REST API); read only after the caller is authenticated. */
    maxJsonBodyBytes: positiveBytes.default(1024 ** 2),
    /** Most refs a repository may have; a push that would create more is refused (docs/design/quotas.md). */
    maxRefs: positiveInt.default(100_000),
    /** Size quota (git objects + LFS bytes) of a repository without a quota of its own; 0: no limit. */
    repoQuotaBytes: bytes.default(0),
    /** Size quota of all the repositories of an owner (user or organization) without a quota of its own; 0: no limit. */
    ownerQuotaBytes: bytes.default(0),
    /** On SIGTERM/SIGINT, how long in-flight requests (pushes) may take to finish. */
    shutdownTimeoutSeconds: positiveSeconds.default(60),
    /** After pushes, keep each repository's bitmaps and commit-graph fresh in the background (docs/design/maintenance.md). */
    maintenanceEnabled: bool.default(true),
    /** Quiet time after a repository's last push before it is maintained; a burst of pushes costs one run. */
    maintenanceDelaySeconds: seconds.default(5),
    /** Repositories maintained at once. */
    maintenanceConcurrency: positiveInt.default(1),
    /** A maintenance run is killed after this long (and tried again after the next push). */
    maintenanceTimeoutSeconds: positiveSeconds.default(3600),
    /** While running, look for leftovers of killed git processes (stale locks, quarantines) this often; 0: only at start. */
    recoveryIntervalSeconds: seconds.default(300),
    /** While running, only leftovers older than this are removed, and only in repositories nothing of ours is using. */
    recoveryStaleSeconds: positiveSeconds.default(600),
    /** Externally visible scheme://host[:port], when the request's own (or X-Forwarded-*) is not it. */
    publicUrl: z.string().url().optional(),
    /** Git over SSH (README "Git over SSH"): the port of the built-in SSH server; unset, there is none. */
    sshPort: port.optional(),
    /** The address the SSH server listens on; default: the same as `host`. */
    sshHost: z.string().min(1).optional(),
    /** How clients reach the SSH server, e.g. ssh://git@git.example.com:2222, for the clone URLs the API shows. */
    sshPublicUrl: z.string().regex(/^ssh:\/\/[^/\s]+$/, 'an ssh://[user@]host[:port] URL without a path').optional(),
    /** Let SSH clients whose key no user has registered read public repositories (as anonymous HTTP clients do). */
    sshAnonymousReads: bool.default(false),
    /** An SSH connection with no traffic for this long while no command runs is closed. */
    sshIdleTimeoutSeconds: positiveSeconds.default(300),
    /** The longest an SSH connection may last, whatever it does. */
    sshMaxConnectionSeconds: positiveSeconds.default(6 * 3600),
    /** Send webhook deliveries from this process (`serve` and `worker`; README "Webhooks"). Several processes share the work safely. */
    webhooksEnabled: bool.default(true),
    /** One delivery attempt waits at most this long for the receiver's answer. */
    webhookTimeoutSeconds: positiveSeconds.default(10),
    /** Attempts per delivery before it is given up (the delay doubles from webhookBackoffSeconds, with jitter). */
    webhookMaxAttempts: positiveInt.default(10),
    webhookBackoffSeconds: positiveSeconds.default(2),
    webhookMaxBackoffSeconds: positiveSeconds.default(3600),
    /** A hook whose deliveries fail this many times in a row is turned off (audited); 0: never. */
    webhookDisableAfterFailures: count.default(50),
    /** Deliveries sent at once by one process. */
    webhookConcurrency: positiveInt.default(8),
    /** Finished deliveries (the delivery log) and delivered events are kept this long. */
    webhookRetentionDays: positiveInt.default(14),
    /**
     * Comma-separated host names, addresses and CIDR ranges that webhooks may reach although
     * internal (loopback, private and link-local ranges are refused otherwise).
     */
    webhookAllowedHosts: z.string().default(''),
    /** Live event streams (GET /api/v1/events) one client (user or address) may hold open on one server. */
    maxEventStreamsPerClient: positiveInt.default(8),
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
    lfsMaxObjectBytes: positiveBytes.default(50 * 1024 ** 3),
    lfsMaxBatchObjects: positiveInt.default(1000),
    /** Longest lifetime a token may be given (`--expires`); a longer one is refused with 400. */
    tokenMaxLifetimeDays: z.coerce.number().int().min(1).max(36500).default(3650),
    /** Lifetime of LFS transfer actions; the client treats anything within 5 s of expiry as expired. */
    lfsActionExpiresSeconds: seconds.pipe(z.number().min(60).max(7 * 86400)).default(3600),
    /** First segments of every key the readable LFS layout publishes under (docs/design/lfs-layout.md). */
    lfsReadablePrefix: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*$/, 'must be lower-case key segments such as files')
      .refine((p) => p !== 'lfs' && !p.startsWith('lfs/') && !p.startsWith('snapshots') && !p.startsWith('backups') && !p.startsWith('doctor'), 'must not be lfs/, snapshots/, backups/ or doctor/, which hold other keys')
      .default('files'),
    /** LFS garbage collection by the server every this long (`gitstratum lfs gc` otherwise); 0, the default: never on its own. */
    lfsGcIntervalSeconds: seconds.default(0),
    /** Scheduled LFS GC runs only measure (the reclaimable-bytes metric) and delete nothing. */
    lfsGcDryRun: bool.default(false),
    /** LFS GC never deletes an object uploaded, or named by a batch, within this long. */
    lfsGcGraceSeconds: seconds.pipe(z.number().min(3600)).default(7 * 86400),
    /** Secret for signed LFS transfer authorizations; every frontend needs the same. Default: <data>/signing.key. */
    signingSecret: z.string().min(32).optional(),
    /**
     * Persist every repository to the object store as snapshots, in `serve` (docs/design/snapshots.md).
     * Set it false in `serve` when a separate `gitstratum worker` does it (a worker always does).
     */
    snapshotsEnabled: bool.default(true),
    /** Quiet time after a repository's last push before it is snapshotted; a burst of pushes costs one snapshot. */
    snapshotDebounceSeconds: duration.pipe(z.number().min(0)).default(2),
    /**
     * Longest a repository pushed to without pause waits before its snapshot starts. With the
     * 1 s poll and the snapshot job itself, 6 keeps push-to-durable within 10 s under a push a second.
     */
    snapshotMaxDelaySeconds: duration.pipe(z.number().min(0)).default(6),
    /** Repositories snapshotted at once. */
    snapshotConcurrency: positiveInt.default(1),
    /** Longest wait between retries of a failing snapshot (the backoff doubles from 1 s up to this). */
    snapshotRetryMaxSeconds: positiveSeconds.default(60),
    /**
     * Evict a repository from local disk once no git request has touched it for this long and
     * every push is in a snapshot; its next request restores it. 0: never (the default).
     */
    snapshotEvictIdleSeconds: seconds.default(0),
    /** Run the DR drill (restore and compare, docs/design/snapshots.md) every this many seconds in serve or worker; 0, never. */
    drDrillIntervalSeconds: seconds.default(0),
    /** Repositories a scheduled DR drill checks, chosen at random; unset, all that have snapshots. */
    drDrillSample: positiveInt.optional(),
    /** SQLite only: back the metadata database up to the object store (backups/meta/) every this many seconds in serve or worker; 0, never. */
    metaBackupIntervalSeconds: seconds.default(900),
    /** Metadata backups kept in the object store; older ones are deleted after each backup. */
    metaBackupKeep: positiveInt.default(96),
    /** `gitstratum worker` only: serve /metrics (and /healthz) on this port of `host`; unset, none. 0 picks a free port. */
    metricsPort: port.optional(),
    /** Compact a repository's snapshots (one full in place of a chain) once its latest chain is longer than this; 0: never by length. */
    snapshotChainMaxLength: count.default(20),
    /** … or once the chain's incrementals together are larger than this many times its full snapshot; 0: never by size. */
    snapshotChainMaxSizeRatio: number.pipe(z.number().min(0)).default(1),
    /** Chains whose incrementals total fewer bytes than this restore fast anyway: compacted by length only. */
    snapshotCompactMinBytes: bytes.default(64 * 1024 ** 2),
    /** Default branch of new repositories. */
    defaultBranch: z.string().regex(/^[A-Za-z0-9._/-]+$/).default('main'),
    /**
     * What this process is in a cluster (README "Running on several machines"): `all` (the
     * default: everything in one process), a stateless `frontend`, or a `storage` node serving
     * the repositories of one shard.
     */
    role: z.enum(['all', 'frontend', 'storage']).default('all'),
    /** The shard a storage node serves. */
    shard: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be 1-63 lower-case letters, digits and inner hyphens')
      .optional(),
    /** The URL frontends reach this storage node at (its internal routes). */
    advertiseUrl: z
      .string()
      .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), 'must be an http:// or https:// URL')
      .optional(),
    /** The secret every request between the parts of a cluster is signed with; the same on every node. */
    clusterSecret: z.string().min(32, 'must be at least 32 characters').optional(),
    /**
     * How long a storage node's hold on its shard lasts without renewal (renewed every fifth of
     * it). A failover takes about this long; a writer that cannot renew for 4/5 of it stops.
     */
    shardLeaseSeconds: positiveSeconds.default(5),
    /**
     * Where a storage node that takes its shard over finds the repositories: `volume` (the
     * dead writer's volume, attached to this node: every acknowledged push is there) or
     * `snapshots` (a disk of its own: what is missing is restored from object storage on first
     * request, and the acknowledged pushes not yet persisted are reported lost).
     */
    failoverFrom: z.enum(['volume', 'snapshots']).default('volume'),
    /**
     * A storage node that is a replica of its shard rather than its writer or standby
     * (docs/design/replication.md): `async` keeps a copy of every repository of the shard on its
     * own disk, following the writer, serves reads, and never takes the shard's lease; `sync`
     * keeps the same copy, holds every push's objects before the writer's refs commit, serves no
     * reads, and is the shard's standby: it takes the lease over with every acknowledged push.
     */
    replica: z.enum(['async', 'sync']).optional(),
    /** How often a replica looks for repositories whose refs version passed its own (besides each announced change). */
    replicaIntervalSeconds: positiveSeconds.default(30),
    /** How often a replica compares every repository of its shard with the writer, changed or not (drift repair). */
    replicaReconcileSeconds: positiveSeconds.default(600),
    /** Repositories a replica brings up to the writer at once. */
    replicaConcurrency: positiveInt.default(2),
    /**
     * After a repository moved to another shard, how long its old shard's disks keep their
     * copies (reads that began before the switch finish on them); then they are removed.
     */
    moveGraceSeconds: positiveSeconds.default(300),
  })
  .strict()
  .superRefine((c, ctx) => {
    // Reported against the one that was given, so the message names where it came from.
    if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
      const [given, missing] = c.tlsCert !== undefined ? ['tlsCert', 'tlsKey'] : ['tlsKey', 'tlsCert'];
      ctx.addIssue({ code: 'custom', path: [given], message: `needs ${missing} too (a certificate and its key go together)` });
    }
    if (c.role !== 'all') {
      // Several processes share the metadata and the objects: nothing of either may be local.
      if (c.databaseUrl === undefined) {
        ctx.addIssue({ code: 'custom', path: ['role'], message: `${c.role} needs PostgreSQL (databaseUrl): SQLite cannot be shared by several machines` });
      }
      if (c.objectStore !== 's3') {
        ctx.addIssue({ code: 'custom', path: ['role'], message: `${c.role} needs S3-compatible object storage (objectStore s3): a local directory cannot be shared by several machines` });
      }
      if (c.clusterSecret === undefined) ctx.addIssue({ code: 'custom', path: ['role'], message: `${c.role} needs clusterSecret (the same on every node)` });
    }
    if (c.role === 'storage') {
      if (c.shard === undefined) ctx.addIssue({ code: 'custom', path: ['role'], message: 'storage needs shard (the shard this node serves)' });
      if (c.advertiseUrl === undefined) ctx.addIssue({ code: 'custom', path: ['role'], message: 'storage needs advertiseUrl (where frontends reach this node)' });
    }
    if (c.replica !== undefined && c.role !== 'storage') ctx.addIssue({ code: 'custom', path: ['replica'], message: 'only a storage node (role storage) is a replica' });
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

