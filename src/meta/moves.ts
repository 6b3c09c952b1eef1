/**
 * Moving a repository between shards (issue 11; docs/design/replication.md, "Moving
 * repositories"): the record of each move and the pause of a repository's pushes.
 *
 * - A move is `copying` (the target shard's writer copies the repository while it is served
 *   from the source), then `paused` (pushes get 503 + Retry-After until `pushes_paused_until`,
 *   a time by the database's clock, so a mover that dies never freezes a repository for long),
 *   then `moved` (routing switched, in one transaction that checks the pause still holds) or
 *   `failed` (routing unchanged, the pause lifted).
 * - The mover holds its move by `lease_until`, renewed at every step; a move not renewed past
 *   it is abandoned, and the next `repo move` of the repository takes its place.
 * - At most one active move per repository: the start takes the repository's row first.
 * Times are milliseconds by the database's clock, as for shard leases.
 */
import { sql, type Selectable } from 'kysely';
import type { RepoMovesTable } from './schema.js';
import type { Db, Dialect } from './db.js';
import { nowMs } from './leases.js';
import { bumpRefsVersion } from './refs-versions.js';

type Meta = { db: Db; dialect: Dialect };

export type MoveState = 'copying' | 'paused' | 'moved' | 'failed';
const ACTIVE: MoveState[] = ['copying', 'paused'];

export interface MoveRow {
  id: string;
  repositoryId: string;
  from: string;
  to: string;
  state: MoveState;
  actorName: string;
  startedAt: number;
  finishedAt: number | null;
  pauseMs: number | null;
  error: string | null;
}

const toMove = (r: Selectable<RepoMovesTable>): MoveRow => ({
  id: r.id,
  repositoryId: r.repository_id,
  from: r.from_shard,
  to: r.to_shard,
  state: r.state as MoveState,
  actorName: r.actor_name,
  startedAt: Number(r.started_at),
  finishedAt: r.finished_at === null ? null : Number(r.finished_at),
  pauseMs: r.pause_ms === null ? null : Number(r.pause_ms),
  error: r.error,
});

/**
 * Starts a move of the repository from the shard it is on now; undefined when another live
 * move of it holds its claim. An abandoned one (claim run out) is marked failed first and its
 * pause lifted.
 */
export async function startMove(
  meta: Meta,
  move: { id: string; repositoryId: string; from: string; to: string; actorName: string; leaseMs: number },
): Promise<MoveRow | undefined> {
  const now = nowMs(meta.dialect);
  return meta.db.transaction().execute(async (trx) => {
    // The repository's row first: two starts of one repository take turns here.
    const repo = await trx.updateTable('repositories').set({ updated_at: sql`updated_at` }).where('id', '=', move.repositoryId).where('shard', '=', move.from).executeTakeFirst();
    if (Number(repo.numUpdatedRows) !== 1) return undefined;
    const live = await trx
      .selectFrom('repo_moves')
      .select(['id', sql<number>`case when lease_until > ${now} then 1 else 0 end`.as('live')])
      .where('repository_id', '=', move.repositoryId)
      .where('state', 'in', ACTIVE)
      .execute();
    if (live.some((m) => Number(m.live) === 1)) return undefined;
    for (const stale of live) {
      await trx.updateTable('repo_moves').set({ state: 'failed', finished_at: now, error: 'abandoned: its mover stopped renewing it' }).where('id', '=', stale.id).execute();
    }
    if (live.length > 0) await trx.updateTable('repositories').set({ pushes_paused_until: null }).where('id', '=', move.repositoryId).execute();
    await trx
      .insertInto('repo_moves')
      .values({
        id: move.id,
        repository_id: move.repositoryId,
        from_shard: move.from,
        to_shard: move.to,
        state: 'copying',
        actor_name: move.actorName,
        lease_until: sql<number>`${now} + ${Math.round(move.leaseMs)}`,
        started_at: now,
        finished_at: null,
        pause_ms: null,
        error: null,
      })
      .execute();
    return findMove(trx, move.id);
  });
}

export async function findMove(db: Db, id: string): Promise<MoveRow | undefined> {
  const row = await db.selectFrom('repo_moves').selectAll().where('id', '=', id).executeTakeFirst();
  return row && toMove(row);
}

/** The repository's moves, newest first. */
export async function listMoves(db: Db, repositoryId: string): Promise<MoveRow[]> {
  const rows = await db.selectFrom('repo_moves').selectAll().where('repository_id', '=', repositoryId).orderBy('started_at', 'desc').orderBy('id', 'desc').execute();
  return rows.map(toMove);
}

