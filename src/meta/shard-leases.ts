/**
 * Shard leases with fencing (issue 10; docs/design/shards.md). Several storage nodes may
 * serve one shard; the one holding its lease is the writer. A lease row per shard names its
 * holder, the URL it serves on, an epoch and an expiry judged by the database's clock (never
 * a node's, as for snapshot leases in leases.ts).
 *
 * Invariants:
 * - At any moment by the database's clock at most one holder has an unexpired lease.
 * - The epoch only grows: it is 1 on the first acquisition and grows by one whenever the
 *   lease passes to a different holder (a release clears the holder, so even the same holder
 *   gets a new epoch after releasing). The row is never deleted, so no epoch is handed out twice.
 * - `fenced(trx, shard, epoch)` locks the lease row for the rest of the transaction and
 *   refuses (conflict `stale_epoch`) unless the caller's epoch is the current one and the
 *   lease has not expired. A takeover must update that row, so it waits for the fenced
 *   transaction to commit: a deposed writer's metadata write is either committed before the
 *   takeover or refused, never after it.
 *
 * The holder id must be unique per process (e.g. `<host>/<pid>/<nonce>`): two processes that
 * share one would share a lease.
 */
import { sql } from 'kysely';
import { isForeignKeyViolation, type Db, type Dialect } from './db.js';
import { nowMs } from './leases.js';
import { conflict, invalid, notFound } from '../shared/errors.js';

export interface ShardLeaseState {
  shard: string;
  holder: string;
  /** Where the holder serves the shard (storage nodes' advertised URL). */
  url: string;
  epoch: number;
  /** Until expiry by the database's clock; zero or less once expired. */
  expiresInMs: number;
  /** How long the current holder has held it. */
  heldForMs: number;
}

function checkTtl(ttlMs: number): number {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw invalid('invalid_lease_ttl', `a lease lasts a positive number of milliseconds, not ${ttlMs}`);
  return Math.round(ttlMs);
}

/** Where a shard's change of writer is announced (PostgreSQL NOTIFY, payload: the shard's name). */
export const SHARD_LEASE_CHANNEL = 'gitstratum_shard_leases';

