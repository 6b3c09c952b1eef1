/**
 * Publishing LFS files in the readable layout (issue 15, docs/design/lfs-layout.md).
 *
 * Uploads land content-addressed (`lfs/ab/cd/<oid>`): the server cannot know a path before the
 * push names it. After a push to a published ref, a job (meta/lfs-publish.ts) walks what
 * changed (`git diff-tree` old..new; a whole tree for a new ref or a relayout), reads the LFS
 * pointers, and for each path copies the object within the store to
 * `<prefix>/<owner>/<space>/<repo>/<path>` (a new version of that key), reads that version
 * back to check its size and SHA-256, and records `oid -> {key, version_id}`. Downloads then
 * read exactly that version (objects.ts).
 *
 * Exactly once, across kills: a publication is recorded (without a version) before its copy,
 * and completed after. A job run again skips what it completed, and for a publication left
 * without a version looks at the key's versions no publication names: one with the object's
 * bytes is adopted, any other removed. So a `kill -9` anywhere leaves no second version.
 *
 * Only objects this repository may lend its readers are published: linked to it (uploaded or
 * verified there; a push to a fork links what the pusher could already read), or to a public
 * member of its fork network. A pointer naming someone else's private object is skipped, never
 * copied into this repository's tree.
 *
 * Once every repository linking an object has published it, its content-addressed copy is
 * removed: each object is then stored once, in the readable tree.
 */
