/** Spaces: named groups of repositories, each belonging to one owner. */
import type { Db } from './db.js';

export interface SpaceRow {
  id: string;
  ownerId: string;
  ownerName: string;
  ownerKind: 'user' | 'org';
  name: string;
  createdAt: string;
}

export async function insertSpace(
  db: Db,
  row: { id: string; ownerId: string; name: string; createdAt: string },
): Promise<void> {
  await db
    .insertInto('spaces')
    .values({ id: row.id, owner_id: row.ownerId, name: row.name, created_at: row.createdAt })
    .execute();
}

export async function findSpace(db: Db, ownerName: string, spaceName: string): Promise<SpaceRow | undefined> {
  const row = await db
    .selectFrom('spaces')
    .innerJoin('owners', 'owners.id', 'spaces.owner_id')
    .select(['spaces.id', 'spaces.owner_id', 'owners.name as owner_name', 'owners.kind', 'spaces.name', 'spaces.created_at'])
    .where((eb) => eb(eb.fn('lower', ['owners.name']), '=', ownerName.toLowerCase()))
    .where((eb) => eb(eb.fn('lower', ['spaces.name']), '=', spaceName.toLowerCase()))
    .executeTakeFirst();
  return (
    row && {
      id: row.id,
      ownerId: row.owner_id,
      ownerName: row.owner_name,
      ownerKind: row.kind,
      name: row.name,
      createdAt: row.created_at,
    }
  );
}

export async function listSpaces(db: Db, ownerId?: string): Promise<SpaceRow[]> {
  let q = db
    .selectFrom('spaces')
    .innerJoin('owners', 'owners.id', 'spaces.owner_id')
    .select(['spaces.id', 'spaces.owner_id', 'owners.name as owner_name', 'owners.kind', 'spaces.name', 'spaces.created_at']);
  if (ownerId) q = q.where('spaces.owner_id', '=', ownerId);
  const rows = await q.orderBy('owners.name').orderBy('spaces.name').execute();
  return rows.map((row) => ({
    id: row.id,
    ownerId: row.owner_id,
    ownerName: row.owner_name,
    ownerKind: row.kind,
    name: row.name,
    createdAt: row.created_at,
  }));
}
