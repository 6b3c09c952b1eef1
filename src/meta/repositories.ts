/** Repositories and their projects (the workflow record sharing the repository's ULID). */
import { compiledOnce, type Db } from './db.js';
import type { Visibility } from './schema.js';

export type LfsLayout = 'content' | 'readable';

export interface RepoRow {
  id: string;
  spaceId: string;
  spaceName: string;
  ownerId: string;
  ownerName: string;
  ownerKind: 'user' | 'org';
  name: string;
  visibility: Visibility;
  defaultBranch: string;
  shard: string;
  /** Whether pushes that change files locked by another user are refused. */
  enforceLocks: boolean;
  /** Where its LFS files are kept (docs/design/lfs-layout.md). */
  lfsLayout: LfsLayout;
  /** Ref patterns whose pushes publish LFS files in the readable layout; null: the default branch. */
  lfsPublishRefs: string[] | null;
  /** Base URL of the published tree, for people (a CDN); null when not served publicly. */
  lfsPublicUrl: string | null;
  /** The repository this one was forked from (the id stays when that repository is deleted). */
  forkOf: string | null;
  /** Its fork network's id (the network's first repository); its own id when it is no fork. */
  forkNetwork: string;
  createdAt: string;
  updatedAt: string;
}

function baseQuery(db: Db) {
  return db
    .selectFrom('repositories')
    .innerJoin('spaces', 'spaces.id', 'repositories.space_id')
    .innerJoin('owners', 'owners.id', 'spaces.owner_id')
    .select([
      'repositories.id',
      'repositories.space_id',
      'spaces.name as space_name',
      'owners.id as owner_id',
      'owners.name as owner_name',
      'owners.kind as owner_kind',
      'repositories.name',
      'repositories.visibility',
      'repositories.default_branch',
      'repositories.shard',
      'repositories.enforce_locks',
      'repositories.lfs_layout',
      'repositories.lfs_publish_refs',
      'repositories.lfs_public_url',
      'repositories.fork_of',
      'repositories.fork_network',
      'repositories.created_at',
      'repositories.updated_at',
    ]);
}

type BaseRow = Awaited<ReturnType<ReturnType<typeof baseQuery>['executeTakeFirstOrThrow']>>;

