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
import { pipeline as pipelineCb } from 'node:stream';
import { verifyContent } from './content.js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Db, Dialect, MetaStore } from '../meta/db.js';
import { inChunks, now } from '../meta/db.js';
import * as pub from '../meta/lfs-publish.js';
import { findRepositoryById, type RepoRow } from '../meta/repositories.js';
import { lfsObjectKey, objectKey, type ObjectKey, type ObjectStore, type Versions } from '../storage/object-store.js';
import { isDomainError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { publishedRef, readableKey } from './layout.js';
import { DEFAULT_TREE_LIMITS, lfsFilesAt, lfsFilesChanged, type LfsFile, type LfsFiles } from './pointers.js';
import { runGit } from '../git/command.js';
import { crashPoint } from '../shared/crash.js';
import { Alarm, IdleWait, type Changes } from '../shared/alarm.js';
import { IDLE_POLL_MS } from '../meta/changes.js';

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
/** Jobs (of different repositories) a process runs at once. */
const JOBS_AT_ONCE = 2;
/** Published versions of deleted repositories given back per pass (more: the loop goes on). */
const RETIRED_AT_ONCE = 50;
/** Paths one object is published at, at most, in one job. */
const MAX_PATHS_PER_OBJECT = 1000;

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
  // The lease is renewed on a timer, not between files: one large copy may outlast it. Lost
  // (another process took the job, or it was cancelled), the run stops.
  const lost = new AbortController();
  const renew = setInterval(() => {
    pub.renewJob(meta.db, meta.dialect, job.id, run.holder, run.leaseMs).then(
      (held) => held || lost.abort(new Error('the job was taken over by another process, or cancelled')),
      () => {},
    );
  }, run.leaseMs / 3);
  renew.unref();
  const release = await deps.hold?.(repo);
  try {
    return await publishFiles(deps, repo, job, { ...run, signal: run.signal ? AbortSignal.any([run.signal, lost.signal]) : lost.signal });
  } finally {
    clearInterval(renew);
    release?.();
  }
}

