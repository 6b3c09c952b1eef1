/**
 * LFS garbage collection (`gitstratum lfs gc`, and on a schedule when `lfsGcIntervalSeconds`
 * is set; docs/design/lfs-layout.md, "Garbage collection").
 *
 * An object is garbage when no ref of any repository reaches a pointer to it (read with git:
 * every pointer-sized blob in the history of every ref, pointers.ts), nothing linked it or
 * named it in a batch within the grace period (an upload whose push has not arrived, a push
 * under way), and no lock names a path it is published at. Liveness is global, not per fork
 * network: an object two networks share is kept while either reaches it (the bytes are one).
 * A repository whose directory cannot be read (evicted, on another machine) keeps every object
 * linked to it: garbage is only ever what was proven unreachable.
 *
 * Deleting one: its links (lfs_objects) first, so no batch offers it any more, then its
 * content-addressed copy, and in the readable layout every published version of it with its
 * publication. Each is checked again just before: an object linked or touched since the scan
 * began stays. Versions under the readable prefix that no publication names (an interrupted
 * copy whose job never ran again, a deleted repository's tree) go too, unless a publication of
 * their key is still being copied. Multipart uploads begun more than a day ago are aborted.
 *
 * A dry run reports the same figures and deletes nothing.
 */
import { access } from 'node:fs/promises';
import type { MetaStore } from '../meta/db.js';
import { listRepositories } from '../meta/repositories.js';
import { fullyPublished } from '../meta/lfs-publish.js';
import { inChunks } from '../meta/db.js';
import { giveBackRetired } from './publisher.js';
import { lfsObjectKey, objectKey, type ObjectKey, type ObjectStore } from '../storage/object-store.js';
import type { Logger } from '../shared/log.js';
import { reachableLfsOids } from './pointers.js';

export interface GcReport {
  dryRun: boolean;
  repositories: number;
  /** Repositories whose history could not be read: their objects were all kept. */
  unreadable: string[];
  objects: { total: number; reachable: number; recent: number; locked: number; deleted: number };
  bytes: { deleted: number };
  versions: { deleted: number; orphansDeleted: number };
  /** Content-addressed objects no repository links, older than the grace period. */
  unlinkedDeleted: number;
  /** Content-addressed copies of live objects every linking repository has published (stored once). */
  contentCopiesRemoved: number;
  multipartAborted: number;
}

export interface GcDeps {
  meta: MetaStore;
  store: ObjectStore;
  repoPath(id: string): string;
  /** `lfsReadablePrefix`. */
  prefix: string;
  log: Logger;
}

const DAY_MS = 86_400_000;

