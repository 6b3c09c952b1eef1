/**
 * Users, organizations, memberships and access tokens: the service behind both the CLI
 * and the REST API. Every change is written to the audit log in the same transaction.
 */
import { newId } from '../shared/ids.js';
import type { MetaStore } from '../meta/db.js';
import { isUniqueViolation, now } from '../meta/db.js';
import type { Role } from '../meta/schema.js';
import * as owners from '../meta/owners.js';
import * as tokens from '../meta/tokens.js';
import { appendAudit } from '../meta/audit.js';
import { validateName } from '../repos/names.js';
import { conflict, forbidden, notFound, unauthenticated } from '../shared/errors.js';
import { actorId, actorName, ownerPermission, atLeast, requireSiteAdmin, type Actor } from './policy.js';
import { DEFAULT_MAX_TOKEN_DAYS, hashToken, newTokenSecret, parseDuration, parseTokenName } from './tokens.js';

export interface UserInfo {
  id: string;
  name: string;
  isAdmin: boolean;
  /** Set while the user is disabled: none of their tokens authenticates. */
  disabledAt: string | null;
}

export interface TokenInfo {
  id: string;
  user: string;
  scope: Role;
  expiresAt: string | null;
  lastUsedAt: string | null;
  revokedAt: string | null;
  createdAt: string;
  /** A label for people, such as `ci-deploy`. */
  name: string | null;
  /** Past its expiry (it no longer authenticates). */
  expired: boolean;
  /** The token this one was created with, if any: revoking that one revokes this one. */
  parentId: string | null;
}

export interface AccountSettings {
  /** Longest lifetime a token may be given (setting tokenMaxLifetimeDays). */
  tokenMaxLifetimeDays: number;
}

/** last_used_at is refreshed at most this often, so token checks rarely write. */
const TOUCH_INTERVAL_MS = 60_000;

