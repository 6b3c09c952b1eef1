/**
 * Converting a repository between LFS layouts (`gitstratum lfs relayout`, docs/design/lfs-layout.md).
 *
 * To `readable`: the layout is set (which queues a relayout job, as the API does), and the
 * repository's pending jobs are run here, in the foreground, with progress; a job the server
 * is running already is waited for. Resumable: a run interrupted midway leaves its job pending,
 * and the next run (or the server) takes it up where publications stopped.
 *
 * To `content`: publishing stops (pending jobs are cancelled), every published object gets its
 * content-addressed copy back (read from its version, checked against its oid), then the
 * repository's published versions are deleted. Resumable too: a copy already there is kept,
 * a version already gone is not an error.
 *
 * A dry run reads the same and writes nothing: what would be published or restored, and where.
 */
import { hostname } from 'node:os';
import type { Actor } from '../access/policy.js';
import { now } from '../meta/db.js';
import * as pub from '../meta/lfs-publish.js';
import type { RepoInfo, RepoService } from '../repos/service.js';
import { parseRepoPath } from '../repos/names.js';
import { lfsObjectKey, objectKey } from '../storage/object-store.js';
import { requireVersions } from './admin.js';
import { readableKey } from './layout.js';
import { dedupe, filesOfJob, restoreContentCopy, runPublishJob, versionsOf, type PublishDeps } from './publisher.js';

export interface RelayoutProgress {
  (p: { what: string; bytes: number; totalBytes: number }): void;
}

export interface RelayoutReport {
  repository: string;
  to: 'readable' | 'content';
  dryRun: boolean;
  /** Files published, or content copies restored. */
  files: number;
  bytes: number;
  /** Already in place (published and current; or with a content copy). */
  unchanged: number;
  /** Published versions deleted (to content). */
  versionsDeleted: number;
  skipped: { path: string; reason: string }[];
  /** Dry run: what would be written, at most 1000 lines. */
  plan: string[];
}

const POLL_MS = 500;

export async function relayout(
  deps: PublishDeps & { repos: RepoService },
  actor: Actor,
  repoPath: string,
  to: 'readable' | 'content',
  opts: { dryRun?: boolean; progress?: RelayoutProgress; signal?: AbortSignal } = {},
): Promise<RelayoutReport> {
  const repo = await deps.repos.resolve(actor, parseRepoPath(repoPath), 'admin');
  await requireVersions(deps.store);
  const report: RelayoutReport = { repository: `${repo.ownerName}/${repo.spaceName}/${repo.name}`, to, dryRun: opts.dryRun === true, files: 0, bytes: 0, unchanged: 0, versionsDeleted: 0, skipped: [], plan: [] };
  if (to === 'readable') return opts.dryRun ? planReadable(deps, repo, report) : toReadable(deps, actor, repo, report, opts);
  return toContent(deps, actor, repo, report, opts);
}

async function planReadable(deps: PublishDeps, repo: RepoInfo, report: RelayoutReport): Promise<RelayoutReport> {
  const release = await deps.hold?.(repo);
  try {
    const job = { id: '', repositoryId: repo.id, kind: 'relayout' as const, ref: pub.RELAYOUT_REFS, oldOid: pub.ZERO_OID, newOid: pub.ZERO_OID, attempts: 0 };
    const found = await filesOfJob(deps.repoPath(repo.id), repo, job);
    if (found.truncated) report.skipped.push({ path: '(the rest)', reason: 'more files than one job publishes: the rest would not be published' });
    for (const f of dedupe(found.files)) {
      const where = readableKey(deps.prefix, repo, f.path);
      if ('problem' in where) {
        report.skipped.push({ path: f.path, reason: where.problem });
        continue;
      }
      if ((await pub.currentPublication(deps.meta.db, repo.id, where.key))?.oid === f.oid) {
        report.unchanged += 1;
        continue;
      }
      report.files += 1;
      report.bytes += f.size;
      if (report.plan.length < 1000) report.plan.push(`publish ${f.path} (${f.size} bytes, ${f.oid.slice(0, 12)}) -> ${where.key}`);
    }
    return report;
  } finally {
    release?.();
  }
}