function toRepo(row: BaseRow): RepoRow {
  return {
    id: row.id,
    spaceId: row.space_id,
    spaceName: row.space_name,
    ownerId: row.owner_id,
    ownerName: row.owner_name,
    ownerKind: row.owner_kind,
    name: row.name,
    visibility: row.visibility,
    defaultBranch: row.default_branch,
    shard: row.shard,
    enforceLocks: row.enforce_locks !== 0,
    lfsLayout: row.lfs_layout === 'readable' ? 'readable' : 'content',
    lfsPublishRefs: row.lfs_publish_refs === null ? null : (JSON.parse(row.lfs_publish_refs) as string[]),
    lfsPublicUrl: row.lfs_public_url,
    forkOf: row.fork_of,
    forkNetwork: row.fork_network ?? row.id,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export async function insertRepository(
  db: Db,
  row: {
    id: string;
    spaceId: string;
    name: string;
    visibility: Visibility;
    defaultBranch: string;
    shard: string;
    createdAt: string;
    fork?: { of: string; network: string };
  },
): Promise<void> {
  await db
    .insertInto('repositories')
    .values({
      id: row.id,
      space_id: row.spaceId,
      name: row.name,
      visibility: row.visibility,
      default_branch: row.defaultBranch,
      shard: row.shard,
      ...(row.fork && { fork_of: row.fork.of, fork_network: row.fork.network }),
      created_at: row.createdAt,
      updated_at: row.createdAt,
    })
    .execute();
  await db.insertInto('projects').values({ id: row.id, tags: '[]', created_at: row.createdAt }).execute();
}

export async function findRepositoryByPath(
  db: Db,
  owner: string,
  space: string,
  name: string,
): Promise<RepoRow | undefined> {
  const [row] = await repositoryByPath(db, owner.toLowerCase(), space.toLowerCase(), name.toLowerCase());
  return row && toRepo(row);
}

/** On every git request: compiled once (db.ts); the names lower-cased. */
const repositoryByPath = compiledOnce((db, owner: string, space: string, name: string) =>
  baseQuery(db)
    .where((eb) => eb(eb.fn('lower', ['owners.name']), '=', owner))
    .where((eb) => eb(eb.fn('lower', ['spaces.name']), '=', space))
    .where((eb) => eb(eb.fn('lower', ['repositories.name']), '=', name)),
);

export async function findRepositoryById(db: Db, id: string): Promise<RepoRow | undefined> {
  const row = await baseQuery(db).where('repositories.id', '=', id).executeTakeFirst();
  return row && toRepo(row);
}

export interface RepoFilter {
  owner?: string | undefined;
  space?: string | undefined;
}

export async function listRepositories(db: Db, filter: RepoFilter = {}): Promise<RepoRow[]> {
  let q = baseQuery(db);
  if (filter.owner) q = q.where((eb) => eb(eb.fn('lower', ['owners.name']), '=', filter.owner!.toLowerCase()));
  if (filter.space) q = q.where((eb) => eb(eb.fn('lower', ['spaces.name']), '=', filter.space!.toLowerCase()));
  const rows = await q.orderBy('owners.name').orderBy('spaces.name').orderBy('repositories.name').execute();
  return rows.map(toRepo);
}

/** The ids of the repositories placed on `shard`. */
export async function repositoryIdsOnShard(db: Db, shard: string): Promise<Set<string>> {
  const rows = await db.selectFrom('repositories').select('id').where('shard', '=', shard).execute();
  return new Set(rows.map((r) => r.id));
}

export async function updateRepository(
  db: Db,
  id: string,
  change: {
    spaceId?: string;
    name?: string;
    visibility?: Visibility;
    enforceLocks?: boolean;
    lfsLayout?: LfsLayout;
    lfsPublishRefs?: string[] | null;
    lfsPublicUrl?: string | null;
    updatedAt: string;
  },
): Promise<void> {
  await db
    .updateTable('repositories')
    .set({
      ...(change.spaceId !== undefined && { space_id: change.spaceId }),
      ...(change.name !== undefined && { name: change.name }),
      ...(change.visibility !== undefined && { visibility: change.visibility }),
      ...(change.enforceLocks !== undefined && { enforce_locks: change.enforceLocks ? 1 : 0 }),
      ...(change.lfsLayout !== undefined && { lfs_layout: change.lfsLayout }),
      ...(change.lfsPublishRefs !== undefined && { lfs_publish_refs: change.lfsPublishRefs === null ? null : JSON.stringify(change.lfsPublishRefs) }),
      ...(change.lfsPublicUrl !== undefined && { lfs_public_url: change.lfsPublicUrl }),
      updated_at: change.updatedAt,
    })
    .where('id', '=', id)
    .execute();
}

export async function deleteRepository(db: Db, id: string): Promise<void> {
  await db.deleteFrom('projects').where('id', '=', id).execute();
  await db.deleteFrom('repositories').where('id', '=', id).execute();
}

/** Every member of a fork network, oldest first. */
export async function listNetwork(db: Db, network: string): Promise<RepoRow[]> {
  const rows = await baseQuery(db)
    .where((eb) => eb.or([eb('repositories.id', '=', network), eb('repositories.fork_network', '=', network)]))
    .orderBy('repositories.created_at')
    .orderBy('repositories.id')
    .execute();
  return rows.map(toRepo);
}

export async function getProjectTags(db: Db, id: string): Promise<string[]> {
  const [row] = await projectTags(db, id);
  return row ? (JSON.parse(row.tags) as string[]) : [];
}

/** On every git request: compiled once (db.ts). */
const projectTags = compiledOnce((db, id: string) => db.selectFrom('projects').select('tags').where('id', '=', id));

export async function setProjectTags(db: Db, id: string, tags: string[]): Promise<void> {
  await db.updateTable('projects').set({ tags: JSON.stringify(tags) }).where('id', '=', id).execute();
}
