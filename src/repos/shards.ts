/**
 * Shard administration (issue 10; docs/design/shards.md): create shards, list them with what
 * they hold and who writes them, drain one so placement stops choosing it, pin spaces to
 * shards. Site administrators only (the local command line is one); every change is audited.
 * Moving repositories between shards is issue 11: draining stops new placements, nothing more.
 */
import { isUniqueViolation, now, type MetaStore } from '../meta/db.js';
import { appendAudit } from '../meta/audit.js';
import * as shards from '../meta/shards.js';
import { findSpace } from '../meta/spaces.js';
import { createShardLeases, type ShardLeaseState } from '../meta/shard-leases.js';
import { actorId, actorName, requireSiteAdmin, type Actor } from '../access/policy.js';
import { conflict, invalid, notFound } from '../shared/errors.js';
import { parseSpacePath } from './names.js';
import { acceptsNewRepositories } from './placement.js';

export type ShardState = shards.ShardState;

export interface ShardSummary extends shards.ShardLoad {
  /** Whether placement may choose it now (active and accepting new repositories). */
  placeable: boolean;
  /** Its writer's lease, when one is held (expired ones included: `expiresInMs` ≤ 0). */
  lease: Omit<ShardLeaseState, 'shard'> | null;
}

export interface StateChange {
  shard: string;
  from: ShardState;
  state: ShardState;
  changed: boolean;
  /** The repositories on it (they stay there: moving them is issue 11). */
  repositories: number;
  /** True when, after the change, no shard accepts new repositories (creation then fails). */
  nonePlaceable: boolean;
}

/** Shard names appear in flags, logs and metric labels: a DNS label, lower-case. */
const SHARD_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function parseShardName(text: string): string {
  if (!SHARD_NAME.test(text)) {
    throw invalid('invalid_shard_name', 'shard name must be 1-63 lower-case letters, digits and inner hyphens', { name: text });
  }
  return text;
}

