/**
 * A shard writer's part in moving repositories between shards (issue 11;
 * docs/design/replication.md, "Moving repositories"); the mover (repos/moves.ts) drives it
 * over the signed node routes.
 *
 * - On the target shard's writer, copy(): the repository restored from its latest snapshot
 *   when this disk has no copy yet (or made empty), then brought to the source writer's refs
 *   by one round of follow.ts, fetched with a replica token. Called while the repository is
 *   still served from the source, and once more while its pushes are paused, for the last
 *   changes. One copy of a repository at a time.
 * - On the source shard's writer, state(): its refs digest, once no push of the repository
 *   runs (the mover paused pushes first).
 * - On every writer, sweep(): copies on this disk of repositories that are not on its shard
 *   are removed, unless a move from or to the shard is active for them or moved them away
 *   within the grace period (reads that began before the switch finish there). A failed move
 *   leaves the target's copy, which goes at the next sweep.
 */
import path from 'node:path';
import { stat } from 'node:fs/promises';
import type { Logger } from '../shared/log.js';
import type { MetaStore } from '../meta/db.js';
import type { ObjectStore } from '../storage/object-store.js';
import type { ShardLeases } from '../meta/shard-leases.js';
import { copiesToKeep } from '../meta/moves.js';
import { findRepositoryById, repositoryIdsOnShard } from '../meta/repositories.js';
import { restoreRepository } from '../snapshots/restore.js';
import { readRefs } from '../snapshots/create.js';
import { encodeRefs, refsDigest } from '../snapshots/format.js';
import { replicaToken } from '../shared/cluster-signature.js';
import { REPLICA_PREFIX } from '../http/node-routes.js';
import { conflict, notFound, unavailable } from '../shared/errors.js';
import { followOnce } from './follow.js';
import { pausePoint } from '../shared/crash.js';

/** A copy's refs as the mover compares them: the digest of every ref and HEAD (snapshots/format.ts). */
export interface CopyState {
  refs: number;
  digest: string;
}

export interface MoveCopiesDeps {
  meta: MetaStore;
  store: ObjectStore;
  dataDir: string;
  /** This writer's shard. */
  shard: string;
  repoPath(id: string): string;
  repoConfig: readonly (readonly [string, string])[];
  leases: ShardLeases;
  secret: string;
  /** Whether a request holds the repository on this disk now (residency). */
  inUse(id: string): boolean;
  /** The repositories on this disk. */
  copies(): Promise<string[]>;
  removeCopy(id: string): Promise<void>;
  log: Logger;
}

/** How long a replica token for a move's fetch lasts. */
const TOKEN_MS = 60 * 60_000;

export async function copyState(repoPath: string): Promise<CopyState> {
  const refs = await readRefs(repoPath);
  return { refs: refs.filter((r) => r.name !== 'HEAD').length, digest: refsDigest(encodeRefs(refs)) };
}

/** Whether the directory at `dir` exists and has not changed for `ms`. */
async function untouchedFor(dir: string, ms: number): Promise<boolean> {
  const info = await stat(dir).catch(() => undefined);
  return info !== undefined && Date.now() - info.mtimeMs >= ms;
}

export class MoveCopies {
  /** Per repository: the copy or removal running now. */
  private readonly busy = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: MoveCopiesDeps) {}

  /** Copies (or brings up to date) the repository from the writer of shard `from`; its refs as copied. */
  copy(id: string, from: string): Promise<CopyState> {
    return this.exclusive(id, async () => {
      const { meta, log } = this.deps;
      const repo = await findRepositoryById(meta.db, id);
      if (!repo) throw notFound('repo_not_found', 'no such repository');
      if (repo.shard !== from) throw conflict('repo_not_on_shard', `the repository is on shard ${repo.shard}, not ${from}`);
      if (from === this.deps.shard) throw conflict('repo_on_this_shard', 'the repository is already on this shard');
      const target = this.deps.repoPath(id);
      if (!(await stat(target).catch(() => undefined))) {
        const restored = await restoreRepository(
          { meta, store: this.deps.store },
          { repositoryId: id, defaultBranch: repo.defaultBranch, target, scratchRoot: path.join(this.deps.dataDir, 'tmp'), config: this.deps.repoConfig },
        );
        log.info({ repo_id: id, from, snapshot: restored.snapshot?.id ?? null }, 'move: copy restored from snapshots; the source writer sends what came after');
      }
      pausePoint('move-copy');
      const lease = await this.deps.leases.current(from);
      if (!lease || lease.expiresInMs <= 0 || !lease.url) throw unavailable('shard_unavailable', `shard ${from} has no writer now; retry shortly`, { shard: from });
      const url = new URL(`${REPLICA_PREFIX}/${id}`, lease.url).href;
      const token = replicaToken(this.deps.secret, id, Date.now() + TOKEN_MS);
      const { changes } = await followOnce(target, url, [['http.extraHeader', `Authorization: Bearer ${token}`]]);
      const state = await copyState(target);
      log.info({ repo_id: id, from, changes: changes.length, refs: state.refs }, 'move: copy brought to the source writer’s refs');
      return state;
    });
  }

  /** Removes the copies this disk must not keep (see the file's comment); the ids removed. */
  async sweep(graceMs: number): Promise<string[]> {
    const { meta, log } = this.deps;
    // The disk first: a copy made after the listing is not in it.
    const onDisk = await this.deps.copies();
    const here = await repositoryIdsOnShard(meta.db, this.deps.shard);
    const candidates = onDisk.filter((id) => !here.has(id));
    if (candidates.length === 0) return [];
    const removed: string[] = [];
    for (const id of candidates) {
      await this.exclusive(id, async () => {
        // Read again under the repository's turn: a move may have started since.
        const [repo, keep] = await Promise.all([findRepositoryById(meta.db, id), copiesToKeep(meta, this.deps.shard, graceMs)]);
        if (repo?.shard === this.deps.shard || keep.has(id) || this.deps.inUse(id)) return;
        // No row: a repository being created (its directory comes first) or one deleted after it
        // moved away, which nothing else removes; the copy goes once untouched for the grace.
        if (!repo && !(await untouchedFor(this.deps.repoPath(id), graceMs))) return;
        await this.deps.removeCopy(id);
        removed.push(id);
        log.info({ repo_id: id, now_on: repo?.shard ?? null }, 'removed the copy of a repository that is not on this shard (moved away, deleted, or a failed move’s)');
      });
    }
    return removed;
  }

  private exclusive<T>(id: string, run: () => Promise<T>): Promise<T> {
    const before = this.busy.get(id) ?? Promise.resolve();
    const mine = before.catch(() => {}).then(run);
    const settled = mine.catch(() => {});
    this.busy.set(id, settled);
    void settled.then(() => {
      if (this.busy.get(id) === settled) this.busy.delete(id);
    });
    return mine;
  }
}
