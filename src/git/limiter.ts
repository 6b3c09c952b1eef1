/**
 * Bounds how many git processes run at once. Callers over the bound wait in a FIFO queue of
 * bounded length for a bounded time; beyond either they get `unavailable` (503 with
 * Retry-After at the edge) before any byte of a response is sent.
 */
import { unavailable } from '../shared/errors.js';

export interface LimiterOptions {
  maxRunning: number;
  maxQueue: number;
  queueTimeoutMs: number;
}

interface Waiter {
  resolve(release: () => void): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export class Limiter {
  private running = 0;
  private readonly queue: Waiter[] = [];

  constructor(private readonly opts: LimiterOptions) {}

  get runningCount(): number {
    return this.running;
  }

  get queuedCount(): number {
    return this.queue.length;
  }

  /** Waits for a slot; the returned function gives it back (calling it twice is harmless). */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.running < this.opts.maxRunning && this.queue.length === 0) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.queue.length >= this.opts.maxQueue) {
      return Promise.reject(unavailable('git_busy', 'server busy: too many git processes, try again shortly'));
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.remove(waiter);
          reject(unavailable('git_queue_timeout', 'server busy: timed out waiting for a git process slot'));
        }, this.opts.queueTimeoutMs),
      };
      signal?.addEventListener(
        'abort',
        () => {
          if (this.remove(waiter)) reject(unavailable('client_gone', 'client went away while queued'));
        },
        { once: true },
      );
      this.queue.push(waiter);
    });
  }

  private remove(waiter: Waiter): boolean {
    const i = this.queue.indexOf(waiter);
    if (i < 0) return false;
    this.queue.splice(i, 1);
    clearTimeout(waiter.timer);
    return true;
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) {
        clearTimeout(next.timer);
        next.resolve(this.releaser());
      } else {
        this.running--;
      }
    };
  }
}
