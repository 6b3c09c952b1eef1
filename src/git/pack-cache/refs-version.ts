/**
 * The refs version of a repository: a short fingerprint that changes whenever any ref changes,
 * whoever changes it (a push through us, a mirror sync, an admin running git on the disk). It
 * is read from disk on every request, so no hook or event can be missed.
 *
 * What is read: HEAD, packed-refs, the repository's config and shallow files, reftable's
 * table list (if any), and every loose ref under refs/ (lock files skipped: until git renames
 * one into place, the update it stands for has not happened). For each file the fingerprint
 * hashes its name, its stat (inode, size, mtime, ctime) and a digest of its content.
 *
 * The stat alone would nearly do: git writes every ref file by renaming a lock file over it,
 * so each update brings a new inode. But inode numbers are reused and file times come from a
 * coarse clock, so two updates within one tick could bring back an identical stat with other
 * content. Reading every file's content on every request would cost a read per ref, so the
 * content digest is remembered per (file, stat), and only once the file is older than
 * RACY_WINDOW_MS when it is read ("racy git", Documentation/technical/racy-git.txt): a later
 * write would carry a later time, hence another stat. A file modified more recently is read
 * again on every request until it has aged. The fingerprint of an unchanged repository is
 * therefore the same whenever it is taken, and any change to any ref changes it.
 *
 * A repository with at most INLINE_MAX_REFS loose refs and small files is walked inline, on the
 * main thread (a few readdirs and stats: about 40 µs of CPU, where the worker's round trip cost 175; issue
 * 12). The first walk that finds more marks the repository for the worker from then on.
 * Any larger walk (refs-walk.ts) runs in a worker thread, never on the main thread (issue 9): with
 * 100,000 loose refs it costs 0.7 s of CPU once the digests are remembered, 2 s before, on
 * every ls-refs request. Sliced on the main thread it still kept the event loop busy for all
 * of that, and under 4 clients fetching such a repository `/healthz` waited up to 2 s. The
 * main thread now only posts the request and receives 16 hex digits. Concurrent reads of one
 * repository share one walk: a caller that arrives while a walk runs waits for the next one,
 * which starts after it arrived, so an update acknowledged before a request is always seen
 * (docs/design/pack-cache.md).
 */
import { Worker } from 'node:worker_threads';
import type { WalkReply, WalkRequest } from './refs-version-worker.js';
import { RefsWalker } from './refs-walk.js';

export { listLooseRefs } from './refs-walk.js';

/** Repositories remembered as too large to walk inline; beyond this many, the set starts over. */
const MAX_LARGE = 10_000;

interface Pending {
  resolve(version: string): void;
  reject(err: Error): void;
}

export class RefsVersions {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly inline = new RefsWalker();
  /** Repositories (and `path\0config`) whose walk is the worker's. */
  private readonly large = new Set<string>();

  /** `inline: false`: every walk in the worker (tests of the worker's walk). */
  constructor(private readonly opts: { inline?: boolean } = {}) {}

  /** A 16-hex-digit fingerprint of the repository's refs; changes whenever any ref does. */
  read(repoPath: string, nowMs?: number): Promise<string> {
    const at = nowMs ?? Date.now();
    return this.walkInline(repoPath, () => this.inline.readInline(repoPath, at)) ?? this.ask({ id: 0, kind: 'refs', repoPath, nowMs: at });
  }

  /**
   * The fingerprint of the repository's config alone: what a protocol v2 capability
   * advertisement depends on (it lists no refs), so a push does not make it a miss.
   */
  readConfig(repoPath: string, nowMs?: number): Promise<string> {
    const at = nowMs ?? Date.now();
    return this.walkInline(`${repoPath}\0config`, () => this.inline.readConfigInline(repoPath, at)) ?? this.ask({ id: 0, kind: 'config', repoPath, nowMs: at });
  }

  /** The inline walk's fingerprint, or undefined (then and from now on) for a repository too large for it. */
  private walkInline(memo: string, walk: () => string | undefined): Promise<string> | undefined {
    if (this.opts.inline === false || this.large.has(memo)) return undefined;
    let version: string | undefined;
    try {
      version = walk();
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (version !== undefined) return Promise.resolve(version);
    if (this.large.size >= MAX_LARGE) this.large.clear();
    this.large.add(memo);
    return undefined;
  }

  /** Stops the worker; a later read starts another (with no remembered digests). */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  private ask(request: WalkRequest): Promise<string> {
    const id = this.nextId++;
    return new Promise<string>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const worker = this.started();
      worker.ref();
      worker.postMessage({ ...request, id });
    });
  }

  private started(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL('./refs-version-worker.js', import.meta.url));
    worker.on('message', (reply: WalkReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      // A worker with no read pending must not keep the process alive (listeners ref it).
      if (this.pending.size === 0) worker.unref();
      if (reply.error !== undefined) p.reject(new Error(reply.error));
      else p.resolve(reply.version);
    });
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = undefined;
      const waiting = [...this.pending.values()];
      this.pending.clear();
      for (const p of waiting) p.reject(err);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`refs worker exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }
}
