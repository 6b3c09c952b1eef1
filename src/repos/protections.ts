/**
 * Protected branches (issue 13): per-repository rules on branch name patterns (`main`,
 * `release/*`), enforced in pre-receive, so they hold over HTTP and SSH alike and for every
 * ref of a push (a refused push changes nothing: git's pre-receive refuses it whole).
 *
 * A rule on a pattern may forbid force pushes (an update that is not a fast-forward) and
 * deletions, limit pushes to the repository's administrators, and require a linear history
 * (no merge commits among the commits the push brings to the branch). Where several rules
 * match a branch, each of them applies. A pattern is a glob over the branch name: `*` within
 * one path segment, `**` across them.
 *
 * Who counts as an administrator is the pusher's role on the repository (owner, organization
 * role, site administrator), whatever the scope of the token or key used, which already had
 * to allow writing.
 */
import picomatch from 'picomatch';
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { appendAudit } from '../meta/audit.js';
import { findMembershipRole, findUserById } from '../meta/owners.js';
import { findRepositoryById } from '../meta/repositories.js';
import * as p from '../meta/protections.js';
import type { ProtectionRule } from '../meta/protections.js';
import { runGit } from '../git/command.js';
import { actorId, actorName, repoPermission, type Actor } from '../access/policy.js';
import { invalid, notFound } from '../shared/errors.js';
import type { RepoService } from './service.js';
import { parseRepoPath } from './names.js';

export type { ProtectionRule } from '../meta/protections.js';

const ZERO_OID = /^0+$/;
const MAX_RULES = 100;