async function toReadable(deps: PublishDeps & { repos: RepoService }, actor: Actor, repo: RepoInfo, report: RelayoutReport, opts: { progress?: RelayoutProgress; signal?: AbortSignal }) {
  const { meta } = deps;
  // Turning the layout readable queues the relayout job; a repository readable already gets
  // one unless one is pending (a run interrupted earlier: this one resumes it).
  if (repo.lfsLayout !== 'readable') {
    await deps.repos.updateRepo(actor, report.repository, { lfsLayout: 'readable' });
  } else if (!(await pub.jobsOf(meta.db, repo.id)).some((j) => j.kind === 'relayout' && j.state === 'pending')) {
    await pub.enqueueJobs(meta.db, meta.dialect, repo.id, 'relayout', [{ ref: pub.RELAYOUT_REFS, oldOid: pub.ZERO_OID, newOid: pub.ZERO_OID }], now());
  }
  const holder = `relayout:${hostname()}:${process.pid}`;
  const waitedFor = new Set((await pub.jobsOf(meta.db, repo.id)).filter((j) => j.state === 'pending').map((j) => j.id));
  for (;;) {
    opts.signal?.throwIfAborted();
    const [job] = await pub.claimJobs(meta.db, meta.dialect, holder, 5 * 60_000, 1, { repositoryId: repo.id });
    if (job) {
      try {
        await runPublishJob(deps, job, {
          holder,
          leaseMs: 5 * 60_000,
          ...(opts.signal && { signal: opts.signal }),
          onProgress: (p) => opts.progress?.({ what: `${report.repository} ${job.kind === 'relayout' ? 'relayout' : job.ref}`, bytes: p.bytesDone, totalBytes: p.bytesTotal }),
        });
      } catch (err) {
        // Left pending, its lease given up: the next run (or the server) takes it up again.
        await pub.failJob(meta.db, meta.dialect, job.id, (err as Error).message, 0, now());
        throw err;
      }
      continue;
    }
    const pending = (await pub.jobsOf(meta.db, repo.id)).filter((j) => j.state === 'pending');
    if (pending.length === 0) break;
    // A job waiting to be retried after a failure is not waited for (its backoff reaches ten
    // minutes): named, and the command ends; the next run or the server takes it up.
    const retrying = pending.find((j) => j.error !== null && !j.running);
    if (retrying) {
      report.skipped.push({ path: `(job ${retrying.id}, ${retrying.ref})`, reason: `failed, and will be retried: ${retrying.error}` });
      waitedFor.delete(retrying.id);
      break;
    }
    // Another process (the server) holds the rest: wait for it, showing how far it got.
    const running = pending[0]!;
    opts.progress?.({ what: `${report.repository} (the server is publishing)`, bytes: running.filesDone, totalBytes: running.filesTotal ?? running.filesDone });
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  // What the jobs did, whoever ran them (this process, or the server that claimed one first);
  // a job given up on is named, not passed over in silence.
  for (const j of await pub.jobsOf(meta.db, repo.id, [...waitedFor])) {
    report.skipped.push(...j.skipped);
    if (j.state === 'failed') report.skipped.push({ path: `(job ${j.id}, ${j.ref})`, reason: j.error ?? 'failed' });
    else if (j.filesTotal !== null) report.unchanged += j.filesTotal;
  }
  for (const p of await pub.allPublicationsOf(meta.db, repo.id)) {
    if (p.versionId === null || !waitedFor.has(p.jobId)) continue;
    report.files += 1;
    report.bytes += p.size;
  }
  report.unchanged = Math.max(0, report.unchanged - report.files - report.skipped.length);
  return report;
}

async function toContent(deps: PublishDeps & { repos: RepoService }, actor: Actor, repo: RepoInfo, report: RelayoutReport, opts: { dryRun?: boolean; progress?: RelayoutProgress; signal?: AbortSignal }) {
  const { meta, store } = deps;
  const versions = versionsOf(store);
  if (!opts.dryRun) {
    if (repo.lfsLayout !== 'content') await deps.repos.updateRepo(actor, report.repository, { lfsLayout: 'content' });
    await pub.cancelPending(meta.db, repo.id, 'cancelled: the repository was converted to the content layout', now());
  }
  const publications = await pub.allPublicationsOf(meta.db, repo.id);
  const restore = new Map<string, pub.Publication>();
  for (const p of publications) if (p.versionId !== null && !restore.has(p.oid)) restore.set(p.oid, p);
  const totalBytes = [...restore.values()].reduce((sum, p) => sum + p.size, 0);
  let bytes = 0;
  for (const p of restore.values()) {
    opts.signal?.throwIfAborted();
    const content = lfsObjectKey(p.oid);
    if (await store.head(content)) {
      report.unchanged += 1;
    } else if (opts.dryRun) {
      report.files += 1;
      report.bytes += p.size;
      if (report.plan.length < 1000) report.plan.push(`restore ${content} (${p.size} bytes) from ${p.key} version ${p.versionId}`);
    } else {
      await restoreContentCopy(store, p);
      report.files += 1;
      report.bytes += p.size;
    }
    bytes += p.size;
    opts.progress?.({ what: `${report.repository} content copies`, bytes, totalBytes });
  }
  for (const p of publications) {
    if (opts.dryRun) {
      if (p.versionId !== null && report.plan.length < 1000) report.plan.push(`delete ${p.key} version ${p.versionId}`);
      if (p.versionId !== null) report.versionsDeleted += 1;
      continue;
    }
    if (p.versionId !== null) await versions.delete(objectKey(p.key), p.versionId);
    await pub.deletePublication(meta.db, p.id);
    if (p.versionId !== null) report.versionsDeleted += 1;
  }
  return report;
}
