/**
 * The wait of a background loop that polls and can be nudged (webhook deliveries, LFS
 * publishing): it ends after `ms`, or at once when woken, whichever comes first. A wake while
 * nothing waits is dropped: the loop looks for work before it waits again.
 */
export class Alarm {
  private ring: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private endsAt = 0;

  wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const end = () => this.stop(resolve);
      this.ring = end;
      this.arm(ms);
    });
  }

  wake(): void {
    this.ring?.();
  }

  /** Ends the current wait within `ms`, unless it ends sooner anyway; nothing if none waits. */
  soon(ms: number): void {
    if (this.ring && Date.now() + ms < this.endsAt) this.arm(ms);
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    const end = this.ring;
    this.endsAt = Date.now() + ms;
    this.timer = setTimeout(() => end?.(), ms);
    this.timer.unref();
  }

  private stop(resolve: () => void): void {
    clearTimeout(this.timer);
    this.ring = undefined;
    resolve();
  }
}

/** What IdleWait needs of a change feed (meta/changes.ts). */
export interface Changes {
  subscribe(fn: () => void): () => void;
  live(): boolean;
}

/**
 * How a polling loop waits between polls. Busy (it found work, or work is in sight), or
 * without a live change feed: `pollMs`, as a plain poll. Idle: until the feed reports a change
 * (heeded no sooner than `pollMs` after the last poll, so a stream of writes costs no more
 * polls than polling did), until work it was told of falls due, or `idleMs` at most.
 */
export class IdleWait {
  private lastPoll = 0;
  private readonly unsubscribe: (() => void) | undefined;

  constructor(
    private readonly alarm: Alarm,
    private readonly changes: Changes | undefined,
    private readonly pollMs: number,
    private readonly idleMs: number,
  ) {
    this.unsubscribe = changes?.subscribe(() => this.alarm.soon(Math.max(0, this.lastPoll + this.pollMs - Date.now())));
  }

  /** The loop is about to look for work. */
  polling(): void {
    this.lastPoll = Date.now();
  }

  /** Waits as the loop's state allows: `dueInMs` is when the nearest known work falls due. */
  wait(idle: boolean, dueInMs?: number): Promise<void> {
    if (!idle || !this.changes?.live()) return this.alarm.wait(this.pollMs);
    return this.alarm.wait(Math.min(this.idleMs, Math.max(this.pollMs, dueInMs ?? Infinity)));
  }

  close(): void {
    this.unsubscribe?.();
  }
}
