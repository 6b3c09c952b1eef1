/**
 * Writing one snapshot of one repository (docs/design/snapshots.md).
 *
 * Order, and why:
 * 1. a snapshot-begin event: pushes that end after it keep the repository dirty, since the
 *    refs are read after it;
 * 2. the refs, read once (for-each-ref + HEAD); the pack is built from exactly those tips, so
 *    refs and objects come from one moment (objects are never pruned under the server's feet:
 *    maintenance only combines packs);
 * 3. `pack-objects --revs` fed the tips and `^tip` of every parent ref still present (the
 *    parent is the repository's latest snapshot; a fork's first is its source's), streamed
 *    through a sha256/size meter into store.put, which commits only when the stream ends cleanly;
 * 4. only after put resolves: the snapshots row (its parent locked: compaction cannot have
 *    retired it) and a snapshot-end event, in one transaction.
 * A failure anywhere leaves no row (an object written before a failed insert is an orphan that
 * compaction's sweep will remove) and the repository dirty.
 */
import { Readable } from 'node:stream';
import { newId } from '../shared/ids.js';
import { now, type MetaStore } from '../meta/db.js';
import { findRepositoryById } from '../meta/repositories.js';
import { conflict } from '../shared/errors.js';
import { crashPoint } from '../shared/crash.js';
import * as snapshots from '../meta/snapshots.js';
import { objectKey, type ObjectStore } from '../storage/object-store.js';
import { presentObjects, readRefsForSnapshot, spawnPackObjects, symbolicHead } from '../git/command.js';
import { encodePreamble, encodeRefs, readSnapshot, refsDigest, snapshotKey, snapshotMeter, type RefEntry, type SnapshotKind } from './format.js';

export interface CreateSnapshotDeps {
  meta: MetaStore;
  store: ObjectStore;
  /**
   * On a storage node: called first in the transaction that records the snapshot, it throws
   * once another node took the shard (repos/cluster-hosts.ts), so a deposed writer records none.
   */
  fence?: (trx: MetaStore['db']) => Promise<void>;
}

