import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { link, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { objectStoreContract, paced, versionedStoreContract } from './contract.js';
import { createFsStore } from './fs-store.js';
import { MAX_SEGMENT_BYTES, objectKey, type ObjectKey, type ObjectStore, type Versions } from './object-store.js';

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

/** A fresh store whose versions are there, with a writer of a key's next version from text. */
async function versionedStore(t: { after(fn: () => Promise<void>): void }) {
  const root = await tempRoot();
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = createFsStore(root);
  const versions = store.versions as Versions;
  let sources = 0;
  const write = async (key: string, text: string) => {
    const source = objectKey(`staging/${++sources}`);
    await store.put(source, Readable.from([Buffer.from(text)]));
    return versions.copy(source, objectKey(key));
  };
  return { root, store, versions, write };
}

async function text(store: ObjectStore, key: string): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of (await store.get(objectKey(key))).body) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString();
}

async function versionText(versions: Versions, key: string, versionId: string): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of (await versions.get(objectKey(key), versionId)).body) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString();
}

async function listVersions(versions: Versions, prefix: string) {
  const out: { key: ObjectKey; versionId: string; latest: boolean }[] = [];
  for await (const v of versions.list(prefix)) out.push({ key: v.key, versionId: v.versionId, latest: v.latest });
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.versionId < b.versionId ? -1 : 1));
}

const notFound = { kind: 'not_found', code: 'object_not_found' };

test('path conflicts: a versioned file path that later holds files takes the path from its current link', async (t) => {
  const { store, versions, write } = await versionedStore(t);
  const docs = await write('x/docs', 'docs as a file');
  const older = await write('x/docs', 'docs as a file, again');
  const inside = await write('x/docs/a.txt', 'a file in docs');
  assert.equal(await text(store, 'x/docs/a.txt'), 'a file in docs');
  await assert.rejects(store.get(objectKey('x/docs')), notFound);
  assert.equal(await store.head(objectKey('x/docs')), undefined);
  // The versions of the shorter key stay readable by id, and none is current now.
  assert.equal(await versionText(versions, 'x/docs', docs.versionId), 'docs as a file');
  assert.equal(await versionText(versions, 'x/docs', older.versionId), 'docs as a file, again');
  assert.deepEqual(await listVersions(versions, 'x/'), [
    { key: objectKey('x/docs'), versionId: docs.versionId, latest: false },
    { key: objectKey('x/docs'), versionId: older.versionId, latest: false },
    { key: objectKey('x/docs/a.txt'), versionId: inside.versionId, latest: true },
  ]);
  assert.deepEqual(await collectKeys(store.list('x/')), ['x/docs/a.txt']);

  // A version directory holding both version files and the directory of a longer key.
  await versions.delete(objectKey('x/docs'), older.versionId);
  assert.deepEqual(await listVersions(versions, 'x/docs'), [
    { key: objectKey('x/docs'), versionId: docs.versionId, latest: false },
    { key: objectKey('x/docs/a.txt'), versionId: inside.versionId, latest: true },
  ]);
  assert.equal(await text(store, 'x/docs/a.txt'), 'a file in docs', 'the longer key is untouched');
  await versions.delete(objectKey('x/docs'), docs.versionId);
  assert.deepEqual(await listVersions(versions, 'x/'), [{ key: objectKey('x/docs/a.txt'), versionId: inside.versionId, latest: true }]);
});

test('path conflicts: several levels up, the first file in the way goes', async (t) => {
  const { store, versions, write } = await versionedStore(t);
  const top = await write('x/a', 'a file');
  await write('x/a/b/c/d.txt', 'deep');
  assert.equal(await text(store, 'x/a/b/c/d.txt'), 'deep');
  assert.equal(await versionText(versions, 'x/a', top.versionId), 'a file');
});

test('path conflicts: a plain key in the way is never removed; the copy fails as a put does', async (t) => {
  const { root, store, write } = await versionedStore(t);
  await store.put(objectKey('x/plain'), Readable.from([Buffer.from('plain')]));
  await assert.rejects(write('x/plain/a.txt', 'inside'), { kind: 'unavailable', code: 'storage_unavailable' });
  assert.equal(await text(store, 'x/plain'), 'plain');
  // Also when the plain file has a second name that is no version of its key.
  await link(path.join(root, 'x', 'plain'), path.join(root, 'elsewhere'));
  await assert.rejects(write('x/plain/a.txt', 'inside'), { kind: 'unavailable' });
  assert.equal(await text(store, 'x/plain'), 'plain');
  // A put (not a versioned copy) never takes a path from a link either.
  await write('x/versioned', 'v');
  await assert.rejects(store.put(objectKey('x/versioned/a.txt'), Readable.from([Buffer.from('x')])), { kind: 'unavailable' });
  assert.equal(await text(store, 'x/versioned'), 'v');
  assert.deepEqual(await readdir(path.join(root, '.tmp')), []);
});

