import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GenerationAdmission } from './admission.js';

test('bounds generations per repository, even with global room left', async () => {
  const admission = new GenerationAdmission({ maxRunning: 3, maxRunningPerRepo: 2, maxQueue: 10, queueTimeoutMs: 1000 });
  const a1 = await admission.acquire('a');
  const a2 = await admission.acquire('a');
  const started: string[] = [];
  const a3 = admission.acquire('a').then((r) => (started.push('a3'), r));
  const b1 = await admission.acquire('b');
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(started, []);
  assert.equal(admission.running, 3);
  assert.equal(admission.queued, 1);
  b1();
  a1();
  (await a3)();
  a2();
  assert.equal(admission.running, 0);
});

test('bounds generations overall; a freed global slot goes to the first in line', async () => {
  const admission = new GenerationAdmission({ maxRunning: 2, maxRunningPerRepo: 2, maxQueue: 10, queueTimeoutMs: 1000 });
  const a1 = await admission.acquire('a');
  const a2 = await admission.acquire('a');
  const started: string[] = [];
  const b1 = admission.acquire('b').then((r) => (started.push('b1'), r));
  const a3 = admission.acquire('a').then((r) => (started.push('a3'), r));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(started, []);
  assert.equal(admission.queued, 2);
  a1();
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(started, ['b1']);
  (await b1)();
  (await a3)();
  a2();
  assert.equal(admission.running, 0);
  assert.equal(admission.queued, 0);
});

test('a request over the bound is refused after the queue wait, with the limiter codes', async () => {
  const admission = new GenerationAdmission({ maxRunning: 1, maxRunningPerRepo: 1, maxQueue: 1, queueTimeoutMs: 30 });
  const held = await admission.acquire('a');
  const waiting = admission.acquire('a');
  await assert.rejects(admission.acquire('a'), { code: 'git_busy' });
  await assert.rejects(waiting, { code: 'git_queue_timeout' });
  held();
  held();
  assert.equal(admission.running, 0);
});

test('a request that leaves while queued gives up its place', async () => {
  const admission = new GenerationAdmission({ maxRunning: 1, maxRunningPerRepo: 1, maxQueue: 5, queueTimeoutMs: 1000 });
  const held = await admission.acquire('a');
  const controller = new AbortController();
  const waiting = admission.acquire('a', controller.signal);
  controller.abort();
  await assert.rejects(waiting, { code: 'client_gone' });
  held();
  (await admission.acquire('a'))();
});