import { createHash } from 'node:crypto';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Db, Dialect, MetaStore } from '../meta/db.js';
import { inChunks, now } from '../meta/db.js';
import * as pub from '../meta/lfs-publish.js';
import { findRepositoryById, type RepoRow } from '../meta/repositories.js';
import { lfsObjectKey, type ObjectKey, type ObjectStore, type Versions } from '../storage/object-store.js';
import { isDomainError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { publishedRef, readableKey } from './layout.js';
import { lfsFilesAt, lfsFilesChanged, type LfsFile } from './pointers.js';
import { runGit } from '../git/command.js';
import { crashPoint } from '../shared/crash.js';
import { Alarm } from '../shared/alarm.js';

export interface PublishDeps {
  meta: MetaStore;
  store: ObjectStore;
  /** `lfsReadablePrefix`, checked (layout.ts checkReadablePrefix). */
  prefix: string;
  repoPath(id: string): string;
  /** Holds the repository on disk (restored first if evicted) until the release is called. */
  hold?(repo: RepoRow): Promise<() => void>;
  log: Logger;
  metrics?: PublishMetrics;
}

export interface JobRun {
  holder: string;
  leaseMs: number;
  signal?: AbortSignal;
  /** After each file: how far the job is. */
  onProgress?(p: { filesDone: number; filesTotal: number; bytesDone: number; bytesTotal: number }): void;
}

/** Files copied at once within a job. */
const COPIES_AT_ONCE = 4;

export function createPublishMetrics(registry: Registry, pending: () => Promise<number>) {
  return {
    files: new Counter({ name: 'gitstratum_lfs_published_files_total', help: 'LFS files published in the readable layout (new versions written)', registers: [registry] }),
    bytes: new Counter({ name: 'gitstratum_lfs_published_bytes_total', help: 'Bytes of LFS files published in the readable layout', registers: [registry] }),
    jobs: new Counter({ name: 'gitstratum_lfs_publish_jobs_total', help: 'LFS publish jobs run, by result (done, retry, failed)', labelNames: ['result'] as const, registers: [registry] }),
    latency: new Histogram({
      name: 'gitstratum_lfs_publish_seconds',
      help: 'From a push being recorded to its LFS files all published',
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
      registers: [registry],
    }),
    pending: new Gauge({
      name: 'gitstratum_lfs_publish_jobs_pending',
      help: 'LFS publish jobs waiting or running',
      registers: [registry],
      async collect() {
        this.set(await pending().catch(() => 0));
      },
    }),
  };
}
export type PublishMetrics = ReturnType<typeof createPublishMetrics>;

export function versionsOf(store: ObjectStore): Versions {
  if (!store.versions) throw new Error(`the ${store.kind} object store keeps no versions`);
  return store.versions;
}

/** A push's jobs: one per updated ref the repository publishes, when its layout is readable. */
export async function enqueuePushPublishing(
  db: Db,
  dialect: Dialect,
  repositoryId: string,
  updates: readonly { ref: string; oldOid: string; newOid: string }[],
  at: string,
): Promise<string[]> {
  const repo = await findRepositoryById(db, repositoryId);
  if (!repo || repo.lfsLayout !== 'readable') return [];
  const published = updates.filter((u) => !pub.ZERO.test(u.newOid) && publishedRef(repo, u.ref));
  return pub.enqueueJobs(db, dialect, repositoryId, 'push', published, at);
}

/** SHA-256 and length of one version, read through. */
async function digestVersion(versions: Versions, key: ObjectKey, versionId: string): Promise<{ oid: string; size: number }> {
  const { body } = await versions.get(key, versionId);
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { oid: hash.digest('hex'), size };
}

/** Runs one claimed job to its end: every file published (or skipped, with why). */
export async function runPublishJob(deps: PublishDeps, job: pub.PublishJob, run: JobRun): Promise<{ published: number; skipped: { path: string; reason: string }[] }> {
  const { meta } = deps;
  const repo = await findRepositoryById(meta.db, job.repositoryId);
  // Gone, or set back to the content layout since the job was queued: nothing to publish.
  if (!repo || repo.lfsLayout !== 'readable') {
    await pub.finishJob(meta.db, job.id, now(), []);
    return { published: 0, skipped: [] };
  }
  const release = await deps.hold?.(repo);
  try {
    return await publishFiles(deps, repo, job, run);
  } finally {
    release?.();
  }
}

async function publishFiles(deps: PublishDeps, repo: RepoRow, job: pub.PublishJob, run: JobRun) {
  const { meta, store } = deps;
  const versions = versionsOf(store);
  const repoPath = deps.repoPath(repo.id);
  const files = dedupe(await filesOfJob(repoPath, repo, job));
  await pub.recordProgress(meta.db, job.id, { filesTotal: files.length });
  const lendable = await lendableOids(deps, repo, [...new Set(files.map((f) => f.oid))]);
  const skipped: { path: string; reason: string }[] = [];
  const publishedOids = new Set<string>();
  let filesDone = 0;
  let bytesDone = 0;
  const bytesTotal = files.reduce((sum, f) => sum + f.size, 0);
  let published = 0;
  let lastRenew = Date.now();

  async function one(file: JobFile): Promise<void> {
    const where = readableKey(deps.prefix, repo, file.path);
    if ('problem' in where) {
      skipped.push({ path: file.path, reason: where.problem });
      return;
    }
    const { key } = where;
    const mine = await pub.publicationOfJob(meta.db, job.id, key);
    if (mine?.versionId) return void publishedOids.add(file.oid);
    if (!mine && (await pub.currentPublication(meta.db, repo.id, key))?.oid === file.oid) return void publishedOids.add(file.oid);
    if (!lendable.has(file.oid)) {
      skipped.push({ path: file.path, reason: 'the object was not uploaded to this repository' });
      return;
    }
    let id = mine?.id;
    if (mine && (await adoptInterrupted(meta, versions, key, mine))) return void publishedOids.add(file.oid);
    id ??= await pub.beginPublication(meta.db, { repositoryId: repo.id, oid: file.oid, size: file.size, path: file.path, key, jobId: job.id, commitOid: file.commit, publishedAt: now() });
    const copied = await copyObject(deps, versions, file.oid, key);
    if (!copied) {
      await pub.deletePublication(meta.db, id);
      skipped.push({ path: file.path, reason: 'the object is not in the object store' });
      return;
    }
    crashPoint('lfs-publish-after-copy');
    const got = await digestVersion(versions, key, copied.versionId);
    if (got.oid !== file.oid || got.size !== file.size) {
      await versions.delete(key, copied.versionId);
      throw new Error(`published ${file.path} does not read back as ${file.oid} (${file.size} bytes): ${got.oid} (${got.size} bytes)`);
    }
    await pub.completePublication(meta.db, id, copied.versionId, now());
    publishedOids.add(file.oid);
    published += 1;
    deps.metrics?.files.inc();
    deps.metrics?.bytes.inc(file.size);
  }

  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < files.length && !failed) {
      run.signal?.throwIfAborted();
      const file = files[next++]!;
      await one(file);
      filesDone += 1;
      bytesDone += file.size;
      run.onProgress?.({ filesDone, filesTotal: files.length, bytesDone, bytesTotal });
      if (Date.now() - lastRenew > run.leaseMs / 3) {
        lastRenew = Date.now();
        if (!(await pub.renewJob(meta.db, meta.dialect, job.id, run.holder, run.leaseMs))) throw new Error('the job was taken over by another process');
        await pub.recordProgress(meta.db, job.id, { filesDone, bytesDone });
      }
    }
  };
  // The first failure stops the others after their current file, and the job fails only once
  // none is copying: a retry never runs beside a copy of the failed run.
  const ran = await Promise.allSettled(
    Array.from({ length: Math.min(COPIES_AT_ONCE, files.length) }, () =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      }),
    ),
  );
  const failure = ran.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
  await pub.recordProgress(meta.db, job.id, { filesDone, bytesDone });
  await removeContentCopies(deps, [...publishedOids]);
  await pub.finishJob(meta.db, job.id, now(), skipped);
  return { published, skipped };
}

