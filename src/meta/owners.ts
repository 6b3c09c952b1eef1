/** Owners (users and organizations), users, organizations and memberships. */
import type { Db } from './db.js';
import type { Role } from './schema.js';

export interface OwnerRow {
  id: string;
  name: string;
  kind: 'user' | 'org';
}

export interface UserRow {
  id: string;
  name: string;
  isAdmin: boolean;
  /** Set while the user is disabled. */
  disabledAt: string | null;
}

export async function insertOwner(db: Db, row: OwnerRow & { createdAt: string }): Promise<void> {
  await db
    .insertInto('owners')
    .values({ id: row.id, name: row.name, kind: row.kind, created_at: row.createdAt })
    .execute();
  if (row.kind === 'user') {
    await db.insertInto('users').values({ id: row.id, is_admin: 0, created_at: row.createdAt }).execute();
  } else {
    await db.insertInto('organizations').values({ id: row.id, created_at: row.createdAt }).execute();
  }
}

export async function setAdmin(db: Db, userId: string, isAdmin: boolean): Promise<void> {
  await db.updateTable('users').set({ is_admin: isAdmin ? 1 : 0 }).where('id', '=', userId).execute();
}

export async function findOwnerByName(db: Db, name: string): Promise<OwnerRow | undefined> {
  return db
    .selectFrom('owners')
    .select(['id', 'name', 'kind'])
    .where((eb) => eb(eb.fn('lower', ['name']), '=', name.toLowerCase()))
    .executeTakeFirst();
}

export async function findUserByName(db: Db, name: string): Promise<UserRow | undefined> {
  const row = await db
    .selectFrom('owners')
    .innerJoin('users', 'users.id', 'owners.id')
    .select(['owners.id', 'owners.name', 'users.is_admin', 'users.disabled_at'])
    .where((eb) => eb(eb.fn('lower', ['owners.name']), '=', name.toLowerCase()))
    .executeTakeFirst();
  return row && { id: row.id, name: row.name, isAdmin: row.is_admin === 1, disabledAt: row.disabled_at };
}

export async function findUserById(db: Db, id: string): Promise<UserRow | undefined> {
  const row = await db
    .selectFrom('owners')
    .innerJoin('users', 'users.id', 'owners.id')
    .select(['owners.id', 'owners.name', 'users.is_admin', 'users.disabled_at'])
    .where('owners.id', '=', id)
    .executeTakeFirst();
  return row && { id: row.id, name: row.name, isAdmin: row.is_admin === 1, disabledAt: row.disabled_at };
}

export async function listUsers(db: Db): Promise<UserRow[]> {
  const rows = await db
    .selectFrom('owners')
    .innerJoin('users', 'users.id', 'owners.id')
    .select(['owners.id', 'owners.name', 'users.is_admin', 'users.disabled_at'])
    .orderBy('owners.name')
    .execute();
  return rows.map((r) => ({ id: r.id, name: r.name, isAdmin: r.is_admin === 1, disabledAt: r.disabled_at }));
}

export async function setDisabled(db: Db, userId: string, at: string | null): Promise<void> {
  await db.updateTable('users').set({ disabled_at: at }).where('id', '=', userId).execute();
}

/**
 * Removes a user and what only they held: tokens, memberships, LFS locks and their (empty)
 * spaces. The caller has checked that those spaces hold no repository; the foreign key
 * (`on delete restrict`) refuses the space delete if one appeared since. The audit log keeps
 * the user's name and id (it has no foreign key).
 */
export async function deleteUser(db: Db, userId: string): Promise<void> {
  await db.deleteFrom('access_tokens').where('user_id', '=', userId).execute();
  await db.deleteFrom('memberships').where('user_id', '=', userId).execute();
  await db.deleteFrom('lfs_locks').where('owner_id', '=', userId).execute();
  await db.deleteFrom('spaces').where('owner_id', '=', userId).execute();
  await db.deleteFrom('users').where('id', '=', userId).execute();
  await db.deleteFrom('owners').where('id', '=', userId).execute();
}

export interface OrgRow {
  id: string;
  name: string;
  createdAt: string;
  members: number;
}

export async function listOrgs(db: Db): Promise<OrgRow[]> {
  const rows = await db
    .selectFrom('owners')
    .innerJoin('organizations', 'organizations.id', 'owners.id')
    .leftJoin('memberships', 'memberships.org_id', 'owners.id')
    .select((eb) => ['owners.id', 'owners.name', 'organizations.created_at', eb.fn.count<number | string>('memberships.user_id').as('members')])
    .groupBy(['owners.id', 'owners.name', 'organizations.created_at'])
    .orderBy('owners.name')
    .execute();
  return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at, members: Number(r.members) }));
}

export async function countMemberships(db: Db, userId: string): Promise<number> {
  const row = await db
    .selectFrom('memberships')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

export async function deleteMembership(db: Db, orgId: string, userId: string): Promise<void> {
  await db.deleteFrom('memberships').where('org_id', '=', orgId).where('user_id', '=', userId).execute();
}

export async function upsertMembership(
  db: Db,
  m: { orgId: string; userId: string; role: Role; createdAt: string },
): Promise<void> {
  await db
    .insertInto('memberships')
    .values({ org_id: m.orgId, user_id: m.userId, role: m.role, created_at: m.createdAt })
    .onConflict((oc) => oc.columns(['org_id', 'user_id']).doUpdateSet({ role: m.role }))
    .execute();
}

export async function findMembershipRole(db: Db, orgId: string, userId: string): Promise<Role | undefined> {
  const row = await db
    .selectFrom('memberships')
    .select('role')
    .where('org_id', '=', orgId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row?.role;
}

export async function listMemberships(db: Db, orgId: string): Promise<{ user: string; role: Role }[]> {
  const rows = await db
    .selectFrom('memberships')
    .innerJoin('owners', 'owners.id', 'memberships.user_id')
    .select(['owners.name', 'memberships.role'])
    .where('memberships.org_id', '=', orgId)
    .orderBy('owners.name')
    .execute();
  return rows.map((r) => ({ user: r.name, role: r.role }));
}
