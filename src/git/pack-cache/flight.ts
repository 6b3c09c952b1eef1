/**
 * One generation of a response: a git process whose output goes to a temporary file that
 * every identical request follows (single flight), and that becomes a cache entry if it may.
 *
 * Life of a flight:
 * 1. a temporary file; for pack generation, a slot from the admission control (the queue
 *    wait happens here, and a refusal reaches every attached request before any byte);
 * 2. git runs; `started` resolves once git has written its first byte (or rejects with its
 *    refusal, so the status line is still free);
 * 3. git's output is written at git's pace; readers follow at theirs;
 * 4. if git exited 0 and every byte was written, and storing is allowed (admitted, not too
 *    large, enough free space, refs still current), the file is committed to the store.
 *
 * A flight that will not be stored stops git as soon as no request follows it any more; one
 * that will be stored runs to the end even if its clients left, so the next one finds it.
 * The temporary file's descriptor stays open while the flight or any reader needs it.
 */
import { close, fstatSync, watch, type FSWatcher } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../../shared/log.js';
import { isDomainError, unavailable } from '../../shared/errors.js';
import { gitFailure, type GitResponse, type Outcome } from '../smart-http.js';
import type { GenerationAdmission } from './admission.js';
import { GrowingFile, type GrowingFileReader } from './growing-file.js';
import type { PackCacheMetrics } from './metrics.js';
import { type EntryMeta, type PackStore, type TempFile } from './store.js';

/** How often a file git writes itself is looked at, besides when inotify reports a change. */
const WATCH_INTERVAL_MS = 50;
/** How often a file git is writing fast is looked at instead (see watchGrowth). */
const FOLLOW_INTERVAL_MS = 10;
/** Looks in a row that find the file as it was before inotify takes over again. */
const QUIET_LOOKS = 3;

/** Starts git writing the response into `file`; resolves once it runs, with its outcome to come. */
export type GenerateInto = (file: string, signal: AbortSignal) => Promise<{ done: Promise<Outcome> }>;

/** How often the free space is looked at again while a response is being written. */
const SPACE_CHECK_BYTES = 64 * 1024 * 1024;

type Blocked = 'admit_after' | 'too_large' | 'no_space';

/** The cache's own file system failed before git ran: serve the request without the cache. */
export class CacheUnusable extends Error {
  override name = 'CacheUnusable';
}

export interface FlightDeps {
  store: PackStore;
  metrics: PackCacheMetrics;
  log: Logger;
  /** Present for pack generation (fetch); advertisements and ls-refs are not admission-bound. */
  admission: GenerationAdmission | undefined;
  onSettled(flight: Flight): void;
}

export class Flight {
  /** Resolves when git has written its first byte; rejects with the refusal otherwise. */
  readonly started: Promise<void>;
  /** git's outcome once the flight is over; undefined if git never ran. Never rejects. */
  readonly finished: Promise<Outcome | undefined>;

  private temp: TempFile | undefined;
  private file: GrowingFile | undefined;
  /** The flight's own reference (until settled) plus one per attached request. */
  private refs = 1;
  private attached = 0;
  private running = true;
  private blocked: Blocked | undefined;
  private stopped = false;
  private nextSpaceCheck = SPACE_CHECK_BYTES;
  private readonly abort = new AbortController();
  private resolveStarted!: () => void;
  private rejectStarted!: (err: unknown) => void;

  constructor(
    readonly meta: EntryMeta,
    private readonly deps: FlightDeps,
    generate: (signal: AbortSignal) => Promise<GitResponse>,
    admitted: boolean,
    /** git writes into the temporary file itself (GitServices.uploadPackInto); else `generate` is read. */
    private readonly into?: GenerateInto,
  ) {
    this.blocked = admitted ? undefined : 'admit_after';
    this.started = new Promise<void>((resolve, reject) => {
      this.resolveStarted = resolve;
      this.rejectStarted = reject;
    });
    // Every attached request awaits `started`; none may be attached when it fails.
    this.started.catch(() => {});
    this.finished = this.run(generate);
  }

  /** Another request asked for this key within the window: the response may be stored. */
  admitStore(): void {
    if (this.blocked === 'admit_after') this.blocked = undefined;
  }

  /** Stops git (server shutdown); readers still waiting for bytes fail. */
  stop(): void {
    this.stopped = true;
    this.abort.abort();
  }