/** Renews the mover's claim; false once the move is no longer active (failed by another). */
export async function renewMove(meta: Meta, id: string, leaseMs: number): Promise<boolean> {
  const r = await meta.db
    .updateTable('repo_moves')
    .set({ lease_until: sql<number>`${nowMs(meta.dialect)} + ${Math.round(leaseMs)}` })
    .where('id', '=', id)
    .where('state', 'in', ACTIVE)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/**
 * Pauses the repository's pushes for at most `maxMs` (from the database's now) and marks the
 * move paused; false when the move is no longer active or the repository left its source shard.
 */
export async function pausePushes(meta: Meta, move: MoveRow, maxMs: number): Promise<boolean> {
  const now = nowMs(meta.dialect);
  return meta.db.transaction().execute(async (trx) => {
    const m = await trx.updateTable('repo_moves').set({ state: 'paused' }).where('id', '=', move.id).where('state', 'in', ACTIVE).executeTakeFirst();
    if (Number(m.numUpdatedRows) !== 1) return false;
    const r = await trx
      .updateTable('repositories')
      .set({ pushes_paused_until: sql<number>`${now} + ${Math.round(maxMs)}` })
      .where('id', '=', move.repositoryId)
      .where('shard', '=', move.from)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) throw new Error('the repository left its shard during the move');
    return true;
  });
}

/**
 * Switches the repository to the target shard, lifts the pause and marks the move moved, in
 * one transaction; false (nothing changed) when the pause has run out meanwhile (a push may
 * have reached the source after the final copy) or the move is no longer paused. The refs
 * version is bumped and announced, so the target's replicas copy the repository, and the
 * source's synchronous-standby records of it are dropped (the target records its own).
 */
export async function switchShard(meta: Meta, move: MoveRow, pauseMs: number): Promise<boolean> {
  const now = nowMs(meta.dialect);
  return meta.db.transaction().execute(async (trx) => {
    const r = await trx
      .updateTable('repositories')
      .set({ shard: move.to, pushes_paused_until: null })
      .where('id', '=', move.repositoryId)
      .where('shard', '=', move.from)
      .where('pushes_paused_until', '>', now)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return false;
    const m = await trx
      .updateTable('repo_moves')
      .set({ state: 'moved', finished_at: now, pause_ms: Math.round(pauseMs) })
      .where('id', '=', move.id)
      .where('state', '=', 'paused')
      .executeTakeFirst();
    if (Number(m.numUpdatedRows) !== 1) throw new Error('the move is no longer paused');
    await trx.deleteFrom('sync_refs').where('repository_id', '=', move.repositoryId).execute();
    await bumpRefsVersion(trx, meta.dialect, move.repositoryId);
    return true;
  });
}

/** Marks the move failed and lifts its pause (the repository stays on its source shard). */
export async function failMove(meta: Meta, move: MoveRow, error: string): Promise<void> {
  const now = nowMs(meta.dialect);
  await meta.db.transaction().execute(async (trx) => {
    const m = await trx.updateTable('repo_moves').set({ state: 'failed', finished_at: now, error: error.slice(0, 2000) }).where('id', '=', move.id).where('state', 'in', ACTIVE).executeTakeFirst();
    if (Number(m.numUpdatedRows) === 1) await trx.updateTable('repositories').set({ pushes_paused_until: null }).where('id', '=', move.repositoryId).where('shard', '=', move.from).execute();
  });
}

export interface PushAdmission {
  /** The shard the repository is on now. */
  shard: string;
  /** How long pushes stay paused from now (0: not paused). */
  pausedForMs: number;
}

/** What a writer checks before it runs a push: where the repository is, and whether its pushes are paused. */
export async function pushAdmission(meta: Meta, repositoryId: string): Promise<PushAdmission | undefined> {
  const row = await meta.db
    .selectFrom('repositories')
    .select(['shard', sql<number | string>`coalesce(pushes_paused_until - ${nowMs(meta.dialect)}, 0)`.as('left')])
    .where('id', '=', repositoryId)
    .executeTakeFirst();
  return row && { shard: row.shard, pausedForMs: Math.max(0, Number(row.left)) };
}

/**
 * The copies a shard's disks must keep although the repository is not (or no longer) on the
 * shard: those of an active move from or to it, and those moved away from it within `graceMs`
 * (reads that started before the switch finish on them).
 */
export async function copiesToKeep(meta: Meta, shard: string, graceMs: number): Promise<Set<string>> {
  const now = nowMs(meta.dialect);
  const rows = await meta.db
    .selectFrom('repo_moves')
    .select('repository_id')
    .where((eb) =>
      eb.or([
        eb.and([eb('state', 'in', ACTIVE), eb.or([eb('from_shard', '=', shard), eb('to_shard', '=', shard)])]),
        eb.and([eb('state', '=', 'moved'), eb('from_shard', '=', shard), eb('finished_at', '>', sql<number>`${now} - ${Math.round(graceMs)}`)]),
      ]),
    )
    .execute();
  return new Set(rows.map((r) => r.repository_id));
}
