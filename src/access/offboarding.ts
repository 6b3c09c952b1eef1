/**
 * Ending a user's access: disable (every token stops authenticating at once, nothing is
 * lost, enable restores it), release their LFS locks, delete. Site administrators only; each
 * action writes its audit entry in the same transaction as the change.
 *
 * Delete is refused while the user owns repositories (named in the refusal): a repository
 * holds work other people may need, and moving it (`repo rename` to another owner's space) or
 * deleting it is a decision for a person, never a side effect. What goes with the user:
 * tokens, memberships, LFS locks and their empty spaces. The audit log keeps their name.
 */
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { appendAudit } from '../meta/audit.js';
import * as owners from '../meta/owners.js';
import * as lfs from '../meta/lfs.js';
import * as repositories from '../meta/repositories.js';
import type { RepoService } from '../repos/service.js';
import { parseRepoPath } from '../repos/names.js';
import { conflict, forbidden, notFound } from '../shared/errors.js';
import type { UserInfo } from './accounts.js';
import { actorId, actorName, requireSiteAdmin, type Actor } from './policy.js';

/** A released lock, as administrators see it. */
export interface ReleasedLock {
  id: string;
  repository: string;
  path: string;
}

interface Opts {
  requestId?: string | undefined;
}

/** How many owned repositories a refused delete names before "and N more". */
const NAMED_REPOS = 20;

export function createOffboarding(meta: MetaStore, deps: { repos: Pick<RepoService, 'resolve'> }) {
  const { db } = meta;

  async function userByName(name: string): Promise<owners.UserRow> {
    const user = await owners.findUserByName(db, name);
    if (!user) throw notFound('user_not_found', `user '${name}' not found`, { name });
    return user;
  }

  /** An administrator who locks themselves out needs the local command line to get back in. */
  function refuseSelf(actor: Actor, user: owners.UserRow, what: string): void {
    if (actor.kind === 'user' && actor.userId === user.id) throw forbidden('self_offboarding', `you cannot ${what} your own user`);
  }

  function entry(actor: Actor, action: string, target: string, details: Record<string, unknown>, opts: Opts, repositoryId?: string) {
    return { at: now(), actorId: actorId(actor), actorName: actorName(actor), action, target, details, requestId: opts.requestId ?? null, repositoryId: repositoryId ?? null };
  }

  async function describe(locks: lfs.LockRow[]): Promise<ReleasedLock[]> {
    const names = new Map<string, string>();
    for (const id of new Set(locks.map((l) => l.repositoryId))) {
      const r = await repositories.findRepositoryById(db, id);
      names.set(id, r ? `${r.ownerName}/${r.spaceName}/${r.name}` : id);
    }
    return locks.map((l) => ({ id: l.id, repository: names.get(l.repositoryId)!, path: l.path }));
  }

  return {
    /**
     * Disables a user: their tokens stay (and work again after `enable`), but none
     * authenticates. With `releaseLocks`, their LFS locks are deleted in the same transaction.
     */
    async disable(actor: Actor, name: string, opts: Opts & { releaseLocks?: boolean } = {}): Promise<{ user: UserInfo; releasedLocks: ReleasedLock[] }> {
      requireSiteAdmin(actor);
      const user = await userByName(name);
      refuseSelf(actor, user, 'disable');
      const disabledAt = user.disabledAt ?? now();
      const released = await db.transaction().execute(async (trx) => {
        await owners.setDisabled(trx, user.id, disabledAt);
        const locks = opts.releaseLocks ? await lfs.deleteLocksOf(trx, user) : [];
        await appendAudit(trx, entry(actor, 'user.disable', user.name, { release_locks: !!opts.releaseLocks, locks_released: locks.length }, opts));
        return locks;
      });
      return { user: { ...user, disabledAt }, releasedLocks: await describe(released) };
    },

    async enable(actor: Actor, name: string, opts: Opts = {}): Promise<UserInfo> {
      requireSiteAdmin(actor);
      const user = await userByName(name);
      await db.transaction().execute(async (trx) => {
        await owners.setDisabled(trx, user.id, null);
        await appendAudit(trx, entry(actor, 'user.enable', user.name, {}, opts));
      });
      return { ...user, disabledAt: null };
    },

    /** Force-releases a user's LFS locks, in one repository (`repo`, OWNER/SPACE/REPO) or all. */
    async releaseLocks(actor: Actor, name: string, opts: Opts & { repo?: string | undefined } = {}): Promise<{ user: string; released: ReleasedLock[] }> {
      requireSiteAdmin(actor);
      const user = await userByName(name);
      const repo = opts.repo === undefined ? undefined : await deps.repos.resolve(actor, parseRepoPath(opts.repo), 'admin');
      const released = await db.transaction().execute(async (trx) => {
        const locks = await lfs.deleteLocksOf(trx, user, repo?.id);
        const details = { user: user.name, count: locks.length, ...(repo && { repository: `${repo.ownerName}/${repo.spaceName}/${repo.name}` }) };
        await appendAudit(trx, entry(actor, 'lock.release_all', user.name, details, opts, repo?.id));
        return locks;
      });
      return { user: user.name, released: await describe(released) };
    },

    async delete(actor: Actor, name: string, opts: Opts = {}): Promise<{ user: string; id: string }> {
      requireSiteAdmin(actor);
      const user = await userByName(name);
      refuseSelf(actor, user, 'delete');
      await db.transaction().execute(async (trx) => {
        const owned = await repositories.listRepositories(trx, { owner: user.name });
        if (owned.length > 0) {
          const names = owned.slice(0, NAMED_REPOS).map((r) => `${r.ownerName}/${r.spaceName}/${r.name}`);
          const more = owned.length > NAMED_REPOS ? ` and ${owned.length - NAMED_REPOS} more` : '';
          const [what, them] = owned.length === 1 ? ['a repository', 'it'] : [`${owned.length} repositories`, 'them'];
          throw conflict(
            'user_owns_repositories',
            `user '${user.name}' owns ${what}: ${names.join(', ')}${more}; move ${them} to another owner (repo rename) or delete ${them} first`,
            { user: user.name, repositories: names },
          );
        }
        const memberships = await owners.countMemberships(trx, user.id);
        const locks = await lfs.deleteLocksOf(trx, user);
        await owners.deleteUser(trx, user.id);
        await appendAudit(trx, entry(actor, 'user.delete', user.name, { user_id: user.id, memberships, locks_released: locks.length }, opts));
      });
      return { user: user.name, id: user.id };
    },
  };
}

export type Offboarding = ReturnType<typeof createOffboarding>;