export type JobFile = LfsFile & { commit: string };

/**
 * The job's LFS files: what a push changed since the old tip, or the whole tree of a new ref;
 * a relayout, the trees of every ref the repository publishes (the default branch last, so
 * that where refs differ its file is the one published).
 */
export async function filesOfJob(repoPath: string, repo: RepoRow, job: pub.PublishJob): Promise<JobFile[]> {
  if (job.kind === 'relayout') {
    const { stdout } = await runGit(['--git-dir', repoPath, 'for-each-ref', '--format=%(objectname) %(objecttype) %(refname)', 'refs/']);
    const tips = stdout
      .split('\n')
      .map((line) => line.split(' '))
      .filter(([oid, type, ref]) => oid && type === 'commit' && ref && publishedRef(repo, ref))
      .sort((a, b) => Number(a[2] === `refs/heads/${repo.defaultBranch}`) - Number(b[2] === `refs/heads/${repo.defaultBranch}`));
    const files: JobFile[] = [];
    for (const [commit] of tips) files.push(...(await lfsFilesAt(repoPath, commit!)).map((f) => ({ ...f, commit: commit! })));
    return files;
  }
  if (pub.ZERO.test(job.newOid)) return [];
  const at = (files: LfsFile[]) => files.map((f) => ({ ...f, commit: job.newOid }));
  if (pub.ZERO.test(job.oldOid)) return at(await lfsFilesAt(repoPath, job.newOid));
  // A forced push's old tip may be gone after maintenance: then the whole new tree.
  const present = await runGit(['--git-dir', repoPath, 'cat-file', '-e', `${job.oldOid}^{commit}`], { check: false });
  return at(present.code === 0 ? await lfsFilesChanged(repoPath, job.oldOid, job.newOid) : await lfsFilesAt(repoPath, job.newOid));
}

/** One file per path: a later one (the default branch's, in a relayout) wins. */
export function dedupe(files: JobFile[]): JobFile[] {
  const byPath = new Map<string, JobFile>();
  for (const f of files) byPath.set(f.path, f);
  return [...byPath.values()];
}

/** Oids this repository may publish: linked to it, or to a public member of its fork network. */
async function lendableOids(deps: PublishDeps, repo: RepoRow, oids: string[]): Promise<Set<string>> {
  const { db } = deps.meta;
  const out = new Set<string>();
  await inChunks(oids, async (chunk) => {
    const rows = await db
      .selectFrom('lfs_objects')
      .innerJoin('repositories', 'repositories.id', 'lfs_objects.repository_id')
      .select('lfs_objects.oid')
      .where('lfs_objects.oid', 'in', chunk)
      .where((eb) =>
        eb.or([
          eb('lfs_objects.repository_id', '=', repo.id),
          eb.and([eb(eb.fn.coalesce('repositories.fork_network', 'repositories.id'), '=', repo.forkNetwork), eb('repositories.visibility', '=', 'public')]),
        ]),
      )
      .execute();
    for (const r of rows) out.add(r.oid);
  });
  return out;
}

/**
 * A publication begun by an earlier run of this job, whose copy may or may not have happened:
 * a version of the key that no publication names is that copy if it has the object's bytes
 * (adopted), and otherwise debris (removed). True when adopted.
 */
async function adoptInterrupted(meta: MetaStore, versions: Versions, key: ObjectKey, p: pub.Publication): Promise<boolean> {
  const named = await pub.recordedVersions(meta.db, key);
  let adopted = false;
  for await (const v of versions.list(key)) {
    if (v.key !== key || named.has(v.versionId)) continue;
    const got = adopted ? undefined : await digestVersion(versions, key, v.versionId).catch(() => undefined);
    if (got && got.oid === p.oid && got.size === p.size) {
      await pub.completePublication(meta.db, p.id, v.versionId, now());
      adopted = true;
    } else {
      await versions.delete(key, v.versionId);
    }
  }
  return adopted;
}

