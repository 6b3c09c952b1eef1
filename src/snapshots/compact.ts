/**
 * Compaction (docs/design/snapshots.md): a repository's history up to a chosen snapshot
 * becomes one full snapshot of exactly that snapshot's refs, and the snapshots it replaces are
 * retired unless something still stands on them.
 *
 * Order, and why (a row never names a missing object or parent; a crash leaves only orphan
 * objects, which the sweep removes):
 * 1. the chosen snapshot's chain is restored into a scratch repository under <data>/tmp (fsck
 *    included: a damaged chain is found before anything is retired);
 * 2. one full snapshot of its refs is written (the refs digest must equal the chosen one's);
 *    it takes the chosen snapshot's time and begin event, so it sorts where that one did and
 *    dirty tracking and the "unpersisted pushes" report stay exact;
 * 3. one transaction: the chosen row is locked (still there), the full row inserted, and every
 *    snapshot naming the chosen one as parent, of any repository, re-pointed to the full (same
 *    refs, so the same negatives);
 * 4. one transaction: the candidates (this repository's snapshots up to the chosen one) are
 *    locked, and those that no remaining snapshot of any repository needs as an ancestor (a
 *    fork's first snapshot names its source's) are deleted;
 * 5. then their objects; and objects under snapshots/<repo>/ with no row, older than a day,
 *    are swept.
 * Snapshot rows are recorded only after locking their parents (create.ts recordSnapshot), so a
 * snapshot written meanwhile either names a parent step 4 then keeps, or fails and is retried.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { scratchPrefix } from '../shared/pid.js';
import { crashPoint } from '../shared/crash.js';
import path from 'node:path';
import { decodeTime } from 'ulid';
import type { MetaStore } from '../meta/db.js';
import { findRepositoryById } from '../meta/repositories.js';
import * as snapshots from '../meta/snapshots.js';
import { objectKey, type ObjectStore } from '../storage/object-store.js';
import { conflict, notFound } from '../shared/errors.js';
import { recordSnapshot, writeSnapshot } from './create.js';
import { chooseSnapshot, restoreRepository, snapshotChain } from './restore.js';

export interface CompactDeps {
  meta: MetaStore;
  store: ObjectStore;
  /** <data>/tmp: where the chain is restored, on the data directory's filesystem. */
  scratchRoot: string;
  /** On a storage node: first in each transaction, refuses once another node took the shard (see CreateSnapshotDeps). */
  fence?: (trx: MetaStore['db']) => Promise<void>;
}

export interface CompactOptions {
  repositoryId: string;
  /** HEAD of the scratch repository until the dump sets it; the repository's own by default. */
  defaultBranch?: string;
  /** The snapshot to compact up to; the latest by default. */
  at?: string | undefined;
  signal?: AbortSignal | undefined;
  timeoutMs?: number;
  /** Objects without a row older than this are swept (ms; a day by default). */
  orphanAgeMs?: number;
}

export interface CompactResult {
  /** The full snapshot that now stands for the chosen one (the chosen one itself if it was full). */
  full: snapshots.SnapshotRow;
  /** The snapshot compacted up to. */
  chosen: snapshots.SnapshotRow;
  /** Snapshots (of any repository) re-pointed from the chosen one to the new full. */
  repointed: number;
  /** Retired: rows and objects deleted. */
  deleted: string[];
  /** Replaced but kept, because a remaining snapshot (a fork's) stands on them. */
  kept: string[];
  /** Objects without a row, swept. */
  orphans: string[];
}

const DAY_MS = 24 * 3600_000;

export interface CompactionLimits {
  /** Longest chain (snapshots from the latest back to its full one) left alone; 0: no limit. */
  maxChainLength: number;
  /** Largest total size of the chain's incrementals, as a multiple of its full's size; 0: no limit. */
  maxSizeRatio: number;
  /** Incrementals totalling less than this never trigger by size (a small chain restores fast anyway). */
  minBytes?: number;
}

/** Whether a chain (oldest first, as snapshotChain returns it) is due for compaction. */
export function compactionDue(chain: readonly snapshots.SnapshotRow[], limits: CompactionLimits): boolean {
  if (chain.length < 2) return false;
  if (limits.maxChainLength > 0 && chain.length > limits.maxChainLength) return true;
  const incrementals = chain.slice(1).reduce((sum, s) => sum + s.byteSize, 0);
  return limits.maxSizeRatio > 0 && incrementals >= (limits.minBytes ?? 0) && incrementals > limits.maxSizeRatio * chain[0]!.byteSize;
}

/** Position in a repository's order (listSnapshots): time, then id. */
const atOrBefore = (s: snapshots.SnapshotRow, chosen: snapshots.SnapshotRow) =>
  s.createdAt < chosen.createdAt || (s.createdAt === chosen.createdAt && s.id <= chosen.id);

