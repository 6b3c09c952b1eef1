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
 */
import { sql } from 'kysely';
import type { Db } from './db.js';

/** The repository's version now ('0' when never bumped). */
export async function readRefsVersion(db: Db, repositoryId: string): Promise<string> {
  const row = await db.selectFrom('repository_refs_versions').select('version').where('repository_id', '=', repositoryId).executeTakeFirst();
  return String(row?.version ?? 0);
}

export async function bumpRefsVersion(db: Db, repositoryId: string): Promise<void> {
  await db
    .insertInto('repository_refs_versions')
    .values({ repository_id: repositoryId, version: 1 })
    .onConflict((oc) => oc.column('repository_id').doUpdateSet({ version: sql`repository_refs_versions.version + 1` }))
    .execute();
}

/** Bumps every repository of the shard (a takeover). */
export async function bumpShardRefsVersions(db: Db, shard: string): Promise<void> {
  await db
    .insertInto('repository_refs_versions')
    .columns(['repository_id', 'version'])
    .expression((eb) => eb.selectFrom('repositories').select(['id', eb.val(1).as('version')]).where('shard', '=', shard))
    .onConflict((oc) => oc.column('repository_id').doUpdateSet({ version: sql`repository_refs_versions.version + 1` }))
    .execute();
}
