/**
 * SSH keys of users (issue 14): the service behind `gitstratum ssh-key …` and
 * `/api/v1/users/{user}/keys`. A user manages their own keys, a site administrator anyone's.
 * A key authenticates its user over SSH as a token does over HTTP: with the key's scope (read
 * or write; a read key is a deploy key), never while the user is disabled. Every change is
 * written to the audit log in the same transaction.
 */
import type { MetaStore } from '../meta/db.js';
import { isUniqueViolation, now } from '../meta/db.js';
import * as owners from '../meta/owners.js';
import * as keys from '../meta/ssh-keys.js';
import { appendAudit } from '../meta/audit.js';
import { newId } from '../shared/ids.js';
import { conflict, invalid, notFound, unauthenticated } from '../shared/errors.js';
import { parsePublicKey } from '../ssh/public-key.js';
import { parseTokenName } from './tokens.js';
import { actorId, actorName, requireSiteAdmin, type Actor } from './policy.js';

export interface SshKeyInfo {
  id: string;
  user: string;
  name: string | null;
  type: string;
  fingerprint: string;
  scope: 'read' | 'write';
  createdAt: string;
  lastUsedAt: string | null;
  /** The key as a `.pub` line (without its comment). */
  publicKey: string;
}

/** last_used_at is refreshed at most this often, so authentications rarely write. */
const TOUCH_INTERVAL_MS = 60_000;

function info(row: keys.SshKeyRow): SshKeyInfo {
  return {
    id: row.id,
    user: row.userName,
    name: row.name,
    type: row.type,
    fingerprint: row.fingerprint,
    scope: row.scope,
    createdAt: row.createdAt,
    lastUsedAt: row.lastUsedAt,
    publicKey: `${row.type} ${row.publicKey}`,
  };
}

export type SshKeys = ReturnType<typeof createSshKeys>;

export function createSshKeys(meta: MetaStore) {
  const { db } = meta;

  /** The user `actor` may manage keys of: themself, or anyone for a site administrator. */
  async function managedUser(actor: Actor, userName: string): Promise<owners.UserRow> {
    if (actor.kind === 'anonymous') throw unauthenticated('auth_required', 'authentication required');
    const user = await owners.findUserByName(db, userName);
    if (!user) throw notFound('user_not_found', `user '${userName}' not found`, { name: userName });
    if (!(actor.kind === 'user' && actor.userId === user.id)) requireSiteAdmin(actor);
    return user;
  }

  return {
    async add(actor: Actor, userName: string, text: string, opts: { name?: string | undefined; scope?: string | undefined; requestId?: string } = {}): Promise<SshKeyInfo> {
      const user = await managedUser(actor, userName);
      const key = parsePublicKey(text);
      const scope = opts.scope ?? 'write';
      if (scope !== 'read' && scope !== 'write') throw invalid('invalid_scope', 'an SSH key’s scope is read or write', { value: scope });
      // A key added with a read token can only read: nothing grants more than the caller has.
      if (scope === 'write' && actor.kind === 'user' && actor.scope === 'read') {
        throw invalid('scope_exceeds_token', 'cannot add a write key with a read token');
      }
      const name = opts.name === undefined ? key.comment && /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(key.comment) ? key.comment : null : parseTokenName(opts.name);
      const id = newId();
      const createdAt = now();
      try {
        await db.transaction().execute(async (trx) => {
          await keys.insertSshKey(trx, { id, userId: user.id, name, type: key.type, publicKey: key.blob, fingerprint: key.fingerprint, scope, createdAt });
          await appendAudit(trx, {
            at: createdAt,
            actorId: actorId(actor),
            actorName: actorName(actor),
            action: 'ssh_key.add',
            target: user.name,
            details: { key_id: id, fingerprint: key.fingerprint, type: key.type, scope, ...(name !== null && { name }) },
            requestId: opts.requestId ?? null,
          });
        });
      } catch (err) {
        // Whose it is stays unsaid: the fingerprint of someone else's key is not a lookup service.
        if (isUniqueViolation(err)) throw conflict('ssh_key_exists', `this key (${key.fingerprint}) is already registered; a key can belong to one user only`);
        throw err;
      }
      return { id, user: user.name, name, type: key.type, fingerprint: key.fingerprint, scope, createdAt, lastUsedAt: null, publicKey: `${key.type} ${key.blob}` };
    },

    async list(actor: Actor, userName: string): Promise<SshKeyInfo[]> {
      const user = await managedUser(actor, userName);
      return (await keys.listSshKeys(db, user.id)).map(info);
    },

    async remove(actor: Actor, id: string, opts: { requestId?: string } = {}): Promise<SshKeyInfo> {
      if (actor.kind === 'anonymous') throw unauthenticated('auth_required', 'authentication required');
      const row = await keys.findSshKeyById(db, id);
      const self = row && actor.kind === 'user' && actor.userId === row.userId;
      // Someone else's key is "not found" unless the caller administers the site.
      if (!row || (!self && !(actor.kind === 'system' || (actor.kind === 'user' && actor.isAdmin)))) {
        throw notFound('ssh_key_not_found', `SSH key '${id}' not found`, { id });
      }
      if (!self) requireSiteAdmin(actor);
      const at = now();
      await db.transaction().execute(async (trx) => {
        await keys.deleteSshKey(trx, id);
        await appendAudit(trx, {
          at,
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'ssh_key.remove',
          target: row.userName,
          details: { key_id: id, fingerprint: row.fingerprint },
          requestId: opts.requestId ?? null,
        });
      });
      return info(row);
    },

    /**
     * The actor of an authorization `git-lfs-authenticate` issued through key `keyId` to user
     * `userId` with `scope`: refused once the key is gone or its user disabled.
     */
    async grantActor(grant: { sub: string | null; keyId: string | null; scope: 'read' | 'write' }): Promise<Actor> {
      if (grant.sub === null) return { kind: 'anonymous' };
      const row = grant.keyId ? await keys.findSshKeyById(db, grant.keyId) : undefined;
      if (!row || row.userId !== grant.sub || row.userDisabledAt) throw unauthenticated('invalid_token', 'the SSH key this authorization came through is no longer valid');
      const scope = row.scope === 'read' ? 'read' : grant.scope;
      return { kind: 'user', userId: row.userId, name: row.userName, isAdmin: row.isAdmin, scope, tokenId: null };
    },

    /**
     * The actor of a key presented over SSH (by its blob), or undefined when no user may use
     * it: unknown, or its user disabled. The signature is the SSH server's to verify;
     * `proven`: it was, so the key's last use is recorded.
     */
    async authenticate(fingerprint: string, opts: { proven: boolean }): Promise<{ actor: Actor & { kind: 'user' }; key: SshKeyInfo } | undefined> {
      const row = await keys.findSshKeyByFingerprint(db, fingerprint);
      if (!row || row.userDisabledAt) return undefined;
      if (opts.proven && (!row.lastUsedAt || Date.parse(row.lastUsedAt) < Date.now() - TOUCH_INTERVAL_MS)) await keys.touchSshKey(db, row.id, now());
      return { actor: { kind: 'user', userId: row.userId, name: row.userName, isAdmin: row.isAdmin, scope: row.scope, tokenId: null }, key: info(row) };
    },
  };
}
