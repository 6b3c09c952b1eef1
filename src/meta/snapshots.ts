/**
 * The snapshot graph and the event log (docs/design/snapshots.md), as plain functions over a
 * handle or a transaction.
 *
 * Dirty: a repository is dirty when a push-begin or push-end event was written after the
 * snapshot-begin event of its last completed snapshot. A push-begin counts because git may
 * have committed the push's refs when the server dies before its push-end is written (the
 * client never heard of success, but the disk moved on): the repository's refs may have
 * changed after any push began (docs/design/snapshots.md, "Crash recovery"). Event ids order the log (SQLite has one writer; on
 * PostgreSQL a bigserial is assigned at insert, which can only make a repository look dirty
 * for one extra round, never clean too early, because a snapshot job writes its begin event
 * before it reads the refs).
 */
import { sql } from 'kysely';
import type { Db } from './db.js';
import type { EventKind } from './schema.js';

export interface SnapshotRow {
  id: string;
  repositoryId: string;
  kind: 'full' | 'incremental';
  parents: string[];
  objectKey: string;
  refsDigest: string;
  byteSize: number;
  objectCount: number;
  sha256: string;
  beginEventId: number;
  createdAt: string;
}

export async function appendEvent(db: Db, repositoryId: string, kind: EventKind, at: string, details: Record<string, unknown> = {}): Promise<number> {
  const row = await db
    .insertInto('events')
    .values({ repository_id: repositoryId, kind, at, details: JSON.stringify(details) })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

export async function insertSnapshot(db: Db, s: SnapshotRow): Promise<void> {
  await db
    .insertInto('snapshots')
    .values({
      id: s.id,
      repository_id: s.repositoryId,
      kind: s.kind,
      parents: JSON.stringify(s.parents),
      object_key: s.objectKey,
      refs_digest: s.refsDigest,
      byte_size: s.byteSize,
      object_count: s.objectCount,
      sha256: s.sha256,
      begin_event_id: s.beginEventId,
      created_at: s.createdAt,
    })
    .execute();
}

type Row = {
  id: string;
  repository_id: string;
  kind: 'full' | 'incremental';
  parents: string;
  object_key: string;
  refs_digest: string;
  byte_size: number | string;
  object_count: number | string;
  sha256: string;
  begin_event_id: number | string;
  created_at: string;
};

function toSnapshot(r: Row): SnapshotRow {
  return {
    id: r.id,
    repositoryId: r.repository_id,
    kind: r.kind,
    parents: JSON.parse(r.parents) as string[],
    objectKey: r.object_key,
    refsDigest: r.refs_digest,
    byteSize: Number(r.byte_size),
    objectCount: Number(r.object_count),
    sha256: r.sha256,
    beginEventId: Number(r.begin_event_id),
    createdAt: r.created_at,
  };
}

/**
 * A repository's snapshots, oldest first: by the time their refs were read, then by id (a
 * ULID, itself time-ordered). A compacted full snapshot keeps the time of the snapshot it
 * replaces (docs/design/snapshots.md), so it sorts where that one did.
 */
export async function listSnapshots(db: Db, repositoryId: string): Promise<SnapshotRow[]> {
  const rows = await db.selectFrom('snapshots').selectAll().where('repository_id', '=', repositoryId).orderBy('created_at').orderBy('id').execute();
  return rows.map(toSnapshot);
}

export async function latestSnapshot(db: Db, repositoryId: string): Promise<SnapshotRow | undefined> {
  const row = await db
    .selectFrom('snapshots')
    .selectAll()
    .where('repository_id', '=', repositoryId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return row && toSnapshot(row);
}

/**
 * Locks the rows of `ids` until the transaction ends (a no-op update takes the row lock on
 * PostgreSQL; SQLite has one writer) and returns how many exist: recording a snapshot that
 * names them, and retiring them in compaction, cannot interleave.
 */
export async function lockSnapshots(db: Db, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const result = await db
    .updateTable('snapshots')
    .set((eb) => ({ id: eb.ref('id') }))
    .where('id', 'in', [...ids])
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export async function findSnapshot(db: Db, id: string): Promise<SnapshotRow | undefined> {
  const row = await db.selectFrom('snapshots').selectAll().where('id', '=', id).executeTakeFirst();
  return row && toSnapshot(row);
}

export interface DirtyRepository {
  repositoryId: string;
  /** When the oldest push not yet covered by a completed snapshot began or ended. */
  oldestPushAt: string;
  /** When the newest such push began or ended (for debouncing). */
  newestPushAt: string;
  /**
   * Set when the only push after the last snapshot has begun and not ended (no push-end yet,
   * and not a mark written by recovery): git is most likely still receiving it, and a
   * snapshot now would be followed by another when it ends. Its begin time.
   */
  openPushSince?: string;
}

/** Repositories with a push event after the snapshot-begin of their last completed snapshot. */
export async function dirtyRepositories(db: Db, opts: { shard?: string | undefined } = {}): Promise<DirtyRepository[]> {
  const rows = await db
    .selectFrom('events as e')
    .select(['e.repository_id', (eb) => eb.fn.min('e.at').as('oldest'), (eb) => eb.fn.max('e.at').as('newest'), (eb) => eb.fn.countAll().as('count')])
    .where('e.kind', 'in', ['push-begin', 'push-end'])
    // The log outlives deleted repositories; they are nobody's work. A storage node works on its own shard's only.
    .where((eb) => {
      const q = eb.selectFrom('repositories as r').select('r.id').whereRef('r.id', '=', 'e.repository_id');
      return eb.exists(opts.shard === undefined ? q : q.where('r.shard', '=', opts.shard));
    })
    .where(
      'e.id',
      '>',
      sql<number>`coalesce((select max(s.begin_event_id) from snapshots s where s.repository_id = e.repository_id), 0)`,
    )
    .groupBy('e.repository_id')
    .execute();
  // Only the repositories with one pending push event can be "one push in flight": the second
  // query reads that one event's kind and details.
  const single = rows.filter((r) => Number(r.count) === 1).map((r) => r.repository_id);
  const open = new Set<string>();
  if (single.length > 0) {
    const events = await db
      .selectFrom('events as e')
      .select(['e.repository_id', 'e.kind', 'e.details'])
      .where('e.repository_id', 'in', single)
      .where('e.kind', 'in', ['push-begin', 'push-end'])
      .where('e.id', '>', sql<number>`coalesce((select max(s.begin_event_id) from snapshots s where s.repository_id = e.repository_id), 0)`)
      .execute();
    for (const e of events) if (e.kind === 'push-begin' && !isRecoveryMark(e.details)) open.add(e.repository_id);
  }
  return rows.map((r) => ({
    repositoryId: r.repository_id,
    oldestPushAt: String(r.oldest),
    newestPushAt: String(r.newest),
    ...(open.has(r.repository_id) ? { openPushSince: String(r.newest) } : {}),
  }));
}

/** A push-begin written by recovery (reconcile.ts) rather than by a push: nothing is in flight. */
function isRecoveryMark(details: string): boolean {
  try {
    return (JSON.parse(details) as { source?: unknown }).source === 'recovery';
  } catch {
    return false;
  }
}

/** Whether one repository is dirty now (the same rule as dirtyRepositories()). */
export async function isDirty(db: Db, repositoryId: string): Promise<boolean> {
  const row = await db
    .selectFrom('events as e')
    .select('e.id')
    .where('e.repository_id', '=', repositoryId)
    .where('e.kind', 'in', ['push-begin', 'push-end'])
    .where(
      'e.id',
      '>',
      sql<number>`coalesce((select max(s.begin_event_id) from snapshots s where s.repository_id = e.repository_id), 0)`,
    )
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/** Whether a push began or ended after `afterEventId`: the repository's refs may have moved since. */
export async function pushedSince(db: Db, repositoryId: string, afterEventId: number): Promise<boolean> {
  const row = await db
    .selectFrom('events')
    .select('id')
    .where('repository_id', '=', repositoryId)
    .where('kind', 'in', ['push-begin', 'push-end'])
    .where('id', '>', afterEventId)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/** Ids of the existing repositories that have at least one snapshot. */
export async function repositoriesWithSnapshots(db: Db): Promise<string[]> {
  const rows = await db
    .selectFrom('snapshots as s')
    .innerJoin('repositories as r', 'r.id', 's.repository_id')
    .select('s.repository_id')
    .distinct()
    .orderBy('s.repository_id')
    .execute();
  return rows.map((r) => r.repository_id);
}

export interface EventRow {
  id: number;
  repositoryId: string;
  kind: EventKind;
  at: string;
  details: Record<string, unknown>;
}

/** Push-end events after `afterEventId`: the acknowledged pushes a snapshot does not hold. */
export async function pushesAfter(db: Db, repositoryId: string, afterEventId: number): Promise<EventRow[]> {
  const rows = await db
    .selectFrom('events')
    .selectAll()
    .where('repository_id', '=', repositoryId)
    .where('kind', '=', 'push-end')
    .where('id', '>', afterEventId)
    .orderBy('id')
    .execute();
  return rows.map((r) => ({ id: Number(r.id), repositoryId: r.repository_id, kind: r.kind, at: r.at, details: JSON.parse(r.details) as Record<string, unknown> }));
}

function assertUlid(id: string): void {
  if (!/^[0-9A-HJKMNP-TV-Z]{26}$/.test(id)) throw new RangeError(`not a snapshot id: ${id}`);
}

/**
 * Snapshots (of any repository) that name one of `ids` as a parent. `parents` is a JSON array
 * of ULIDs, which hold no LIKE wildcards; compaction alone asks, so a scan is acceptable.
 */
export async function snapshotsNaming(db: Db, ids: readonly string[]): Promise<SnapshotRow[]> {
  if (ids.length === 0) return [];
  ids.forEach(assertUlid);
  const rows = await db
    .selectFrom('snapshots')
    .selectAll()
    .where((eb) => eb.or(ids.map((id) => eb('parents', 'like', `%"${id}"%`))))
    .execute();
  return rows.map(toSnapshot);
}

/** Every snapshot naming `from` as a parent names `to` instead (same refs, same negatives). */
export async function repointParents(db: Db, from: string, to: string): Promise<number> {
  [from, to].forEach(assertUlid);
  const result = await db
    .updateTable('snapshots')
    .set({ parents: sql<string>`replace(parents, ${`"${from}"`}, ${`"${to}"`})` })
    .where('parents', 'like', `%"${from}"%`)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export async function deleteSnapshots(db: Db, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await db.deleteFrom('snapshots').where('id', 'in', [...ids]).execute();
}