export function createShardLeases(meta: { db: Db; dialect: Dialect }) {
  const { db, dialect } = meta;
  const now = () => nowMs(dialect);

  /** Every held lease (or the one of `shard`), by shard. */
  async function list(shard?: string): Promise<ShardLeaseState[]> {
    const rows = await db
      .selectFrom('shard_leases')
      .select(['shard', 'holder', 'advertise_url', 'epoch', sql<number | string>`expires_at - ${now()}`.as('expires_in'), sql<number | string>`${now()} - acquired_at`.as('held_for')])
      .where('holder', 'is not', null)
      .$if(shard !== undefined, (qb) => qb.where('shard', '=', shard!))
      .orderBy('shard')
      .execute();
    return rows.map((r) => ({
      shard: r.shard,
      holder: r.holder!,
      url: r.advertise_url ?? '',
      epoch: Number(r.epoch),
      expiresInMs: Number(r.expires_in),
      heldForMs: Number(r.held_for),
    }));
  }

  return {
    list,

    /**
     * Tells every frontend listening that the shard's writer changed (a node took over, or
     * gave the shard up), so they ask the database again at once. PostgreSQL only; elsewhere
     * nothing (a single process has no frontends).
     */
    async announce(shard: string): Promise<void> {
      if (dialect === 'postgres') await sql`select pg_notify(${SHARD_LEASE_CHANNEL}, ${shard})`.execute(db);
    },

    /**
     * Takes the shard's lease for `ttlMs` when it is free, released or expired, or extends it
     * when `holder` already has it. Returns the epoch to fence writes with, or undefined when
     * another holder's lease is still running. One statement, atomic on both engines.
     */
    async acquire(shard: string, holder: string, url: string, ttlMs: number): Promise<{ epoch: number } | undefined> {
      const ttl = checkTtl(ttlMs);
      try {
        const { rows } = await sql<{ epoch: number | string }>`
          insert into shard_leases (shard, holder, advertise_url, epoch, expires_at, acquired_at)
          values (${shard}, ${holder}, ${url}, 1, ${now()} + ${ttl}, ${now()})
          on conflict (shard) do update set
            epoch = case when shard_leases.holder = excluded.holder then shard_leases.epoch else shard_leases.epoch + 1 end,
            acquired_at = case when shard_leases.holder = excluded.holder then shard_leases.acquired_at else excluded.acquired_at end,
            holder = excluded.holder,
            advertise_url = excluded.advertise_url,
            expires_at = excluded.expires_at
          where shard_leases.expires_at <= ${now()} or shard_leases.holder = excluded.holder
          returning epoch`.execute(db);
        const row = rows[0];
        return row && { epoch: Number(row.epoch) };
      } catch (err) {
        if (isForeignKeyViolation(err)) throw notFound('shard_not_found', `shard not found: ${shard}`, { shard });
        throw err;
      }
    },

    /**
     * Extends the lease by `ttlMs` from now; false when it is no longer `holder`'s at `epoch`
     * (taken over, or released). A lease that expired but that no one took is renewed: no
     * other writer came in between, so the epoch still stands.
     */
    async renew(shard: string, holder: string, epoch: number, ttlMs: number): Promise<boolean> {
      const ttl = checkTtl(ttlMs);
      const result = await db
        .updateTable('shard_leases')
        .set({ expires_at: sql<number>`${now()} + ${ttl}` })
        .where('shard', '=', shard)
        .where('holder', '=', holder)
        .where('epoch', '=', epoch)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },

    /** Gives the lease up at once (the row and its epoch stay); nothing when it is not `holder`'s at `epoch`. */
    async release(shard: string, holder: string, epoch: number): Promise<boolean> {
      const result = await db
        .updateTable('shard_leases')
        .set({ holder: null, advertise_url: null, expires_at: 0 })
        .where('shard', '=', shard)
        .where('holder', '=', holder)
        .where('epoch', '=', epoch)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },

    /** The shard's lease as the database sees it now (expired ones included); undefined when no one holds it. */
    async current(shard: string): Promise<ShardLeaseState | undefined> {
      return (await list(shard))[0];
    },

    /**
     * The fence: call it first in the transaction of every metadata write a shard's writer
     * makes. It locks the lease row until the transaction ends (PostgreSQL: `for update`;
     * SQLite: transactions take the one write lock at begin, see db.ts) and throws conflict
     * `stale_epoch` unless `epoch` is the lease's current epoch and the lease has not
     * expired, so the transaction, and everything it wrote, is rolled back.
     */
    async fenced(trx: Db, shard: string, epoch: number): Promise<void> {
      // Outside a transaction the lock would end with the statement and fence nothing.
      if (!trx.isTransaction) throw new Error('fenced() needs a transaction');
      const lock = dialect === 'postgres' ? sql`for update` : sql``;
      const { rows } = await sql<{ epoch: number | string; live: number | boolean }>`
        select epoch, case when expires_at > ${now()} then 1 else 0 end as live
        from shard_leases where shard = ${shard} ${lock}`.execute(trx);
      const row = rows[0];
      const current = row ? Number(row.epoch) : 0;
      if (row && current === epoch && Number(row.live) === 1) return;
      const why = !row
        ? `no lease was ever taken on shard ${shard}`
        : current !== epoch
          ? `the lease of shard ${shard} is at epoch ${current}, not ${epoch}: this writer was deposed`
          : `the lease of shard ${shard} at epoch ${epoch} has expired or was released`;
      throw conflict('stale_epoch', why, { shard, epoch, currentEpoch: current });
    },
  };
}

export type ShardLeases = ReturnType<typeof createShardLeases>;
