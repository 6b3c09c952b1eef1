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
    .select(['owners.id', 'owners.name', 'users.is_admin'])
    .where((eb) => eb(eb.fn('lower', ['owners.name']), '=', name.toLowerCase()))
    .executeTakeFirst();
  return row && { id: row.id, name: row.name, isAdmin: row.is_admin === 1 };
}

export async function listUsers(db: Db): Promise<UserRow[]> {
  const rows = await db
    .selectFrom('owners')
    .innerJoin('users', 'users.id', 'owners.id')
    .select(['owners.id', 'owners.name', 'users.is_admin'])
    .orderBy('owners.name')
    .execute();
  return rows.map((r) => ({ id: r.id, name: r.name, isAdmin: r.is_admin === 1 }));
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