export async function collectGarbage(deps: GcDeps, opts: { dryRun: boolean; graceMs: number; signal?: AbortSignal }): Promise<GcReport> {
  const { meta, store } = deps;
  const { db } = meta;
  const since = new Date(Date.now() - opts.graceMs).toISOString();
  const report: GcReport = {
    dryRun: opts.dryRun,
    repositories: 0,
    unreadable: [],
    objects: { total: 0, reachable: 0, recent: 0, locked: 0, deleted: 0 },
    bytes: { deleted: 0 },
    versions: { deleted: 0, orphansDeleted: 0 },
    unlinkedDeleted: 0,
    contentCopiesRemoved: 0,
    multipartAborted: 0,
  };

  // Deleted repositories' published versions first: their objects get their content copies back.
  if (!opts.dryRun) while ((await giveBackRetired(deps, 500)) > 0);
  // Every object the server knows of: linked to a repository, or published.
  const sizes = new Map<string, number>();
  for (const r of await db.selectFrom('lfs_objects').select(['oid', 'size']).execute()) sizes.set(r.oid, Number(r.size));
  for (const r of await db.selectFrom('lfs_publications').select(['oid', 'size']).execute()) if (!sizes.has(r.oid)) sizes.set(r.oid, Number(r.size));
  report.objects.total = sizes.size;

  const keep = new Set<string>();
  const repos = await listRepositories(db);
  report.repositories = repos.length;
  for (const repo of repos) {
    opts.signal?.throwIfAborted();
    const dir = deps.repoPath(repo.id);
    let reached: Set<string> | undefined;
    try {
      await access(dir);
      reached = await reachableLfsOids(dir);
    } catch (err) {
      deps.log.warn({ err, repo_id: repo.id }, 'LFS GC could not read a repository; every object of its fork network is kept');
    }
    if (reached) {
      for (const oid of reached) keep.add(oid);
      continue;
    }
    // A fork downloads what its network holds without linking it: everything linked to or
    // published in any member of the unread repository's network is kept.
    report.unreadable.push(`${repo.ownerName}/${repo.spaceName}/${repo.name}`);
    const members = repos.filter((r) => r.forkNetwork === repo.forkNetwork).map((r) => r.id);
    await inChunks(members, async (chunk) => {
      for (const r of await db.selectFrom('lfs_objects').select('oid').where('repository_id', 'in', chunk).execute()) keep.add(r.oid);
      for (const r of await db.selectFrom('lfs_publications').select('oid').where('repository_id', 'in', chunk).execute()) keep.add(r.oid);
    });
  }
  report.objects.reachable = [...sizes.keys()].filter((oid) => keep.has(oid)).length;

  const recent = await recentOids(deps, since);
  const locked = await lockedOids(deps);
  const garbage: string[] = [];
  for (const oid of sizes.keys()) {
    if (keep.has(oid)) continue;
    if (recent.has(oid)) {
      report.objects.recent += 1;
      continue;
    }
    if (locked.has(oid)) {
      report.objects.locked += 1;
      continue;
    }
    garbage.push(oid);
  }

  for (const oid of garbage) {
    opts.signal?.throwIfAborted();
    const size = sizes.get(oid)!;
    const publications = await db.selectFrom('lfs_publications').select(['id', 'key', 'version_id']).where('oid', '=', oid).execute();
    // Linked or named by a batch since the scan began: a push is bringing it back.
    if (!opts.dryRun && (await recentOids(deps, since, [oid])).has(oid)) continue;
    if (!opts.dryRun) await db.deleteFrom('lfs_objects').where('oid', '=', oid).execute();
    const content = lfsObjectKey(oid);
    const head = await store.head(content);
    if (head) {
      if (!opts.dryRun) await store.delete(content);
      report.bytes.deleted += head.size;
    }
    for (const p of publications) {
      if (p.version_id !== null) {
        if (!opts.dryRun) await store.versions?.delete(objectKey(p.key), p.version_id);
        report.versions.deleted += 1;
        report.bytes.deleted += size;
      }
      if (!opts.dryRun) await db.deleteFrom('lfs_publications').where('id', '=', p.id).execute();
    }
    report.objects.deleted += 1;
  }

  // Content-addressed copies no repository links (its repository deleted; an upload refused
  // by a quota after it was stored), written before the grace period; and copies of live
  // objects every linking repository has published since (a re-upload): not needed.
  const graceStart = Date.now() - opts.graceMs;
  const unlinked: { key: ObjectKey; size: number }[] = [];
  const candidates: string[] = [];
  for await (const info of store.list('lfs/')) {
    const oid = info.key.slice(info.key.lastIndexOf('/') + 1);
    if (!/^[0-9a-f]{64}$/.test(oid) || info.key !== lfsObjectKey(oid)) continue;
    if (sizes.has(oid)) candidates.push(oid);
    else if (info.modifiedAt !== undefined && info.modifiedAt.getTime() < graceStart) unlinked.push(info);
  }
  for (const info of unlinked) {
    const oid = info.key.slice(info.key.lastIndexOf('/') + 1);
    // Linked since the listing: an upload that just completed.
    if ((await db.selectFrom('lfs_objects').select('oid').where('oid', '=', oid).executeTakeFirst()) !== undefined) continue;
    if (!opts.dryRun) await store.delete(info.key);
    report.unlinkedDeleted += 1;
    report.bytes.deleted += info.size;
  }
  const doomed = new Set(garbage);
  for (const oid of await fullyPublished(db, candidates.filter((oid) => !doomed.has(oid)))) {
    if (!opts.dryRun) await store.delete(lfsObjectKey(oid));
    report.contentCopiesRemoved += 1;
  }

  // Publications whose copy never completed and whose job will not run again: their key's
  // unrecorded versions are debris, not a copy under way.
  const stale = await db
    .selectFrom('lfs_publications as p')
    .leftJoin('lfs_publish_jobs as j', 'j.id', 'p.job_id')
    .select('p.id')
    .where('p.version_id', 'is', null)
    .where((eb) => eb.or([eb('j.state', 'is', null), eb('j.state', '!=', 'pending')]))
    .execute();
  if (!opts.dryRun) await inChunks(stale.map((r) => r.id), async (chunk) => void (await db.deleteFrom('lfs_publications').where('id', 'in', chunk).execute()));

  if (store.versions) {
    const orphans = await orphanVersions(deps);
    for (const v of orphans) {
      if (!opts.dryRun) await store.versions.delete(v.key, v.versionId);
      report.versions.orphansDeleted += 1;
      report.bytes.deleted += v.size;
    }
  }
  if (store.uploads && !opts.dryRun) {
    const ours = ['lfs/', `${deps.prefix}/`, 'snapshots/', 'backups/'];
    report.multipartAborted = (await store.uploads.abortStale(new Date(Date.now() - DAY_MS), { prefixes: ours })).aborted;
  }
  return report;
}

/** Oids linked or named by a batch since `since` (of `only`, when given). */
async function recentOids(deps: GcDeps, since: string, only?: string[]): Promise<Set<string>> {
  let q = deps.meta.db
    .selectFrom('lfs_objects')
    .select('oid')
    .where((eb) => eb.or([eb('created_at', '>=', since), eb('touched_at', '>=', since)]));
  if (only) q = q.where('oid', 'in', only);
  return new Set((await q.execute()).map((r) => r.oid));
}

/** Oids published at a path someone holds a lock on, in that repository. */
async function lockedOids(deps: GcDeps): Promise<Set<string>> {
  const rows = await deps.meta.db
    .selectFrom('lfs_publications')
    .innerJoin('lfs_locks', (j) => j.onRef('lfs_locks.repository_id', '=', 'lfs_publications.repository_id').onRef('lfs_locks.path', '=', 'lfs_publications.path'))
    .select('lfs_publications.oid')
    .execute();
  return new Set(rows.map((r) => r.oid));
}

/**
 * Versions under the readable prefix no publication names, of keys with no copy under way.
 * The publications are read after the listing: a publication's row is written before its copy
 * starts, so every version listed has its row by then (named, or still copying), and none of
 * a job running meanwhile is taken for an orphan.
 */
async function orphanVersions(deps: GcDeps) {
  const listed = [];
  for await (const v of deps.store.versions!.list(`${deps.prefix}/`)) listed.push(v);
  const named = new Set<string>();
  const copying = new Set<string>();
  for (const r of await deps.meta.db.selectFrom('lfs_publications').select(['key', 'version_id']).execute()) {
    if (r.version_id === null) copying.add(r.key);
    else named.add(`${r.key}\0${r.version_id}`);
  }
  return listed.filter((v) => !copying.has(v.key) && !named.has(`${v.key}\0${v.versionId}`));
}
