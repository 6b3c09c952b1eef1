/**
 * What `gitstratum cluster status` reports (issue 10, "Operations"): for every shard, what it
 * holds (the shard summaries of shards.ts), who writes it (its lease), who stands by (the
 * storage-node registry, meta/storage-nodes.ts), which replicas follow it and how far behind
 * each is (meta/replication.ts, issue 11) and how far its snapshots lag (the snapshot
 * worker's own "dirty" rule, meta/snapshots.ts, filtered by shard).
 *
 * Health, for monitoring: the cluster is healthy when every shard in use (active, or draining
 * but still holding repositories) has a live writer (a lease unexpired by the database's
 * clock). An empty draining shard is left out, so an operator silences an unused shard
 * (`local`, made by the first migration) by draining it.
 *
 * Clocks: lease and node ages are the database's; the age of the oldest un-persisted change is
 * measured from the event log's times (written by the servers' clocks) against this process's
 * clock, as the snapshot metrics do.
 */
import type { MetaStore } from '../meta/db.js';
import { listNodes, type StorageNode } from '../meta/storage-nodes.js';
import { listReplicas, REPLICA_SEEN_WITHIN_MS } from '../meta/replication.js';
import { dirtyRepositories } from '../meta/snapshots.js';
import { requireSiteAdmin, type Actor } from '../access/policy.js';
import type { ShardService, ShardSummary } from './shards.js';

/** A node unseen for more than this many lease lifetimes is shown as gone. */
export const GONE_AFTER_LEASES = 3;

export interface WriterStatus {
  holder: string;
  url: string;
  epoch: number;
  heldForMs: number;
  /** Zero or less: the lease has expired and no one took it over yet. */
  expiresInMs: number;
  live: boolean;
}

export interface StandbyStatus {
  holder: string;
  url: string;
  startedAtMs: number;
  lastSeenAgoMs: number;
  /** Not seen for more than GONE_AFTER_LEASES lease lifetimes: most likely dead. */
  gone: boolean;
}

export interface ReplicaStatus {
  diskId: string;
  url: string;
  mode: string;
  lastSeenAgoMs: number;
  /** Not heard from within REPLICA_SEEN_WITHIN_MS: frontends send it no reads. */
  silent: boolean;
  /** Repositories of the shard whose refs version it has not reached (it gets no reads of those). */
  behindRepositories: number;
  /** Age of the oldest refs version it has not reached; 0 when up to date. */
  lagMs: number;
}

export interface SnapshotLag {
  /** Repositories of the shard with pushes not yet in a snapshot. */
  dirtyRepositories: number;
  /** When the oldest of those pushes began or ended; null when none. */
  oldestUnpersistedAt: string | null;
  oldestUnpersistedAgeMs: number | null;
}

export interface ShardStatus extends Omit<ShardSummary, 'lease'> {
  writer: WriterStatus | null;
  /** The shard's registered nodes other than its lease holder. */
  standbys: StandbyStatus[];
  /** Copies of the shard on other disks (`--replica`), serving reads when up to date. */
  replicas: ReplicaStatus[];
  snapshotLag: SnapshotLag;
}

export interface ClusterStatus {
  shards: ShardStatus[];
  /** Active shards without a live writer: their repositories cannot be served. */
  withoutWriter: string[];
  healthy: boolean;
  /** Nodes in the registry, on every shard (writers included). */
  registeredNodes: number;
  /** A node unseen for longer than this is `gone`. */
  goneAfterMs: number;
}

export interface ClusterStatusOptions {
  /** The storage nodes' lease lifetime (setting shardLeaseSeconds). */
  leaseMs: number;
  /** This process's clock, for the age of un-persisted changes (tests pass their own). */
  nowMs?: number;
}

function lagOf(dirty: { oldestPushAt: string }[], nowMs: number): SnapshotLag {
  const oldest = Math.min(...dirty.map((d) => Date.parse(d.oldestPushAt)));
  if (!Number.isFinite(oldest)) return { dirtyRepositories: dirty.length, oldestUnpersistedAt: null, oldestUnpersistedAgeMs: null };
  return { dirtyRepositories: dirty.length, oldestUnpersistedAt: new Date(oldest).toISOString(), oldestUnpersistedAgeMs: Math.max(0, nowMs - oldest) };
}

function standbyOf(node: StorageNode, goneAfterMs: number): StandbyStatus {
  const { holder, url, startedAtMs, lastSeenAgoMs } = node;
  return { holder, url, startedAtMs, lastSeenAgoMs, gone: lastSeenAgoMs > goneAfterMs };
}

/** The whole cluster as the database sees it now. Site administrators only. */
export async function clusterStatus(
  deps: { meta: MetaStore; shards: ShardService },
  actor: Actor,
  opts: ClusterStatusOptions,
): Promise<ClusterStatus> {
  requireSiteAdmin(actor);
  const { meta } = deps;
  const goneAfterMs = GONE_AFTER_LEASES * opts.leaseMs;
  const summaries = await deps.shards.list(actor);
  const nodes = await listNodes(meta);
  const replicas = await listReplicas(meta);
  // One query per shard: the worker's rule as it is, with its shard filter (shards are few).
  const dirty = new Map<string, { oldestPushAt: string }[]>();
  for (const s of summaries) dirty.set(s.name, await dirtyRepositories(meta.db, { shard: s.name }));
  const nowMs = opts.nowMs ?? Date.now();

  const shards = summaries.map(({ lease, ...s }): ShardStatus => {
    const writer = lease && { ...lease, live: lease.expiresInMs > 0 };
    const standbys = nodes.filter((n) => n.shard === s.name && n.holder !== lease?.holder).map((n) => standbyOf(n, goneAfterMs));
    const copies = replicas
      .filter((r) => r.shard === s.name)
      .map(({ diskId, url, mode, lastSeenAgoMs, behindRepositories, lagMs }) => ({ diskId, url, mode, lastSeenAgoMs, silent: lastSeenAgoMs > REPLICA_SEEN_WITHIN_MS, behindRepositories, lagMs }));
    return { ...s, writer, standbys, replicas: copies, snapshotLag: lagOf(dirty.get(s.name) ?? [], nowMs) };
  });
  // A shard needs a writer while it takes new repositories or still holds some (a draining one).
  const withoutWriter = shards.filter((s) => (s.state === 'active' || s.repositories > 0) && !s.writer?.live).map((s) => s.name);
  return { shards, withoutWriter, healthy: withoutWriter.length === 0, registeredNodes: nodes.length, goneAfterMs };
}
