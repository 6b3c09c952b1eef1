/**
 * Replicas of a shard and how far each has come (issue 11; docs/design/replication.md).
 *
 * A replica is its disk: `disk_id` is a random id kept in its data directory, so a replica
 * whose disk was replaced starts with no position and claims nothing it does not hold. Its
 * position for a repository is a refs version (meta/refs-versions.ts) read *before* the round
 * that made its copy equal to the writer's: the copy is at least as new as that version.
 * Times are milliseconds by the database's clock, as for shard leases.
 */
import { sql } from 'kysely';
import { isForeignKeyViolation, type Db, type Dialect } from './db.js';
import { nowMs } from './leases.js';
import { notFound } from '../shared/errors.js';

type Meta = { db: Db; dialect: Dialect };

/** How often a replica tells the database it is alive. */
export const REPLICA_HEARTBEAT_MS = 2000;
/** Frontends send reads to replicas heard from within this (a few missed heartbeats). */
export const REPLICA_SEEN_WITHIN_MS = 5 * REPLICA_HEARTBEAT_MS;

/** Records that the replica is alive and where it serves (an upsert). */
export async function replicaHeartbeat(meta: Meta, replica: { diskId: string; shard: string; url: string; mode: 'async' | 'sync' }): Promise<void> {
  const now = nowMs(meta.dialect);
  try {
    await meta.db
      .insertInto('replicas')
      .values({ disk_id: replica.diskId, shard: replica.shard, url: replica.url, mode: replica.mode, last_seen_at: now })
      .onConflict((oc) => oc.column('disk_id').doUpdateSet((eb) => ({ shard: eb.ref('excluded.shard'), url: eb.ref('excluded.url'), mode: eb.ref('excluded.mode'), last_seen_at: now })))
      .execute();
  } catch (err) {
    if (isForeignKeyViolation(err)) throw notFound('shard_not_found', `shard not found: ${replica.shard}`, { shard: replica.shard });
    throw err;
  }
}

/** Sets the replica's position for a repository, never backwards (two rounds may finish out of order). */
export async function recordPosition(meta: Meta, diskId: string, repositoryId: string, version: string): Promise<void> {
  const now = nowMs(meta.dialect);
  await meta.db
    .insertInto('replica_positions')
    .values({ disk_id: diskId, repository_id: repositoryId, version, applied_at: now })
    .onConflict((oc) =>
      oc
        .columns(['disk_id', 'repository_id'])
        .doUpdateSet({ version: sql`excluded.version`, applied_at: now })
        .where('replica_positions.version', '<', sql<string>`excluded.version`),
    )
    .execute();
}

export interface BehindRepository {
  id: string;
  /** The repository's refs version now ('0' when never bumped). */
  version: string;
  /** Milliseconds since the version was reached by the writer (0 when never bumped): how far behind. */
  lagMs: number;
}

/** The shard's repositories whose refs version is past the replica's position (or that it has none of). */
export async function behindRepositories(meta: Meta, diskId: string, shard: string): Promise<BehindRepository[]> {
  const now = nowMs(meta.dialect);
  const rows = await meta.db
    .selectFrom('repositories as r')
    .leftJoin('repository_refs_versions as v', 'v.repository_id', 'r.id')
    .leftJoin('replica_positions as p', (join) => join.onRef('p.repository_id', '=', 'r.id').on('p.disk_id', '=', diskId))
    .select(['r.id', 'v.version', sql<number | string | null>`case when v.bumped_at is null then 0 else ${now} - v.bumped_at end`.as('lag')])
    .where('r.shard', '=', shard)
    .where((eb) => eb.or([eb('p.version', 'is', null), eb('p.version', '<', eb.fn.coalesce('v.version', sql<number>`0`))]))
    .orderBy('r.id')
    .execute();
  return rows.map((r) => ({ id: r.id, version: String(r.version ?? 0), lagMs: Math.max(0, Number(r.lag ?? 0)) }));
}

/** The replica's position for each repository it has one for. */
export async function positions(meta: Meta, diskId: string): Promise<Map<string, string>> {
  const rows = await meta.db.selectFrom('replica_positions').select(['repository_id', 'version']).where('disk_id', '=', diskId).execute();
  return new Map(rows.map((r) => [r.repository_id, String(r.version)]));
}

