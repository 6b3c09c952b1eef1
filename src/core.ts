/**
 * The core every role shares: configuration, the metadata store and the services over it.
 * The admin CLI needs only this, so it lives apart from app.ts and its HTTP, git and LFS
 * module graph (which would double every command's start-up time).
 */
import path from 'node:path';
import { mkdir, stat } from 'node:fs/promises';
import type { Config } from './config/schema.js';
import { ConfigError } from './config/load.js';
import type { Logger } from './shared/log.js';
import { openMetaStore, type MetaStore } from './meta/db.js';
import { createAccounts, type Accounts } from './access/accounts.js';
import { createSshKeys, type SshKeys } from './access/ssh-keys.js';
import { createRepoService, type RepoService } from './repos/service.js';
import { createProtections, type Protections } from './repos/protections.js';
import { createWebhooks, type Webhooks } from './events/hooks.js';
import { allowList } from './events/url-safety.js';
import { createOffboarding, type Offboarding } from './access/offboarding.js';
import { createAuditTrail, type AuditTrail } from './access/audit-trail.js';
import { createQuotas, type Quotas } from './repos/quotas.js';
import type { HostOf } from './repos/host.js';
import { LocalRepoHost } from './repos/local-host.js';
import type { RoutedHosts } from './repos/cluster-hosts.js';
import { createShardLeases } from './meta/shard-leases.js';
import { REPLICA_SEEN_WITHIN_MS, shardHasReplicas, upToDateReplicas } from './meta/replication.js';
import { createShardService, type ShardService } from './repos/shards.js';

export interface Core {
  config: Config;
  dataDir: string;
  meta: MetaStore;
  accounts: Accounts;
  sshKeys: SshKeys;
  protections: Protections;
  webhooks: Webhooks;
  repos: RepoService;
  offboarding: Offboarding;
  auditTrail: AuditTrail;
  /** The data directory's permission bits as found at start (for warnIfExposed). */
  dataDirMode: number;
  quotas: Quotas;
  shards: ShardService;
  /** The host of each repository (see CoreOptions). */
  hostOf: HostOf;
  /** In a cluster: the routing of repositories to their shard's writer (repos/cluster-hosts.ts). */
  routing: RoutedHosts | undefined;
  close(): Promise<void>;
}

/**
 * One log line for a data directory other local users can enter or read (issue 9). Group
 * traversal alone is allowed: packCacheAccelRedirect needs it for nginx.
 */
export function warnIfExposed(core: Core, log: Logger): void {
  if ((core.dataDirMode & 0o067) === 0) return;
  log.warn(
    { data: core.dataDir, mode: core.dataDirMode.toString(8).padStart(4, '0') },
    'data directory is accessible to other local users; make it private (chmod -R go-rwx)',
  );
}

export interface CoreOptions {
  /**
   * The host of each repository (repos/host.ts). Read at each call, so `serve` can hand in the
   * host it builds once the core is open. Default: this machine's disk, creating and removing
   * only (what the admin CLI needs).
   */
  hostOf?: HostOf;
}

export async function openCore(config: Config, opts: CoreOptions = {}): Promise<Core> {
  const dataDir = path.resolve(config.data);
  // Private to the server's user: it holds repositories, meta.sqlite (token hashes), LFS
  // objects, backups and the signing key. What is created inside follows the process umask
  // (077, set by the command line at start: 0700 directories, 0600 files, git's too).
  await mkdir(dataDir, { recursive: true, mode: 0o700 }).catch((err: Error) => {
    throw new ConfigError(`cannot create data directory ${dataDir} (setting data): ${err.message}`);
  });
  const dataDirMode = (await stat(dataDir)).mode & 0o777;
  const meta = await openMetaStore({ dataDir, databaseUrl: config.databaseUrl });
  const disk = new LocalRepoHost(dataDir);
  // In a cluster every repository lives on its shard's storage node, this one's included.
  // A failover takes up to a lease lifetime, a standby's try and its recovery: requests that
  // can be sent again wait that long for the new writer.
  // Loaded only in a cluster: its HTTP client and metrics would double an admin command's start-up.
  const routed =
    config.role === 'all'
      ? undefined
      : (await import('./repos/cluster-hosts.js')).shardRoutedHosts(createShardLeases(meta), config.clusterSecret!, {
          failoverWaitMs: Math.max(30_000, config.shardLeaseSeconds * 3000),
          replicas: (shard, id) => upToDateReplicas(meta, shard, id, REPLICA_SEEN_WITHIN_MS),
          shardHasReplicas: (shard) => shardHasReplicas(meta, shard, REPLICA_SEEN_WITHIN_MS),
        });
  const repos = createRepoService(meta, { defaultBranch: config.defaultBranch, publicUrl: config.publicUrl, hostOf: opts.hostOf ?? routed ?? (() => disk) });
  return {
    config,
    dataDir,
    meta,
    accounts: createAccounts(meta, { tokenMaxLifetimeDays: config.tokenMaxLifetimeDays }),
    sshKeys: createSshKeys(meta),
    protections: createProtections(meta, repos),
    webhooks: createWebhooks(meta, repos, { allowed: allowList(config.webhookAllowedHosts.split(',')), timeoutMs: config.webhookTimeoutSeconds * 1000 }),
    repos,
    offboarding: createOffboarding(meta, { repos }),
    auditTrail: createAuditTrail(meta, { repos }),
    dataDirMode,
    quotas: createQuotas(meta, { repoQuotaBytes: config.repoQuotaBytes, ownerQuotaBytes: config.ownerQuotaBytes, maxRefs: config.maxRefs }),
    shards: createShardService(meta),
    hostOf: opts.hostOf ?? routed ?? (() => disk),
    routing: routed,
    async close() {
      await routed?.close();
      await meta.close();
    },
  };
}

