/**
 * Row types of the metadata database, shared by the SQLite and PostgreSQL dialects.
 * Timestamps are ISO-8601 UTC strings (they sort as text on both engines); booleans are
 * 0/1 integers; identifiers are ULIDs.
 */
import type { ColumnType, Generated } from 'kysely';

export type Role = 'read' | 'write' | 'admin';
export type Visibility = 'public' | 'private';

export interface OwnersTable {
  id: string;
  name: string;
  kind: 'user' | 'org';
  created_at: string;
  /** Size quota of all the owner's repositories: null, the configured default; 0, none; else bytes. */
  quota_bytes: ColumnType<number | string | null, number | null | undefined, number | null>;
}

export interface UsersTable {
  id: string;
  is_admin: number;
  created_at: string;
  /** Set while the user is disabled: none of their tokens authenticates. */
  disabled_at: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface OrganizationsTable {
  id: string;
  created_at: string;
}

export interface MembershipsTable {
  org_id: string;
  user_id: string;
  role: Role;
  created_at: string;
}

export interface SpacesTable {
  id: string;
  owner_id: string;
  name: string;
  created_at: string;
}

export interface RepositoriesTable {
  id: string;
  space_id: string;
  name: string;
  visibility: Visibility;
  default_branch: string;
  shard: string;
  created_at: string;
  updated_at: string;
  enforce_locks: Generated<number>;
  /** The repository this one was forked from (it may since have been deleted). */
  fork_of: ColumnType<string | null, string | null | undefined, string | null>;
  /** While in the future (ms, database clock): a move is finishing, pushes get 503 (meta/moves.ts). */
  pushes_paused_until: ColumnType<number | string | null, number | null | undefined, number | null>;
  /** The fork network: the id of its first repository; null when the repository is no fork. */
  fork_network: ColumnType<string | null, string | null | undefined, string | null>;
  /** Size quota: null, the configured default; 0, none; else bytes (bigint: a string on PostgreSQL). */
  quota_bytes: ColumnType<number | string | null, number | null | undefined, number | null>;
  /** Bytes of the git object store as last measured (docs/design/quotas.md). */
  git_bytes: ColumnType<number | string, number | undefined, number>;
  /** Where its LFS files are kept: `content` (content-addressed) or `readable` (docs/design/lfs-layout.md). */
  lfs_layout: ColumnType<'content' | 'readable', 'content' | 'readable' | undefined, 'content' | 'readable'>;
  /** Refs whose pushes publish LFS files (JSON array of patterns); null: the default branch. */
  lfs_publish_refs: ColumnType<string | null, string | null | undefined, string | null>;
  /** Base URL of the published tree (a CDN in front of the bucket), shown beside each published path. */
  lfs_public_url: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface LfsObjectsTable {
  repository_id: string;
  oid: string;
  /** bigint: PostgreSQL returns it as a string, SQLite as a number. */
  size: number | string;
  created_at: string;
  /** When a batch last named it for this repository (LFS GC's grace period counts from it). */
  touched_at: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface LfsPublishJobsTable {
  id: string;
  repository_id: string;
  kind: 'push' | 'relayout';
  ref: string;
  old_oid: string;
  new_oid: string;
  state: 'pending' | 'done' | 'failed';
  attempts: Generated<number>;
  /** ms since the epoch, by the database's clock. */
  next_attempt_at: ColumnType<number | string, number, number>;
  lease_holder: string | null;
  lease_until: ColumnType<number | string | null, number | null | undefined, number | null>;
  files_total: number | null;
  files_done: Generated<number>;
  bytes_done: ColumnType<number | string, number | undefined, number>;
  /** Paths that cannot be published, with why (JSON, at most 100). */
  skipped: string | null;
  error: string | null;
  created_at: string;
  finished_at: string | null;
}

export interface LfsPublicationsTable {
  id: string;
  /** Null once its repository was deleted (retired: lfs/publisher.ts gives its bytes back). */
  repository_id: string | null;
  oid: string;
  size: number | string;
  path: string;
  key: string;
  /** Null while its copy is under way. */
  version_id: string | null;
  job_id: string;
  commit_oid: string;
  published_at: string;
}

export interface LfsLocksTable {
  id: string;
  repository_id: string;
  path: string;
  owner_id: string;
  ref: string | null;
  locked_at: string;
}

export interface ProjectsTable {
  id: string;
  /** JSON array of strings. */
  tags: string;
  created_at: string;
}

export interface AccessTokensTable {
  id: string;
  user_id: string;
  token_hash: string;
  scope: Role;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
  created_at: string;
  /** A label for people, such as `ci-deploy`. */
  name: ColumnType<string | null, string | null | undefined, string | null>;
  /** The token this one was created with; revoking that one revokes this one. */
  parent_id: string | null;
}

export interface AuditLogTable {
  id: Generated<number>;
  at: string;
  /** Owner id of the acting user, or null for the local command line. */
  actor_id: string | null;
  actor_name: string;
  action: string;
  repository_id: string | null;
  target: string;
  /** JSON object with the action's details (for pushes: the ref updates). */
  details: string;
  request_id: string | null;
}

export interface SnapshotsTable {
  id: string;
  repository_id: string;
  kind: 'full' | 'incremental';
  /** JSON array of parent snapshot ids. */
  parents: string;
  object_key: string;
  refs_digest: string;
  /** bigint: PostgreSQL returns it as a string, SQLite as a number. */
  byte_size: number | string;
  object_count: number | string;
  sha256: string;
  begin_event_id: number | string;
  created_at: string;
}

export type EventKind = 'push-begin' | 'push-end' | 'snapshot-begin' | 'snapshot-end';

export interface EventsTable {
  id: Generated<number>;
  repository_id: string;
  kind: EventKind;
  at: string;
  /** JSON object. */
  details: string;
}

export interface RepositoryResidencyTable {
  repository_id: string;
  /** Last git request that touched the repository's disk; written at most once a minute. */
  last_access_at: string;
  /** Set while the repository is evicted from local disk (restored on its next request). */
  evicted_at: string | null;
}

export interface SnapshotLeasesTable {
  repository_id: string;
  holder: string;
  /** Milliseconds since the epoch, by the database's clock. */
  expires_at: number | string;
}

export type ShardState = 'active' | 'draining' | 'drained';

export interface ShardsTable {
  name: string;
  state: ColumnType<ShardState, ShardState | undefined, ShardState>;
  /** 0/1: whether placement may put new repositories here (while active). */
  accepts_new: ColumnType<number, number | undefined, number>;
  created_at: string;
  /** A push while no synchronous replica is connected: committed unsynced, or refused (replication/sync.ts). */
  sync_missing: ColumnType<'accept' | 'refuse', 'accept' | 'refuse' | undefined, 'accept' | 'refuse'>;
}

export interface ShardLeasesTable {
  shard: string;
  /** Null once released; the row (and its epoch) stays. */
  holder: string | null;
  advertise_url: string | null;
  /** bigint: PostgreSQL returns it as a string. Grows by one on every change of holder. */
  epoch: number | string;
  /** Milliseconds since the epoch, by the database's clock. */
  expires_at: number | string;
  /** When the current holder took it (ms, the database's clock). */
  acquired_at: number | string;
}

export interface StorageNodesTable {
  /** The node's lease holder id (`<host>/<pid>/<nonce>`): one row per process. */
  holder: string;
  shard: string;
  /** Where frontends reach it (its advertised URL). */
  url: string;
  /** Milliseconds since the epoch: by the database's clock unless the node gave its own start time. */
  started_at: number | string;
  /** Milliseconds since the epoch, by the database's clock: its latest heartbeat. */
  last_seen_at: number | string;
}

export interface SpaceShardPinsTable {
  space_id: string;
  shard: string;
  created_at: string;
}

/** A repository's refs version as frontends' pack caches key on it (meta/refs-versions.ts). */
export interface RepositoryRefsVersionsTable {
  repository_id: string;
  /** Grows whenever a storage node changes or may change the repository's refs. */
  version: number | string;
  /** Milliseconds since the epoch, by the database's clock: the latest bump (null before 0016). */
  bumped_at: ColumnType<number | string | null, number | null | undefined, number | null>;
}

export interface ReplicasTable {
  /** The replica's disk (a random id kept in its data directory): a new disk is a new replica. */
  disk_id: string;
  shard: string;
  /** Where frontends reach it. */
  url: string;
  mode: 'async' | 'sync';
  /** Milliseconds since the epoch, by the database's clock. */
  last_seen_at: number | string;
}

export interface ReplicaPositionsTable {
  disk_id: string;
  repository_id: string;
  /** The repository's refs version the replica's copy is at least as new as. */
  version: number | string;
  /** Milliseconds since the epoch, by the database's clock. */
  applied_at: number | string;
}

export interface SyncRefsTable {
  repository_id: string;
  ref: string;
  /** The value the writer last committed (the zero id: deleted); null until one commits. */
  committed: string | null;
  /** The writer's lease epoch when it committed. */
  committed_epoch: number | string | null;
  /** A prepared transaction's value, not yet committed (or never: its push failed). */
  pending: string | null;
  /** Which transaction prepared `pending` (meta/sync-refs.ts transactionKey). */
  pending_key: string | null;
  /** Milliseconds since the epoch, by the database's clock. */
  updated_at: number | string;
}

export interface RepoMovesTable {
  id: string;
  repository_id: string;
  from_shard: string;
  to_shard: string;
  /** copying, paused (pushes get 503), moved (routing switched), failed. */
  state: string;
  actor_name: string;
  /** The mover's claim (ms, database clock): a move not renewed past it is abandoned. */
  lease_until: number | string;
  started_at: number | string;
  finished_at: number | string | null;
  /** How long pushes were paused, once moved. */
  pause_ms: number | string | null;
  error: string | null;
}

export interface BranchProtectionsTable {
  repository_id: string;
  /** A branch name pattern, without refs/heads/. */
  pattern: string;
  allow_force_push: number;
  allow_deletion: number;
  push_role: 'write' | 'admin';
  linear_history: number;
  created_at: string;
  updated_at: string;
}

/** Webhooks (repos/webhooks.ts): on an owner, a space (space_id) or a repository (repository_id). */
export interface WebhooksTable {
  id: string;
  owner_id: string;
  space_id: string | null;
  repository_id: string | null;
  url: string;
  /** The HMAC key of X-Hub-Signature-256; never shown by the API. */
  secret: string | null;
  /** Comma-separated event kinds (push, branch, tag, repository, lock). */
  events: string;
  active: number;
  consecutive_failures: Generated<number>;
  disabled_at: string | null;
  disabled_reason: string | null;
  created_by: string;
  created_at: string;
  updated_at: string;
}

/** The event outbox: what happened, written in the transaction that made it happen. */
export interface RepoEventsTable {
  id: Generated<number>;
  owner_id: string;
  space_id: string;
  repository_id: string;
  /** push, branch, tag, repository, lock. */
  kind: string;
  /** The payload sent to webhooks and event streams (JSON). */
  payload: string;
  created_at: string;
}

export interface WebhookDeliveriesTable {
  id: string;
  hook_id: string;
  event_id: number;
  repository_id: string;
  /** pending, delivered, failed (gave up). */
  status: string;
  attempts: Generated<number>;
  /** ms since the epoch, by the database's clock. */
  next_attempt_at: ColumnType<number | string, number, number>;
  lease_holder: string | null;
  lease_until: ColumnType<number | string | null, number | null | undefined, number | null>;
  /** The delivery this one sends again (a redelivery). */
  redelivery_of: string | null;
  request_headers: string | null;
  request_body: string | null;
  response_status: number | null;
  response_excerpt: string | null;
  error: string | null;
  duration_ms: number | null;
  created_at: string;
  finished_at: string | null;
}

export interface SshKeysTable {
  id: string;
  user_id: string;
  /** A label for people, such as `laptop`. */
  name: string | null;
  key_type: string;
  /** The key blob, base64 as in a `.pub` file. */
  public_key: string;
  /** `SHA256:…`, as OpenSSH prints it. */
  fingerprint: string;
  /** What the key may do at most: read (a deploy key) or write. */
  scope: 'read' | 'write';
  created_at: string;
  last_used_at: string | null;
}

export interface Database {
  owners: OwnersTable;
  users: UsersTable;
  organizations: OrganizationsTable;
  memberships: MembershipsTable;
  spaces: SpacesTable;
  repositories: RepositoriesTable;
  projects: ProjectsTable;
  access_tokens: AccessTokensTable;
  audit_log: AuditLogTable;
  lfs_objects: LfsObjectsTable;
  lfs_locks: LfsLocksTable;
  lfs_publish_jobs: LfsPublishJobsTable;
  lfs_publications: LfsPublicationsTable;
  snapshots: SnapshotsTable;
  events: EventsTable;
  repository_residency: RepositoryResidencyTable;
  snapshot_leases: SnapshotLeasesTable;
  shards: ShardsTable;
  shard_leases: ShardLeasesTable;
  space_shard_pins: SpaceShardPinsTable;
  storage_nodes: StorageNodesTable;
  repository_refs_versions: RepositoryRefsVersionsTable;
  replicas: ReplicasTable;
  replica_positions: ReplicaPositionsTable;
  sync_refs: SyncRefsTable;
  repo_moves: RepoMovesTable;
  ssh_keys: SshKeysTable;
  branch_protections: BranchProtectionsTable;
  webhooks: WebhooksTable;
  repo_events: RepoEventsTable;
  webhook_deliveries: WebhookDeliveriesTable;
}
