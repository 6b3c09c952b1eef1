/**
 * Snapshot leases: one row per repository that a snapshot job (a worker in `serve` or in
 * `gitstratum worker`) is working on, so that no two jobs snapshot one repository at once.
 *
 * Taking a lease is one statement, atomic on both engines: an insert that, on conflict, takes
 * over the row only when it has expired (or is already ours). The statement returns the row
 * only when it wrote it, so "no row back" means someone else holds the lease. Expiry is judged
 * by the database's clock (milliseconds since the epoch), never by the hosts' clocks. A holder
 * renews its lease while it works and deletes it when done; a crashed holder's lease simply
 * expires.
 */
import { sql, type RawBuilder } from 'kysely';
import type { Db, Dialect } from './db.js';

/** The database's clock, in milliseconds since the epoch (shard-leases.ts judges by it too). */
export function nowMs(dialect: Dialect): RawBuilder<number> {
  return dialect === 'postgres'
    ? sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint`
    : sql<number>`cast((julianday('now') - 2440587.5) * 86400000.0 as integer)`;
}

/** Takes the repository's lease for `ttlMs` when it is free or expired; false when another holder has it. */
export async function acquireLease(db: Db, dialect: Dialect, repositoryId: string, holder: string, ttlMs: number): Promise<boolean> {
  const now = nowMs(dialect);
  const { rows } = await sql<{ holder: string }>`
    insert into snapshot_leases (repository_id, holder, expires_at)
    values (${repositoryId}, ${holder}, ${now} + ${Math.round(ttlMs)})
    on conflict (repository_id) do update
      set holder = excluded.holder, expires_at = excluded.expires_at
      where snapshot_leases.expires_at < ${now} or snapshot_leases.holder = excluded.holder
    returning holder`.execute(db);
  return rows.length === 1;
}

/** Extends a lease we hold; false when it is no longer ours (it expired and another took it). */
export async function renewLease(db: Db, dialect: Dialect, repositoryId: string, holder: string, ttlMs: number): Promise<boolean> {
  const result = await db
    .updateTable('snapshot_leases')
    .set({ expires_at: sql<number>`${nowMs(dialect)} + ${Math.round(ttlMs)}` })
    .where('repository_id', '=', repositoryId)
    .where('holder', '=', holder)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function releaseLease(db: Db, repositoryId: string, holder: string): Promise<void> {
  await db.deleteFrom('snapshot_leases').where('repository_id', '=', repositoryId).where('holder', '=', holder).execute();
}

export async function leaseHolder(db: Db, repositoryId: string): Promise<string | undefined> {
  const row = await db.selectFrom('snapshot_leases').select('holder').where('repository_id', '=', repositoryId).executeTakeFirst();
  return row?.holder;
}

/**
 * Deletes the leases of holders on `node` (the `<node>/<pid>/<nonce>` prefix every holder of
 * this host and data directory writes) whose process is gone, and returns how many. A process
 * calls it at start: the leases a killed predecessor held are released at once instead of
 * blocking those repositories until they expire. A live process's leases are kept.
 */
export async function releaseDeadLeases(db: Db, node: string, alive: (pid: number) => boolean): Promise<number> {
  const prefix = `${node}/`;
  const rows = await db
    .selectFrom('snapshot_leases')
    .select(['repository_id', 'holder'])
    .where(sql<boolean>`substr(holder, 1, ${prefix.length}) = ${prefix}`)
    .execute();
  let released = 0;
  for (const { repository_id, holder } of rows) {
    const pid = Number(holder.slice(prefix.length).split('/')[0]);
    if (alive(pid)) continue;
    const result = await db.deleteFrom('snapshot_leases').where('repository_id', '=', repository_id).where('holder', '=', holder).executeTakeFirst();
    released += Number(result.numDeletedRows);
  }
  return released;
}