export async function compactRepository(deps: CompactDeps, opts: CompactOptions): Promise<CompactResult> {
  const { db } = deps.meta;
  const all = await snapshots.listSnapshots(db, opts.repositoryId);
  const chosen = chooseSnapshot(all, { at: opts.at });
  if (!chosen) throw notFound('snapshot_not_found', 'repository has no snapshot to compact', { repository: opts.repositoryId });

  let full = chosen;
  let repointed = 0;
  if (chosen.kind !== 'full') {
    await snapshotChain(db, chosen, all); // a broken chain fails here, before any work
    full = await writeFull(deps, opts, chosen);
    try {
      repointed = await db.transaction().execute(async (trx) => {
        await deps.fence?.(trx);
        if ((await snapshots.lockSnapshots(trx, [chosen.id])) === 0) {
          throw conflict('snapshot_compacted', `snapshot ${chosen.id} was compacted or retired meanwhile`, { snapshot: chosen.id });
        }
        await recordSnapshot(trx, full);
        return snapshots.repointParents(trx, chosen.id, full.id);
      });
    } catch (err) {
      await deps.store.delete(objectKey(full.objectKey)).catch(() => {});
      throw err;
    }
  }

  crashPoint('compaction-after-full');
  const { deleted, kept } = await retire(deps, opts.repositoryId, chosen, full);
  const orphans = await sweepOrphans(deps, opts.repositoryId, opts.orphanAgeMs ?? DAY_MS);
  return { full, chosen, repointed, deleted: deleted.map((s) => s.id), kept: kept.map((s) => s.id), orphans };
}

/** Steps 1 and 2: restore the chain in scratch, write a full snapshot of its refs. */
async function writeFull(deps: CompactDeps, opts: CompactOptions, chosen: snapshots.SnapshotRow): Promise<snapshots.SnapshotRow> {
  await mkdir(deps.scratchRoot, { recursive: true });
  const dir = await mkdtemp(path.join(deps.scratchRoot, scratchPrefix(`compact-${opts.repositoryId}`)));
  try {
    const target = path.join(dir, 'repo.git');
    await restoreRepository(deps, {
      repositoryId: opts.repositoryId,
      defaultBranch: opts.defaultBranch ?? (await findRepositoryById(deps.meta.db, opts.repositoryId))?.defaultBranch ?? 'main',
      target,
      scratchRoot: dir,
      config: [],
      at: chosen.id,
      // pack-objects below reads the packs as they are; a repack first would pack twice.
      repack: false,
      ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }),
    });
    const full = await writeSnapshot(deps, {
      repositoryId: opts.repositoryId,
      repoPath: target,
      parent: undefined,
      beginEventId: chosen.beginEventId,
      createdAt: chosen.createdAt,
      signal: opts.signal,
      timeoutMs: opts.timeoutMs,
    });
    if (full.refsDigest !== chosen.refsDigest) {
      await deps.store.delete(objectKey(full.objectKey)).catch(() => {});
      throw new Error(`compaction of snapshot ${chosen.id} produced other refs (digest ${full.refsDigest}, expected ${chosen.refsDigest})`);
    }
    return full;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Steps 4 and 5. Candidates: this repository's snapshots up to the chosen one, except the full
 * that replaces them. A candidate stays while a remaining snapshot needs it: named as parent by
 * a non-candidate (any repository), or the ancestor of one that stays.
 */
async function retire(
  deps: CompactDeps,
  repositoryId: string,
  chosen: snapshots.SnapshotRow,
  full: snapshots.SnapshotRow,
): Promise<{ deleted: snapshots.SnapshotRow[]; kept: snapshots.SnapshotRow[] }> {
  const decided = await deps.meta.db.transaction().execute(async (trx) => {
    await deps.fence?.(trx);
    // Row locks first (PostgreSQL), so no other transaction re-points these rows meanwhile.
    await snapshots.lockSnapshots(trx, [full.id]);
    const own = await snapshots.listSnapshots(trx, repositoryId);
    const candidates = own.filter((s) => s.id !== full.id && atOrBefore(s, chosen));
    await snapshots.lockSnapshots(trx, candidates.map((s) => s.id));
    const byId = new Map(candidates.map((s) => [s.id, s]));
    const needed = new Set<string>();
    const need = (id: string) => {
      for (let s = byId.get(id); s && !needed.has(s.id); s = s.parents[0] ? byId.get(s.parents[0]) : undefined) needed.add(s.id);
    };
    for (const referrer of await snapshots.snapshotsNaming(trx, [...byId.keys()])) {
      if (!byId.has(referrer.id)) referrer.parents.forEach(need);
    }
    const deleted = candidates.filter((s) => !needed.has(s.id));
    await snapshots.deleteSnapshots(trx, deleted.map((s) => s.id));
    return { deleted, kept: candidates.filter((s) => needed.has(s.id)) };
  });
  // Rows first, objects after: a crash here leaves orphans, never a row without its object.
  for (const s of decided.deleted) await deps.store.delete(objectKey(s.objectKey));
  return decided;
}

/** Objects under snapshots/<repo>/ that no row names and that were written over `ageMs` ago. */
async function sweepOrphans(deps: CompactDeps, repositoryId: string, ageMs: number): Promise<string[]> {
  const rows = new Set((await snapshots.listSnapshots(deps.meta.db, repositoryId)).map((s) => s.objectKey));
  const swept: string[] = [];
  for await (const info of deps.store.list(`snapshots/${repositoryId.toLowerCase()}/`)) {
    if (rows.has(info.key)) continue;
    let written: number;
    try {
      // A snapshot's id is a ULID of when its object was written (compacted ones included).
      written = decodeTime(info.key.slice(info.key.lastIndexOf('/') + 1));
    } catch {
      continue; // not a snapshot object: not ours to remove
    }
    // Younger objects may be uploads whose row is about to be recorded.
    if (Date.now() - written < ageMs) continue;
    await deps.store.delete(info.key);
    swept.push(info.key);
  }
  return swept;
}
