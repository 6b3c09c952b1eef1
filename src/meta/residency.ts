/**
 * Which repositories are on local disk, and when each was last used (docs/design/snapshots.md,
 * "Eviction"), as plain functions over a handle or a transaction. A repository without a row
 * was never seen by the evictor: it is resident, and its idle clock starts when a row is made.
 */
import type { Db } from './db.js';

export interface ResidencyRow {
  repositoryId: string;
  lastAccessAt: string;
  evictedAt: string | null;
}

export async function findResidency(db: Db, repositoryId: string): Promise<ResidencyRow | undefined> {
  const row = await db.selectFrom('repository_residency').selectAll().where('repository_id', '=', repositoryId).executeTakeFirst();
  return row && { repositoryId: row.repository_id, lastAccessAt: row.last_access_at, evictedAt: row.evicted_at };
}

export async function recordAccess(db: Db, repositoryId: string, at: string): Promise<void> {
  await db
    .insertInto('repository_residency')
    .values({ repository_id: repositoryId, last_access_at: at, evicted_at: null })
    .onConflict((oc) => oc.column('repository_id').doUpdateSet({ last_access_at: at }))
    .execute();
}

export async function markEvicted(db: Db, repositoryId: string, at: string): Promise<void> {
  await db
    .insertInto('repository_residency')
    .values({ repository_id: repositoryId, last_access_at: at, evicted_at: at })
    .onConflict((oc) => oc.column('repository_id').doUpdateSet({ evicted_at: at }))
    .execute();
}

/** The repository is on disk again (restored); its idle clock restarts at `at`. */
export async function clearEvicted(db: Db, repositoryId: string, at: string): Promise<void> {
  await db.updateTable('repository_residency').set({ evicted_at: null, last_access_at: at }).where('repository_id', '=', repositoryId).execute();
}

/** Starts the idle clock of every repository that has no row yet, at `at`. */
export async function startIdleClocks(db: Db, at: string): Promise<void> {
  await db
    .insertInto('repository_residency')
    .columns(['repository_id', 'last_access_at'])
    .expression((eb) =>
      eb
        .selectFrom('repositories as r')
        .select(['r.id', eb.val(at).as('last_access_at')])
        .where((w) => w.not(w.exists(w.selectFrom('repository_residency as x').select('x.repository_id').whereRef('x.repository_id', '=', 'r.id')))),
    )
    .execute();
}

/** Resident repositories whose recorded last access is before `cutoff`. */
export async function idleSince(db: Db, cutoff: string): Promise<string[]> {
  const rows = await db
    .selectFrom('repository_residency')
    .select('repository_id')
    .where('evicted_at', 'is', null)
    .where('last_access_at', '<', cutoff)
    .orderBy('last_access_at')
    .execute();
  return rows.map((r) => r.repository_id);
}

export async function evictedIds(db: Db): Promise<Set<string>> {
  const rows = await db.selectFrom('repository_residency').select('repository_id').where('evicted_at', 'is not', null).execute();
  return new Set(rows.map((r) => r.repository_id));
}

export async function countEvicted(db: Db): Promise<number> {
  const row = await db
    .selectFrom('repository_residency')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('evicted_at', 'is not', null)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
