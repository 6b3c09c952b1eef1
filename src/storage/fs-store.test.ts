import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { objectStoreContract, paced, versionedStoreContract } from './contract.js';
import { createFsStore } from './fs-store.js';
import { objectKey } from './object-store.js';

async function tempRoot(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'gitstratum-fs-store-'));
}

objectStoreContract('filesystem', async () => {
  const root = await tempRoot();
  return { store: createFsStore(root), dispose: () => rm(root, { recursive: true, force: true }) };
});

versionedStoreContract('filesystem', async () => {
  const root = await tempRoot();
  return { store: createFsStore(root), dispose: () => rm(root, { recursive: true, force: true }) };
});

test('failed puts leave no temporary files behind, and list never shows .tmp', async (t) => {
  const root = await tempRoot();
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = createFsStore(root);
  const failing = Readable.from(
    (async function* () {
      yield Buffer.alloc(1000);
      throw new Error('source failed');
    })(),
  );
  await assert.rejects(store.put(objectKey('lfs/aa/bb/object'), failing), /source failed/);
  assert.deepEqual(await readdir(path.join(root, '.tmp')), []);
  // An orphan from a crash mid-put stays invisible.
  await writeFile(path.join(root, '.tmp', 'orphan'), 'partial');
  await store.put(objectKey('lfs/aa/bb/whole'), Readable.from([Buffer.from('whole')]));
  assert.deepEqual(await collectKeys(store.list('')), ['lfs/aa/bb/whole']);
});

test('filesystem failures are unavailable, with the errno in the fields', async (t) => {
  const root = await tempRoot();
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = createFsStore(root);
  // A file where the key needs a directory: mkdir fails with ENOTDIR... or EEXIST.
  await mkdir(path.join(root, 'lfs'));
  await writeFile(path.join(root, 'lfs', 'aa'), 'not a directory');
  await assert.rejects(store.put(objectKey('lfs/aa/bb/object'), Readable.from([Buffer.from('x')])), (err: unknown) => {
    assert.equal((err as { kind?: string }).kind, 'unavailable');
    assert.equal((err as { code?: string }).code, 'storage_unavailable');
    return true;
  });
  assert.deepEqual(await readdir(path.join(root, '.tmp')), []);
});

async function collectKeys(items: AsyncIterable<{ key: string }>): Promise<string[]> {
  const keys: string[] = [];
  for await (const item of items) keys.push(item.key);
  return keys.sort();
}

test('writers racing with different bytes on one key: the last rename wins, never a mix', async (t) => {
  const root = await tempRoot();
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = createFsStore(root);
  const k = objectKey('snapshots/race/object');
  const a = randomBytes(2 * 1024 * 1024);
  const b = randomBytes(2 * 1024 * 1024);
  for (let round = 0; round < 5; round++) {
    await Promise.all([store.put(k, Readable.from(paced(a, 64 * 1024, 1))), store.put(k, Readable.from(paced(b, 64 * 1024, 1)))]);
    const parts: Buffer[] = [];
    for await (const chunk of (await store.get(k)).body) parts.push(chunk as Buffer);
    const stored = Buffer.concat(parts);
    assert.ok(stored.equals(a) || stored.equals(b), `round ${round}: the object is one writer's bytes`);
  }
});
