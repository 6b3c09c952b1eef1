/**
 * Tells the background loops (snapshots, webhook deliveries, LFS publishing) when the metadata
 * database may hold new work for them, so that an idle loop sleeps instead of polling (issue
 * 12: an idle server spent 3.5-3.7 ms of CPU a second, mostly on these polls; 1.5-1.8 with the
 * feed). Work may be written by any process (a push's hook here, the CLI, another node), so
 * the feed watches the database, not this process:
 * - SQLite: a probe every PROBE_MS of the counters SQLite keeps (MetaStore.changeMark), a few
 *   microseconds when run back to back, against about a millisecond for one loop's poll. Every
 *   commit changes them, by this process or another. On machines that charge a process for
 *   waking up (bench/README.md, issue 12's fourth round) one probe after 500 ms asleep measured
 *   0.6-3 ms instead: most of it is the wake, which any timer pays.
 * - PostgreSQL: NOTIFY on WORK_CHANNEL, sent by triggers on the work tables (migration 0023)
 *   when a transaction that wrote work commits. A dropped connection is opened again, and every
 *   subscriber is called then (what was written meanwhile was not announced).
 * A loop sleeps only while its feed is live (PostgreSQL: while listening); otherwise it polls
 * as often as it did without one. Even then it polls at least every IDLE_POLL_MS, and work
 * that falls due with time alone (a retry's backoff) it asks the time of.
 */
import type { MetaStore } from './db.js';
import type { Logger } from '../shared/log.js';

export const WORK_CHANNEL = 'gitstratum_work';
const PROBE_MS = 500;
/** The longest an idle loop sleeps without a change seen. */
export const IDLE_POLL_MS = 30_000;

export interface ChangeFeed {
  /** Calls `fn` after commits that may bring work; returns a function that stops the calls. */
  subscribe(fn: () => void): () => void;
  /** True while no change can go unseen: a subscriber may sleep until called. */
  live(): boolean;
  close(): Promise<void>;
}

/** The feed of `meta`'s database; none where the store can tell no change (loops poll then). */
export function changeFeed(meta: MetaStore, log: Logger): ChangeFeed | undefined {
  if (meta.changeMark) return probeFeed(meta.changeMark);
  if (meta.listen) return notifyFeed(meta.listen, log);
  return undefined;
}

/** Subscribers, and a source started with the first and stopped with the last. */
function fanOut(live: () => boolean, start: (ring: () => void) => () => Promise<void> | void): ChangeFeed {
  const subscribers = new Set<() => void>();
  let stop: (() => Promise<void> | void) | undefined;
  const ring = () => {
    for (const fn of subscribers) fn();
  };
  return {
    live: () => stop !== undefined && live(),
    subscribe(fn) {
      const own = () => fn();
      subscribers.add(own);
      stop ??= start(ring);
      return () => {
        subscribers.delete(own);
        if (subscribers.size === 0 && stop) {
          void stop();
          stop = undefined;
        }
      };
    },
    async close() {
      subscribers.clear();
      await stop?.();
      stop = undefined;
    },
  };
}

function probeFeed(changeMark: () => string): ChangeFeed {
  return fanOut(() => true, (ring) => {
    // A probe that fails (the database closed under a forgotten subscriber, or busy) counts as
    // a change: a loop polls once too often rather than sleeping through work.
    const mark = () => {
      try {
        return changeMark();
      } catch {
        return undefined;
      }
    };
    let seen = mark();
    const timer = setInterval(() => {
      const now = mark();
      if (now === seen && now !== undefined) return;
      seen = now;
      ring();
    }, PROBE_MS);
    timer.unref();
    return () => clearInterval(timer);
  });
}

function notifyFeed(listen: NonNullable<MetaStore['listen']>, log: Logger): ChangeFeed {
  let listening = false;
  return fanOut(
    () => listening,
    (ring) => {
      let closing = false;
      let retry: NodeJS.Timeout | undefined;
      let unlisten: (() => Promise<void>) | undefined;
      const onState = (up: boolean) => {
        listening = up;
        // Back after a gap: what was written meanwhile was not announced.
        if (up) ring();
      };
      const attempt = (): void => {
        listen(WORK_CHANNEL, ring, onState).then(
          (stop) => {
            if (closing) return void stop();
            unlisten = stop;
          },
          (err: unknown) => {
            if (closing) return;
            log.warn({ err }, 'not listening for new background work; idle loops poll as often as before until it is');
            retry = setTimeout(attempt, 5_000).unref();
          },
        );
      };
      attempt();
      return async () => {
        closing = true;
        listening = false;
        clearTimeout(retry);
        await unlisten?.();
      };
    },
  );
}
