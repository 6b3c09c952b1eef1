/**
 * Size quotas and usage (docs/design/quotas.md). A quota column holds null (the configured
 * default applies), 0 (no limit) or a limit in bytes. Git bytes are stored per repository as
 * last measured; LFS bytes are summed from lfs_objects when asked.
 */
import { inChunks, type Db } from './db.js';

/** What a repository or owner uses, and its own quota column (before defaults apply). */
export interface StoredUsage {
  gitBytes: number;
  lfsBytes: number;
  quotaBytes: number | null;
}

export interface RepoUsageRow extends StoredUsage {
  repositoryId: string;
  ownerId: string;
  /** OWNER/SPACE/REPO */
  fullName: string;
}

export interface OwnerUsageRow extends StoredUsage {
  ownerId: string;
  ownerName: string;
}

/** bigint columns come back as strings from PostgreSQL, numbers from SQLite. */
const num = (v: number | string | null | undefined): number => Number(v ?? 0);
const quota = (v: number | string | null | undefined): number | null => (v === null || v === undefined ? null : Number(v));

export async function setRepositoryQuota(db: Db, repositoryId: string, bytes: number | null): Promise<void> {
  await db.updateTable('repositories').set({ quota_bytes: bytes }).where('id', '=', repositoryId).execute();
}

export async function setOwnerQuota(db: Db, ownerId: string, bytes: number | null): Promise<void> {
  await db.updateTable('owners').set({ quota_bytes: bytes }).where('id', '=', ownerId).execute();
}

/** The quota columns of a repository and of its owner (null: the configured default applies). */
export async function quotaColumns(db: Db, repositoryId: string): Promise<{ ownerId: string; repo: number | null; owner: number | null } | undefined> {
  const row = await db
    .selectFrom('repositories')
    .innerJoin('spaces', 'spaces.id', 'repositories.space_id')
    .innerJoin('owners', 'owners.id', 'spaces.owner_id')
    .select(['owners.id as owner_id', 'repositories.quota_bytes as repo_quota', 'owners.quota_bytes as owner_quota'])
    .where('repositories.id', '=', repositoryId)
    .executeTakeFirst();
  return row && { ownerId: row.owner_id, repo: quota(row.repo_quota), owner: quota(row.owner_quota) };
}

export async function recordGitBytes(db: Db, repositoryId: string, bytes: number): Promise<void> {
  await db.updateTable('repositories').set({ git_bytes: bytes }).where('id', '=', repositoryId).execute();
}

/** Usage of the given repositories (all of them when `ids` is undefined), keyed by id. */
export async function repositoryUsages(db: Db, ids?: readonly string[]): Promise<Map<string, RepoUsageRow>> {
  if (ids && ids.length === 0) return new Map();
  const query = (chunk: readonly string[] | undefined) => {
    // Summed only over the repositories asked for, not the whole table.
    const lfs = db
      .selectFrom('lfs_objects')
      .select(['repository_id', (eb) => eb.fn.sum<number | string>('size').as('lfs_bytes')])
      .$if(chunk !== undefined, (qb) => qb.where('repository_id', 'in', chunk!))
      .groupBy('repository_id')
      .as('lfs');
    const q = db
      .selectFrom('repositories')
      .innerJoin('spaces', 'spaces.id', 'repositories.space_id')
      .innerJoin('owners', 'owners.id', 'spaces.owner_id')
      .leftJoin(lfs, 'lfs.repository_id', 'repositories.id')
      .select([
        'repositories.id',
        'owners.id as owner_id',
        'owners.name as owner_name',
        'spaces.name as space_name',
        'repositories.name',
        'repositories.git_bytes',
        'repositories.quota_bytes',
        'lfs.lfs_bytes',
      ]);
    return chunk ? q.where('repositories.id', 'in', chunk) : q;
  };
  const out = new Map<string, RepoUsageRow>();
  // Chunked like the other `in` lists: SQLite limits bound parameters.
  const chunks = ids ? Array.from({ length: Math.ceil(ids.length / 500) }, (_, i) => ids.slice(i * 500, i * 500 + 500)) : [undefined];
  for (const chunk of chunks) {
    const rows = await query(chunk).execute();
    for (const r of rows) {
      out.set(r.id, {
        repositoryId: r.id,
        ownerId: r.owner_id,
        fullName: `${r.owner_name}/${r.space_name}/${r.name}`,
        gitBytes: num(r.git_bytes),
        lfsBytes: num(r.lfs_bytes),
        quotaBytes: quota(r.quota_bytes),
      });
    }
  }
  return out;
}

