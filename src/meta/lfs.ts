/** LFS object visibility per repository, and LFS locks. */
import { sql } from 'kysely';
import { inChunks, type Db } from './db.js';

/**
 * Oids (among `oids`) linked to any of `repositoryIds`, with their sizes. The caller names the
 * repositories whose links count: a repository and the members of its fork network the actor
 * may read (issue 3: forks share their LFS objects, as they share history; issue 9: never
 * those of a member the actor cannot read). One query per 500 oids.
 */
export async function findLinkedObjects(db: Db, repositoryIds: string[], oids: string[]): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  if (repositoryIds.length === 0) return found;
  await inChunks(oids, async (chunk) => {
    const rows = await db.selectFrom('lfs_objects').select(['oid', 'size']).where('repository_id', 'in', repositoryIds).where('oid', 'in', chunk).execute();
    for (const r of rows) found.set(r.oid, Number(r.size));
  });
  return found;
}

/** Oids (among `oids`) linked to any repository: stored, with content the server vouched for. */
export async function findKnownObjects(db: Db, oids: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  await inChunks(oids, async (chunk) => {
    const rows = await db.selectFrom('lfs_objects').select('oid').distinct().where('oid', 'in', chunk).execute();
    for (const r of rows) found.add(r.oid);
  });
  return found;
}

export async function linkObject(db: Db, row: { repositoryId: string; oid: string; size: number; createdAt: string }): Promise<void> {
  await db
    .insertInto('lfs_objects')
    .values({ repository_id: row.repositoryId, oid: row.oid, size: row.size, created_at: row.createdAt })
    .onConflict((oc) => oc.columns(['repository_id', 'oid']).doNothing())
    .execute();
}

/**
 * Links the objects to the repository (when not yet) and marks them named by a batch now: LFS
 * GC keeps what a batch named within its grace period.
 */
export async function touchObjects(db: Db, repositoryId: string, objects: readonly { oid: string; size: number }[], at: string): Promise<void> {
  await inChunks(objects, async (chunk) => {
    await db
      .insertInto('lfs_objects')
      .values(chunk.map((o) => ({ repository_id: repositoryId, oid: o.oid, size: o.size, created_at: at, touched_at: at })))
      .onConflict((oc) => oc.columns(['repository_id', 'oid']).doUpdateSet({ touched_at: at }))
      .execute();
  });
}

/**
 * Gives `heir` every LFS link of `from`, which is about to be deleted: what a fork network
 * could download before the deletion it still can afterwards.
 */
export async function handOverLinks(db: Db, from: string, heir: string): Promise<void> {
  await db
    .insertInto('lfs_objects')
    .columns(['repository_id', 'oid', 'size', 'created_at'])
    .expression((eb) => eb.selectFrom('lfs_objects').select([sql<string>`cast(${heir} as text)`.as('repository_id'), 'oid', 'size', 'created_at']).where('repository_id', '=', from))
    .onConflict((oc) => oc.columns(['repository_id', 'oid']).doNothing())
    .execute();
}

export interface LockRow {
  id: string;
  repositoryId: string;
  path: string;
  ownerId: string;
  ownerName: string;
  ref: string | null;
  lockedAt: string;
}

function lockQuery(db: Db) {
  return db
    .selectFrom('lfs_locks')
    .innerJoin('owners', 'owners.id', 'lfs_locks.owner_id')
    .select(['lfs_locks.id', 'lfs_locks.repository_id', 'lfs_locks.path', 'lfs_locks.owner_id', 'owners.name', 'lfs_locks.ref', 'lfs_locks.locked_at']);
}

type RawLock = Awaited<ReturnType<ReturnType<typeof lockQuery>['executeTakeFirstOrThrow']>>;

function toLock(r: RawLock): LockRow {
  return { id: r.id, repositoryId: r.repository_id, path: r.path, ownerId: r.owner_id, ownerName: r.name, ref: r.ref, lockedAt: r.locked_at };
}

export async function insertLock(
  db: Db,
  row: { id: string; repositoryId: string; path: string; ownerId: string; ref: string | null; lockedAt: string },
): Promise<void> {
  await db
    .insertInto('lfs_locks')
    .values({ id: row.id, repository_id: row.repositoryId, path: row.path, owner_id: row.ownerId, ref: row.ref, locked_at: row.lockedAt })
    .execute();
}

export async function findLock(db: Db, repositoryId: string, by: { id?: string; path?: string }): Promise<LockRow | undefined> {
  let q = lockQuery(db).where('lfs_locks.repository_id', '=', repositoryId);
  if (by.id !== undefined) q = q.where('lfs_locks.id', '=', by.id);
  if (by.path !== undefined) q = q.where('lfs_locks.path', '=', by.path);
  const row = await q.executeTakeFirst();
  return row && toLock(row);
}

/** Locks ordered by id, after `cursor` (exclusive), at most `limit`. */
export async function listLocks(
  db: Db,
  repositoryId: string,
  filter: { path?: string; id?: string; cursor?: string; limit: number; ownerId?: string; notOwnerId?: string },
): Promise<LockRow[]> {
  let q = lockQuery(db).where('lfs_locks.repository_id', '=', repositoryId);
  if (filter.path !== undefined) q = q.where('lfs_locks.path', '=', filter.path);
  if (filter.id !== undefined) q = q.where('lfs_locks.id', '=', filter.id);
  if (filter.cursor !== undefined) q = q.where('lfs_locks.id', '>', filter.cursor);
  const rows = await q.orderBy('lfs_locks.id').limit(filter.limit).execute();
  return rows.map(toLock);
}

export async function locksOnPaths(db: Db, repositoryId: string, paths: string[]): Promise<LockRow[]> {
  const out: LockRow[] = [];
  await inChunks(paths, async (chunk) => {
    const rows = await lockQuery(db).where('lfs_locks.repository_id', '=', repositoryId).where('lfs_locks.path', 'in', chunk).execute();
    out.push(...rows.map(toLock));
  });
  return out;
}

export async function countLocks(db: Db, repositoryId: string): Promise<number> {
  const row = await db
    .selectFrom('lfs_locks')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .where('repository_id', '=', repositoryId)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

export async function deleteLock(db: Db, id: string): Promise<void> {
  await db.deleteFrom('lfs_locks').where('id', '=', id).execute();
}

/** Deletes every lock the user holds (in one repository, or all), returning what was deleted. */
export async function deleteLocksOf(db: Db, owner: { id: string; name: string }, repositoryId?: string): Promise<LockRow[]> {
  let q = db.deleteFrom('lfs_locks').where('owner_id', '=', owner.id);
  if (repositoryId !== undefined) q = q.where('repository_id', '=', repositoryId);
  const rows = await q.returningAll().execute();
  return rows
    .map((r) => ({ id: r.id, repositoryId: r.repository_id, path: r.path, ownerId: r.owner_id, ownerName: owner.name, ref: r.ref, lockedAt: r.locked_at }))
    .sort((a, b) => (a.id < b.id ? -1 : 1));
}

export async function enforcesLocks(db: Db, repositoryId: string): Promise<boolean> {
  const row = await db.selectFrom('repositories').select('enforce_locks').where('id', '=', repositoryId).executeTakeFirst();
  return row?.enforce_locks !== 0;
}

export async function setEnforceLocks(db: Db, repositoryId: string, on: boolean): Promise<void> {
  await db.updateTable('repositories').set({ enforce_locks: on ? 1 : 0 }).where('id', '=', repositoryId).execute();
}
