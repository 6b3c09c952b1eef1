/**
 * What a synchronous standby needs to take a shard over with nothing acknowledged lost (issue
 * 11; docs/design/replication.md, "Next"): for every ref that pushes to the shard changed, the
 * value its writer last committed, and the value a ref transaction has prepared and not (yet)
 * committed.
 *
 * - The writer's reference-transaction hook records `prepared` once the sync replica holds the
 *   transaction's objects, and `committed` before git's acknowledgement, each in a transaction
 *   fenced by the writer's lease epoch (meta/shard-leases.ts), so a deposed writer records
 *   nothing after a takeover.
 * - A takeover sets each recorded ref to its committed value. Git holds a ref's lock from
 *   `prepared` to its end, so a ref has at most one transaction in flight, and the latest
 *   committed value of a ref is its writer's state: the table is as large as the set of refs,
 *   and a takeover never rolls a ref back to an older record. A pending value (its push never
 *   committed, or never reported success) is dropped.
 * - A transaction is known by a key made from the push's request id and the hook's input (its
 *   ref lines), the same at `prepared` and `committed`.
 */
import { createHash } from 'node:crypto';
import type { Db, Dialect } from './db.js';
import { nowMs } from './leases.js';

export interface PreparedUpdate {
  ref: string;
  /** The ref's new value; the zero id for a deletion. */
  new: string;
}

export interface CommittedRef {
  ref: string;
  /** The zero id: the ref was deleted. */
  value: string;
  epoch: number;
}

/** The key of one ref transaction of one push, the same in both of its hook calls. */
export function transactionKey(requestId: string, hookInput: string): string {
  return createHash('sha256').update(requestId).update('\0').update(hookInput).digest('hex');
}

/** Records a prepared transaction's values (inside the writer's fenced transaction). */
export async function recordPrepared(db: Db, dialect: Dialect, repositoryId: string, key: string, updates: readonly PreparedUpdate[]): Promise<void> {
  const now = nowMs(dialect);
  for (const u of updates) {
    await db
      .insertInto('sync_refs')
      .values({ repository_id: repositoryId, ref: u.ref, committed: null, committed_epoch: null, pending: u.new, pending_key: key, updated_at: now })
      .onConflict((oc) => oc.columns(['repository_id', 'ref']).doUpdateSet({ pending: u.new, pending_key: key, updated_at: now }))
      .execute();
  }
}

/**
 * Makes a prepared transaction's values the committed ones (inside the writer's fenced
 * transaction); the number of refs it committed, 0 when nothing was prepared under `key`.
 */
export async function recordCommitted(db: Db, dialect: Dialect, repositoryId: string, key: string, epoch: number): Promise<number> {
  const now = nowMs(dialect);
  const result = await db
    .updateTable('sync_refs')
    .set((eb) => ({ committed: eb.ref('pending'), committed_epoch: epoch, pending: null, pending_key: null, updated_at: now }))
    .where('repository_id', '=', repositoryId)
    .where('pending_key', '=', key)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/** Every committed ref of the shard's repositories, by repository id, refs in name order. */
export async function committedRefs(db: Db, shard: string): Promise<Map<string, CommittedRef[]>> {
  const rows = await db
    .selectFrom('sync_refs as s')
    .innerJoin('repositories as r', 'r.id', 's.repository_id')
    .select(['s.repository_id', 's.ref', 's.committed', 's.committed_epoch'])
    .where('r.shard', '=', shard)
    .where('s.committed', 'is not', null)
    .orderBy('s.repository_id')
    .orderBy('s.ref')
    .execute();
  const out = new Map<string, CommittedRef[]>();
  for (const r of rows) {
    const list = out.get(r.repository_id) ?? [];
    list.push({ ref: r.ref, value: r.committed!, epoch: Number(r.committed_epoch) });
    out.set(r.repository_id, list);
  }
  return out;
}