/**
 * The URLs of the shard's replicas that may answer a read of the repository now: heard from
 * within `seenWithinMs`, and at a position at least the repository's refs version read in the
 * same statement (after the request arrived), so they hold every push acknowledged before it.
 */
export async function upToDateReplicas(meta: Meta, shard: string, repositoryId: string, seenWithinMs: number): Promise<string[]> {
  const now = nowMs(meta.dialect);
  const rows = await meta.db
    .selectFrom('replicas as rp')
    .innerJoin('replica_positions as p', 'p.disk_id', 'rp.disk_id')
    .select('rp.url')
    .where('rp.shard', '=', shard)
    // A synchronous standby serves no reads (docs/design/replication.md).
    .where('rp.mode', '=', 'async')
    .where('p.repository_id', '=', repositoryId)
    .where('rp.last_seen_at', '>', sql<number>`${now} - ${Math.round(seenWithinMs)}`)
    .where(
      'p.version',
      '>=',
      sql<string>`coalesce((select v.version from repository_refs_versions v where v.repository_id = ${repositoryId}), 0)`,
    )
    .orderBy('rp.url')
    .execute();
  return rows.map((r) => r.url);
}

/** Whether the shard has any async replica (one that serves reads) heard from within `seenWithinMs` (most shards have none: their reads skip the per-repository query). */
export async function shardHasReplicas(meta: Meta, shard: string, seenWithinMs: number): Promise<boolean> {
  const row = await meta.db
    .selectFrom('replicas')
    .select('disk_id')
    .where('shard', '=', shard)
    .where('mode', '=', 'async')
    .where('last_seen_at', '>', sql<number>`${nowMs(meta.dialect)} - ${Math.round(seenWithinMs)}`)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

export interface ReplicaState {
  diskId: string;
  shard: string;
  url: string;
  mode: string;
  /** How long ago, by the database's clock, its latest heartbeat was (never negative). */
  lastSeenAgoMs: number;
  /** Repositories of its shard whose refs version it has not reached. */
  behindRepositories: number;
  /** Age of the oldest refs version it has not reached (0 when it has them all): its lag. */
  lagMs: number;
}

/**
 * Every replica the database knows (or those of one shard), by shard then URL, with how far
 * behind each is: one query per replica (replicas are few; `cluster status` asks).
 */
export async function listReplicas(meta: Meta, opts: { shard?: string | undefined } = {}): Promise<ReplicaState[]> {
  const now = nowMs(meta.dialect);
  const rows = await meta.db
    .selectFrom('replicas')
    .select(['disk_id', 'shard', 'url', 'mode', sql<number | string>`${now} - last_seen_at`.as('ago')])
    .$if(opts.shard !== undefined, (qb) => qb.where('shard', '=', opts.shard!))
    .orderBy('shard')
    .orderBy('url')
    .orderBy('disk_id')
    .execute();
  const out: ReplicaState[] = [];
  for (const r of rows) {
    const behind = await behindRepositories(meta, r.disk_id, r.shard);
    out.push({
      diskId: r.disk_id,
      shard: r.shard,
      url: r.url,
      mode: r.mode,
      lastSeenAgoMs: Math.max(0, Number(r.ago)),
      behindRepositories: behind.length,
      lagMs: behind.reduce((max, b) => Math.max(max, b.lagMs), 0),
    });
  }
  return out;
}

/** The shard's synchronous replicas, heard from within `seenWithinMs` (live) or not, in URL order. */
export async function syncReplicas(meta: Meta, shard: string, seenWithinMs: number): Promise<{ url: string; live: boolean }[]> {
  const rows = await meta.db
    .selectFrom('replicas')
    .select(['url', sql<number | string>`case when last_seen_at > ${nowMs(meta.dialect)} - ${Math.round(seenWithinMs)} then 1 else 0 end`.as('live')])
    .where('shard', '=', shard)
    .where('mode', '=', 'sync')
    .orderBy('url')
    .execute();
  return rows.map((r) => ({ url: r.url, live: Number(r.live) === 1 }));
}

/** Removes a replica and its positions (a sync replica that took its shard over writes now). */
export async function forgetReplica(meta: Meta, diskId: string): Promise<void> {
  await meta.db.deleteFrom('replica_positions').where('disk_id', '=', diskId).execute();
  await meta.db.deleteFrom('replicas').where('disk_id', '=', diskId).execute();
}
