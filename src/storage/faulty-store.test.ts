import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { faulty } from './faulty-store.js';
import { createFsStore } from './fs-store.js';
import { objectKey } from './object-store.js';

test('the next N puts and gets fail as unavailable, then the store works', async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'gitstratum-faulty-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = faulty(createFsStore(root), { failPuts: 2, failGets: 1 });
  const key = objectKey('lfs/aa/bb/object');
  const outage = { kind: 'unavailable', code: 'storage_unavailable' };
  await assert.rejects(store.put(key, Readable.from([Buffer.from('x')])), outage);
  await assert.rejects(store.put(key, Readable.from([Buffer.from('x')])), outage);
  assert.equal(await store.head(key), undefined);
  assert.deepEqual(await store.put(key, Readable.from([Buffer.from('xyz')])), { size: 3 });
  await assert.rejects(store.get(key), outage);
  assert.equal((await store.get(key)).size, 3);
  assert.equal(store.kind, 'filesystem');
});
