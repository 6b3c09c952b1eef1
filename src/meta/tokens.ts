/** Access tokens, stored as SHA-256 hashes of the secret. */
import { compiledOnce, type Db } from './db.js';
import type { Role } from './schema.js';

export interface TokenRow {
  id: string;
  userId: string;
  userName: string;
  isAdmin: boolean;
  scope: Role;
  expiresAt: string | null;
  lastUsedAt: string | null;
  revokedAt: string | null;
  createdAt: string;
  name: string | null;
  /** Set while the token's user is disabled: the token does not authenticate then. */
  userDisabledAt: string | null;
  parentId: string | null;
}

export async function insertToken(
  db: Db,
  row: { id: string; userId: string; tokenHash: string; scope: Role; expiresAt: string | null; createdAt: string; name: string | null; parentId?: string | null },
): Promise<void> {
  await db
    .insertInto('access_tokens')
    .values({
      id: row.id,
      user_id: row.userId,
      token_hash: row.tokenHash,
      scope: row.scope,
      expires_at: row.expiresAt,
      created_at: row.createdAt,
      name: row.name,
      parent_id: row.parentId ?? null,
    })
    .execute();
}

function tokenQuery(db: Db) {
  return db
    .selectFrom('access_tokens')
    .innerJoin('users', 'users.id', 'access_tokens.user_id')
    .innerJoin('owners', 'owners.id', 'access_tokens.user_id')
    .select([
      'access_tokens.id',
      'access_tokens.user_id',
      'owners.name',
      'users.is_admin',
      'access_tokens.scope',
      'access_tokens.expires_at',
      'access_tokens.last_used_at',
      'access_tokens.revoked_at',
      'access_tokens.created_at',
      'access_tokens.name as token_name',
      'users.disabled_at',
      'access_tokens.parent_id',
    ]);
}

type Raw = Awaited<ReturnType<ReturnType<typeof tokenQuery>['executeTakeFirstOrThrow']>>;

function toToken(r: Raw): TokenRow {
  return {
    id: r.id,
    userId: r.user_id,
    userName: r.name,
    isAdmin: r.is_admin === 1,
    scope: r.scope,
    expiresAt: r.expires_at,
    lastUsedAt: r.last_used_at,
    revokedAt: r.revoked_at,
    createdAt: r.created_at,
    name: r.token_name,
    userDisabledAt: r.disabled_at,
    parentId: r.parent_id,
  };
}

/** On every authenticated request: compiled once (db.ts). */
const tokenByHash = compiledOnce((db, tokenHash: string) => tokenQuery(db).where('access_tokens.token_hash', '=', tokenHash));

export async function findTokenByHash(db: Db, tokenHash: string): Promise<TokenRow | undefined> {
  const [row] = await tokenByHash(db, tokenHash);
  return row && toToken(row);
}

export async function findTokenById(db: Db, id: string): Promise<TokenRow | undefined> {
  const row = await tokenQuery(db).where('access_tokens.id', '=', id).executeTakeFirst();
  return row && toToken(row);
}

export async function listTokens(db: Db, userId: string): Promise<TokenRow[]> {
  const rows = await tokenQuery(db).where('access_tokens.user_id', '=', userId).orderBy('access_tokens.id').execute();
  return rows.map(toToken);
}

export async function touchToken(db: Db, id: string, at: string): Promise<void> {
  await db.updateTable('access_tokens').set({ last_used_at: at }).where('id', '=', id).execute();
}

/**
 * Revokes a token and every live token descended from it (created with it, or with one of
 * those); returns the ids revoked, the token's own first. One level per query: lineages are
 * short, and the index on parent_id keeps each level cheap.
 */
export async function revokeToken(db: Db, id: string, at: string): Promise<string[]> {
  const revoked: string[] = [];
  let frontier = [id];
  const seen = new Set(frontier);
  while (frontier.length > 0) {
    await db.updateTable('access_tokens').set({ revoked_at: at }).where('id', 'in', frontier).where('revoked_at', 'is', null).execute();
    revoked.push(...frontier);
    // Children of an already revoked token are followed too: one created in the window of an
    // earlier, interrupted revocation must not survive this one.
    const children = await db.selectFrom('access_tokens').select('id').where('parent_id', 'in', frontier).execute();
    frontier = children.map((c) => c.id).filter((c) => !seen.has(c));
    for (const c of frontier) seen.add(c);
  }
  return revoked;
}

/**
 * Claims a live parent for a new child token in the caller's transaction: the update takes the
 * parent's row lock (PostgreSQL) or the write lock (SQLite), so a concurrent revocation either
 * happened before (false: refuse the child) or finds the child when it cascades.
 */
export async function lockLiveParent(db: Db, parentId: string, at: string): Promise<boolean> {
  const result = await db
    .updateTable('access_tokens')
    .set({ last_used_at: at })
    .where('id', '=', parentId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}
