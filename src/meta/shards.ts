/**
 * Shards (docs/design/shards.md): the storage areas repositories live in, what each holds
 * (repositories and measured git bytes, from repositories.shard and repositories.git_bytes)
 * and the spaces pinned to them. LFS bytes are not counted: they live in the object store,
 * not on any shard.
 */
import type { Db } from './db.js';
import type { ShardState } from './schema.js';

export type { ShardState };

export interface ShardRow {
  name: string;
  state: ShardState;
  acceptsNew: boolean;
  createdAt: string;
}

/** A shard with what it holds: the input of placement (repos/placement.ts). */
export interface ShardLoad extends ShardRow {
  repositories: number;
  gitBytes: number;
}

export interface PinRow {
  spaceId: string;
  /** OWNER/SPACE */
  space: string;
  shard: string;
  createdAt: string;
}

/** bigint and count() come back as strings from PostgreSQL, numbers from SQLite. */
const num = (v: number | string | bigint | null | undefined): number => Number(v ?? 0);

export async function insertShard(db: Db, row: { name: string; acceptsNew: boolean; createdAt: string }): Promise<void> {
  await db
    .insertInto('shards')
    .values({ name: row.name, state: 'active', accepts_new: row.acceptsNew ? 1 : 0, created_at: row.createdAt })
    .execute();
}

export async function findShard(db: Db, name: string): Promise<ShardRow | undefined> {
  const row = await db.selectFrom('shards').selectAll().where('name', '=', name).executeTakeFirst();
  return row && { name: row.name, state: row.state, acceptsNew: row.accepts_new !== 0, createdAt: row.created_at };
}

/** Every shard with its repositories and git bytes, by name. */
export async function listShardLoads(db: Db): Promise<ShardLoad[]> {
  const held = db
    .selectFrom('repositories')
    .select(['shard', (eb) => eb.fn.countAll<number | string>().as('repositories'), (eb) => eb.fn.sum<number | string>('git_bytes').as('git_bytes')])
    .groupBy('shard')
    .as('held');
  const rows = await db
    .selectFrom('shards')
    .leftJoin(held, 'held.shard', 'shards.name')
    .select(['shards.name', 'shards.state', 'shards.accepts_new', 'shards.created_at', 'held.repositories', 'held.git_bytes'])
    .orderBy('shards.name')
    .execute();
  return rows.map((r) => ({
    name: r.name,
    state: r.state,
    acceptsNew: r.accepts_new !== 0,
    createdAt: r.created_at,
    repositories: num(r.repositories),
    gitBytes: num(r.git_bytes),
  }));
}

/** True when the shard exists (and was updated). */
export async function setShardState(db: Db, name: string, state: ShardState): Promise<boolean> {
  const result = await db.updateTable('shards').set({ state }).where('name', '=', name).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** True when the shard exists (and was updated). */
export async function setAcceptsNew(db: Db, name: string, acceptsNew: boolean): Promise<boolean> {
  const result = await db.updateTable('shards').set({ accepts_new: acceptsNew ? 1 : 0 }).where('name', '=', name).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Pins the space to the shard; false when it already was. */
export async function insertPin(db: Db, row: { spaceId: string; shard: string; createdAt: string }): Promise<boolean> {
  const result = await db
    .insertInto('space_shard_pins')
    .values({ space_id: row.spaceId, shard: row.shard, created_at: row.createdAt })
    .onConflict((oc) => oc.columns(['space_id', 'shard']).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

/** Removes the space's pin to `shard`, or all its pins; returns how many were removed. */
export async function deletePins(db: Db, spaceId: string, shard?: string): Promise<number> {
  const result = await db
    .deleteFrom('space_shard_pins')
    .where('space_id', '=', spaceId)
    .$if(shard !== undefined, (qb) => qb.where('shard', '=', shard!))
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** The shards a space is pinned to (none: it may be placed on any shard), by name. */
export async function spacePins(db: Db, spaceId: string): Promise<string[]> {
  const rows = await db.selectFrom('space_shard_pins').select('shard').where('space_id', '=', spaceId).orderBy('shard').execute();
  return rows.map((r) => r.shard);
}

/** Every pin, or those of one space, by space then shard. */
export async function listPins(db: Db, spaceId?: string): Promise<PinRow[]> {
  const rows = await db
    .selectFrom('space_shard_pins')
    .innerJoin('spaces', 'spaces.id', 'space_shard_pins.space_id')
    .innerJoin('owners', 'owners.id', 'spaces.owner_id')
    .select(['space_shard_pins.space_id', 'owners.name as owner_name', 'spaces.name as space_name', 'space_shard_pins.shard', 'space_shard_pins.created_at'])
    .$if(spaceId !== undefined, (qb) => qb.where('space_shard_pins.space_id', '=', spaceId!))
    .orderBy('owners.name')
    .orderBy('spaces.name')
    .orderBy('space_shard_pins.shard')
    .execute();
  return rows.map((r) => ({ spaceId: r.space_id, space: `${r.owner_name}/${r.space_name}`, shard: r.shard, createdAt: r.created_at }));
}

export type SyncMissing = 'accept' | 'refuse';

/** What the shard's writer does with a push while no synchronous replica is connected ('accept' for an unknown shard). */
export async function shardSyncMissing(db: Db, name: string): Promise<SyncMissing> {
  const row = await db.selectFrom('shards').select('sync_missing').where('name', '=', name).executeTakeFirst();
  return row?.sync_missing === 'refuse' ? 'refuse' : 'accept';
}

/** Sets it; false when the shard does not exist. */
export async function setSyncMissing(db: Db, name: string, value: SyncMissing): Promise<boolean> {
  const result = await db.updateTable('shards').set({ sync_missing: value }).where('name', '=', name).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}