async function publishFiles(deps: PublishDeps, repo: RepoRow, job: pub.PublishJob, run: JobRun) {
  const { meta, store } = deps;
  const versions = versionsOf(store);
  const repoPath = deps.repoPath(repo.id);
  const found = await filesOfJob(repoPath, repo, job);
  const skipped: { path: string; reason: string }[] = [];
  if (found.truncated) skipped.push({ path: '(the rest)', reason: `more than ${DEFAULT_TREE_LIMITS.maxFiles} files (or ${DEFAULT_TREE_LIMITS.maxEntries} tree entries) in one job: the rest were not published` });
  // One object copied to a thousand paths is enough: past that, a push could make the store
  // copy one upload without end.
  const perObject = new Map<string, number>();
  const files = dedupe(found.files).filter((f) => {
    const n = (perObject.get(f.oid) ?? 0) + 1;
    perObject.set(f.oid, n);
    if (n <= MAX_PATHS_PER_OBJECT) return true;
    if (n === MAX_PATHS_PER_OBJECT + 1) skipped.push({ path: f.path, reason: `the object ${f.oid} is at more than ${MAX_PATHS_PER_OBJECT} paths: the rest were not published` });
    return false;
  });
  await pub.recordProgress(meta.db, job.id, { filesTotal: files.length });
  const lendable = await lendableOids(deps, repo, [...new Set(files.map((f) => f.oid))]);
  const publishedOids = new Set<string>();
  let filesDone = 0;
  let bytesDone = 0;
  const bytesTotal = files.reduce((sum, f) => sum + f.size, 0);
  let published = 0;
  let lastProgress = Date.now();

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
    const stored = lendable.get(file.oid);
    if (stored === undefined) {
      skipped.push({ path: file.path, reason: 'the object was not uploaded to this repository' });
      return;
    }
    if (stored !== file.size) {
      skipped.push({ path: file.path, reason: `the pointer says ${file.size} bytes; the uploaded object has ${stored}` });
      return;
    }
    let id = mine?.id;
    if (mine && (await adoptInterrupted(meta, versions, key, mine))) return void publishedOids.add(file.oid);
    id ??= await pub.beginPublication(meta.db, { repositoryId: repo.id, oid: file.oid, size: file.size, path: file.path, key, jobId: job.id, commitOid: file.commit, publishedAt: now() });
    let copied: { versionId: string } | undefined;
    try {
      copied = await copyObject(deps, versions, file.oid, key);
    } catch (err) {
      // The store refuses this key (too long with its prefix, a name it cannot hold): this file
      // is skipped, the job goes on. Anything else (the store down) fails the job, retried.
      if (!(isDomainError(err) && err.kind === 'invalid')) throw err;
      await pub.deletePublication(meta.db, id);
      skipped.push({ path: file.path, reason: err.message });
      return;
    }
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
      if (Date.now() - lastProgress > 2000) {
        lastProgress = Date.now();
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
  // Still this process's job, the repository still readable: then no one is restoring the
  // content copies this would remove (relayout --to content cancels jobs first).
  run.signal?.throwIfAborted();
  if (!(await pub.renewJob(meta.db, meta.dialect, job.id, run.holder, run.leaseMs))) throw new Error('the job was taken over by another process, or cancelled');
  if ((await findRepositoryById(meta.db, repo.id))?.lfsLayout === 'readable') await removeContentCopies(deps, [...publishedOids]);
  await pub.finishJob(meta.db, job.id, now(), skipped);
  return { published, skipped };
}

export type JobFile = LfsFile & { commit: string };

/**
 * The job's LFS files: what a push changed since the old tip, or the whole tree of a new ref;
 * a relayout, the trees of every ref the repository publishes (the default branch last, so
 * that where refs differ its file is the one published).
 */
export async function filesOfJob(repoPath: string, repo: RepoRow, job: pub.PublishJob): Promise<{ files: JobFile[]; truncated: boolean }> {
  const at = (found: LfsFiles, commit: string) => ({ files: found.files.map((f) => ({ ...f, commit })), truncated: found.truncated });
  if (job.kind === 'relayout') {
    const { stdout } = await runGit(['--git-dir', repoPath, 'for-each-ref', '--format=%(objectname) %(objecttype) %(refname)', 'refs/']);
    const tips = stdout
      .split('\n')
      .map((line) => line.split(' '))
      .filter(([oid, type, ref]) => oid && type === 'commit' && ref && publishedRef(repo, ref))
      .sort((a, b) => Number(a[2] === `refs/heads/${repo.defaultBranch}`) - Number(b[2] === `refs/heads/${repo.defaultBranch}`));
    // Tags and branches often share a tip: each tree is read once. The limits count for the whole job.
    const seen = new Set<string>();
    const files: JobFile[] = [];
    let truncated = false;
    for (const [commit] of tips) {
      if (seen.has(commit!)) continue;
      seen.add(commit!);
      const room = DEFAULT_TREE_LIMITS.maxFiles - files.length;
      if (room <= 0) {
        truncated = true;
        break;
      }
      const found = at(await lfsFilesAt(repoPath, commit!, { ...DEFAULT_TREE_LIMITS, maxFiles: room }), commit!);
      files.push(...found.files);
      truncated ||= found.truncated;
    }
    return { files, truncated };
  }
  if (pub.ZERO.test(job.newOid)) return { files: [], truncated: false };
  if (pub.ZERO.test(job.oldOid)) return at(await lfsFilesAt(repoPath, job.newOid), job.newOid);
  // A forced push's old tip may be gone after maintenance: then the whole new tree.
  const present = await runGit(['--git-dir', repoPath, 'cat-file', '-e', `${job.oldOid}^{commit}`], { check: false });
  return at(present.code === 0 ? await lfsFilesChanged(repoPath, job.oldOid, job.newOid) : await lfsFilesAt(repoPath, job.newOid), job.newOid);
}

/** One file per path: a later one (the default branch's, in a relayout) wins. */
export function dedupe(files: JobFile[]): JobFile[] {
  const byPath = new Map<string, JobFile>();
  for (const f of files) byPath.set(f.path, f);
  return [...byPath.values()];
}

/** Oids this repository may publish: linked to it, or to a public member of its fork network. */
async function lendableOids(deps: PublishDeps, repo: RepoRow, oids: string[]): Promise<Map<string, number>> {
  const { db } = deps.meta;
  const out = new Map<string, number>();
  await inChunks(oids, async (chunk) => {
    const rows = await db
      .selectFrom('lfs_objects')
      .innerJoin('repositories', 'repositories.id', 'lfs_objects.repository_id')
      .select(['lfs_objects.oid', 'lfs_objects.size'])
      .where('lfs_objects.oid', 'in', chunk)
      .where((eb) =>
        eb.or([
          eb('lfs_objects.repository_id', '=', repo.id),
          eb.and([eb(eb.fn.coalesce('repositories.fork_network', 'repositories.id'), '=', repo.forkNetwork), eb('repositories.visibility', '=', 'public')]),
        ]),
      )
      .execute();
    for (const r of rows) out.set(r.oid, Number(r.size));
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

/**
 * Gives an object its content-addressed copy back from a published version, read through the
 * same SHA-256 and size check as an upload: a damaged version never becomes a content copy.
 */
export async function restoreContentCopy(store: ObjectStore, p: Pick<pub.Publication, 'oid' | 'size' | 'key' | 'versionId'>): Promise<void> {
  const { body } = await versionsOf(store).get(objectKey(p.key), p.versionId!);
  const check = verifyContent({ oid: p.oid, size: p.size, maxBytes: Number.MAX_SAFE_INTEGER });
  await store.put(lfsObjectKey(p.oid), pipelineCb(body, check, () => {}), { size: p.size });
}

/**
 * Publications of deleted repositories (retired): an object some repository still links, with
 * no content copy and no live repository's publication, gets its content copy back; then the
 * version is deleted with its record, so a deleted repository's tree leaves the bucket. A few
 * at a time; the number handled.
 */
export async function giveBackRetired(deps: Pick<PublishDeps, 'meta' | 'store'>, limit: number): Promise<number> {
  const { meta, store } = deps;
  const rows = await pub.retiredPublications(meta.db, limit);
  for (const p of rows) {
    if (p.versionId !== null) {
      const need = await pub.stillNeeded(meta.db, p.oid);
      if (need.linked && !need.publishedElsewhere && !(await store.head(lfsObjectKey(p.oid)))) {
        try {
          await restoreContentCopy(store, p);
        } catch (err) {
          // The version is gone already (GC): nothing to give back from.
          if (!(isDomainError(err) && err.kind === 'not_found')) throw err;
        }
      }
      await versionsOf(store).delete(objectKey(p.key), p.versionId);
    }
    await pub.deletePublication(meta.db, p.id);
  }
  return rows.length;
}

/** Content-addressed copies of `oids` that no repository needs any more (all published), removed. */
export async function removeContentCopies(deps: Pick<PublishDeps, 'meta' | 'store' | 'log'>, oids: string[]): Promise<number> {
  const done = await pub.fullyPublished(deps.meta.db, oids);
  for (const oid of done) await deps.store.delete(lfsObjectKey(oid));
  if (done.length > 0) deps.log.debug({ objects: done.length }, 'content-addressed copies of published LFS objects removed');
  return done.length;
}

/** Retries after 2 s, 4 s, … up to 10 minutes; given up after MAX_ATTEMPTS (about an hour). */
export function retryDelayMs(attempts: number): number | undefined {
  return attempts >= pub.MAX_ATTEMPTS ? undefined : Math.min(600_000, 1000 * 2 ** attempts);
}

/**
 * The background loop of a process that holds repositories on its disk (`serve`, a storage
 * node): claims due jobs (its shard's), runs them, and waits to be woken by a push or polls.
 */
export class Publisher {
  private readonly stop = new AbortController();
  private readonly alarm = new Alarm();
  private readonly pace: IdleWait;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly opts: { holder: string; leaseMs: number; pollMs: number; idlePollMs?: number; shard?: string | undefined },
    private readonly deps: PublishDeps & { changes?: Changes | undefined },
  ) {
    this.pace = new IdleWait(this.alarm, deps.changes, opts.pollMs, opts.idlePollMs ?? IDLE_POLL_MS);
  }

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
    this.pace.close();
    this.alarm.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    const { meta, log } = this.deps;
    const running = new Set<Promise<void>>();
    while (!this.stop.signal.aborted) {
      let jobs: pub.PublishJob[] = [];
      const free = JOBS_AT_ONCE - running.size;
      this.pace.polling();
      if (free > 0) {
        try {
          jobs = await pub.claimJobs(meta.db, meta.dialect, this.opts.holder, this.opts.leaseMs, free, this.opts.shard === undefined ? {} : { shard: this.opts.shard });
        } catch (err) {
          log.error({ err }, 'LFS publish jobs not read');
        }
      }
      // Repositories side by side (one job of each at a time, claimJobs sees to it): one large
      // push does not hold up every other repository's publishing.
      for (const job of jobs) {
        const done: Promise<void> = this.runOne(job).finally(() => {
          running.delete(done);
          this.alarm.wake();
        });
        running.add(done);
      }
      if (jobs.length > 0 && jobs.length === free) continue;
      let retired = 0;
      if (running.size === 0) {
        retired = await giveBackRetired(this.deps, RETIRED_AT_ONCE).catch((err: unknown) => {
          log.warn({ err }, 'published LFS versions of deleted repositories not given back; trying again later');
          return 0;
        });
      }
      // Idle: sleep until a change or the nearest retry (a failed query: poll again soon).
      const idle = jobs.length === 0 && running.size === 0 && retired < RETIRED_AT_ONCE && this.deps.changes?.live() === true;
      const shard = this.opts.shard === undefined ? {} : { shard: this.opts.shard };
      const due = idle ? await pub.nextJobDueMs(meta.db, meta.dialect, shard).catch(() => 0) : undefined;
      await this.pace.wait(idle, due);
    }
    await Promise.allSettled([...running]);
  }

  private async runOne(job: pub.PublishJob): Promise<void> {
    const { meta, log, metrics } = this.deps;
    const started = Date.now();
    try {
      const r = await runPublishJob(this.deps, job, { holder: this.opts.holder, leaseMs: this.opts.leaseMs, signal: this.stop.signal });
      metrics?.jobs.inc({ result: 'done' });
      const created = await meta.db.selectFrom('lfs_publish_jobs').select('created_at').where('id', '=', job.id).executeTakeFirst();
      if (created) metrics?.latency.observe(Math.max(0, (Date.now() - Date.parse(created.created_at)) / 1000));
      log.info({ job: job.id, repo_id: job.repositoryId, ref: job.ref, published: r.published, skipped: r.skipped.length, duration_ms: Date.now() - started }, 'LFS files published');
    } catch (err) {
      if (this.stop.signal.aborted) return; // left pending: the next start takes it up
      const retry = retryDelayMs(job.attempts);
      await pub.failJob(meta.db, meta.dialect, job.id, (err as Error).message ?? String(err), retry, now()).catch(() => {});
      metrics?.jobs.inc({ result: retry === undefined ? 'failed' : 'retry' });
      log.warn({ err, job: job.id, repo_id: job.repositoryId, attempts: job.attempts, retry_in_ms: retry ?? null }, retry === undefined ? 'LFS publish job failed; given up' : 'LFS publish job failed; will retry');
    }
  }

}