  /**
   * Follows the flight for one request: waits until git has started, then reads the file
   * from its first byte. Rejects with the flight's refusal (before any byte) or client_gone.
   */
  async attach(signal: AbortSignal): Promise<GrowingFileReader> {
    this.refs++;
    this.attached++;
    let detached = false;
    const detach = () => {
      if (detached) return;
      detached = true;
      this.attached--;
      this.refs--;
      this.abandonIfUnwanted();
      this.closeIfUnused();
    };
    try {
      await Promise.race([
        this.started,
        new Promise<never>((_, reject) => {
          const gone = () => reject(unavailable('client_gone', 'client went away while waiting for git'));
          if (signal.aborted) gone();
          else signal.addEventListener('abort', gone, { once: true });
        }),
      ]);
    } catch (err) {
      detach();
      throw err;
    }
    const reader = this.file!.reader();
    const onAbort = () => reader.destroy();
    signal.addEventListener('abort', onAbort, { once: true });
    reader.once('close', () => {
      signal.removeEventListener('abort', onAbort);
      detach();
    });
    if (signal.aborted) reader.destroy();
    return reader;
  }

  private async run(generate: (signal: AbortSignal) => Promise<GitResponse>): Promise<Outcome | undefined> {
    const { store, metrics, admission } = this.deps;
    let release: (() => void) | undefined;
    let res: GitResponse;
    try {
      try {
        this.temp = await store.createTemp(this.meta.key);
      } catch (err) {
        throw new CacheUnusable((err as Error).message);
      }
      this.file = new GrowingFile(this.temp.fd, 0);
      if (admission) {
        try {
          release = await admission.acquire(this.meta.repoId, this.abort.signal);
        } catch (err) {
          if (isDomainError(err) && err.code !== 'client_gone') metrics.admissionRejections.inc({ code: err.code });
          throw err;
        }
      }
      if (this.into) return await this.runInto(this.into, release);
      res = await generate(this.abort.signal);
    } catch (err) {
      release?.();
      this.running = false;
      this.rejectStarted(err);
      await this.settle(false);
      return undefined;
    }
    this.resolveStarted();

    const file = this.file;
    let writeError: Error | undefined;
    try {
      await pipeline(res.body, file.writer((n) => this.onWritten(n)));
    } catch (err) {
      writeError = err as Error;
      this.abort.abort();
    }
    if (writeError || this.stopped) file.fail(writeError ?? new Error('pack generation stopped'));
    else file.finish();
    const outcome = await res.done;
    release?.();
    this.running = false;

    let reason: string | undefined;
    if (writeError || this.stopped) reason = 'error';
    else if (this.abort.signal.aborted) reason = 'abandoned';
    else if (outcome.code !== 0) reason = 'failed';
    else reason = this.blocked;
    if (writeError) this.deps.log.error({ err: writeError, key: this.meta.key, repo_id: this.meta.repoId }, 'pack cache write failed');
    await this.store(reason);
    return outcome;
  }

  /**
   * The flight when git writes the file itself: its growth is watched (watchGrowth) and handed
   * to the readers; `started` once the first byte is there. Failing before any byte is a
   * refusal, as for a piped git.
   */
  private async runInto(into: GenerateInto, release: (() => void) | undefined): Promise<Outcome | undefined> {
    const temp = this.temp!;
    const file = this.file!;
    let started = false;
    // Synchronous: an fstat through libuv's thread pool costs about 25 µs of CPU against 2
    // inline (issue 12). True if the file grew.
    const check = (): boolean => {
      let size: number;
      try {
        size = fstatSync(temp.fd).size;
      } catch {
        return false;
      }
      if (size <= file.written) return false;
      file.grew(size);
      this.onWritten(size);
      if (!started) {
        started = true;
        this.resolveStarted();
      }
      return true;
    };
    let unwatch: (() => void) | undefined;
    let outcome: Outcome;
    try {
      const generation = await into(temp.file, this.abort.signal);
      unwatch = watchGrowth(temp.file, check);
      outcome = await generation.done;
    } catch (err) {
      release?.();
      unwatch?.();
      this.running = false;
      this.rejectStarted(err);
      await this.settle(false);
      return undefined;
    }
    unwatch!();
    release?.();
    // Whatever git wrote before it exited.
    check();
    this.running = false;
    const failed = outcome.code !== 0 || this.stopped;
    if (!started) {
      if (failed) {
        this.rejectStarted(gitFailure(outcome.stderr, outcome.timedOut));
        this.deps.metrics.notStored.inc({ reason: this.abort.signal.aborted ? 'abandoned' : 'failed' });
        await this.settle(false);
        return outcome;
      }
      this.resolveStarted();
    }
    // A failed git's own output (its ERR line, a cut pack) reaches its clients as it would
    // through a pipe; only a server shutdown cuts them off.
    if (this.stopped) file.fail(new Error('pack generation stopped'));
    else file.finish();
    await this.store(this.stopped ? 'error' : this.abort.signal.aborted ? 'abandoned' : outcome.code !== 0 ? 'failed' : this.blocked);
    return outcome;
  }

