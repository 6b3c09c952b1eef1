/**
 * The live event stream (`GET /api/v1/events`, Server-Sent Events): the outbox's events of one
 * repository, space or owner, as they are written, to whoever may read each repository.
 *
 * One hub per process reads the outbox for every stream at once (one query per tick however
 * many clients listen) and hands each stream the events of its scope. A stream that resumes
 * (`Last-Event-ID`) first catches up from the outbox on its own, up to where the hub is, then
 * joins it. Ids are given in commit order on SQLite but not always on PostgreSQL (a
 * transaction that took id 11 may commit after the one that took 12): the hub passes ids in
 * order and holds what follows a gap for up to GAP_WAIT_MS, for the missing id to commit (a
 * rolled-back transaction leaves a gap for good).
 */
import type { MetaStore } from '../meta/db.js';
import { eventsAfter, lastEventId, type StoredEvent } from '../meta/webhooks.js';
import type { Logger } from '../shared/log.js';

const PAGE = 500;
const GAP_WAIT_MS = 2_000;

export interface StreamScope {
  ownerId: string;
  spaceId?: string | undefined;
  repositoryId?: string | undefined;
}

export interface Subscriber {
  scope: StreamScope;
  /** Called for each event of the scope after the subscriber's cursor, in id order. */
  send(event: StoredEvent): void;
}

interface Entry extends Subscriber {
  cursor: number;
  live: boolean;
}

function inScope(e: StoredEvent, s: StreamScope): boolean {
  return e.ownerId === s.ownerId && (!s.spaceId || e.spaceId === s.spaceId) && (!s.repositoryId || e.repositoryId === s.repositoryId);
}

export class EventHub {
  private readonly subscribers = new Set<Entry>();
  private cursor: number | undefined;
  private gapSince: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  /** Woken while polling: poll again at once after. */
  private again = false;

  constructor(
    private readonly meta: MetaStore,
    private readonly log: Logger,
    private readonly pollMs = 250,
  ) {}

  /** The id of the newest event now: where a stream without Last-Event-ID starts. */
  async head(): Promise<number> {
    return this.cursor ?? lastEventId(this.meta.db);
  }

  /**
   * Starts sending `sub` the events of its scope after `afterId`, those already written first;
   * the returned function stops it.
   */
  async subscribe(sub: Subscriber, afterId: number): Promise<() => void> {
    const entry: Entry = { ...sub, cursor: afterId, live: false };
    this.subscribers.add(entry);
    const stop = () => {
      this.subscribers.delete(entry);
      if (this.subscribers.size > 0) return;
      // Idle: the next stream starts from the outbox's head then, not from here.
      this.stopPolling();
      this.cursor = undefined;
      this.gapSince = undefined;
    };
    try {
      this.cursor ??= await lastEventId(this.meta.db);
      // Catch up to where the hub is; the hub moves meanwhile, so until it is reached.
      for (;;) {
        const target: number = this.cursor;
        while (entry.cursor < target) {
          const page = (await eventsAfter(this.meta.db, sub.scope, entry.cursor, PAGE)).filter((e) => e.id <= target);
          for (const e of page) sub.send(e);
          entry.cursor = page.length === PAGE ? page.at(-1)!.id : target;
          if (!this.subscribers.has(entry)) return stop;
        }
        if (target === this.cursor) break;
      }
      entry.cursor = Math.max(entry.cursor, this.cursor);
      entry.live = true;
      this.startPolling();
    } catch (err) {
      stop();
      throw err;
    }
    return stop;
  }

  /** Reads the outbox now (this process just wrote to it), if anyone listens. */
  wake(): void {
    if (this.timer) void this.poll();
  }

  private startPolling(): void {
    if (this.timer || this.subscribers.size === 0) return;
    this.timer = setInterval(() => void this.poll(), this.pollMs);
    this.timer.unref();
  }

  private stopPolling(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Stops every stream's feed (the server is closing). */
  close(): void {
    this.stopPolling();
    this.subscribers.clear();
  }

  private async poll(): Promise<void> {
    if (this.cursor === undefined) return;
    if (this.polling) {
      this.again = true;
      return;
    }
    this.polling = true;
    this.again = false;
    try {
      const from = this.cursor;
      const page = await eventsAfter(this.meta.db, 'all', from, PAGE);
      // Every stream ended meanwhile (the hub was reset): nothing to hand on.
      if (this.cursor !== from) return;
      let next = from;
      for (const e of page) {
        if (e.id !== next + 1) {
          // A gap: wait for the missing id, then go on without it.
          this.gapSince ??= Date.now();
          if (Date.now() - this.gapSince < GAP_WAIT_MS) break;
        }
        this.gapSince = undefined;
        for (const s of this.subscribers) {
          if (s.live && e.id > s.cursor && inScope(e, s.scope)) {
            s.cursor = e.id;
            s.send(e);
          }
        }
        next = e.id;
      }
      this.cursor = next;
      for (const s of this.subscribers) if (s.live) s.cursor = Math.max(s.cursor, next);
    } catch (err) {
      this.log.error({ err }, 'event stream: the outbox could not be read');
    } finally {
      this.polling = false;
      if (this.again) void this.poll();
    }
  }
}