export function createAccounts(meta: MetaStore, settings: AccountSettings = { tokenMaxLifetimeDays: DEFAULT_MAX_TOKEN_DAYS }) {
  const { db } = meta;
  const maxLifetimeMs = settings.tokenMaxLifetimeDays * 86400e3;

  function requireUser(actor: Actor): void {
    if (actor.kind === 'anonymous') throw unauthenticated('auth_required', 'authentication required');
  }

  async function audit(actor: Actor, action: string, target: string, details: Record<string, unknown> = {}, requestId?: string) {
    await appendAudit(db, {
      at: now(),
      actorId: actorId(actor),
      actorName: actorName(actor),
      action,
      target,
      details,
      requestId: requestId ?? null,
    });
  }

  async function createOwner(actor: Actor, kind: 'user' | 'org', rawName: string, opts: { admin?: boolean; requestId?: string }) {
    const name = validateName('owner', rawName);
    const id = newId();
    const createdAt = now();
    try {
      await db.transaction().execute(async (trx) => {
        await owners.insertOwner(trx, { id, name, kind, createdAt });
        if (kind === 'user' && opts.admin) await owners.setAdmin(trx, id, true);
        if (kind === 'org' && actor.kind === 'user') {
          await owners.upsertMembership(trx, { orgId: id, userId: actor.userId, role: 'admin', createdAt });
        }
        await appendAudit(trx, {
          at: createdAt,
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: kind === 'user' ? 'user.create' : 'org.create',
          target: name,
          details: kind === 'user' ? { admin: !!opts.admin } : {},
          requestId: opts.requestId ?? null,
        });
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict('owner_exists', `owner '${name}' already exists`, { name });
      throw err;
    }
    return { id, name };
  }

  async function userByName(name: string): Promise<owners.UserRow> {
    const user = await owners.findUserByName(db, name);
    if (!user) throw notFound('user_not_found', `user '${name}' not found`, { name });
    return user;
  }

  async function orgByName(name: string): Promise<owners.OwnerRow> {
    const org = await owners.findOwnerByName(db, name);
    if (!org || org.kind !== 'org') throw notFound('org_not_found', `organization '${name}' not found`, { name });
    return org;
  }

  /** The organization, when `actor` administers it (or is a site admin or the system). */
  async function orgAdministeredBy(actor: Actor, orgName: string): Promise<owners.OwnerRow> {
    requireUser(actor);
    const org = await orgByName(orgName);
    const myRole = actor.kind === 'user' ? await owners.findMembershipRole(db, org.id, actor.userId) : undefined;
    if (!atLeast(ownerPermission(actor, org, myRole), 'admin')) {
      throw forbidden('org_admin_required', `administrator role in '${org.name}' required`);
    }
    return org;
  }

  /** The one check of a token's current state, whoever presents it. */
  async function tokenActor(row: tokens.TokenRow | undefined): Promise<Actor> {
    assertUsable(row);
    if (!row.lastUsedAt || Date.parse(row.lastUsedAt) < Date.now() - TOUCH_INTERVAL_MS) {
      await tokens.touchToken(db, row.id, now());
    }
    return { kind: 'user', userId: row.userId, name: row.userName, isAdmin: row.isAdmin, scope: row.scope, tokenId: row.id };
  }

  return {
    async createUser(actor: Actor, name: string, opts: { admin?: boolean; requestId?: string } = {}): Promise<UserInfo> {
      requireSiteAdmin(actor);
      const { id, name: stored } = await createOwner(actor, 'user', name, opts);
      return { id, name: stored, isAdmin: !!opts.admin, disabledAt: null };
    },

    async listUsers(actor: Actor): Promise<UserInfo[]> {
      requireSiteAdmin(actor);
      return owners.listUsers(db);
    },

    async createOrg(actor: Actor, name: string, opts: { requestId?: string } = {}): Promise<{ id: string; name: string }> {
      requireUser(actor);
      if (actor.kind === 'user' && actor.scope !== 'admin') throw forbidden('admin_scope_required', 'token with admin scope required');
      return createOwner(actor, 'org', name, opts);
    },

    async addMember(actor: Actor, orgName: string, userName: string, role: Role, opts: { requestId?: string } = {}) {
      const org = await orgAdministeredBy(actor, orgName);
      const user = await userByName(userName);
      await db.transaction().execute(async (trx) => {
        await owners.upsertMembership(trx, { orgId: org.id, userId: user.id, role, createdAt: now() });
        await appendAudit(trx, {
          at: now(),
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'org.member.set',
          target: org.name,
          details: { user: user.name, role },
          requestId: opts.requestId ?? null,
        });
      });
      return { org: org.name, user: user.name, role };
    },

    async listMembers(actor: Actor, orgName: string) {
      requireUser(actor);
      const org = await orgByName(orgName);
      return owners.listMemberships(db, org.id);
    },

    /**
     * Ends a membership: the user's access through the organization stops with their next
     * request (permissions are looked up on every request, nothing caches them).
     */
    async removeMember(actor: Actor, orgName: string, userName: string, opts: { requestId?: string } = {}) {
      const org = await orgAdministeredBy(actor, orgName);
      const user = await userByName(userName);
      await db.transaction().execute(async (trx) => {
        const role = await owners.findMembershipRole(trx, org.id, user.id);
        if (!role) throw notFound('member_not_found', `${user.name} is not a member of ${org.name}`, { org: org.name, user: user.name });
        await owners.deleteMembership(trx, org.id, user.id);
        await appendAudit(trx, {
          at: now(),
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'org.member.remove',
          target: org.name,
          details: { user: user.name, role },
          requestId: opts.requestId ?? null,
        });
      });
      return { org: org.name, user: user.name };
    },

    /** Every organization with its member count. Names are not secret (they are in URLs). */
    async listOrgs(actor: Actor): Promise<owners.OrgRow[]> {
      requireUser(actor);
      return owners.listOrgs(db);
    },

    async createToken(
      actor: Actor,
      userName: string,
      scope: Role,
      opts: { expires?: string | undefined; name?: string | undefined; requestId?: string } = {},
    ): Promise<TokenInfo & { token: string }> {
      requireUser(actor);
      const user = await userByName(userName);
      const self = actor.kind === 'user' && actor.userId === user.id;
      if (!self) requireSiteAdmin(actor);
      // A token can never be stronger than the token that made it…
      if (actor.kind === 'user' && !atLeast(actor.scope, scope)) {
        throw forbidden('scope_exceeds_token', `cannot create a ${scope} token with a ${actor.scope} token`);
      }
      const createdAt = now();
      let expiresAt = opts.expires ? new Date(Date.now() + parseDuration(opts.expires, maxLifetimeMs)).toISOString() : null;
      // …nor outlive it: its expiry is capped at the parent's, and revoking the parent revokes it.
      const parentId = actor.kind === 'user' ? actor.tokenId : null;
      if (parentId) {
        const parent = await tokens.findTokenById(db, parentId);
        if (parent?.expiresAt && (expiresAt === null || parent.expiresAt < expiresAt)) expiresAt = parent.expiresAt;
      }
      const name = opts.name === undefined ? null : parseTokenName(opts.name);
      const secret = newTokenSecret();
      const id = newId();
      await db.transaction().execute(async (trx) => {
        if (parentId && !(await tokens.lockLiveParent(trx, parentId, createdAt))) {
          throw unauthenticated('invalid_token', 'invalid or revoked access token');
        }
        await tokens.insertToken(trx, { id, userId: user.id, tokenHash: hashToken(secret), scope, expiresAt, createdAt, name, parentId });
        await appendAudit(trx, {
          at: createdAt,
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'token.create',
          target: user.name,
          details: { token_id: id, scope, expires_at: expiresAt, ...(name !== null && { name }), ...(parentId && { parent_id: parentId }) },
          requestId: opts.requestId ?? null,
        });
      });
      return { id, user: user.name, scope, expiresAt, lastUsedAt: null, revokedAt: null, createdAt, name, expired: false, parentId, token: secret };
    },

    async listTokens(actor: Actor, userName: string): Promise<TokenInfo[]> {
      requireUser(actor);
      const user = await userByName(userName);
      if (!(actor.kind === 'user' && actor.userId === user.id)) requireSiteAdmin(actor);
      return (await tokens.listTokens(db, user.id)).map(tokenInfo);
    },

    async revokeToken(actor: Actor, id: string, opts: { requestId?: string } = {}): Promise<TokenInfo> {
      requireUser(actor);
      const row = await tokens.findTokenById(db, id);
      const self = row && actor.kind === 'user' && actor.userId === row.userId;
      if (!row || (!self && !(actor.kind === 'system' || (actor.kind === 'user' && actor.isAdmin)))) {
        throw notFound('token_not_found', `token '${id}' not found`, { id });
      }
      if (!self) requireSiteAdmin(actor);
      const at = now();
      await db.transaction().execute(async (trx) => {
        // Its descendants go with it: a token made with a token never outlives it.
        const lineage = await tokens.revokeToken(trx, id, at);
        await appendAudit(trx, {
          at,
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'token.revoke',
          target: row.userName,
          details: { token_id: id, ...(lineage.length > 1 && { descendants: lineage.slice(1) }) },
          requestId: opts.requestId ?? null,
        });
      });
      return { ...tokenInfo(row), revokedAt: row.revokedAt ?? at };
    },

    /** Turns a presented secret into an actor, or refuses it. */
    async authenticate(secret: string): Promise<Actor> {
      return tokenActor(await tokens.findTokenByHash(db, hashToken(secret)));
    },

    /**
     * The actor of a token known by id, checked as `authenticate` checks a secret: for
     * authorizations derived from a token (LFS transfer URLs), which end when it does.
     */
    async authenticateTokenId(id: string): Promise<Actor> {
      return tokenActor(await tokens.findTokenById(db, id));
    },

    audit,
  };
}

/**
 * Whether a token may act now: known, not revoked, its user not disabled, not expired. Every
 * way a token is presented goes through this on every use (nothing caches the answer), so
 * revoking a token or disabling its user stops git, LFS and the API at once.
 */
export function assertUsable(row: tokens.TokenRow | undefined): asserts row is tokens.TokenRow {
  if (!row || row.revokedAt) throw unauthenticated('invalid_token', 'invalid or revoked access token');
  if (row.userDisabledAt) throw unauthenticated('user_disabled', `user '${row.userName}' is disabled`);
  if (row.expiresAt && row.expiresAt <= now()) throw unauthenticated('expired_token', 'access token expired');
}

function tokenInfo(row: tokens.TokenRow): TokenInfo {
  return {
    id: row.id,
    user: row.userName,
    scope: row.scope,
    expiresAt: row.expiresAt,
    lastUsedAt: row.lastUsedAt,
    revokedAt: row.revokedAt,
    createdAt: row.createdAt,
    name: row.name,
    expired: row.expiresAt !== null && row.expiresAt <= now(),
    parentId: row.parentId,
  };
}

export type Accounts = ReturnType<typeof createAccounts>;
