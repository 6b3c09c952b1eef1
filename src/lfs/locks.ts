/**
 * LFS file locks (docs/api/locking.md): the project's leases on files. Stored in SQL, one
 * lock per path per repository, owned by a user, surviving restarts. Besides the API the
 * git-lfs client uses, the server enforces them on push (see `refusedByLocks`): git-lfs
 * checks locks only on the client, which a plain `git push` skips.
 */
import { newId } from '../shared/ids.js';
import type { Db, MetaStore } from '../meta/db.js';
import { findRepositoryById } from '../meta/repositories.js';
import { appendEvents } from '../meta/webhooks.js';
import { lockEvent } from '../events/payloads.js';
import { isUniqueViolation, now } from '../meta/db.js';
import * as lfs from '../meta/lfs.js';
import { conflict, forbidden, invalid, notFound } from '../shared/errors.js';
import { runGit } from '../git/command.js';
import type { LockJson } from './wire.js';

export interface Locker {
  userId: string;
  name: string;
  /** Repository admins may force-unlock others' locks. */
  isRepoAdmin: boolean;
}

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;

export function toLockJson(l: lfs.LockRow): LockJson {
  return { id: l.id, path: l.path, locked_at: l.lockedAt, owner: { name: l.ownerName } };
}

/** Lock paths are repository-relative with forward slashes; nothing that escapes the tree. */
export function normalizeLockPath(raw: string): string {
  const p = raw.replace(/\\/g, '/').replace(/^\.\//, '');
  if (p.startsWith('/') || p.split('/').some((seg) => seg === '..' || seg === '') || p.includes('\0')) {
    throw invalid('invalid_lock_path', `invalid lock path: ${raw}`);
  }
  return p;
}

function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw invalid('invalid_limit', 'limit must be a positive integer');
  return Math.min(limit, MAX_LIMIT);
}

/**
 * The path is locked already. The message names the owner: git-lfs prints only the message
 * of a refused lock ("Locking x failed: <message>"), not the lock the 409 carries.
 */
export class LockConflict extends Error {
  constructor(readonly lock: lfs.LockRow) {
    super(`${lock.path} is already locked by ${lock.ownerName} (lock ${lock.id})`);
  }
}

export function createLocks(meta: MetaStore, opts: { publicUrl?: string | undefined } = {}) {
  const { db } = meta;

  /** The lock's event (events/payloads.ts), in the transaction that took or released it. */
  async function lockChanged(trx: Db, lock: lfs.LockRow, action: 'created' | 'released', who: Locker): Promise<void> {
    const repo = await findRepositoryById(trx, lock.repositoryId);
    if (!repo) return;
    const event = lockEvent(repo, action, { id: lock.id, path: lock.path, owner: lock.ownerName, lockedAt: lock.lockedAt }, { id: who.userId, name: who.name }, opts.publicUrl);
    await appendEvents(trx, meta.dialect, [event], now());
  }

  return {
    async create(repoId: string, who: Locker, rawPath: string, ref: string | null): Promise<lfs.LockRow> {
      const path = normalizeLockPath(rawPath);
      const row = { id: newId(), repositoryId: repoId, path, ownerId: who.userId, ref, lockedAt: now().replace(/\.\d{3}Z$/, 'Z') };
      try {
        await db.transaction().execute(async (trx) => {
          await lfs.insertLock(trx, row);
          await lockChanged(trx, { ...row, ownerName: who.name }, 'created', who);
        });
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        const existing = await lfs.findLock(db, repoId, { path });
        if (existing) throw new LockConflict(existing);
        throw conflict('lock_exists', 'already locked');
      }
      return { ...row, ownerName: who.name };
    },

    async list(repoId: string, q: { path?: string; id?: string; cursor?: string; limit?: number }) {
      const limit = pageLimit(q.limit);
      const rows = await lfs.listLocks(db, repoId, {
        ...(q.path !== undefined && { path: normalizeLockPath(q.path) }),
        ...(q.id !== undefined && { id: q.id }),
        ...(q.cursor !== undefined && { cursor: q.cursor }),
        limit: limit + 1,
      });
      const page = rows.slice(0, limit);
      return { locks: page, nextCursor: rows.length > limit ? page[page.length - 1]!.id : undefined };
    },

    async verify(repoId: string, who: Locker, q: { cursor?: string; limit?: number }) {
      const page = await this.list(repoId, q);
      return {
        ours: page.locks.filter((l) => l.ownerId === who.userId),
        theirs: page.locks.filter((l) => l.ownerId !== who.userId),
        nextCursor: page.nextCursor,
      };
    },

    async unlock(repoId: string, who: Locker, id: string, force: boolean): Promise<lfs.LockRow> {
      const lock = await lfs.findLock(db, repoId, { id });
      if (!lock) throw notFound('lock_not_found', `lock ${id} not found`);
      if (lock.ownerId !== who.userId) {
        if (!force) throw forbidden('lock_owned_by_other', `lock ${id} on ${lock.path} is owned by ${lock.ownerName}; use --force to break it`);
        if (!who.isRepoAdmin) throw forbidden('force_unlock_denied', `only repository administrators can force-unlock a lock owned by ${lock.ownerName}`);
      }
      await db.transaction().execute(async (trx) => {
        await lfs.deleteLock(trx, id);
        await lockChanged(trx, lock, 'released', who);
      });
      return lock;
    },

    /**
     * For the pre-receive hook: the refusal message if the push changes a path locked by
     * someone else, else undefined. Paths changed are those touched by commits the push
     * introduces (not yet reachable from any ref), merges included, read from the
     * quarantine git gives hooks.
     */
    async refusedByLocks(
      repo: { id: string; path: string },
      pusherId: string | null,
      updates: { oldOid: string; newOid: string; ref: string }[],
      quarantineEnv: Record<string, string>,
    ): Promise<string | undefined> {
      if (!(await lfs.enforcesLocks(db, repo.id)) || (await lfs.countLocks(db, repo.id)) === 0) return undefined;
      const tips = updates.map((u) => u.newOid).filter((oid) => /^[0-9a-f]{40,64}$/.test(oid) && !/^0+$/.test(oid));
      if (tips.length === 0) return undefined;
      // --cc: without it git log shows no files for merge commits, so a change made in a
      // merge (an "evil merge", a conflict resolution) slipped past the locks. The dense
      // combined diff names the files a merge changed relative to every parent, and not the
      // files it merely brought in from one side (merging main into a branch stays allowed).
      // -z: otherwise git quotes paths with non-ASCII or special characters ("caf\303\251"),
      // and they never matched the lock's path.
      const { stdout } = await runGit(
        ['--git-dir', repo.path, 'log', '-z', '--format=', '--name-only', '--no-renames', '--cc', ...tips, '--not', '--all'],
        { env: quarantineEnv },
      );
      const paths = [...new Set(stdout.split('\0').filter(Boolean))];
      const locks = (await lfs.locksOnPaths(db, repo.id, paths)).filter((l) => l.ownerId !== pusherId);
      if (locks.length === 0) return undefined;
      const lines = locks.slice(0, 20).map((l) => `  ${l.path} is locked by ${l.ownerName} (lock ${l.id})`);
      if (locks.length > 20) lines.push(`  … and ${locks.length - 20} more`);
      return ['gitstratum: push refused: it changes files locked by someone else:', ...lines, 'ask the lock owner to unlock them (git lfs unlock), or an admin to force it'].join('\n');
    },
  };
}

export type Locks = ReturnType<typeof createLocks>;