test('path conflicts: a version of a key whose path is a directory is kept, with no current link', async (t) => {
  const { store, versions, write } = await versionedStore(t);
  const inside = await write('x/docs/a.txt', 'a file in docs');
  const docs = await write('x/docs', 'docs as a file');
  assert.equal(await versionText(versions, 'x/docs', docs.versionId), 'docs as a file');
  await assert.rejects(store.get(objectKey('x/docs')), notFound);
  assert.equal(await text(store, 'x/docs/a.txt'), 'a file in docs');
  assert.deepEqual(await listVersions(versions, 'x/'), [
    { key: objectKey('x/docs'), versionId: docs.versionId, latest: false },
    { key: objectKey('x/docs/a.txt'), versionId: inside.versionId, latest: true },
  ]);
  // Once the longer key is deleted, its directory is empty, and the next copy takes the path.
  await store.delete(objectKey('x/docs/a.txt'));
  const again = await write('x/docs', 'docs as a file, again');
  assert.equal(await text(store, 'x/docs'), 'docs as a file, again');
  assert.deepEqual(await listVersions(versions, 'x/docs'), [
    { key: objectKey('x/docs'), versionId: docs.versionId, latest: false },
    { key: objectKey('x/docs'), versionId: again.versionId, latest: true },
    { key: objectKey('x/docs/a.txt'), versionId: inside.versionId, latest: false },
  ]);
  // Deleting a version that was never current leaves the current one alone.
  await versions.delete(objectKey('x/docs'), docs.versionId);
  assert.equal(await text(store, 'x/docs'), 'docs as a file, again');
});

test('a key segment spelled like a version id is a directory beside the version files, not a version', async (t) => {
  const { store, versions, write } = await versionedStore(t);
  const docs = await write('x/docs', 'docs');
  const lookalike = '0000000aa-0001-0123abcd';
  assert.notEqual(lookalike, docs.versionId);
  await store.delete(objectKey('x/docs'));
  const inner = await write(`x/docs/${lookalike}`, 'inner');
  await versions.delete(objectKey('x/docs'), lookalike); // a directory: nothing to delete
  await assert.rejects(versions.get(objectKey('x/docs'), lookalike), notFound);
  assert.deepEqual(await listVersions(versions, 'x/'), [
    { key: objectKey('x/docs'), versionId: docs.versionId, latest: false },
    { key: objectKey(`x/docs/${lookalike}`), versionId: inner.versionId, latest: true },
  ]);
});

test('a last segment of 255 bytes, with versions', async (t) => {
  const { store, versions, write } = await versionedStore(t);
  const name = `x/${'ü'.repeat((MAX_SEGMENT_BYTES - 1) / 2)}!`;
  const v = await write(name, 'long name');
  assert.equal(await text(store, name), 'long name');
  assert.equal(await versionText(versions, name, v.versionId), 'long name');
  assert.deepEqual(await collectKeys(store.list('x/')), [name]);
});

test('uploads.abortStale removes temporary files unchanged since before the given time', async (t) => {
  const root = await tempRoot();
  t.after(() => rm(root, { recursive: true, force: true }));
  const store = createFsStore(root);
  assert.deepEqual(await store.uploads!.abortStale(new Date()), { aborted: 0 }, 'no .tmp yet');
  await store.put(objectKey('lfs/aa/bb/whole'), Readable.from([Buffer.from('whole')]));
  await writeFile(path.join(root, '.tmp', 'orphan-1'), 'partial');
  await writeFile(path.join(root, '.tmp', 'orphan-2'), 'partial');
  assert.deepEqual(await store.uploads!.abortStale(new Date(Date.now() - 60_000)), { aborted: 0 }, 'written just now');
  assert.deepEqual(await store.uploads!.abortStale(new Date(Date.now() + 60_000)), { aborted: 2 });
  assert.deepEqual(await readdir(path.join(root, '.tmp')), []);
  assert.equal(await text(store, 'lfs/aa/bb/whole'), 'whole', 'objects are not temporary files');
});

test('uploads.abortStale leaves a link to an old version that is being made current', async (t) => {
  const { root, store, write } = await versionedStore(t);
  const v = await write('x/old', 'old');
  const versionFile = path.join(root, '.versions', 'x', 'old', v.versionId);
  await utimes(versionFile, new Date('2001-01-01'), new Date('2001-01-01'));
  // What makeCurrent holds in .tmp/ for a moment: a new name for the old inode.
  await link(versionFile, path.join(root, '.tmp', 'link-in-flight'));
  assert.ok((await stat(path.join(root, '.tmp', 'link-in-flight'))).mtime < new Date('2002-01-01'));
  assert.deepEqual(await store.uploads!.abortStale(new Date(Date.now() - 60_000)), { aborted: 0 });
  assert.deepEqual(await readdir(path.join(root, '.tmp')), ['link-in-flight']);
  assert.equal(await text(store, 'x/old'), 'old');
});
