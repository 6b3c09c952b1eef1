/**
 * Repository lifecycle: metadata rows and the bare repository on its host (host.ts), kept
 * together. A repository's directory is named by its ULID; its name lives only in SQL, so
 * rename and transfer never touch the disk. Creation writes the directory first and the row
 * second (a crash leaves an unreferenced directory, never a row without a repository);
 * deletion removes the row first, then the directory.
 */
import { newId } from '../shared/ids.js';
import { isUniqueViolation, now, type Db, type MetaStore } from '../meta/db.js';
import * as repos from '../meta/repositories.js';
import * as spaces from '../meta/spaces.js';
import * as owners from '../meta/owners.js';
import { appendAudit } from '../meta/audit.js';
import { appendEvents } from '../meta/webhooks.js';
import { repositoryEvent } from '../events/payloads.js';
import { handOverLinks } from '../meta/lfs.js';
import { cancelPending, enqueueJobs, RELAYOUT_REFS, ZERO_OID } from '../meta/lfs-publish.js';
import type { LfsLayout } from '../meta/repositories.js';
import { appendEvent } from '../meta/snapshots.js';
import type { Visibility } from '../meta/schema.js';
import { conflict, forbidden, invalid, notFound, unauthenticated } from '../shared/errors.js';
import { actorId, actorName, atLeast, ownerPermission, repoPermission, type Action, type Actor } from '../access/policy.js';
import { parseRepoPath, parseSpacePath, validateName, type RepoPath } from './names.js';
import { networkHeir, readableMembers } from './fork-network.js';
import type { HostOf } from './host.js';
import { placeNewRepository } from './placement.js';

export type RepoRow = repos.RepoRow;

/** The readable LFS layout's settings (docs/design/lfs-layout.md), checked by the caller. */
export interface LfsSettingsChange {
  lfsLayout?: LfsLayout;
  lfsPublishRefs?: string[] | null;
  lfsPublicUrl?: string | null;
}

export interface RepoInfo extends RepoRow {
  tags: string[];
}

export interface RepoServiceOptions {
  defaultBranch: string;
  /** The public origin (publicUrl) for clone URLs in repository events. */
  publicUrl?: string | undefined;
  /** The host of each repository. */
  hostOf: HostOf;
}

