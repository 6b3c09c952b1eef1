/**
 * The readable LFS layout's records (docs/design/lfs-layout.md): publish jobs, one per push of
 * a published ref (or per ref of a relayout), and publications, each a version of an LFS file
 * under its repository path (`oid -> {key, version_id}`).
 *
 * A job is claimed with a lease (one conditional update, as webhook deliveries are): a process
 * killed midway leaves it pending, and it is claimed again once the lease expired. Jobs of one
 * repository run one at a time, oldest first, so the newest push's file is the key's current
 * version.
 */
import { sql } from 'kysely';
import { inChunks, type Db, type Dialect } from './db.js';
import { nowMs } from './leases.js';
import { newId } from '../shared/ids.js';

export const ZERO = /^0+$/;
export const ZERO_OID = '0'.repeat(40);
/** The `ref` of a relayout job: every ref the repository publishes, read when the job runs. */
export const RELAYOUT_REFS = '(published refs)';

export interface PublishJob {
  id: string;
  repositoryId: string;
  kind: 'push' | 'relayout';
  ref: string;
  oldOid: string;
  newOid: string;
  attempts: number;
}

export interface JobProgress {
  id: string;
  ref: string;
  kind: 'push' | 'relayout';
  state: 'pending' | 'done' | 'failed';
  filesTotal: number | null;
  filesDone: number;
  bytesDone: number;
  skipped: { path: string; reason: string }[];
  error: string | null;
  /** Claimed by a process now (leased). */
  running: boolean;
  createdAt: string;
  finishedAt: string | null;
}

export async function enqueueJobs(
  db: Db,
  dialect: Dialect,
  repositoryId: string,
  kind: 'push' | 'relayout',
  updates: readonly { ref: string; oldOid: string; newOid: string }[],
  createdAt: string,
): Promise<string[]> {
  const ids: string[] = [];
  for (const u of updates) {
    const id = newId();
    await db
      .insertInto('lfs_publish_jobs')
      .values({ id, repository_id: repositoryId, kind, ref: u.ref, old_oid: u.oldOid, new_oid: u.newOid, state: 'pending', next_attempt_at: nowMs(dialect) as unknown as number, created_at: createdAt })
      .execute();
    ids.push(id);
  }
  return ids;
}

/** Attempts at a job before it is given up (`failed`): failures, and processes that died running it. */
export const MAX_ATTEMPTS = 12;

/**
 * In how many milliseconds (database clock) the nearest pending job (of `shard`'s
 * repositories, if given) is due: its next attempt, or the end of its lease; undefined when
 * none is pending. An idle Publisher sleeps until then (lfs/publisher.ts).
 */
export async function nextJobDueMs(db: Db, dialect: Dialect, filter: { shard?: string } = {}): Promise<number | undefined> {
  const { rows } = await sql<{ due: number | string | null }>`
    select min(case when j.lease_until is not null and j.lease_until > j.next_attempt_at then j.lease_until else j.next_attempt_at end) - ${nowMs(dialect)} as due
    from lfs_publish_jobs j
    join repositories r on r.id = j.repository_id
    where j.state = 'pending'
      ${filter.shard === undefined ? sql`` : sql`and r.shard = ${filter.shard}`}`.execute(db);
  const due = rows[0]?.due;
  return due === null || due === undefined ? undefined : Math.max(0, Number(due));
}

/**
 * Claims up to `limit` due jobs, each the oldest pending one of its repository, for `holder`,
 * for `leaseMs`; only those `accept` (the repositories this process holds on its disk).
 */
