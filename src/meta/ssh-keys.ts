/** SSH public keys of users (access/ssh-keys.ts is the service). */
import type { Db } from './db.js';

export interface SshKeyRow {
  id: string;
  userId: string;
  userName: string;
  isAdmin: boolean;
  /** Set while the key's user is disabled: the key does not authenticate then. */
  userDisabledAt: string | null;
  name: string | null;
  type: string;
  publicKey: string;
  fingerprint: string;
  scope: 'read' | 'write';
  createdAt: string;
  lastUsedAt: string | null;
}

export async function insertSshKey(
  db: Db,
  row: { id: string; userId: string; name: string | null; type: string; publicKey: string; fingerprint: string; scope: 'read' | 'write'; createdAt: string },
): Promise<void> {
  await db
    .insertInto('ssh_keys')
    .values({
      id: row.id,
      user_id: row.userId,
      name: row.name,
      key_type: row.type,
      public_key: row.publicKey,
      fingerprint: row.fingerprint,
      scope: row.scope,
      created_at: row.createdAt,
    })
    .execute();
}

function keyQuery(db: Db) {
  return db
    .selectFrom('ssh_keys')
    .innerJoin('users', 'users.id', 'ssh_keys.user_id')
    .innerJoin('owners', 'owners.id', 'ssh_keys.user_id')
    .select([
      'ssh_keys.id',
      'ssh_keys.user_id',
      'owners.name as user_name',
      'users.is_admin',
      'users.disabled_at',
      'ssh_keys.name',
      'ssh_keys.key_type',
      'ssh_keys.public_key',
      'ssh_keys.fingerprint',
      'ssh_keys.scope',
      'ssh_keys.created_at',
      'ssh_keys.last_used_at',
    ]);
}

type Row = Awaited<ReturnType<ReturnType<typeof keyQuery>['executeTakeFirstOrThrow']>>;

function toKey(r: Row): SshKeyRow {
  return {
    id: r.id,
    userId: r.user_id,
    userName: r.user_name,
    isAdmin: r.is_admin !== 0,
    userDisabledAt: r.disabled_at,
    name: r.name,
    type: r.key_type,
    publicKey: r.public_key,
    fingerprint: r.fingerprint,
    scope: r.scope,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
  };
}

export async function findSshKeyByFingerprint(db: Db, fingerprint: string): Promise<SshKeyRow | undefined> {
  const r = await keyQuery(db).where('ssh_keys.fingerprint', '=', fingerprint).executeTakeFirst();
  return r && toKey(r);
}

export async function findSshKeyById(db: Db, id: string): Promise<SshKeyRow | undefined> {
  const r = await keyQuery(db).where('ssh_keys.id', '=', id).executeTakeFirst();
  return r && toKey(r);
}

export async function listSshKeys(db: Db, userId: string): Promise<SshKeyRow[]> {
  return (await keyQuery(db).where('ssh_keys.user_id', '=', userId).orderBy('ssh_keys.created_at').execute()).map(toKey);
}

export async function deleteSshKey(db: Db, id: string): Promise<void> {
  await db.deleteFrom('ssh_keys').where('id', '=', id).execute();
}

export async function touchSshKey(db: Db, id: string, at: string): Promise<void> {
  await db.updateTable('ssh_keys').set({ last_used_at: at }).where('id', '=', id).execute();
}