/**
 * Usage of owners (one, or all when `ownerId` is undefined): the git bytes of their
 * repositories, and each LFS object linked to any of them counted once (forks of one owner
 * share stored objects).
 */
export async function ownerUsages(db: Db, ownerId?: string): Promise<OwnerUsageRow[]> {
  let git = db
    .selectFrom('owners')
    .leftJoin('spaces', 'spaces.owner_id', 'owners.id')
    .leftJoin('repositories', 'repositories.space_id', 'spaces.id')
    .select(['owners.id', 'owners.name', 'owners.quota_bytes', (eb) => eb.fn.sum<number | string | null>('repositories.git_bytes').as('git_bytes')])
    .groupBy(['owners.id', 'owners.name', 'owners.quota_bytes']);
  if (ownerId !== undefined) git = git.where('owners.id', '=', ownerId);
  const distinct = db
    .selectFrom('lfs_objects')
    .innerJoin('repositories', 'repositories.id', 'lfs_objects.repository_id')
    .innerJoin('spaces', 'spaces.id', 'repositories.space_id')
    .select(['spaces.owner_id', 'lfs_objects.oid', 'lfs_objects.size'])
    .distinct()
    .$if(ownerId !== undefined, (qb) => qb.where('spaces.owner_id', '=', ownerId!))
    .as('d');
  const lfs = await db
    .selectFrom(distinct)
    .select(['d.owner_id', (eb) => eb.fn.sum<number | string>('d.size').as('lfs_bytes')])
    .groupBy('d.owner_id')
    .execute();
  const lfsByOwner = new Map(lfs.map((r) => [r.owner_id, num(r.lfs_bytes)]));
  const rows = await git.orderBy('owners.name').execute();
  return rows.map((r) => ({
    ownerId: r.id,
    ownerName: r.name,
    gitBytes: num(r.git_bytes),
    lfsBytes: lfsByOwner.get(r.id) ?? 0,
    quotaBytes: quota(r.quota_bytes),
  }));
}

/** The oids (among `oids`) that none of the owner's repositories links yet. */
export async function oidsNewToOwner(db: Db, ownerId: string, oids: readonly string[]): Promise<Set<string>> {
  const known = new Set<string>();
  await inChunks(oids, async (chunk) => {
    const rows = await db
      .selectFrom('lfs_objects')
      .innerJoin('repositories', 'repositories.id', 'lfs_objects.repository_id')
      .innerJoin('spaces', 'spaces.id', 'repositories.space_id')
      .select('lfs_objects.oid')
      .distinct()
      .where('spaces.owner_id', '=', ownerId)
      .where('lfs_objects.oid', 'in', chunk)
      .execute();
    for (const r of rows) known.add(r.oid);
  });
  return new Set(oids.filter((o) => !known.has(o)));
}

/** Oids (among `oids`) linked to the repository itself (not through its fork network). */
export async function oidsLinkedTo(db: Db, repositoryId: string, oids: readonly string[]): Promise<Set<string>> {
  const found = new Set<string>();
  await inChunks(oids, async (chunk) => {
    const rows = await db.selectFrom('lfs_objects').select('oid').where('repository_id', '=', repositoryId).where('oid', 'in', chunk).execute();
    for (const r of rows) found.add(r.oid);
  });
  return found;
}
