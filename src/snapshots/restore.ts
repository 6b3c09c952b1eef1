/**
 * Restoring a repository from its snapshots (docs/design/snapshots.md).
 *
 * The chosen snapshot's chain (it, its first parent, … back to a full snapshot, crossing into
 * the source repository's snapshots for a fork) is installed oldest first into a scratch
 * repository under <data>/tmp: each pack streamed from the store into `git index-pack --stdin
 * --strict` (packs are self-contained, so each indexes on its own; every object is checked as
 * fsck would). Then the chosen snapshot's refs are created in one `update-ref --stdin`
 * transaction, HEAD is set, the repository settings applied, the packs repacked (into one past
 * two packs, else geometrically) with a bitmap, `git fsck --connectivity-only` must pass, and only then is the scratch
 * directory renamed into place. A failure leaves the target untouched and removes the scratch.
 * Refs are the dump's exactly: a ref deleted before the snapshot does not come back, whatever
 * objects older packs still hold.
 */
import { mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { scratchPrefix } from '../shared/pid.js';
import { crashPoint } from '../shared/crash.js';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { MetaStore } from '../meta/db.js';
import * as snapshots from '../meta/snapshots.js';
import { objectKey, type ObjectStore } from '../storage/object-store.js';
import { fsckConnectivity, initBare, repackAll, repackGeometric, setConfig, setSymbolicRef, spawnIndexPack, updateRefsTransaction } from '../git/command.js';
import { conflict, invalid, notFound } from '../shared/errors.js';
import { readSnapshot, type RefEntry } from './format.js';

export interface RestoreDeps {
  meta: MetaStore;
  store: ObjectStore;
}

export interface RestoreOptions {
  repositoryId: string;
  defaultBranch: string;
  /** Final repository directory; must not exist. */
  target: string;
  /** Where the scratch repository is built: on the target's filesystem, so the move is a rename. */
  scratchRoot: string;
  /** Repository settings (repositoryConfig()). */
  config: readonly (readonly [string, string])[];
  /** A snapshot id of this repository. */
  at?: string | undefined;
  /** The last snapshot created at or before this ISO time. */
  before?: string | undefined;
  timeoutMs?: number;
  /** Repack a chain of several packs into one (default); compaction, which packs again anyway, does not. */
  repack?: boolean;
  onProgress?: (p: { snapshot: string; index: number; of: number; bytes: number }) => void;
  /** Byte-level progress while packs stream in: bytes of the chain's objects read so far, of their total. */
  onBytes?: (p: { bytes: number; totalBytes: number }) => void;
}

export interface RestoreResult {
  repositoryId: string;
  /** The snapshot whose refs were imported; undefined when the repository has none (restored empty). */
  snapshot: snapshots.SnapshotRow | undefined;
  chain: string[];
  refs: number;
  bytes: number;
  /** Acknowledged pushes (push-end events) after the restored snapshot began: not in it. */
  unpersistedPushes: snapshots.EventRow[];
}

/** The snapshot to restore among a repository's (oldest first): `at`, the last `before`, or the latest. */
export function chooseSnapshot(
  all: readonly snapshots.SnapshotRow[],
  opts: { at?: string | undefined; before?: string | undefined },
): snapshots.SnapshotRow | undefined {
  if (opts.at) {
    const chosen = all.find((s) => s.id === opts.at);
    if (!chosen) throw notFound('snapshot_not_found', `snapshot not found: ${opts.at}`, { snapshot: opts.at });
    return chosen;
  }
  if (opts.before) {
    const t = new Date(opts.before);
    if (Number.isNaN(t.getTime())) throw invalid('invalid_time', `not a time: ${opts.before}`);
    const chosen = all.filter((s) => new Date(s.createdAt).getTime() <= t.getTime()).pop();
    if (!chosen) throw notFound('snapshot_not_found', `no snapshot at or before ${opts.before}`);
    return chosen;
  }
  return all[all.length - 1];
}

/**
 * `chosen` and its first parents back to a full snapshot, oldest first. Parents are looked up
 * in `known` (the repository's own rows) and then by id: a fork's chain continues into its
 * source's snapshots, even when the source repository was deleted since.
 */
export async function snapshotChain(
  db: MetaStore['db'],
  chosen: snapshots.SnapshotRow,
  known: readonly snapshots.SnapshotRow[] = [],
): Promise<snapshots.SnapshotRow[]> {
  const byId = new Map(known.map((s) => [s.id, s]));
  const chain = [chosen];
  while (chain[0]!.kind !== 'full') {
    const parentId = chain[0]!.parents[0];
    const parent = parentId ? (byId.get(parentId) ?? (await snapshots.findSnapshot(db, parentId))) : undefined;
    if (!parent) throw notFound('snapshot_chain_broken', `snapshot ${chain[0]!.id} names a missing parent ${parentId}`);
    if (chain.some((s) => s.id === parent.id)) throw invalid('snapshot_corrupt', `snapshot ${parent.id} is its own ancestor`);
    chain.unshift(parent);
  }
  return chain;
}

export async function restoreRepository(deps: RestoreDeps, opts: RestoreOptions): Promise<RestoreResult> {
  if (await stat(opts.target).catch(() => undefined)) {
    throw conflict('restore_target_exists', `restore target already exists: ${opts.target}`, { target: opts.target });
  }
  const all = await snapshots.listSnapshots(deps.meta.db, opts.repositoryId);
  const chosen = chooseSnapshot(all, opts);
  const chain = chosen ? await snapshotChain(deps.meta.db, chosen, all) : [];

  await mkdir(opts.scratchRoot, { recursive: true });
  const scratch = await mkdtemp(path.join(opts.scratchRoot, scratchPrefix(`restore-${opts.repositoryId}`)));
  let bytes = 0;
  const totalBytes = chain.reduce((n, s) => n + s.byteSize, 0);
  let refs: RefEntry[] = [];
  try {
    // initBare on an existing empty directory is fine; git creates the layout inside it.
    await initBare(scratch, opts.defaultBranch);
    for (const [index, snap] of chain.entries()) {
      const { body, size } = await deps.store.get(objectKey(snap.objectKey));
      const parsed = await readSnapshot(body);
      if (parsed.header.id !== snap.id || parsed.header.repository !== snap.repositoryId) {
        parsed.pack.destroy();
        throw invalid('snapshot_corrupt', `snapshot object ${snap.objectKey} names another snapshot`);
      }
      const child = spawnIndexPack(scratch, opts.timeoutMs ?? 3600_000);
      // index-pack reads up to the pack's trailer and may exit before our end of its stdin
      // closes (a premature close, EPIPE): its exit status, which verifies the trailer
      // checksum, is the verdict. A failed read from the store ends stdin early, so it fails.
      const fed = pipeline(parsed.pack, child.stdin).then(
        () => undefined,
        (err: unknown) => {
          // The source failed (not git closing its end): stop git, which fails on the short pack.
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ERR_STREAM_PREMATURE_CLOSE' && code !== 'EPIPE') child.kill('SIGKILL');
          return err;
        },
      );
      if (opts.onBytes) {
        const before = bytes;
        let packBytes = 0;
        parsed.pack.on('data', (chunk: Buffer) => opts.onBytes!({ bytes: before + (packBytes += chunk.length), totalBytes }));
      }
      const done = await child.exited;
      const feedError = await fed;
      if (done.code !== 0) {
        const why = done.stderr.trim().split('\n').pop() || (feedError as Error | undefined)?.message || `exit ${done.code ?? done.signal}`;
        throw new Error(`git index-pack failed for snapshot ${snap.id}: ${why}`);
      }
      bytes += size;
      opts.onBytes?.({ bytes, totalBytes });
      opts.onProgress?.({ snapshot: snap.id, index: index + 1, of: chain.length, bytes });
      if (index === chain.length - 1) refs = parsed.refs;
      crashPoint('restore-mid-install');
    }

    const direct = refs.filter((r) => r.oid !== undefined);
    if (direct.length > 0) {
      const lines = ['start', ...direct.map((r) => `create ${r.name} ${r.oid}`), 'prepare', 'commit', ''];
      await updateRefsTransaction(scratch, lines.join('\n'));
    }
    for (const r of refs) if (r.target !== undefined) await setSymbolicRef(scratch, r.name, r.target);
    await setConfig(scratch, opts.config);
    // Packs from index-pack have no reachability bitmap, and many packs (one per snapshot) slow
    // every later clone. Past two: one pack and a bitmap. Up to two (a full, perhaps one
    // incremental: the common case): the geometric repack maintenance uses, which leaves packs
    // already in progression alone and writes a multi-pack bitmap, at a fraction of the cost.
    if (opts.repack !== false) {
      const repackOpts = { signal: AbortSignal.timeout(opts.timeoutMs ?? 3600_000), niceness: 0 };
      if (chain.length > 2) await repackAll(scratch, repackOpts);
      else await repackGeometric(scratch, repackOpts);
    }
    // index-pack --strict checked every object as it was installed; what is left is that the
    // refs reach a complete graph.
    const check = await fsckConnectivity(scratch);
    if (check.code !== 0) throw new Error(`git fsck failed after restore: ${check.stderr.trim().split('\n').slice(-3).join('; ')}`);

    await mkdir(path.dirname(opts.target), { recursive: true });
    await rename(scratch, opts.target);
  } catch (err) {
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
  return {
    repositoryId: opts.repositoryId,
    snapshot: chosen,
    chain: chain.map((s) => s.id),
    refs: refs.length,
    bytes,
    unpersistedPushes: await snapshots.pushesAfter(deps.meta.db, opts.repositoryId, chosen?.beginEventId ?? 0),
  };
}