/** A pattern as git would accept it in a branch name, plus the glob characters. */
export function checkPattern(pattern: string): string {
  const p = pattern.trim().replace(/^refs\/heads\//, '');
  const bad =
    p.length === 0 ||
    p.length > 200 ||
    /[\x00-\x20\x7f~^:?\\[]/.test(p) ||
    p.startsWith('/') ||
    p.endsWith('/') ||
    p.endsWith('.') ||
    p.includes('//') ||
    p.includes('..') ||
    p.includes('@{');
  if (bad) throw invalid('invalid_pattern', `not a branch name pattern: ${JSON.stringify(pattern.slice(0, 200))} (e.g. main, release/*, hotfix/**)`);
  return p;
}

/** Whether a branch name (without refs/heads/) matches a rule's pattern. */
export function branchMatches(pattern: string, branch: string): boolean {
  return picomatch.isMatch(branch, pattern, { dot: true, nonegate: true, noextglob: true, nobrace: true });
}

export interface RefUpdate {
  oldOid: string;
  newOid: string;
  ref: string;
}

export function createProtections(meta: MetaStore, repos: RepoService) {
  const { db } = meta;

  async function administered(actor: Actor, repoPath: string) {
    const where = parseRepoPath(repoPath);
    const repo = await repos.resolve(actor, where, 'admin');
    return { repo, label: `${where.owner}/${where.space}/${where.repo}` };
  }

  /** Whether the user administers the repository (its owner, an org admin, a site admin). */
  async function isRepoAdmin(userId: string, repoId: string): Promise<boolean> {
    const [user, repo] = await Promise.all([findUserById(db, userId), findRepositoryById(db, repoId)]);
    if (!user || !repo) return false;
    const orgRole = repo.ownerKind === 'org' ? await findMembershipRole(db, repo.ownerId, userId) : undefined;
    const actor: Actor = { kind: 'user', userId, name: user.name, isAdmin: user.isAdmin, scope: 'admin', tokenId: null };
    return repoPermission(actor, { visibility: repo.visibility, ownerId: repo.ownerId, ownerKind: repo.ownerKind, orgRole }) === 'admin';
  }

  /** Why the update breaks the rule, or undefined. */
  async function breach(rule: ProtectionRule, u: RefUpdate, branch: string, ctx: { repoPath: string; env: Record<string, string>; admin: () => Promise<boolean> }): Promise<string | undefined> {
    const deleting = ZERO_OID.test(u.newOid);
    const creating = ZERO_OID.test(u.oldOid);
    if (rule.pushRole === 'admin' && !(await ctx.admin())) return `only the repository's administrators may push to ${branch}`;
    if (deleting) return rule.allowDeletion ? undefined : `${branch} may not be deleted`;
    if (!creating && !rule.allowForcePush) {
      const ff = await runGit(['--git-dir', ctx.repoPath, 'merge-base', '--is-ancestor', u.oldOid, u.newOid], { env: ctx.env, check: false });
      if (ff.code === 1) return `${branch} may not be force-pushed (${u.oldOid.slice(0, 10)} is not an ancestor of ${u.newOid.slice(0, 10)})`;
      if (ff.code !== 0) throw new Error(`git merge-base failed: ${ff.stderr.trim()}`);
    }
    if (rule.linearHistory) {
      const range = creating ? [u.newOid, '--not', '--all'] : [u.newOid, `^${u.oldOid}`];
      const merges = await runGit(['--git-dir', ctx.repoPath, 'rev-list', '--min-parents=2', '--max-count=1', ...range], { env: ctx.env });
      const merge = merges.stdout.trim();
      if (merge) return `${branch} requires a linear history, and ${merge.slice(0, 10)} is a merge commit (rebase instead of merging)`;
    }
    return undefined;
  }

  return {
    async list(actor: Actor, repoPath: string) {
      const where = parseRepoPath(repoPath);
      const repo = await repos.resolve(actor, where, 'read');
      return p.listProtections(db, repo.id);
    },

    /** Creates or replaces the rule for `rule.pattern`; repository administrators only. */
    async protect(actor: Actor, repoPath: string, rule: ProtectionRule, opts: { requestId?: string } = {}) {
      const { repo, label } = await administered(actor, repoPath);
      const clean = { ...rule, pattern: checkPattern(rule.pattern) };
      const existing = await p.listProtections(db, repo.id);
      if (existing.length >= MAX_RULES && !existing.some((r) => r.pattern === clean.pattern)) {
        throw invalid('too_many_rules', `${label} has ${MAX_RULES} protection rules already; remove one first`);
      }
      await db.transaction().execute(async (trx) => {
        await p.upsertProtection(trx, repo.id, clean, now());
        await appendAudit(trx, { at: now(), actorId: actorId(actor), actorName: actorName(actor), action: 'repo.protect', repositoryId: repo.id, target: label, details: { ...clean }, requestId: opts.requestId ?? null });
      });
      return (await p.listProtections(db, repo.id)).find((r) => r.pattern === clean.pattern)!;
    },

    async unprotect(actor: Actor, repoPath: string, pattern: string, opts: { requestId?: string } = {}) {
      const { repo, label } = await administered(actor, repoPath);
      const clean = checkPattern(pattern);
      await db.transaction().execute(async (trx) => {
        if (!(await p.removeProtection(trx, repo.id, clean))) throw notFound('protection_not_found', `${label} has no protection rule for ${clean}`);
        await appendAudit(trx, { at: now(), actorId: actorId(actor), actorName: actorName(actor), action: 'repo.unprotect', repositoryId: repo.id, target: label, details: { pattern: clean }, requestId: opts.requestId ?? null });
      });
    },

    /**
     * For the pre-receive hook: the refusal message when an update breaks a rule of the
     * repository (the push's commits are read from git's quarantine), else undefined. The
     * refusal is audited.
     */
    async refusedByProtection(
      repo: { id: string; path: string },
      pusher: { id: string | null; name: string; requestId: string | null },
      updates: RefUpdate[],
      quarantineEnv: Record<string, string>,
    ): Promise<string | undefined> {
      const branches = updates.filter((u) => u.ref.startsWith('refs/heads/'));
      if (branches.length === 0) return undefined;
      const rules = await p.listProtections(db, repo.id);
      if (rules.length === 0) return undefined;
      let admin: Promise<boolean> | undefined;
      // A push with no user (the local command line, a server-side job) is the operator's.
      const isAdmin = () => (admin ??= pusher.id ? isRepoAdmin(pusher.id, repo.id) : Promise.resolve(true));
      for (const u of branches) {
        const branch = u.ref.slice('refs/heads/'.length);
        for (const rule of rules) {
          if (!branchMatches(rule.pattern, branch)) continue;
          const why = await breach(rule, u, branch, { repoPath: repo.path, env: quarantineEnv, admin: isAdmin });
          if (!why) continue;
          await appendAudit(db, {
            at: now(),
            actorId: pusher.id,
            actorName: pusher.name,
            action: 'push.refused',
            repositoryId: repo.id,
            target: u.ref,
            details: { rule: rule.pattern, reason: why, old: u.oldOid, new: u.newOid },
            requestId: pusher.requestId,
          }).catch(() => {});
          return [`gitstratum: push refused by the protection rule for '${rule.pattern}': ${why}`, 'a repository administrator can change the rule (gitstratum repo protect, or the API)'].join('\n');
        }
      }
      return undefined;
    },
  };
}

export type Protections = ReturnType<typeof createProtections>;
