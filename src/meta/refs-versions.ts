/**
 * Refs versions (issue 10): frontends have no disk to fingerprint a repository's refs from, so
 * their pack cache keys on a version kept here, which the repository's storage node bumps
 * whenever its refs change or may change:
 * - in a push's reference-transaction `prepared` (fenced: a push whose bump fails is refused),
 *   so no response generated before the change is ever stored under a version after it...
 * - ...and again at post-receive, before git acknowledges the push, since a frontend may have
 *   asked between the two and stored the old refs' answer under the first bump (or, when git
 *   was killed before its post-receive, once git has exited);
 * - for every repository of its shard when a node takes a shard over (a push cut between the
 *   two bumps, or a failover from snapshots that brought refs back in time).
 * A request reads the version after it arrived, so a push acknowledged before it is seen.
 *
 * Replicas (issue 11) follow the same versions: bumps are announced on PostgreSQL's
 * REFS_CHANNEL (payload: the repository id; sent when the bump's transaction commits; not the
 * `prepared` one, before which nothing changed), and
 * `bumped_at` dates it, so a replica's lag is the age of the oldest version it has not reached.
 */
import { sql } from 'kysely';
import type { Db, Dialect } from './db.js';
import { nowMs } from './leases.js';

/** Where bumps are announced (PostgreSQL NOTIFY; payload: the repository id). */
export const REFS_CHANNEL = 'gitstratum_refs';

/** The repository's version now ('0' when never bumped). */
export async function readRefsVersion(db: Db, repositoryId: string): Promise<string> {
  const row = await db.selectFrom('repository_refs_versions').select('version').where('repository_id', '=', repositoryId).executeTakeFirst();
  return String(row?.version ?? 0);
}

/**
 * `announce: false` for the bump a push makes before its refs commit: nothing changed yet for a
 * replica to fetch, and the bump at post-receive (before the acknowledgement) is announced.
 */
export async function bumpRefsVersion(db: Db, dialect: Dialect, repositoryId: string, opts: { announce?: boolean } = {}): Promise<void> {
  await db
    .insertInto('repository_refs_versions')
    .values({ repository_id: repositoryId, version: 1, bumped_at: nowMs(dialect) })
    .onConflict((oc) => oc.column('repository_id').doUpdateSet({ version: sql`repository_refs_versions.version + 1`, bumped_at: nowMs(dialect) }))
    .execute();
  if (dialect === 'postgres' && opts.announce !== false) await sql`select pg_notify(${REFS_CHANNEL}, ${repositoryId})`.execute(db);
}

/** Bumps every repository of the shard (a takeover). */
export async function bumpShardRefsVersions(db: Db, dialect: Dialect, shard: string): Promise<void> {
  await db
    .insertInto('repository_refs_versions')
    .columns(['repository_id', 'version', 'bumped_at'])
    .expression((eb) => eb.selectFrom('repositories').select(['id', eb.val(1).as('version'), nowMs(dialect).as('bumped_at')]).where('shard', '=', shard))
    .onConflict((oc) => oc.column('repository_id').doUpdateSet({ version: sql`repository_refs_versions.version + 1`, bumped_at: nowMs(dialect) }))
    .execute();
  // One announcement for the shard: replicas then compare every repository of it.
  if (dialect === 'postgres') await sql`select pg_notify(${REFS_CHANNEL}, ${`shard:${shard}`})`.execute(db);
}