/** Copies the object to a new version of `key`: from its content-addressed copy, else from a version published elsewhere. */
async function copyObject(deps: PublishDeps, versions: Versions, oid: string, key: ObjectKey): Promise<{ versionId: string } | undefined> {
  const content = lfsObjectKey(oid);
  if (await deps.store.head(content)) {
    try {
      return await versions.copy(content, key);
    } catch (err) {
      if (!(isDomainError(err) && err.kind === 'not_found')) throw err;
    }
  }
  for (const p of await pub.publicationsOf(deps.meta.db, oid, [])) {
    try {
      return await versions.copy(p.key as ObjectKey, key, { fromVersionId: p.versionId! });
    } catch (err) {
      if (!(isDomainError(err) && err.kind === 'not_found')) throw err;
    }
  }
  return undefined;
}

/** Content-addressed copies of `oids` that no repository needs any more (all published), removed. */
export async function removeContentCopies(deps: Pick<PublishDeps, 'meta' | 'store' | 'log'>, oids: string[]): Promise<number> {
  const done = await pub.fullyPublished(deps.meta.db, oids);
  for (const oid of done) await deps.store.delete(lfsObjectKey(oid));
  if (done.length > 0) deps.log.debug({ objects: done.length }, 'content-addressed copies of published LFS objects removed');
  return done.length;
}

/** Retries after 2 s, 4 s, … up to 10 minutes; given up after 12 attempts (about an hour). */
export function retryDelayMs(attempts: number): number | undefined {
  return attempts >= 12 ? undefined : Math.min(600_000, 1000 * 2 ** attempts);
}

/**
 * The background loop of a process that holds repositories on its disk (`serve`, a storage
 * node): claims due jobs (its shard's), runs them, and waits to be woken by a push or polls.
 */
export class Publisher {
  private readonly stop = new AbortController();
  private readonly alarm = new Alarm();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly opts: { holder: string; leaseMs: number; pollMs: number; shard?: string | undefined },
    private readonly deps: PublishDeps,
  ) {}

  /**
   * The holder names this disk, stable across restarts: what it held when it was killed is
   * taken again at once rather than after the lease runs out.
   */
  start(): void {
    this.loop ??= pub
      .releaseLeases(this.deps.meta.db, this.opts.holder)
      .catch((err: unknown) => this.deps.log.warn({ err }, 'LFS publish leases of an earlier run not released; they expire on their own'))
      .then(() => this.run());
  }

  wake(): void {
    this.alarm.wake();
  }

  async close(): Promise<void> {
    this.stop.abort(new Error('closing'));
    this.alarm.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { meta, log, metrics } = this.deps;
    while (!this.stop.signal.aborted) {
      let jobs: pub.PublishJob[] = [];
      try {
        jobs = await pub.claimJobs(meta.db, meta.dialect, this.opts.holder, this.opts.leaseMs, 1, this.opts.shard === undefined ? {} : { shard: this.opts.shard });
      } catch (err) {
        log.error({ err }, 'LFS publish jobs not read');
      }
      for (const job of jobs) {
        const started = Date.now();
        try {
          const r = await runPublishJob(this.deps, job, { holder: this.opts.holder, leaseMs: this.opts.leaseMs, signal: this.stop.signal });
          metrics?.jobs.inc({ result: 'done' });
          const created = await meta.db.selectFrom('lfs_publish_jobs').select('created_at').where('id', '=', job.id).executeTakeFirst();
          if (created) metrics?.latency.observe(Math.max(0, (Date.now() - Date.parse(created.created_at)) / 1000));
          log.info({ job: job.id, repo_id: job.repositoryId, ref: job.ref, published: r.published, skipped: r.skipped.length, duration_ms: Date.now() - started }, 'LFS files published');
        } catch (err) {
          if (this.stop.signal.aborted) break; // the lease expires; the next process takes it
          const retry = retryDelayMs(job.attempts);
          await pub.failJob(meta.db, meta.dialect, job.id, (err as Error).message ?? String(err), retry, now()).catch(() => {});
          metrics?.jobs.inc({ result: retry === undefined ? 'failed' : 'retry' });
          log.warn({ err, job: job.id, repo_id: job.repositoryId, attempts: job.attempts, retry_in_ms: retry ?? null }, retry === undefined ? 'LFS publish job failed; given up' : 'LFS publish job failed; will retry');
        }
      }
      if (jobs.length > 0) continue;
      await this.alarm.wait(this.opts.pollMs);
    }
  }
}