export async function claimJobs(
  db: Db,
  dialect: Dialect,
  holder: string,
  leaseMs: number,
  limit: number,
  filter: { repositoryId?: string; shard?: string } = {},
): Promise<PublishJob[]> {
  const now = nowMs(dialect);
  // A job whose runs keep dying (a process killed, out of memory, each time) is not taken again
  // without end: its last lease expired after its last attempt, it is given up.
  await db
    .updateTable('lfs_publish_jobs')
    .set({ state: 'failed', finished_at: new Date().toISOString(), error: sql<string>`coalesce(error, ${`its process ended ${MAX_ATTEMPTS} times while running it`})`, lease_holder: null, lease_until: null })
    .where('state', '=', 'pending')
    .where('attempts', '>=', MAX_ATTEMPTS)
    .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
    .execute();
  const { rows } = await sql<{ id: string }>`
    select j.id from lfs_publish_jobs j
    join repositories r on r.id = j.repository_id
    where j.state = 'pending' and j.next_attempt_at <= ${now}
      and (j.lease_until is null or j.lease_until < ${now})
      ${filter.repositoryId === undefined ? sql`` : sql`and j.repository_id = ${filter.repositoryId}`}
      ${filter.shard === undefined ? sql`` : sql`and r.shard = ${filter.shard}`}
      and not exists (select 1 from lfs_publish_jobs e where e.repository_id = j.repository_id and e.state = 'pending' and e.id < j.id)
    order by j.id
    limit ${limit}`.execute(db);
  const claimed: PublishJob[] = [];
  for (const { id } of rows) {
    const res = await db
      .updateTable('lfs_publish_jobs')
      .set({ lease_holder: holder, lease_until: sql<number>`${now} + ${Math.round(leaseMs)}`, attempts: sql<number>`attempts + 1` })
      .where('id', '=', id)
      .where('state', '=', 'pending')
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) continue;
    const row = await db.selectFrom('lfs_publish_jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    claimed.push({ id, repositoryId: row.repository_id, kind: row.kind, ref: row.ref, oldOid: row.old_oid, newOid: row.new_oid, attempts: Number(row.attempts) });
  }
  return claimed;
}