export interface CreateSnapshotOptions {
  repositoryId: string;
  repoPath: string;
  /** Force a full snapshot even when a parent exists. */
  full?: boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export async function readRefs(repoPath: string): Promise<RefEntry[]> {
  const [listed, head] = await Promise.all([readRefsForSnapshot(repoPath), symbolicHead(repoPath)]);
  const refs: RefEntry[] = listed.map((r) => (r.symref ? { name: r.name, target: r.symref } : { name: r.name, oid: r.oid }));
  if (head) refs.push({ name: 'HEAD', target: head });
  return refs;
}

/** The direct refs' object ids of a stored snapshot (reads only its preamble). */
async function parentTips(store: ObjectStore, key: string): Promise<string[]> {
  const { body } = await store.get(objectKey(key));
  const { refs, pack } = await readSnapshot(body);
  pack.destroy();
  return refs.flatMap((r) => (r.oid ? [r.oid] : []));
}

/**
 * The parent of a repository's next incremental snapshot: its own latest, or, for a fork that
 * has none yet, its source's latest (the fork then starts as an incremental on it; restore
 * follows parents across repositories).
 */
export async function snapshotParent(db: MetaStore['db'], repositoryId: string): Promise<snapshots.SnapshotRow | undefined> {
  const own = await snapshots.latestSnapshot(db, repositoryId);
  if (own) return own;
  const forkOf = (await findRepositoryById(db, repositoryId))?.forkOf;
  return forkOf ? snapshots.latestSnapshot(db, forkOf) : undefined;
}

/**
 * Inserts a snapshot row whose object is completely written. Its parents are locked first
 * (lockSnapshots): a compaction that retired one of them meanwhile makes this fail, and the
 * repository stays dirty, rather than leave a row naming a deleted parent.
 */
export async function recordSnapshot(db: MetaStore['db'], row: snapshots.SnapshotRow): Promise<void> {
  if (row.parents.length > 0 && (await snapshots.lockSnapshots(db, row.parents)) < row.parents.length) {
    throw conflict('snapshot_parent_retired', `a parent of snapshot ${row.id} was retired by compaction meanwhile`, { parents: row.parents });
  }
  await snapshots.insertSnapshot(db, row);
}

export async function createSnapshot(deps: CreateSnapshotDeps, opts: CreateSnapshotOptions): Promise<snapshots.SnapshotRow> {
  const { db } = deps.meta;
  const beginEventId = await snapshots.appendEvent(db, opts.repositoryId, 'snapshot-begin', now());
  try {
    const parent = opts.full ? undefined : await snapshotParent(db, opts.repositoryId);
    const row = await writeSnapshot(deps, { ...opts, parent, beginEventId, createdAt: now() });
    crashPoint('snapshot-after-upload');
    await db.transaction().execute(async (trx) => {
      await deps.fence?.(trx);
      await recordSnapshot(trx, row);
      await snapshots.appendEvent(trx, opts.repositoryId, 'snapshot-end', now(), { snapshot: row.id, ok: true });
    });
    return row;
  } catch (err) {
    await snapshots
      .appendEvent(db, opts.repositoryId, 'snapshot-end', now(), { ok: false, error: (err as Error).message?.slice(0, 500) })
      .catch(() => {});
    throw err;
  }
}

export interface WriteSnapshotSpec {
  repositoryId: string;
  repoPath: string;
  /** Incremental on this snapshot (its tips are the negatives); full without one. */
  parent: snapshots.SnapshotRow | undefined;
  beginEventId: number;
  createdAt: string;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

/**
 * Writes one snapshot object of the repository's refs as they are now, and returns the row to
 * record (nothing is recorded here).
 */
export async function writeSnapshot(deps: CreateSnapshotDeps, opts: WriteSnapshotSpec): Promise<snapshots.SnapshotRow> {
  const { parent } = opts;
  const kind: SnapshotKind = parent ? 'incremental' : 'full';
  const refs = await readRefs(opts.repoPath);
  const tips = [...new Set(refs.flatMap((r) => (r.oid ? [r.oid] : [])))];
  // A parent tip that is gone from the repository (rewound and pruned, or a fork's source moved
  // on after the fork) cannot be a negative; dropping it only makes this pack larger.
  const negatives = parent ? [...(await presentObjects(opts.repoPath, [...new Set(await parentTips(deps.store, parent.objectKey))]))] : [];

  const id = newId();
  const { createdAt } = opts;
  const dump = encodeRefs(refs);
  const preamble = encodePreamble({ repository: opts.repositoryId, id, kind, parents: parent ? [parent.id] : [], createdAt }, dump);
  const key = snapshotKey(opts.repositoryId, id);

  const child = spawnPackObjects(opts.repoPath, opts.timeoutMs ?? 3600_000);
  const onAbort = () => child.kill('SIGTERM');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  child.stdin.end([...tips, ...negatives.map((o) => `^${o}`)].join('\n') + (tips.length + negatives.length > 0 ? '\n' : ''));
  // The body fails (and put aborts) unless pack-objects exits 0 after its last byte.
  const body = Readable.from(
    (async function* () {
      yield preamble;
      for await (const chunk of child.stdout) yield chunk as Buffer;
      const { code, signal, stderr } = await child.exited;
      if (code !== 0) throw new Error(`git pack-objects failed (exit ${code ?? signal}): ${stderr.trim().split('\n').pop() ?? ''}`);
    })(),
    { objectMode: false },
  );
  const meter = snapshotMeter(preamble.length);
  body.on('error', (err) => meter.destroy(err));
  body.pipe(meter);
  try {
    await deps.store.put(key, meter, { contentType: 'application/octet-stream', ...(opts.signal && { signal: opts.signal }) });
  } catch (err) {
    // The store gave up (perhaps before reading a byte): the error was reported by put; what
    // the body or the meter say next, once pack-objects is killed, is only the echo of it.
    meter.on('error', () => {});
    body.on('error', () => {});
    body.destroy();
    throw err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    child.kill('SIGTERM');
  }
  return {
    id,
    repositoryId: opts.repositoryId,
    kind,
    parents: parent ? [parent.id] : [],
    objectKey: key,
    refsDigest: refsDigest(dump),
    byteSize: meter.bytes,
    objectCount: meter.objectCount,
    sha256: meter.sha256(),
    beginEventId: opts.beginEventId,
    createdAt,
  };
}
