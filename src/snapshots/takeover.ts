/**
 * Failover from snapshots (issue 10; docs/design/snapshots.md, "Failover from snapshots"): a
 * standby with a disk of its own takes a shard over when its writer's disk is gone. The
 * repositories of the shard that are not on its disk are restored from their snapshot chains
 * on their first request (eviction's lazy restore), so it serves within seconds; those with no
 * snapshot at all start empty. What cannot come back is said exactly: every acknowledged push
 * (a push-end in the event log) whose ref updates are not in the latest snapshot.
 *
 * Which pushes are lost, per repository, with L its latest snapshot:
 * - a push whose push-end precedes L's begin is in L (L read the refs after it);
 * - a later push is in L when, for each ref it updated, L holds that ref at its new value, or
 *   at the new value of a later push of the same ref (the ref went on from it: L holds what it
 *   wrote unless that later push rewound it, which git's history alone could tell, and L's
 *   objects are not read here), or L lacks the ref it deleted;
 * - a push whose ref updates are unknown (its audit entry was never written) is reported lost.
 */
import { now, type Db, type MetaStore } from '../meta/db.js';
import { latestSnapshot, pushesAfter, type SnapshotRow } from '../meta/snapshots.js';
import { objectKey, type ObjectStore } from '../storage/object-store.js';
import { readSnapshot } from './format.js';

const ZERO = /^0+$/;

export interface LostPush {
  /** The push's request id, as in the server's request log and the audit log. */
  requestId: string | null;
  /** When its push-end was recorded. */
  at: string;
  actorName: string | null;
  /** Its ref updates; empty when they are unknown. */
  refs: { ref: string; old: string; new: string }[];
}

export interface AdoptedRepository {
  repositoryId: string;
  /** The snapshot it is restored from; undefined: none exists, it starts empty. */
  snapshot: string | undefined;
  lost: LostPush[];
}

interface PushUpdates {
  requestId: string | null;
  at: string;
  actorName: string | null;
  refs: { ref: string; old: string; new: string }[] | undefined;
}

/** The refs of a snapshot, from its preamble (the pack is not read). */
async function snapshotRefs(store: ObjectStore, snap: SnapshotRow): Promise<Map<string, string>> {
  const { body } = await store.get(objectKey(snap.objectKey));
  const { refs, pack } = await readSnapshot(body);
  pack.destroy();
  return new Map(refs.flatMap((r) => (r.oid ? [[r.name, r.oid] as const] : [])));
}

/** The acknowledged pushes after `afterEventId`, oldest first, with their ref updates from the audit log. */
async function pushesSince(db: Db, repositoryId: string, afterEventId: number): Promise<PushUpdates[]> {
  const ends = await pushesAfter(db, repositoryId, afterEventId);
  const ids = ends.map((e) => e.details['request_id']).filter((id): id is string => typeof id === 'string' && id !== '');
  const audited = ids.length
    ? await db
        .selectFrom('audit_log')
        .select(['request_id', 'actor_name', 'details'])
        .where('repository_id', '=', repositoryId)
        .where('action', '=', 'push')
        .where('request_id', 'in', ids)
        .execute()
    : [];
  const byRequest = new Map(audited.map((a) => [a.request_id, a]));
  return ends.map((e) => {
    const requestId = typeof e.details['request_id'] === 'string' ? e.details['request_id'] : null;
    const entry = requestId ? byRequest.get(requestId) : undefined;
    const refs = entry ? (JSON.parse(entry.details) as { refs?: { ref: string; old: string; new: string }[] }).refs : undefined;
    return { requestId, at: e.at, actorName: entry?.actor_name ?? null, refs };
  });
}

/**
 * The pushes of `pushes` (in order) that `held` (the refs of the latest snapshot, or none)
 * does not contain, by the rule in the header.
 */
export function lostPushes(pushes: readonly PushUpdates[], held: ReadonlyMap<string, string> | undefined): LostPush[] {
  // For each ref: the index of the last push whose value of it the snapshot holds.
  const reached = new Map<string, number>();
  pushes.forEach((p, i) => {
    for (const u of p.refs ?? []) {
      const value = held?.get(u.ref);
      const holds = ZERO.test(u.new) ? value === undefined : value === u.new;
      if (holds) reached.set(u.ref, i);
    }
  });
  return pushes
    .filter((p, i) => p.refs === undefined || p.refs.some((u) => (reached.get(u.ref) ?? -1) < i))
    .map((p) => ({ requestId: p.requestId, at: p.at, actorName: p.actorName, refs: p.refs ?? [] }));
}

/**
 * What a standby taking the shard from snapshots must do for one repository missing from its
 * disk: the snapshot to restore and the acknowledged pushes that are lost.
 */
export async function adoptFromSnapshots(deps: { meta: MetaStore; store: ObjectStore }, repositoryId: string): Promise<AdoptedRepository> {
  const { db } = deps.meta;
  const latest = await latestSnapshot(db, repositoryId);
  const pushes = await pushesSince(db, repositoryId, latest?.beginEventId ?? 0);
  const held = latest ? await snapshotRefs(deps.store, latest) : undefined;
  return { repositoryId, snapshot: latest?.id, lost: lostPushes(pushes, held) };
}

/** The audit entry of one lost push (written fenced, by the node that took the shard over). */
export function lostPushAudit(repositoryId: string, label: string, shard: string, epoch: number, push: LostPush) {
  return {
    at: now(),
    actorId: null,
    actorName: 'system',
    action: 'push.lost',
    repositoryId,
    target: label,
    details: { shard, epoch, pushedAt: push.at, pusher: push.actorName, refs: push.refs, reason: 'failover from snapshots: not in the latest snapshot' },
    requestId: push.requestId,
  };
}