  /** Commits the finished file unless `reason` says why not; counts either way, then settles. */
  private async store(reason: string | undefined): Promise<void> {
    const { store, metrics } = this.deps;
    const file = this.file!;
    let stored = false;
    if (!reason) {
      try {
        stored = await store.commit(this.temp!, this.meta, file.written, await file.digest());
        if (!stored) reason = file.written > store.maxEntryBytes ? 'too_large' : 'stale';
      } catch (err) {
        reason = 'error';
        this.deps.log.error({ err, key: this.meta.key, repo_id: this.meta.repoId }, 'pack cache entry not stored');
      }
    }
    if (stored) metrics.stored.inc();
    else metrics.notStored.inc({ reason: reason! });
    await this.settle(stored);
  }

  private onWritten(written: number): void {
    if (this.blocked) return;
    if (written > this.deps.store.maxEntryBytes) {
      this.blocked = 'too_large';
      this.abandonIfUnwanted();
      return;
    }
    if (written >= this.nextSpaceCheck) {
      this.nextSpaceCheck = written + SPACE_CHECK_BYTES;
      void this.deps.store.hasFreeSpace().then((ok) => {
        if (ok || this.blocked) return;
        // Readers still need the bytes, so writing goes on; the file is dropped at the end.
        this.blocked = 'no_space';
        this.abandonIfUnwanted();
      });
    }
  }

  /** Nobody follows a response that will not be kept: stop git now. */
  private abandonIfUnwanted(): void {
    if (this.running && this.attached === 0 && this.blocked) this.abort.abort();
  }

  private async settle(stored: boolean): Promise<void> {
    this.deps.onSettled(this);
    if (!stored && this.temp) await unlink(this.temp.file).catch(() => {});
    this.refs--;
    this.closeIfUnused();
  }

  private closeIfUnused(): void {
    if (this.refs > 0 || !this.temp) return;
    const { fd } = this.temp;
    this.temp = undefined;
    close(fd, () => {});
  }
}

/**
 * Calls `look` whenever the file git writes may have grown; returns the function that stops.
 * While git is quiet (working out what to send) inotify tells of the next write, and a look
 * every WATCH_INTERVAL_MS covers a change it does not report. Once the file grows, inotify is
 * put aside and the file is looked at every FOLLOW_INTERVAL_MS until it stops growing: inotify
 * reports each of git's writes, two for every 64 KiB packet, and each woke the server (4,900
 * to 8,600 wakes for one 100 MB clone, against 340 to 430 this way; readers take 1 MiB at a
 * time and wait up to 10 ms for one to gather anyway: growing-file.ts). What git wrote
 * before it exited is the caller's last look.
 */
function watchGrowth(file: string, look: () => boolean): () => void {
  let watcher: FSWatcher | undefined;
  let follower: NodeJS.Timeout | undefined;
  let quiet = 0;
  const follow = () => {
    if (follower) return;
    watcher?.close();
    watcher = undefined;
    quiet = 0;
    follower = setInterval(() => {
      if (look()) quiet = 0;
      else if (++quiet >= QUIET_LOOKS) watchAgain();
    }, FOLLOW_INTERVAL_MS);
  };
  const watchAgain = () => {
    clearInterval(follower);
    follower = undefined;
    try {
      watcher = watch(file, { persistent: false }, () => {
        if (look()) follow();
      });
      watcher.on('error', () => {});
    } catch {
      // No inotify: the slower look alone.
    }
    // A write between the last look and the watch would go unreported.
    if (look()) follow();
  };
  const slow = setInterval(() => {
    if (!follower && look()) follow();
  }, WATCH_INTERVAL_MS);
  watchAgain();
  return () => {
    watcher?.close();
    clearInterval(follower);
    clearInterval(slow);
  };
}
