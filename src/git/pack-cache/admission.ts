/**
 * Admission control for pack generation: cache misses that must run `git upload-pack` to build
 * a pack are bounded per repository and overall. Over a bound a request waits in a short
 * queue, then gets `unavailable` (503 + Retry-After at the edge) before any byte is sent.
 * Hits and followers of a running generation never come here.
 *
 * Two Limiters: the repository's first (so a busy repository queues on its own slots and does
 * not hold global ones while it waits), then the global one.
 */
import { Limiter } from '../limiter.js';

export interface AdmissionOptions {
  maxRunning: number;
  maxRunningPerRepo: number;
  maxQueue: number;
  queueTimeoutMs: number;
}

export class GenerationAdmission {
  private readonly global: Limiter;
  private readonly perRepo = new Map<string, Limiter>();

  constructor(private readonly opts: AdmissionOptions) {
    this.global = new Limiter({ maxRunning: opts.maxRunning, maxQueue: opts.maxQueue, queueTimeoutMs: opts.queueTimeoutMs });
  }

  get running(): number {
    return this.global.runningCount;
  }

  get queued(): number {
    let n = this.global.queuedCount;
    for (const l of this.perRepo.values()) n += l.queuedCount;
    return n;
  }

  /** Waits for a generation slot; the returned function gives it back (twice is harmless). */
  async acquire(repoId: string, signal?: AbortSignal): Promise<() => void> {
    let repo = this.perRepo.get(repoId);
    if (!repo) {
      repo = new Limiter({ maxRunning: this.opts.maxRunningPerRepo, maxQueue: this.opts.maxQueue, queueTimeoutMs: this.opts.queueTimeoutMs });
      this.perRepo.set(repoId, repo);
    }
    const limiter = repo;
    const forget = () => {
      if (limiter.runningCount === 0 && limiter.queuedCount === 0 && this.perRepo.get(repoId) === limiter) this.perRepo.delete(repoId);
    };
    let releaseRepo: () => void;
    try {
      releaseRepo = await limiter.acquire(signal);
    } catch (err) {
      forget();
      throw err;
    }
    let releaseGlobal: () => void;
    try {
      releaseGlobal = await this.global.acquire(signal);
    } catch (err) {
      releaseRepo();
      forget();
      throw err;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      releaseGlobal();
      releaseRepo();
      forget();
    };
  }
}