export function createRepoService(meta: MetaStore, defaults: RepoServiceOptions) {
  const { db } = meta;
  const { hostOf } = defaults;

  async function orgRole(actor: Actor, ownerId: string, ownerKind: 'user' | 'org') {
    if (actor.kind !== 'user' || ownerKind !== 'org') return undefined;
    return owners.findMembershipRole(db, ownerId, actor.userId);
  }

  async function permission(actor: Actor, repo: RepoRow): Promise<Action | 'none'> {
    return repoPermission(actor, {
      visibility: repo.visibility,
      ownerId: repo.ownerId,
      ownerKind: repo.ownerKind,
      orgRole: await orgRole(actor, repo.ownerId, repo.ownerKind),
    });
  }

  /**
   * Finds a repository and checks that the actor may take `action` on it. A repository the
   * actor cannot read is reported as not found to signed-in users, so its existence does
   * not leak; anonymous callers are asked to authenticate instead.
   */
  async function resolve(actor: Actor, where: RepoPath, action: Action): Promise<RepoInfo> {
    const repo = await repos.findRepositoryByPath(db, where.owner, where.space, where.repo);
    const label = `${where.owner}/${where.space}/${where.repo}`;
    const missing = () => notFound('repo_not_found', `repository not found: ${label}`, { repository: label });
    if (!repo) throw missing();
    const held = await permission(actor, repo);
    if (!atLeast(held, action)) {
      if (actor.kind === 'anonymous') throw unauthenticated('auth_required', `authentication required for ${label}`);
      if (held === 'none') throw missing();
      throw forbidden(
        action === 'write' ? 'write_denied' : 'admin_denied',
        `${actorName(actor)} has ${held} access to ${label}; ${action} access is required`,
        { repository: label },
      );
    }
    return { ...repo, tags: await repos.getProjectTags(db, repo.id) };
  }

  async function requireOwnerRole(actor: Actor, owner: owners.OwnerRow, need: Action) {
    if (actor.kind === 'anonymous') throw unauthenticated('auth_required', 'authentication required');
    const held = ownerPermission(actor, owner, await orgRole(actor, owner.id, owner.kind));
    if (!atLeast(held, need)) throw forbidden('owner_access_denied', `${need} access to '${owner.name}' required`);
  }

  async function findSpaceOrThrow(owner: string, space: string): Promise<spaces.SpaceRow> {
    const row = await spaces.findSpace(db, owner, space);
    if (!row) throw notFound('space_not_found', `space not found: ${owner}/${space}`, { space: `${owner}/${space}` });
    return row;
  }

  /** A repository event (events/payloads.ts) written in `trx`, for webhooks and event streams. */
  async function repoEvent(trx: Db, repoId: string, action: string, actor: Actor, extra: Record<string, unknown> = {}, row?: repos.RepoRow): Promise<void> {
    const repo = row ?? (await repos.findRepositoryById(trx, repoId));
    if (!repo) return;
    await appendEvents(trx, meta.dialect, [repositoryEvent(repo, action, { id: actorId(actor), name: actorName(actor) }, extra, defaults.publicUrl)], now());
  }

  return {
    resolve,

    /** Whether `actor` may read the repository with this id (false when it is gone). */
    async canRead(actor: Actor, repoId: string): Promise<boolean> {
      const repo = await repos.findRepositoryById(db, repoId);
      return repo !== undefined && atLeast(await permission(actor, repo), 'read');
    },

    /**
     * An owner (`OWNER`), a space (`OWNER/SPACE`) or a repository (`OWNER/SPACE/REPO`) on which
     * `actor` holds `need`: a repository's own permission, or the owner's for the other two
     * (`none`: an owner or space that exists, a repository the actor can read).
     */
    async resolveScope(actor: Actor, scopePath: string, need: Action | 'none'): Promise<{ ownerId: string; spaceId: string | null; repositoryId: string | null; label: string }> {
      const parts = scopePath.replace(/\.git$/, '').split('/');
      if (parts.length === 3) {
        const repo = await resolve(actor, parseRepoPath(scopePath), need === 'none' ? 'read' : need);
        return { ownerId: repo.ownerId, spaceId: repo.spaceId, repositoryId: repo.id, label: `${repo.ownerName}/${repo.spaceName}/${repo.name}` };
      }
      if (parts.length > 3 || parts.some((p) => p === '')) throw invalid('invalid_scope_path', `expected OWNER, OWNER/SPACE or OWNER/SPACE/REPO, not ${JSON.stringify(scopePath.slice(0, 200))}`);
      const owner = await owners.findOwnerByName(db, parts[0]!);
      if (!owner) throw notFound('owner_not_found', `owner not found: ${parts[0]}`, { owner: parts[0] });
      if (need !== 'none') await requireOwnerRole(actor, owner, need);
      if (parts.length === 1) return { ownerId: owner.id, spaceId: null, repositoryId: null, label: owner.name };
      const space = await findSpaceOrThrow(owner.name, parts[1]!);
      return { ownerId: owner.id, spaceId: space.id, repositoryId: null, label: `${owner.name}/${space.name}` };
    },

    /** Where a repository lives, for operators (the admin CLI prints it). */
    location(repo: { id: string; shard: string }): string {
      return hostOf(repo).location(repo.id);
    },

    /**
     * The repositories whose LFS objects `actor` may download through `repo` (see
     * fork-network.ts): `repo` itself and the members of its fork network the actor can read.
     */
    async lfsSources(actor: Actor, repo: RepoRow): Promise<string[]> {
      return readableMembers(repo, await repos.listNetwork(db, repo.forkNetwork), async (m) => permission(actor, m));
    },

    async createSpace(actor: Actor, spacePath: string, opts: { requestId?: string } = {}) {
      const where = parseSpacePath(spacePath);
      const owner = await owners.findOwnerByName(db, where.owner);
      if (!owner) throw notFound('owner_not_found', `owner not found: ${where.owner}`, { owner: where.owner });
      await requireOwnerRole(actor, owner, 'admin');
      const id = newId();
      const createdAt = now();
      try {
        await db.transaction().execute(async (trx) => {
          await spaces.insertSpace(trx, { id, ownerId: owner.id, name: where.space, createdAt });
          await appendAudit(trx, {
            at: createdAt,
            actorId: actorId(actor),
            actorName: actorName(actor),
            action: 'space.create',
            target: `${owner.name}/${where.space}`,
            requestId: opts.requestId ?? null,
          });
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict('space_exists', `space already exists: ${owner.name}/${where.space}`);
        throw err;
      }
      return { id, owner: owner.name, name: where.space, createdAt };
    },

    /** Any signed-in user may list spaces; anonymous callers see only public repositories. */
    async listSpaces(actor: Actor, ownerName?: string) {
      if (actor.kind === 'anonymous') throw unauthenticated('auth_required', 'authentication required');
      let ownerId: string | undefined;
      if (ownerName) {
        const owner = await owners.findOwnerByName(db, ownerName);
        if (!owner) throw notFound('owner_not_found', `owner not found: ${ownerName}`);
        ownerId = owner.id;
      }
      return spaces.listSpaces(db, ownerId);
    },

    async createRepo(
      actor: Actor,
      repoPath: string,
      opts: { visibility?: Visibility; defaultBranch?: string; lfsLayout?: LfsLayout; requestId?: string } = {},
    ): Promise<RepoInfo> {
      const where = parseRepoPath(repoPath);
      const space = await findSpaceOrThrow(where.owner, where.space);
      await requireOwnerRole(actor, { id: space.ownerId, name: space.ownerName, kind: space.ownerKind }, 'write');
      const existing = await repos.findRepositoryByPath(db, where.owner, where.space, where.repo);
      if (existing) throw conflict('repo_exists', `repository already exists: ${repoPath}`);
      const shard = await placeNewRepository(db, space);
      const id = newId();
      const createdAt = now();
      const visibility = opts.visibility ?? 'public';
      const defaultBranch = opts.defaultBranch ?? defaults.defaultBranch;
      const host = hostOf({ id, shard });
      await host.create({ id, defaultBranch });
      try {
        await db.transaction().execute(async (trx) => {
          await repos.insertRepository(trx, { id, spaceId: space.id, name: where.repo, visibility, defaultBranch, shard, createdAt });
          if (opts.lfsLayout === 'readable') await repos.updateRepository(trx, id, { lfsLayout: 'readable', updatedAt: createdAt });
          await appendAudit(trx, {
            at: createdAt,
            actorId: actorId(actor),
            actorName: actorName(actor),
            action: 'repo.create',
            repositoryId: id,
            target: `${space.ownerName}/${space.name}/${where.repo}`,
            details: { visibility },
            requestId: opts.requestId ?? null,
          });
          await repoEvent(trx, id, 'created', actor);
        });
      } catch (err) {
        await host.remove(id);
        if (isUniqueViolation(err)) throw conflict('repo_exists', `repository already exists: ${repoPath}`);
        throw err;
      }
      const row = await repos.findRepositoryById(db, id);
      return { ...row!, tags: [] };
    },

    /**
     * Forks `sourcePath` to `targetPath`: needs read access to the source and the right to
     * create repositories in the target's space (as createRepo). The fork gets every ref and
     * object of the source (a local, hardlinked copy, independent of the source afterwards),
     * joins the source's fork network (shared LFS objects) and starts dirty: its first
     * snapshot is incremental on the source's latest (docs/design/snapshots.md).
     */
    async forkRepo(
      actor: Actor,
      sourcePath: string,
      targetPath: string,
      opts: { visibility?: Visibility; requestId?: string } = {},
    ): Promise<RepoInfo> {
      const sourceWhere = parseRepoPath(sourcePath);
      let source = await resolve(actor, sourceWhere, 'read');
      // A fork copies everything; of a private repository only its administrators may make one,
      // and it stays private (issue 9: a read-only member published a private repository).
      if (source.visibility === 'private') {
        source = await resolve(actor, sourceWhere, 'admin');
        if (opts.visibility === 'public') throw privateForkPublic(`${source.ownerName}/${source.spaceName}/${source.name}`);
      }
      const where = parseRepoPath(targetPath);
      const space = await findSpaceOrThrow(where.owner, where.space);
      await requireOwnerRole(actor, { id: space.ownerId, name: space.ownerName, kind: space.ownerKind }, 'write');
      const existing = await repos.findRepositoryByPath(db, where.owner, where.space, where.repo);
      if (existing) throw conflict('repo_exists', `repository already exists: ${targetPath}`);
      const id = newId();
      const createdAt = now();
      const visibility = opts.visibility ?? source.visibility;
      const from = `${source.ownerName}/${source.spaceName}/${source.name}`;
      // A fork network shares objects on one filesystem: a fork stays on its source's shard and host.
      const host = hostOf(source);
      await host.create({ id, defaultBranch: source.defaultBranch, forkOf: source.id });
      try {
        await db.transaction().execute(async (trx) => {
          await repos.insertRepository(trx, {
            id,
            spaceId: space.id,
            name: where.repo,
            visibility,
            defaultBranch: source.defaultBranch,
            shard: source.shard,
            createdAt,
            fork: { of: source.id, network: source.forkNetwork },
          });
          // The fork keeps its source's LFS layout: its own pushes publish under its own prefix.
          if (source.lfsLayout !== 'content' || source.lfsPublishRefs !== null) {
            await repos.updateRepository(trx, id, { lfsLayout: source.lfsLayout, lfsPublishRefs: source.lfsPublishRefs, updatedAt: createdAt });
          }
          // Its refs came in without a push: this marks it dirty, so it gets its first snapshot.
          await appendEvent(trx, id, 'push-end', createdAt, { fork_of: source.id, request_id: opts.requestId ?? null });
          await appendAudit(trx, {
            at: createdAt,
            actorId: actorId(actor),
            actorName: actorName(actor),
            action: 'repo.fork',
            repositoryId: id,
            target: `${space.ownerName}/${space.name}/${where.repo}`,
            details: { from, fork_of: source.id, visibility },
            requestId: opts.requestId ?? null,
          });
          await repoEvent(trx, id, 'created', actor, { fork_of: from });
          await repoEvent(trx, source.id, 'forked', actor, { forkee: `${space.ownerName}/${space.name}/${where.repo}` });
        });
      } catch (err) {
        await host.remove(id);
        if (isUniqueViolation(err)) throw conflict('repo_exists', `repository already exists: ${targetPath}`);
        throw err;
      }
      const row = await repos.findRepositoryById(db, id);
      return { ...row!, tags: [] };
    },

    /** Repositories the actor can read, optionally under one owner or space. */
    async listRepos(actor: Actor, filter: { owner?: string; space?: string } = {}): Promise<RepoInfo[]> {
      const rows = await repos.listRepositories(db, filter);
      const visible: RepoInfo[] = [];
      for (const row of rows) {
        if (atLeast(await permission(actor, row), 'read')) visible.push({ ...row, tags: [] });
      }
      return visible;
    },

    /**
     * Renames a repository, or moves it to another space when `target` is OWNER/SPACE/REPO.
     * Metadata only: the directory on disk is named by the ULID and does not move.
     */
    async renameRepo(actor: Actor, repoPath: string, target: string, opts: { requestId?: string } = {}): Promise<RepoInfo> {
      const where = parseRepoPath(repoPath);
      const repo = await resolve(actor, where, 'admin');
      const to = target.includes('/') ? parseRepoPath(target) : { owner: repo.ownerName, space: repo.spaceName, repo: validateName('repository', target) };
      const space = await findSpaceOrThrow(to.owner, to.space);
      if (space.id !== repo.spaceId) {
        await requireOwnerRole(actor, { id: space.ownerId, name: space.ownerName, kind: space.ownerKind }, 'write');
      }
      const from = `${repo.ownerName}/${repo.spaceName}/${repo.name}`;
      try {
        await db.transaction().execute(async (trx) => {
          const clash = await repos.findRepositoryByPath(trx, to.owner, to.space, to.repo);
          if (clash && clash.id !== repo.id) throw conflict('repo_exists', `repository already exists: ${to.owner}/${to.space}/${to.repo}`);
          await repos.updateRepository(trx, repo.id, { spaceId: space.id, name: to.repo, updatedAt: now() });
          await appendAudit(trx, {
            at: now(),
            actorId: actorId(actor),
            actorName: actorName(actor),
            action: 'repo.rename',
            repositoryId: repo.id,
            target: from,
            details: { from, to: `${space.ownerName}/${space.name}/${to.repo}` },
            requestId: opts.requestId ?? null,
          });
          await repoEvent(trx, repo.id, 'renamed', actor, { changes: { full_name: { from } } });
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict('repo_exists', `repository already exists: ${target}`);
        throw err;
      }
      const row = await repos.findRepositoryById(db, repo.id);
      return { ...row!, tags: repo.tags };
    },

    async updateRepo(
      actor: Actor,
      repoPath: string,
      change: { visibility?: Visibility; tags?: string[]; enforceLocks?: boolean } & LfsSettingsChange,
      opts: { requestId?: string } = {},
    ): Promise<RepoInfo> {
      const repo = await resolve(actor, parseRepoPath(repoPath), 'admin');
      if (change.visibility === 'public' && repo.forkOf) {
        const source = await repos.findRepositoryById(db, repo.forkOf);
        if (source?.visibility === 'private') throw privateForkPublic(`${source.ownerName}/${source.spaceName}/${source.name}`);
      }
      await db.transaction().execute(async (trx) => {
        const lfs = {
          ...(change.lfsLayout !== undefined && { lfsLayout: change.lfsLayout }),
          ...(change.lfsPublishRefs !== undefined && { lfsPublishRefs: change.lfsPublishRefs }),
          ...(change.lfsPublicUrl !== undefined && { lfsPublicUrl: change.lfsPublicUrl }),
        };
        if (change.visibility !== undefined || change.enforceLocks !== undefined || Object.keys(lfs).length > 0) {
          await repos.updateRepository(trx, repo.id, {
            ...(change.visibility !== undefined && { visibility: change.visibility }),
            ...(change.enforceLocks !== undefined && { enforceLocks: change.enforceLocks }),
            ...lfs,
            updatedAt: now(),
          });
        }
        // Turned readable (or its published refs changed): the history its refs reach is
        // published too, in the background (lfs/publisher.ts, a relayout job).
        const nowReadable = (change.lfsLayout ?? repo.lfsLayout) === 'readable';
        if (nowReadable && (repo.lfsLayout !== 'readable' || change.lfsPublishRefs !== undefined)) {
          await enqueueJobs(trx, meta.dialect, repo.id, 'relayout', [{ ref: RELAYOUT_REFS, oldOid: ZERO_OID, newOid: ZERO_OID }], now());
        }
        // Back to content: nothing more is published (what was stays, and keeps being served).
        if (!nowReadable && repo.lfsLayout === 'readable') await cancelPending(trx, repo.id, 'cancelled: the repository was set to the content layout', now());
        if (change.tags) await repos.setProjectTags(trx, repo.id, change.tags);
        await appendAudit(trx, {
          at: now(),
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'repo.update',
          repositoryId: repo.id,
          target: `${repo.ownerName}/${repo.spaceName}/${repo.name}`,
          details: { ...change },
          requestId: opts.requestId ?? null,
        });
        if (change.visibility !== undefined && change.visibility !== repo.visibility) {
          await repoEvent(trx, repo.id, 'visibility_changed', actor, { changes: { visibility: { from: repo.visibility } } });
        }
      });
      const row = await repos.findRepositoryById(db, repo.id);
      return { ...row!, tags: change.tags ?? repo.tags };
    },

    async deleteRepo(actor: Actor, repoPath: string, opts: { requestId?: string } = {}): Promise<RepoInfo> {
      const repo = await resolve(actor, parseRepoPath(repoPath), 'admin');
      await db.transaction().execute(async (trx) => {
        // The rest of its fork network keeps the LFS objects it could download through this one,
        // through an heir whose readers could all read this one (see networkHeir).
        const heir = networkHeir(repo, await repos.listNetwork(trx, repo.forkNetwork));
        // Its published versions are retired with it (their repository_id set null): the LFS
        // publisher gives every object still linked elsewhere its content copy back, then
        // deletes them (lfs/publisher.ts).
        if (heir) await handOverLinks(trx, repo.id, heir.id);
        await repos.deleteRepository(trx, repo.id);
        await appendAudit(trx, {
          at: now(),
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'repo.delete',
          repositoryId: repo.id,
          target: `${repo.ownerName}/${repo.spaceName}/${repo.name}`,
          requestId: opts.requestId ?? null,
        });
        await repoEvent(trx, repo.id, 'deleted', actor, {}, repo);
      });
      await hostOf(repo).remove(repo.id);
      return repo;
    },

    async recordPush(
      repoId: string,
      who: { actorId: string | null; actorName: string },
      updates: { ref: string; oldOid: string; newOid: string }[],
      requestId: string | null,
      /** The transaction to write in (a storage node's fenced one); default the store itself. */
      into: Db = db,
    ): Promise<void> {
      const repo = await repos.findRepositoryById(into, repoId);
      await appendAudit(into, {
        at: now(),
        actorId: who.actorId,
        actorName: who.actorName,
        action: 'push',
        repositoryId: repoId,
        target: repo ? `${repo.ownerName}/${repo.spaceName}/${repo.name}` : repoId,
        details: { refs: updates.map((u) => ({ ref: u.ref, old: u.oldOid, new: u.newOid })) },
        requestId,
      });
    },
  };

}

export type RepoService = ReturnType<typeof createRepoService>;

function privateForkPublic(source: string) {
  return invalid('private_fork_public', `a fork of the private repository ${source} cannot be public`, { source });
}
