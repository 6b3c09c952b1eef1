/**
 * The waits of background loops (alarm.ts). Every wait here would last ten minutes if the
 * behaviour under test were missing; the tests' own timeout catches that.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Alarm, IdleWait, type Changes } from './alarm.js';

const LONG = 600_000;
const opts = { timeout: 20_000 };
// The loops' timers do not hold a process open (unref): this does, for the tests' waits.
const keepAlive = setInterval(() => {}, 1_000);
after(() => clearInterval(keepAlive));

function fakeFeed(live: boolean): Changes & { ring(): void } {
  const subscribers = new Set<() => void>();
  return {
    live: () => live,
    subscribe(fn) {
      subscribers.add(fn);
      return () => subscribers.delete(fn);
    },
    ring: () => subscribers.forEach((fn) => fn()),
  };
}

test('soon() ends a long wait early; wake() at once', opts, async () => {
  const alarm = new Alarm();
  const waiting = alarm.wait(LONG);
  alarm.soon(10);
  await waiting;
  const again = alarm.wait(LONG);
  alarm.wake();
  await again;
});

test('soon() never lengthens a wait, and does nothing while none waits', opts, async () => {
  const alarm = new Alarm();
  alarm.soon(0);
  const waiting = alarm.wait(10);
  alarm.soon(LONG);
  await waiting;
});

test('an idle loop with a live feed sleeps until the feed rings', opts, async () => {
  const feed = fakeFeed(true);
  const wait = new IdleWait(new Alarm(), feed, 10, LONG);
  wait.polling();
  let ended = false;
  const sleeping = wait.wait(true).then(() => (ended = true));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(ended, false, 'still asleep after ten poll intervals');
  feed.ring();
  await sleeping;
  wait.close();
});

test('an idle loop sleeps no longer than its nearest due work', opts, async () => {
  const wait = new IdleWait(new Alarm(), fakeFeed(true), 10, LONG);
  await wait.wait(true, 50);
});

test('without a live feed, or busy, a loop polls as before', opts, async () => {
  await new IdleWait(new Alarm(), fakeFeed(false), 10, LONG).wait(true);
  await new IdleWait(new Alarm(), undefined, 10, LONG).wait(true);
  await new IdleWait(new Alarm(), fakeFeed(true), 10, LONG).wait(false);
});