export function createShardService(meta: MetaStore) {
  const { db } = meta;
  const leases = createShardLeases(meta);

  async function shardOrThrow(name: string): Promise<shards.ShardRow> {
    const row = await shards.findShard(db, name);
    if (!row) throw notFound('shard_not_found', `shard not found: ${name}`, { shard: name });
    return row;
  }

  async function spaceOrThrow(spacePath: string) {
    const where = parseSpacePath(spacePath);
    const space = await findSpace(db, where.owner, where.space);
    if (!space) throw notFound('space_not_found', `space not found: ${where.owner}/${where.space}`, { space: `${where.owner}/${where.space}` });
    return space;
  }

  async function audit(actor: Actor, action: string, target: string, details: Record<string, unknown>, requestId?: string) {
    await appendAudit(db, { at: now(), actorId: actorId(actor), actorName: actorName(actor), action, target, details, requestId: requestId ?? null });
  }

  /** What a change leaves: the shard's repositories, and whether any shard still takes new ones. */
  async function aftermath(name: string): Promise<{ repositories: number; nonePlaceable: boolean }> {
    const loads = await shards.listShardLoads(db);
    return { repositories: loads.find((s) => s.name === name)?.repositories ?? 0, nonePlaceable: !loads.some(acceptsNewRepositories) };
  }

  /** Every shard with its repositories, git bytes and writer's lease, by name. */
  async function list(actor: Actor): Promise<ShardSummary[]> {
    requireSiteAdmin(actor);
    const [loads, held] = await Promise.all([shards.listShardLoads(db), leases.list()]);
    const byShard = new Map(held.map(({ shard, ...lease }) => [shard, lease] as const));
    return loads.map((s) => ({ ...s, placeable: acceptsNewRepositories(s), lease: byShard.get(s.name) ?? null }));
  }

  async function changeState(actor: Actor, shard: shards.ShardRow, state: 'active' | 'draining', requestId?: string): Promise<StateChange> {
    const changed = shard.state !== state;
    if (changed) {
      await db.transaction().execute(async (trx) => {
        await shards.setShardState(trx, shard.name, state);
        await appendAudit(trx, {
          at: now(),
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: state === 'draining' ? 'shard.drain' : 'shard.activate',
          target: shard.name,
          details: { from: shard.state, to: state },
          requestId: requestId ?? null,
        });
      });
    }
    return { shard: shard.name, from: shard.state, state, changed, ...(await aftermath(shard.name)) };
  }

  return {
    async create(actor: Actor, name: string, opts: { acceptsNew?: boolean; requestId?: string } = {}): Promise<ShardSummary> {
      requireSiteAdmin(actor);
      const shardName = parseShardName(name);
      const acceptsNew = opts.acceptsNew ?? true;
      try {
        await db.transaction().execute(async (trx) => {
          await shards.insertShard(trx, { name: shardName, acceptsNew, createdAt: now() });
          await appendAudit(trx, {
            at: now(),
            actorId: actorId(actor),
            actorName: actorName(actor),
            action: 'shard.create',
            target: shardName,
            details: { accepts_new: acceptsNew },
            requestId: opts.requestId ?? null,
          });
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict('shard_exists', `shard already exists: ${shardName}`, { shard: shardName });
        throw err;
      }
      return (await list(actor)).find((s) => s.name === shardName)!;
    },

    list,

    /** Stops new placements on the shard (state `draining`); its repositories stay where they are (issue 11 moves them). */
    async drain(actor: Actor, name: string, opts: { requestId?: string } = {}): Promise<StateChange> {
      requireSiteAdmin(actor);
      const shard = await shardOrThrow(name);
      // A drained shard (emptied by the mover) stays drained.
      if (shard.state === 'drained') return { shard: shard.name, from: 'drained', state: 'drained', changed: false, ...(await aftermath(shard.name)) };
      return changeState(actor, shard, 'draining', opts.requestId);
    },

    /** Makes a draining or drained shard active again: placement may choose it (if it accepts new repositories). */
    async activate(actor: Actor, name: string, opts: { requestId?: string } = {}): Promise<StateChange> {
      requireSiteAdmin(actor);
      return changeState(actor, await shardOrThrow(name), 'active', opts.requestId);
    },

    async setAcceptsNew(actor: Actor, name: string, acceptsNew: boolean, opts: { requestId?: string } = {}) {
      requireSiteAdmin(actor);
      const shard = await shardOrThrow(name);
      if (shard.acceptsNew !== acceptsNew) {
        await shards.setAcceptsNew(db, shard.name, acceptsNew);
        await audit(actor, 'shard.accept_new', shard.name, { accepts_new: acceptsNew }, opts.requestId);
      }
      return { shard: shard.name, state: shard.state, acceptsNew, changed: shard.acceptsNew !== acceptsNew, ...(await aftermath(shard.name)) };
    },

    /**
     * What the shard's writer does with a push while no synchronous replica is connected:
     * `accept` commits it unsynced (it is safe from the loss of the writer's disk only once
     * replicated), `refuse` refuses it (replication/sync.ts). Writers read it within a second.
     */
    async setSyncMissing(actor: Actor, name: string, value: shards.SyncMissing, opts: { requestId?: string } = {}) {
      requireSiteAdmin(actor);
      const shard = await shardOrThrow(name);
      const was = await shards.shardSyncMissing(db, shard.name);
      if (was !== value) {
        await shards.setSyncMissing(db, shard.name, value);
        await audit(actor, 'shard.sync_missing', shard.name, { sync_missing: value }, opts.requestId);
      }
      return { shard: shard.name, syncMissing: value, changed: was !== value };
    },

    /** Restricts the placement of the space's new repositories to its pinned shards (this one among them). */
    async pin(actor: Actor, spacePath: string, name: string, opts: { requestId?: string } = {}) {
      requireSiteAdmin(actor);
      const space = await spaceOrThrow(spacePath);
      const shard = await shardOrThrow(name);
      const label = `${space.ownerName}/${space.name}`;
      const added = await shards.insertPin(db, { spaceId: space.id, shard: shard.name, createdAt: now() });
      if (added) await audit(actor, 'shard.pin', label, { shard: shard.name }, opts.requestId);
      return { space: label, shard: shard.name, added, pins: await shards.spacePins(db, space.id), placeable: acceptsNewRepositories(shard) };
    },

    /** Removes the space's pin to one shard, or all its pins when `name` is undefined. */
    async unpin(actor: Actor, spacePath: string, name?: string, opts: { requestId?: string } = {}) {
      requireSiteAdmin(actor);
      const space = await spaceOrThrow(spacePath);
      const shard = name;
      const label = `${space.ownerName}/${space.name}`;
      const removed = await shards.deletePins(db, space.id, shard);
      if (shard !== undefined && removed === 0) {
        throw notFound('pin_not_found', `space ${label} is not pinned to shard ${shard}`, { space: label, shard });
      }
      if (removed > 0) await audit(actor, 'shard.unpin', label, { shard: shard ?? null, removed }, opts.requestId);
      return { space: label, removed, pins: await shards.spacePins(db, space.id) };
    },

    /** Every pin, or those of one space. */
    async pins(actor: Actor, spacePath?: string): Promise<shards.PinRow[]> {
      requireSiteAdmin(actor);
      const space = spacePath === undefined ? undefined : await spaceOrThrow(spacePath);
      return shards.listPins(db, space?.id);
    },
  };
}

export type ShardService = ReturnType<typeof createShardService>;