/** Extends the lease of a job still running; false when another holder took it meanwhile. */
export async function renewJob(db: Db, dialect: Dialect, id: string, holder: string, leaseMs: number): Promise<boolean> {
  const res = await db
    .updateTable('lfs_publish_jobs')
    .set({ lease_until: sql<number>`${nowMs(dialect)} + ${Math.round(leaseMs)}` })
    .where('id', '=', id)
    .where('lease_holder', '=', holder)
    .where('state', '=', 'pending')
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

/** Ends the repository's pending jobs unrun (its layout is no longer readable). */
export async function cancelPending(db: Db, repositoryId: string, why: string, at: string): Promise<void> {
  await db
    .updateTable('lfs_publish_jobs')
    .set({ state: 'failed', error: why, finished_at: at, lease_holder: null, lease_until: null })
    .where('repository_id', '=', repositoryId)
    .where('state', '=', 'pending')
    .execute();
}

/** Frees the jobs `holder` had leased (its process is gone: a restart on the same disk). */
export async function releaseLeases(db: Db, holder: string): Promise<void> {
  await db.updateTable('lfs_publish_jobs').set({ lease_holder: null, lease_until: null }).where('lease_holder', '=', holder).where('state', '=', 'pending').execute();
}

export async function recordProgress(db: Db, id: string, p: { filesTotal?: number; filesDone?: number; bytesDone?: number }): Promise<void> {
  await db
    .updateTable('lfs_publish_jobs')
    .set({
      ...(p.filesTotal !== undefined && { files_total: p.filesTotal }),
      ...(p.filesDone !== undefined && { files_done: p.filesDone }),
      ...(p.bytesDone !== undefined && { bytes_done: p.bytesDone }),
    })
    .where('id', '=', id)
    .execute();
}

/** Marks the job done, unless it was cancelled meanwhile (then it stays failed). */
export async function finishJob(db: Db, id: string, at: string, skipped: { path: string; reason: string }[]): Promise<void> {
  await db
    .updateTable('lfs_publish_jobs')
    .set({ state: 'done', finished_at: at, lease_holder: null, lease_until: null, error: null, skipped: skipped.length > 0 ? JSON.stringify(skipped.slice(0, 100)) : null })
    .where('id', '=', id)
    .where('state', '=', 'pending')
    .execute();
}

/** A failed attempt: tried again after `retryMs`, or given up (`failed`) after the last attempt. */
export async function failJob(db: Db, dialect: Dialect, id: string, error: string, retryMs: number | undefined, at: string): Promise<void> {
  await db
    .updateTable('lfs_publish_jobs')
    .set({
      error: error.slice(0, 1000),
      lease_holder: null,
      lease_until: null,
      ...(retryMs === undefined ? { state: 'failed' as const, finished_at: at } : { next_attempt_at: sql<number>`${nowMs(dialect)} + ${Math.round(retryMs)}` }),
    })
    .where('id', '=', id)
    .execute();
}

export async function jobsOf(db: Db, repositoryId: string, ids?: readonly string[]): Promise<JobProgress[]> {
  let q = db.selectFrom('lfs_publish_jobs').selectAll().where('repository_id', '=', repositoryId);
  if (ids) q = q.where('id', 'in', ids.length > 0 ? [...ids] : ['-']);
  const rows = await q.orderBy('id').execute();
  return rows.map((r) => ({
    id: r.id,
    ref: r.ref,
    kind: r.kind,
    state: r.state,
    filesTotal: r.files_total,
    filesDone: Number(r.files_done),
    bytesDone: Number(r.bytes_done),
    skipped: r.skipped ? (JSON.parse(r.skipped) as { path: string; reason: string }[]) : [],
    error: r.error,
    running: r.state === 'pending' && r.lease_until !== null,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
  }));
}

export async function countPendingJobs(db: Db): Promise<number> {
  const row = await db.selectFrom('lfs_publish_jobs').select((eb) => eb.fn.countAll<number | string>().as('n')).where('state', '=', 'pending').executeTakeFirst();
  return Number(row?.n ?? 0);
}

export interface Publication {
  id: string;
  /** Null once retired (its repository deleted). */
  repositoryId: string | null;
  oid: string;
  size: number;
  path: string;
  key: string;
  versionId: string | null;
  jobId: string;
  commitOid: string;
  publishedAt: string;
}

type PublicationRow = { id: string; repository_id: string | null; oid: string; size: number | string; path: string; key: string; version_id: string | null; job_id: string; commit_oid: string; published_at: string };

function toPublication(r: PublicationRow): Publication {
  return { id: r.id, repositoryId: r.repository_id, oid: r.oid, size: Number(r.size), path: r.path, key: r.key, versionId: r.version_id, jobId: r.job_id, commitOid: r.commit_oid, publishedAt: r.published_at };
}

/** This job's publication of the key, if it began one (a job run again skips what it did). */
export async function publicationOfJob(db: Db, jobId: string, key: string): Promise<Publication | undefined> {
  const row = await db.selectFrom('lfs_publications').selectAll().where('job_id', '=', jobId).where('key', '=', key).executeTakeFirst();
  return row && toPublication(row);
}

/** The key's newest complete publication in the repository: its current version. */
export async function currentPublication(db: Db, repositoryId: string, key: string): Promise<Publication | undefined> {
  const row = await db
    .selectFrom('lfs_publications')
    .selectAll()
    .where('repository_id', '=', repositoryId)
    .where('key', '=', key)
    .where('version_id', 'is not', null)
    .orderBy('published_at', 'desc')
    .orderBy('id', 'desc')
    .executeTakeFirst();
  return row && toPublication(row);
}

export async function beginPublication(db: Db, p: Omit<Publication, 'id' | 'versionId'>): Promise<string> {
  const id = newId();
  await db
    .insertInto('lfs_publications')
    .values({ id, repository_id: p.repositoryId, oid: p.oid, size: p.size, path: p.path, key: p.key, version_id: null, job_id: p.jobId, commit_oid: p.commitOid, published_at: p.publishedAt })
    .execute();
  return id;
}

export async function completePublication(db: Db, id: string, versionId: string, at: string): Promise<void> {
  await db.updateTable('lfs_publications').set({ version_id: versionId, published_at: at }).where('id', '=', id).execute();
}

/** Every version id of the key that a publication row names (complete ones). */
export async function recordedVersions(db: Db, key: string): Promise<Set<string>> {
  const rows = await db.selectFrom('lfs_publications').select('version_id').where('key', '=', key).where('version_id', 'is not', null).execute();
  return new Set(rows.map((r) => r.version_id!));
}

/**
 * Complete publications of `oid` to read it from: the repositories named first (the caller's
 * own, then its fork network), then any other (the bytes are the same: an oid is their SHA-256,
 * checked when published).
 */
export async function publicationsOf(db: Db, oid: string, prefer: readonly string[], limit = 5): Promise<Publication[]> {
  const rows = await db.selectFrom('lfs_publications').selectAll().where('oid', '=', oid).where('version_id', 'is not', null).limit(50).execute();
  const rank = (r: PublicationRow) => {
    const i = r.repository_id === null ? -1 : prefer.indexOf(r.repository_id);
    return i < 0 ? prefer.length : i;
  };
  return rows
    .sort((a, b) => rank(a) - rank(b) || (a.published_at < b.published_at ? 1 : -1))
    .slice(0, limit)
    .map(toPublication);
}

/** The newest complete publication of each of `oids`, when there is one. */
export async function newestPublications(db: Db, oids: readonly string[]): Promise<Map<string, Publication[]>> {
  const found = new Map<string, Publication[]>();
  await inChunks(oids, async (chunk) => {
    const rows = await db.selectFrom('lfs_publications').selectAll().where('oid', 'in', chunk).where('version_id', 'is not', null).orderBy('published_at', 'desc').execute();
    for (const r of rows) {
      const list = found.get(r.oid) ?? [];
      list.push(toPublication(r));
      found.set(r.oid, list);
    }
  });
  return found;
}

/** Publications of the repository, newest first, optionally of one path; paged by id. */
export async function listPublications(db: Db, repositoryId: string, opts: { path?: string; limit: number; before?: string }): Promise<Publication[]> {
  let q = db.selectFrom('lfs_publications').selectAll().where('repository_id', '=', repositoryId).where('version_id', 'is not', null);
  if (opts.path !== undefined) q = q.where('path', '=', opts.path);
  if (opts.before !== undefined) q = q.where('id', '<', opts.before);
  const rows = await q.orderBy('id', 'desc').limit(opts.limit).execute();
  return rows.map(toPublication);
}

export async function allPublicationsOf(db: Db, repositoryId: string): Promise<Publication[]> {
  const rows = await db.selectFrom('lfs_publications').selectAll().where('repository_id', '=', repositoryId).orderBy('id').execute();
  return rows.map(toPublication);
}

/** Publications whose repository was deleted, oldest first (lfs/publisher.ts gives their bytes back). */
export async function retiredPublications(db: Db, limit: number): Promise<Publication[]> {
  const rows = await db.selectFrom('lfs_publications').selectAll().where('repository_id', 'is', null).orderBy('id').limit(limit).execute();
  return rows.map(toPublication);
}

/** Whether a repository links the oid, and whether a live repository has a complete publication of it. */
export async function stillNeeded(db: Db, oid: string): Promise<{ linked: boolean; publishedElsewhere: boolean }> {
  const link = await db.selectFrom('lfs_objects').select('oid').where('oid', '=', oid).executeTakeFirst();
  const other = await db.selectFrom('lfs_publications').select('id').where('oid', '=', oid).where('repository_id', 'is not', null).where('version_id', 'is not', null).executeTakeFirst();
  return { linked: link !== undefined, publishedElsewhere: other !== undefined };
}

export async function deletePublication(db: Db, id: string): Promise<void> {
  await db.deleteFrom('lfs_publications').where('id', '=', id).execute();
}

/**
 * Of `oids`, those every linking repository has published: their content-addressed copies are
 * needed by no one (downloads read a published version). An oid some repository links without
 * publishing it (the content layout, a branch not published, a fork's own upload) stays.
 */
export async function fullyPublished(db: Db, oids: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  await inChunks(oids, async (chunk) => {
    const { rows } = await sql<{ oid: string }>`
      select distinct o.oid from lfs_objects o
      where o.oid in (${sql.join(chunk)})
        and not exists (
          select 1 from lfs_objects l
          where l.oid = o.oid
            and not exists (select 1 from lfs_publications p where p.oid = l.oid and p.repository_id = l.repository_id and p.version_id is not null)
        )`.execute(db);
    out.push(...rows.map((r) => r.oid));
  });
  return out;
}
