/**
 * The registry of storage nodes (issue 10; docs/design/shards.md, "Storage-node registry"):
 * every storage node process, writer or standby, with the shard it serves, the URL it
 * advertises and when the database last heard from it. `shard_leases` shows only a shard's
 * writer; this table is how `cluster status` sees the standbys waiting to take over.
 *
 * A node calls `heartbeat` on each tick of its lease loop (whether or not it holds the lease)
 * and `forget` when it shuts down cleanly. A node that dies without `forget` stays until its
 * row has not been seen for FORGET_AFTER_MS, then every heartbeat (of any node) deletes it and
 * `listNodes` no longer returns it: a crashed node is visible for a while (`cluster status`
 * calls it gone), then disappears on its own.
 *
 * Times are milliseconds by the database's clock (nowMs, as for shard leases), so "seen 2 s
 * ago" means the same on every machine whatever their clocks.
 */
import { sql } from 'kysely';
import { isForeignKeyViolation, type Db, type Dialect } from './db.js';
import { nowMs } from './leases.js';
import { notFound } from '../shared/errors.js';

/** A node unseen for longer than this is deleted (by the next heartbeat) and never listed. */
export const FORGET_AFTER_MS = 3_600_000;

export interface NodeHeartbeat {
  /** The node's lease holder id (ShardWriter.holder): unique per process. */
  holder: string;
  shard: string;
  /** Where frontends reach it. */
  url: string;
  /**
   * When the node started (ms since the epoch), if it wants to say; otherwise the database's
   * time of its first heartbeat. Kept across heartbeats that do not give it.
   */
  startedAtMs?: number;
}

export interface StorageNode {
  holder: string;
  shard: string;
  url: string;
  startedAtMs: number;
  lastSeenAtMs: number;
  /** How long ago, by the database's clock, its latest heartbeat was (never negative). */
  lastSeenAgoMs: number;
}

type Meta = { db: Db; dialect: Dialect };

/**
 * Records that `holder` is alive and serves `shard` at `url` (an upsert: last seen = the
 * database's now), then deletes the rows of nodes unseen for more than FORGET_AFTER_MS.
 * Throws not_found `shard_not_found` for a shard that does not exist.
 */
export async function heartbeat(meta: Meta, node: NodeHeartbeat): Promise<void> {
  const now = nowMs(meta.dialect);
  const started = node.startedAtMs === undefined ? now : Math.round(node.startedAtMs);
  try {
    await meta.db
      .insertInto('storage_nodes')
      .values({ holder: node.holder, shard: node.shard, url: node.url, started_at: started, last_seen_at: now })
      .onConflict((oc) =>
        oc.column('holder').doUpdateSet((eb) => ({
          shard: eb.ref('excluded.shard'),
          url: eb.ref('excluded.url'),
          last_seen_at: eb.ref('excluded.last_seen_at'),
          ...(node.startedAtMs !== undefined && { started_at: eb.ref('excluded.started_at') }),
        })),
      )
      .execute();
  } catch (err) {
    if (isForeignKeyViolation(err)) throw notFound('shard_not_found', `shard not found: ${node.shard}`, { shard: node.shard });
    throw err;
  }
  await meta.db.deleteFrom('storage_nodes').where('last_seen_at', '<', sql<number>`${nowMs(meta.dialect)} - ${FORGET_AFTER_MS}`).execute();
}

/** Removes the node's row (on clean shutdown); false when it had none. */
export async function forget(meta: Meta, holder: string): Promise<boolean> {
  const result = await meta.db.deleteFrom('storage_nodes').where('holder', '=', holder).executeTakeFirst();
  return Number(result.numDeletedRows) === 1;
}

/** Every node seen within FORGET_AFTER_MS (or those of one shard), by shard then holder. */
export async function listNodes(meta: Meta, opts: { shard?: string | undefined } = {}): Promise<StorageNode[]> {
  const now = nowMs(meta.dialect);
  const rows = await meta.db
    .selectFrom('storage_nodes')
    .select(['holder', 'shard', 'url', 'started_at', 'last_seen_at', sql<number | string>`${now} - last_seen_at`.as('ago')])
    .where('last_seen_at', '>=', sql<number>`${now} - ${FORGET_AFTER_MS}`)
    .$if(opts.shard !== undefined, (qb) => qb.where('shard', '=', opts.shard!))
    .orderBy('shard')
    .orderBy('holder')
    .execute();
  return rows.map((r) => ({
    holder: r.holder,
    shard: r.shard,
    url: r.url,
    startedAtMs: Number(r.started_at),
    lastSeenAtMs: Number(r.last_seen_at),
    lastSeenAgoMs: Math.max(0, Number(r.ago)),
  }));
}
