/**
 * Numbered, append-only migrations. One list serves both dialects: Kysely's schema builder
 * emits the right DDL for each, and the few places where the engines differ (auto-increment
 * keys) branch on the dialect explicitly.
 */
import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import type { Dialect } from './db.js';

function migrations(dialect: Dialect): Record<string, Migration> {
  return {
    '0001_core': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('owners')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('user', 'org')`))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        // Owner names are unique whatever their case: `Alice` and `alice` are one owner.
        await db.schema.createIndex('owners_name_key').on('owners').expression(sql`lower(name)`).unique().execute();

        await db.schema
          .createTable('users')
          .addColumn('id', 'text', (c) => c.primaryKey().references('owners.id').onDelete('cascade'))
          .addColumn('is_admin', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('organizations')
          .addColumn('id', 'text', (c) => c.primaryKey().references('owners.id').onDelete('cascade'))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('memberships')
          .addColumn('org_id', 'text', (c) => c.notNull().references('organizations.id').onDelete('cascade'))
          .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
          .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('read', 'write', 'admin')`))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('memberships_pkey', ['org_id', 'user_id'])
          .execute();

        await db.schema
          .createTable('spaces')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('owner_id', 'text', (c) => c.notNull().references('owners.id').onDelete('restrict'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('spaces_owner_name_key').on('spaces').expression(sql`owner_id, lower(name)`).unique().execute();

        await db.schema
          .createTable('repositories')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('space_id', 'text', (c) => c.notNull().references('spaces.id').onDelete('restrict'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('visibility', 'text', (c) => c.notNull().check(sql`visibility in ('public', 'private')`))
          .addColumn('default_branch', 'text', (c) => c.notNull())
          .addColumn('shard', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('repositories_space_name_key').on('repositories').expression(sql`space_id, lower(name)`).unique().execute();

        await db.schema
          .createTable('projects')
          .addColumn('id', 'text', (c) => c.primaryKey().references('repositories.id').onDelete('cascade'))
          .addColumn('tags', 'text', (c) => c.notNull().defaultTo('[]'))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('access_tokens')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('scope', 'text', (c) => c.notNull().check(sql`scope in ('read', 'write', 'admin')`))
          .addColumn('expires_at', 'text')
          .addColumn('last_used_at', 'text')
          .addColumn('revoked_at', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('access_tokens_user_idx').on('access_tokens').column('user_id').execute();

        await db.schema
          .createTable('audit_log')
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
            dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
          )
          .addColumn('at', 'text', (c) => c.notNull())
          .addColumn('actor_id', 'text')
          .addColumn('actor_name', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('repository_id', 'text')
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('details', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('request_id', 'text')
          .execute();
        await db.schema.createIndex('audit_log_repository_idx').on('audit_log').columns(['repository_id', 'id']).execute();
      },
    },
    '0002_lfs': {
      async up(db: Kysely<any>) {
        // Which repository may see which LFS object. Storage is shared and content-addressed;
        // this table is the permission: a row exists only once the bytes were verified for
        // (uploaded to, or verified in) that repository.
        await db.schema
          .createTable('lfs_objects')
          .addColumn('repository_id', 'text', (c) => c.notNull().references('repositories.id').onDelete('cascade'))
          .addColumn('oid', 'text', (c) => c.notNull())
          .addColumn('size', 'bigint', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('lfs_objects_pkey', ['repository_id', 'oid'])
          .execute();
        await db.schema.createIndex('lfs_objects_oid_idx').on('lfs_objects').column('oid').execute();

        await db.schema
          .createTable('lfs_locks')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('repository_id', 'text', (c) => c.notNull().references('repositories.id').onDelete('cascade'))
          .addColumn('path', 'text', (c) => c.notNull())
          .addColumn('owner_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
          .addColumn('ref', 'text')
          .addColumn('locked_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('lfs_locks_repo_path_key').on('lfs_locks').columns(['repository_id', 'path']).unique().execute();

        // Server-side enforcement of LFS locks on push, per repository (on by default).
        await db.schema.alterTable('repositories').addColumn('enforce_locks', 'integer', (c) => c.notNull().defaultTo(1)).execute();
      },
    },
    '0003_snapshots': {
      async up(db: Kysely<any>) {
        // The snapshot graph (docs/design/snapshots.md). A row exists only once its object is
        // completely written; `parents` is a JSON array of snapshot ids (empty for a full one).
        // `begin_event_id` is the job's snapshot-begin event: pushes ending after it are not
        // (necessarily) in this snapshot, so they keep the repository dirty.
        await db.schema
          .createTable('snapshots')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('repository_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('full', 'incremental')`))
          .addColumn('parents', 'text', (c) => c.notNull().defaultTo('[]'))
          .addColumn('object_key', 'text', (c) => c.notNull())
          .addColumn('refs_digest', 'text', (c) => c.notNull())
          .addColumn('byte_size', 'bigint', (c) => c.notNull())
          .addColumn('object_count', 'bigint', (c) => c.notNull())
          .addColumn('sha256', 'text', (c) => c.notNull())
          .addColumn('begin_event_id', 'bigint', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('snapshots_repository_idx').on('snapshots').columns(['repository_id', 'created_at']).execute();

        // Append-only: push-begin/push-end from the hooks, snapshot-begin/snapshot-end from the
        // worker. No foreign key: the log outlives a deleted repository row.
        await db.schema
          .createTable('events')
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
            dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
          )
          .addColumn('repository_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) =>
            c.notNull().check(sql`kind in ('push-begin', 'push-end', 'snapshot-begin', 'snapshot-end')`),
          )
          .addColumn('at', 'text', (c) => c.notNull())
          .addColumn('details', 'text', (c) => c.notNull().defaultTo('{}'))
          .execute();
        await db.schema.createIndex('events_repository_kind_idx').on('events').columns(['repository_id', 'kind', 'id']).execute();
      },
    },
    '0004_forks': {
      async up(db: Kysely<any>) {
        // A fork names its source (`fork_of`) and its fork network (`fork_network`: the id of the
        // network's first repository; null for a repository that was never forked from another).
        // No foreign keys: a fork outlives its source, and the network id stays a stable group
        // key after the repository it names is deleted. Members of a network share LFS objects.
        await db.schema.alterTable('repositories').addColumn('fork_of', 'text').execute();
        await db.schema.alterTable('repositories').addColumn('fork_network', 'text').execute();
        await db.schema.createIndex('repositories_fork_network_idx').on('repositories').column('fork_network').execute();
      },
    },
    '0005_eviction': {
      async up(db: Kysely<any>) {
        // Whether a repository is on local disk (docs/design/snapshots.md, "Eviction"). A table
        // of its own: written by the access tracker at most once a minute per repository, never
        // on the request path of the repositories row. `evicted_at` set means the directory may
        // be missing and the next request restores it; a missing directory without it is a lost
        // disk, which only an operator restores.
        await db.schema
          .createTable('repository_residency')
          .addColumn('repository_id', 'text', (c) => c.primaryKey().references('repositories.id').onDelete('cascade'))
          .addColumn('last_access_at', 'text', (c) => c.notNull())
          .addColumn('evicted_at', 'text')
          .execute();
      },
    },
    '0006_snapshot_leases': {
      async up(db: Kysely<any>) {
        // One row per repository a snapshot job is working on (meta/leases.ts): several workers
        // (or serve and a worker) never snapshot one repository at once. `expires_at` is in
        // milliseconds since the epoch by the database's clock, so hosts' clocks do not matter.
        await db.schema
          .createTable('snapshot_leases')
          .addColumn('repository_id', 'text', (c) => c.primaryKey())
          .addColumn('holder', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .execute();
      },
    },
    '0010_offboarding': {
      async up(db: Kysely<any>) {
        // A disabled user keeps every row (tokens, memberships, locks) but no token of theirs
        // authenticates (access/accounts.ts); enabling them restores everything as it was.
        await db.schema.alterTable('users').addColumn('disabled_at', 'text').execute();
        // A label for people ("ci-deploy"); not unique, never used to find a token.
        await db.schema.alterTable('access_tokens').addColumn('name', 'text').execute();
        // `audit list --actor` and `--since`; entries keep the actor's name after the user
        // is deleted, so the filter is on the name.
        await db.schema.createIndex('audit_log_actor_idx').on('audit_log').expression(sql`lower(actor_name), id`).execute();
        await db.schema.createIndex('audit_log_at_idx').on('audit_log').columns(['at']).execute();
      },
    },
    '0011_token_lineage': {
      async up(db: Kysely<any>) {
        // The token a token was created with (null when made by the CLI or an older version).
        // Revoking a token revokes its descendants, found through this column. No foreign key:
        // a parent row is never deleted, only revoked.
        await db.schema.alterTable('access_tokens').addColumn('parent_id', 'text').execute();
        await db.schema.createIndex('access_tokens_parent_idx').on('access_tokens').column('parent_id').execute();
      },
    },
    '0012_quotas': {
      async up(db: Kysely<any>) {
        // Size quotas (docs/design/quotas.md). `quota_bytes`: null follows the configured
        // default, 0 is no limit, else the limit in bytes. `git_bytes`: the size of the
        // repository's object store as last measured (after each push and maintenance run);
        // LFS bytes are summed from lfs_objects when asked, never stored twice.
        await db.schema.alterTable('repositories').addColumn('quota_bytes', 'bigint').execute();
        await db.schema.alterTable('repositories').addColumn('git_bytes', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
        await db.schema.alterTable('owners').addColumn('quota_bytes', 'bigint').execute();
      },
    },
    '0013_shards': {
      async up(db: Kysely<any>) {
        // Shards and their placement (docs/design/shards.md). A shard is a storage area with one
        // writer at a time. `accepts_new` (0/1) and `state` together decide whether placement
        // may choose it: only an active shard that accepts new repositories is chosen; a
        // draining one keeps serving what it has until issue 11 moves it away.
        await db.schema
          .createTable('shards')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('state', 'text', (c) => c.notNull().defaultTo('active').check(sql`state in ('active', 'draining', 'drained')`))
          .addColumn('accepts_new', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        // Every existing repository names its shard (`local` so far, written by repos/service.ts):
        // each name found becomes a shard, so every row stays valid. No foreign key from
        // repositories.shard: SQLite adds one only by rebuilding the table; shards are never
        // deleted, and placement writes only names it read from this table.
        const createdAt = new Date().toISOString();
        const found = await db.selectFrom('repositories').select('shard').distinct().execute();
        const names = new Set<string>(['local', ...found.map((r: { shard: string }) => r.shard)]);
        for (const name of [...names].sort()) {
          await db.insertInto('shards').values({ name, state: 'active', accepts_new: 1, created_at: createdAt }).execute();
        }
        await db.schema.createIndex('repositories_shard_idx').on('repositories').column('shard').execute();

        // The writer's lease of each shard (meta/shard-leases.ts). The row outlives a release
        // (holder null, expired): `epoch` must only ever grow, since it fences the writes of a
        // deposed writer. `expires_at` and `acquired_at` are milliseconds by the database's clock.
        await db.schema
          .createTable('shard_leases')
          .addColumn('shard', 'text', (c) => c.primaryKey().references('shards.name').onDelete('cascade'))
          .addColumn('holder', 'text')
          .addColumn('advertise_url', 'text')
          .addColumn('epoch', 'bigint', (c) => c.notNull())
          .addColumn('expires_at', 'bigint', (c) => c.notNull())
          .addColumn('acquired_at', 'bigint', (c) => c.notNull())
          .execute();

        // A pinned space's new repositories are placed only on the shards it is pinned to.
        await db.schema
          .createTable('space_shard_pins')
          .addColumn('space_id', 'text', (c) => c.notNull().references('spaces.id').onDelete('cascade'))
          .addColumn('shard', 'text', (c) => c.notNull().references('shards.name').onDelete('cascade'))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('space_shard_pins_pkey', ['space_id', 'shard'])
          .execute();
      },
    },
    '0014_storage_nodes': {
      async up(db: Kysely<any>) {
        // The storage nodes that serve each shard (meta/storage-nodes.ts): the lease holder and
        // its standbys, each upserting its row on every lease tick, so `cluster status` can show
        // the standbys that shard_leases cannot. A row per process (`holder` is the lease holder
        // id); deleted on clean shutdown, pruned once unseen for an hour. `started_at` and
        // `last_seen_at` are milliseconds by the database's clock, as in shard_leases.
        await db.schema
          .createTable('storage_nodes')
          .addColumn('holder', 'text', (c) => c.primaryKey())
          .addColumn('shard', 'text', (c) => c.notNull().references('shards.name').onDelete('cascade'))
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('started_at', 'bigint', (c) => c.notNull())
          .addColumn('last_seen_at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('storage_nodes_shard_idx').on('storage_nodes').column('shard').execute();
      },
    },
    '0015_refs_versions': {
      async up(db: Kysely<any>) {
        // The refs version of each repository that frontends key their pack cache on
        // (meta/refs-versions.ts): bumped by the storage node before and after every push's
        // refs commit, and at every takeover. No row: version 0.
        await db.schema
          .createTable('repository_refs_versions')
          .addColumn('repository_id', 'text', (c) => c.primaryKey().references('repositories.id').onDelete('cascade'))
          .addColumn('version', 'bigint', (c) => c.notNull())
          .execute();
      },
    },
    '0016_replication': {
      async up(db: Kysely<any>) {
        // Replicas of a shard (meta/replication.ts, docs/design/replication.md): each keyed by
        // its disk, with the refs version of each repository its copy has reached; the time of
        // each bump measures how far behind a replica is.
        await db.schema.alterTable('repository_refs_versions').addColumn('bumped_at', 'bigint').execute();
        await db.schema
          .createTable('replicas')
          .addColumn('disk_id', 'text', (c) => c.primaryKey())
          .addColumn('shard', 'text', (c) => c.notNull().references('shards.name').onDelete('cascade'))
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('mode', 'text', (c) => c.notNull())
          .addColumn('last_seen_at', 'bigint', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('replica_positions')
          .addColumn('disk_id', 'text', (c) => c.notNull().references('replicas.disk_id').onDelete('cascade'))
          .addColumn('repository_id', 'text', (c) => c.notNull().references('repositories.id').onDelete('cascade'))
          .addColumn('version', 'bigint', (c) => c.notNull())
          .addColumn('applied_at', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('replica_positions_pk', ['disk_id', 'repository_id'])
          .execute();
        await db.schema.createIndex('replica_positions_repository_idx').on('replica_positions').column('repository_id').execute();
      },
    },
    '0017_sync_refs': {
      async up(db: Kysely<any>) {
        // The synchronous standby's record of a shard's ref transactions (meta/sync-refs.ts):
        // per ref, the value its writer last committed and the one a transaction has prepared.
        await db.schema
          .createTable('sync_refs')
          .addColumn('repository_id', 'text', (c) => c.notNull().references('repositories.id').onDelete('cascade'))
          .addColumn('ref', 'text', (c) => c.notNull())
          .addColumn('committed', 'text')
          .addColumn('committed_epoch', 'bigint')
          .addColumn('pending', 'text')
          .addColumn('pending_key', 'text')
          .addColumn('updated_at', 'bigint', (c) => c.notNull())
          .addPrimaryKeyConstraint('sync_refs_pk', ['repository_id', 'ref'])
          .execute();
        await db.schema.createIndex('sync_refs_pending_idx').on('sync_refs').columns(['repository_id', 'pending_key']).execute();
        // What a shard's writer does with a push while no synchronous replica is connected.
        await db.schema.alterTable('shards').addColumn('sync_missing', 'text', (c) => c.notNull().defaultTo('accept')).execute();
      },
    },
    '0018_repo_moves': {
      async up(db: Kysely<any>) {
        // Moving repositories between shards (meta/moves.ts, docs/design/replication.md): while
        // set and in the future (database clock, ms), pushes to the repository get 503.
        await db.schema.alterTable('repositories').addColumn('pushes_paused_until', 'bigint').execute();
        await db.schema
          .createTable('repo_moves')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('repository_id', 'text', (c) => c.notNull().references('repositories.id').onDelete('cascade'))
          .addColumn('from_shard', 'text', (c) => c.notNull())
          .addColumn('to_shard', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('actor_name', 'text', (c) => c.notNull())
          .addColumn('lease_until', 'bigint', (c) => c.notNull())
          .addColumn('started_at', 'bigint', (c) => c.notNull())
          .addColumn('finished_at', 'bigint')
          .addColumn('pause_ms', 'bigint')
          .addColumn('error', 'text')
          .execute();
        await db.schema.createIndex('repo_moves_repository_idx').on('repo_moves').columns(['repository_id', 'state']).execute();
        await db.schema.createIndex('repo_moves_from_idx').on('repo_moves').columns(['from_shard', 'state']).execute();
      },
    },
    '0019_ssh_keys': {
      async up(db: Kysely<any>) {
        // SSH public keys per user (access/ssh-keys.ts): a key names one user, so its
        // fingerprint is unique across all of them.
        await db.schema
          .createTable('ssh_keys')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
          .addColumn('name', 'text')
          .addColumn('key_type', 'text', (c) => c.notNull())
          .addColumn('public_key', 'text', (c) => c.notNull())
          .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
          .addColumn('scope', 'text', (c) => c.notNull().check(sql`scope in ('read', 'write')`))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('last_used_at', 'text')
          .execute();
        await db.schema.createIndex('ssh_keys_user_idx').on('ssh_keys').column('user_id').execute();
      },
    },
    '0020_branch_protections': {
      async up(db: Kysely<any>) {
        // Protected branches (repos/protections.ts): rules by branch name pattern, enforced
        // in pre-receive.
        await db.schema
          .createTable('branch_protections')
          .addColumn('repository_id', 'text', (c) => c.notNull().references('repositories.id').onDelete('cascade'))
          .addColumn('pattern', 'text', (c) => c.notNull())
          .addColumn('allow_force_push', 'integer', (c) => c.notNull())
          .addColumn('allow_deletion', 'integer', (c) => c.notNull())
          .addColumn('push_role', 'text', (c) => c.notNull().check(sql`push_role in ('write', 'admin')`))
          .addColumn('linear_history', 'integer', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('branch_protections_pk', ['repository_id', 'pattern'])
          .execute();
      },
    },
    '0021_webhooks': {
      async up(db: Kysely<any>) {
        // Webhooks, the event outbox and deliveries (repos/webhooks.ts, docs/webhooks.md).
        await db.schema
          .createTable('webhooks')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('owner_id', 'text', (c) => c.notNull().references('owners.id').onDelete('cascade'))
          .addColumn('space_id', 'text', (c) => c.references('spaces.id').onDelete('cascade'))
          .addColumn('repository_id', 'text', (c) => c.references('repositories.id').onDelete('cascade'))
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('secret', 'text')
          .addColumn('events', 'text', (c) => c.notNull())
          .addColumn('active', 'integer', (c) => c.notNull())
          .addColumn('consecutive_failures', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('disabled_at', 'text')
          .addColumn('disabled_reason', 'text')
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('webhooks_owner_idx').on('webhooks').column('owner_id').execute();
        // No foreign key to repositories: a repository's deletion is itself an event.
        await db.schema
          .createTable('repo_events')
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('owner_id', 'text', (c) => c.notNull())
          .addColumn('space_id', 'text', (c) => c.notNull())
          .addColumn('repository_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('payload', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('repo_events_repository_idx').on('repo_events').columns(['repository_id', 'id']).execute();
        await db.schema.createIndex('repo_events_owner_idx').on('repo_events').columns(['owner_id', 'id']).execute();
        await db.schema
          .createTable('webhook_deliveries')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('hook_id', 'text', (c) => c.notNull().references('webhooks.id').onDelete('cascade'))
          .addColumn('event_id', 'bigint', (c) => c.notNull())
          .addColumn('repository_id', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('pending', 'delivered', 'failed')`))
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
          .addColumn('lease_holder', 'text')
          .addColumn('lease_until', 'bigint')
          .addColumn('redelivery_of', 'text')
          .addColumn('request_headers', 'text')
          .addColumn('request_body', 'text')
          .addColumn('response_status', 'integer')
          .addColumn('response_excerpt', 'text')
          .addColumn('error', 'text')
          .addColumn('duration_ms', 'integer')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('finished_at', 'text')
          .execute();
        await db.schema.createIndex('webhook_deliveries_pending_idx').on('webhook_deliveries').columns(['status', 'next_attempt_at']).execute();
        await db.schema.createIndex('webhook_deliveries_order_idx').on('webhook_deliveries').columns(['hook_id', 'repository_id', 'status', 'event_id']).execute();
        await db.schema.createIndex('webhook_deliveries_hook_idx').on('webhook_deliveries').columns(['hook_id', 'created_at']).execute();
      },
    },
    '0022_lfs_layout': {
      async up(db: Kysely<any>) {
        // The readable LFS layout (issue 15, docs/design/lfs-layout.md): per repository, where
        // its LFS files are kept (`content`: content-addressed only; `readable`: published under
        // their repository paths in a versioned store), which refs publish (JSON array of
        // patterns; null: the default branch) and the public base URL of the published tree.
        await db.schema.alterTable('repositories').addColumn('lfs_layout', 'text', (c) => c.notNull().defaultTo('content')).execute();
        await db.schema.alterTable('repositories').addColumn('lfs_publish_refs', 'text').execute();
        await db.schema.alterTable('repositories').addColumn('lfs_public_url', 'text').execute();
        // When an upload batch last named the object for this repository: LFS GC keeps what a
        // batch named within its grace period (an upload whose push has not arrived yet).
        await db.schema.alterTable('lfs_objects').addColumn('touched_at', 'text').execute();
        // One job per push of a published ref (and per ref of a relayout): walks what changed
        // and publishes each LFS file. Claimed with a lease, so a job killed midway is taken
        // again after it expires (ms, database clock), and done once.
        await db.schema
          .createTable('lfs_publish_jobs')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('repository_id', 'text', (c) => c.notNull().references('repositories.id').onDelete('cascade'))
          .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('push', 'relayout')`))
          .addColumn('ref', 'text', (c) => c.notNull())
          .addColumn('old_oid', 'text', (c) => c.notNull())
          .addColumn('new_oid', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('pending', 'done', 'failed')`))
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
          .addColumn('lease_holder', 'text')
          .addColumn('lease_until', 'bigint')
          .addColumn('files_total', 'integer')
          .addColumn('files_done', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('bytes_done', 'bigint', (c) => c.notNull().defaultTo(0))
          .addColumn('skipped', 'text')
          .addColumn('error', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('finished_at', 'text')
          .execute();
        await db.schema.createIndex('lfs_publish_jobs_pending_idx').on('lfs_publish_jobs').columns(['state', 'next_attempt_at']).execute();
        await db.schema.createIndex('lfs_publish_jobs_repository_idx').on('lfs_publish_jobs').columns(['repository_id', 'state']).execute();
        // Each published version of an LFS file: oid -> {key, version_id}. version_id is null
        // while its copy is under way (an interrupted copy's version is found and adopted, or
        // removed, when the job runs again: never two versions for one publication).
        // repository_id becomes null when its repository is deleted: the bytes stay recorded
        // (and served) until the publisher has given every object still linked elsewhere its
        // content-addressed copy back and deleted the version (lfs/publisher.ts, retired).
        await db.schema
          .createTable('lfs_publications')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('repository_id', 'text', (c) => c.references('repositories.id').onDelete('set null'))
          .addColumn('oid', 'text', (c) => c.notNull())
          .addColumn('size', 'bigint', (c) => c.notNull())
          .addColumn('path', 'text', (c) => c.notNull())
          .addColumn('key', 'text', (c) => c.notNull())
          .addColumn('version_id', 'text')
          .addColumn('job_id', 'text', (c) => c.notNull())
          .addColumn('commit_oid', 'text', (c) => c.notNull())
          .addColumn('published_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('lfs_publications_job_key').on('lfs_publications').columns(['job_id', 'key']).unique().execute();
        await db.schema.createIndex('lfs_publications_oid_idx').on('lfs_publications').columns(['oid', 'repository_id']).execute();
        await db.schema.createIndex('lfs_publications_repo_key_idx').on('lfs_publications').columns(['repository_id', 'key']).execute();
        await db.schema.createIndex('lfs_publications_key_idx').on('lfs_publications').column('key').execute();
      },
    },
    '0023_work_notify': {
      async up(db: Kysely<any>) {
        // PostgreSQL: a commit that brings background work (a push's event, a webhook delivery,
        // an LFS publish job) announces itself on WORK_CHANNEL (meta/changes.ts), whichever
        // process wrote it, so idle loops sleep instead of polling. Row triggers: an update that
        // changed no row announces nothing, and NOTIFY folds equal payloads of one transaction.
        // SQLite needs none: its own counters tell a change (MetaStore.changeMark).
        if (dialect !== 'postgres') return;
        await sql`create or replace function gitstratum_work_notify() returns trigger language plpgsql as $$
          begin
            perform pg_notify('gitstratum_work', tg_table_name);
            return null;
          end $$`.execute(db);
        await sql`create trigger events_work after insert on events for each row execute function gitstratum_work_notify()`.execute(db);
        await sql`create trigger webhook_deliveries_work after insert or update on webhook_deliveries for each row when (new.status = 'pending') execute function gitstratum_work_notify()`.execute(db);
        await sql`create trigger lfs_publish_jobs_work after insert or update on lfs_publish_jobs for each row when (new.state = 'pending') execute function gitstratum_work_notify()`.execute(db);
      },
    },
  };
}

export function migrationProvider(dialect: Dialect): MigrationProvider {
  return { getMigrations: async () => migrations(dialect) };
}
