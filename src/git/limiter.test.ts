import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Limiter } from './limiter.js';

test('runs at most maxRunning at once and hands slots to waiters in order', async () => {
  const limiter = new Limiter({ maxRunning: 1, maxQueue: 5, queueTimeoutMs: 1000 });
  const first = await limiter.acquire();
  const order: number[] = [];
  const second = limiter.acquire().then((release) => {
    order.push(2);
    return release;
  });
  const third = limiter.acquire().then((release) => {
    order.push(3);
    release();
  });
  assert.equal(limiter.queuedCount, 2);
  first();
  (await second)();
  await third;
  assert.deepEqual(order, [2, 3]);
  assert.equal(limiter.runningCount, 0);
});

test('refuses when the queue is full and when the wait times out', async () => {
  const limiter = new Limiter({ maxRunning: 1, maxQueue: 1, queueTimeoutMs: 50 });
  const release = await limiter.acquire();
  const waiting = limiter.acquire();
  await assert.rejects(limiter.acquire(), { code: 'git_busy' });
  await assert.rejects(waiting, { code: 'git_queue_timeout' });
  release();
  assert.equal(limiter.runningCount, 0);
});
