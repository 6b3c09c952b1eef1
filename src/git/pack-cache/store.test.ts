import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { mkdtemp, open, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { createLogger } from '../../shared/log.js';
import { GrowingFile } from './growing-file.js';
import { createPackCacheMetrics } from './metrics.js';
import { ENTRY_OVERHEAD, MEMORY_ENTRY_BYTES, PackStore, fd, type EntryMeta, type StoreLimits } from './store.js';

const log = createLogger('silent');
const roomy: StoreLimits = { maxBytes: 1 << 30, maxEntryBytes: 1 << 30, minFreeBytes: 0 };

async function fresh(limits: StoreLimits = roomy, dir?: string) {
  const root = dir ?? (await mkdtemp(path.join(tmpdir(), 'gitstratum-store-')));
  const registry = new Registry();
  const metrics = createPackCacheMetrics(registry);
  const store = await PackStore.open(root, limits, metrics, log);
  const count = async (name: string, labels: Record<string, string> = {}) => {
    const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
    const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
    return v?.value ?? 0;
  };
  return { root, store, count };
}

function meta(key: string, repoId = 'repo1', refsVersion = 'v1'): EntryMeta {
  return { key: key.padEnd(64, '0'), repoId, refsVersion, endpoint: 'fetch' };
}

/** Writes `data` as a response and commits it, the way a flight does. */
async function put(store: PackStore, m: EntryMeta, data: Buffer): Promise<boolean> {
  const temp = await store.createTemp(m.key);
  try {
    const file = new GrowingFile(temp.fd, 0);
    await new Promise<void>((resolve, reject) => file.writer().end(data, () => resolve()).on('error', reject));
    file.finish();
    return await store.commit(temp, m, file.written, await file.digest());
  } finally {
    await fd.close(temp.fd);
  }
}

async function readEntry(store: PackStore, key: string): Promise<Buffer | undefined> {
  const opened = await store.openEntry(key);
  if (!opened) return undefined;
  const chunks: Buffer[] = [];
  for await (const c of GrowingFile.complete(opened.fd, 0, opened.length).reader()) chunks.push(c as Buffer);
  opened.close();
  return Buffer.concat(chunks);
}

function entryFile(root: string, key: string): string {
  return path.join(root, 'entries', key.slice(0, 2), key);
}

test('a committed entry is served back byte for byte, also after a restart', async () => {
  const { root, store } = await fresh();
  try {
    const m = meta('aa');
    const data = Buffer.from('response bytes '.repeat(1000));
    assert.equal(await put(store, m, data), true);
    assert.ok((await readEntry(store, m.key))?.equals(data));
    assert.equal(store.entryCount, 1);
    assert.equal(store.totalBytes, ENTRY_OVERHEAD + data.length);

    // A leftover temporary file is removed on start; the entry is indexed again.
    await writeFile(path.join(root, 'tmp', 'leftover'), 'x');
    const again = await fresh(roomy, root);
    assert.deepEqual(await readdir(path.join(root, 'tmp')), []);
    assert.ok((await readEntry(again.store, m.key))?.equals(data));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a corrupted entry (same length) is detected by its checksum and dropped', async () => {
  const { root, store, count } = await fresh();
  try {
    const m = meta('bb');
    await put(store, m, Buffer.alloc(100_000, 7));
    const h = await open(entryFile(root, m.key), 'r+');
    await h.write(Buffer.from('garbage'), 0, 7, 5000);
    await h.close();
    assert.equal(await readEntry(store, m.key), undefined);
    assert.equal(store.has(m.key), false);
    assert.equal(await count('gitstratum_pack_cache_damaged_total', { reason: 'checksum' }), 1);
    await assert.rejects(open(entryFile(root, m.key)), { code: 'ENOENT' });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a truncated entry is detected by its length, and so is one damaged while the server was down', async () => {
  const { root, store, count } = await fresh();
  try {
    const short = meta('cc');
    const flipped = meta('cd');
    await put(store, short, Buffer.alloc(5000, 1));
    await put(store, flipped, Buffer.alloc(5000, 2));
    await truncate(entryFile(root, short.key), 100);
    assert.equal(await readEntry(store, short.key), undefined);
    assert.equal(await count('gitstratum_pack_cache_damaged_total', { reason: 'length' }), 1);

    // Damage with the same size while "down": a restart indexes it, the first open verifies.
    const h = await open(entryFile(root, flipped.key), 'r+');
    await h.write(Buffer.from([0]), 0, 1, 10);
    await h.close();
    const again = await fresh(roomy, root);
    assert.equal(again.store.has(flipped.key), true);
    assert.equal(await readEntry(again.store, flipped.key), undefined);
    assert.equal(await again.count('gitstratum_pack_cache_damaged_total', { reason: 'checksum' }), 1);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a small entry is read from disk and checked once, then served from memory; a large one never is', async () => {
  const { root, store, count } = await fresh();
  try {
    const small = meta('ma');
    const large = meta('mb');
    const data = Buffer.from('0008NAK\n'.repeat(100));
    await put(store, small, data);
    await put(store, large, Buffer.alloc(MEMORY_ENTRY_BYTES + 1, 3));
    assert.equal(store.cached(large.key), undefined, 'too large for memory');
    assert.ok((await readEntry(store, large.key))?.equals(Buffer.alloc(MEMORY_ENTRY_BYTES + 1, 3)), 'still served from its file');
    assert.ok(store.cached(small.key)?.equals(data));
    // Its file may go now: the checked bytes are in memory.
    await rm(entryFile(root, small.key));
    assert.ok(store.cached(small.key)?.equals(data));
    assert.equal(await count('gitstratum_pack_cache_damaged_total'), 0);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a small entry damaged before its first read is never served from memory', async () => {
  const { root, store, count } = await fresh();
  try {
    const flipped = meta('mc');
    const short = meta('md');
    await put(store, flipped, Buffer.alloc(4000, 5));
    await put(store, short, Buffer.alloc(4000, 6));
    const h = await open(entryFile(root, flipped.key), 'r+');
    await h.write(Buffer.from([0]), 0, 1, 10);
    await h.close();
    await truncate(entryFile(root, short.key), 10);
    assert.equal(store.cached(flipped.key), undefined);
    assert.equal(store.cached(short.key), undefined);
    assert.equal(store.has(flipped.key), false);
    assert.equal(store.has(short.key), false);
    assert.equal(await count('gitstratum_pack_cache_damaged_total', { reason: 'checksum' }), 1);
    assert.equal(await count('gitstratum_pack_cache_damaged_total', { reason: 'length' }), 1);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('over the size bound, entries of a superseded refs version go first, then the least recently used', async () => {
  const size = 10_000;
  const { root, store, count } = await fresh({ maxBytes: 3 * (ENTRY_OVERHEAD + size), maxEntryBytes: 1 << 20, minFreeBytes: 0 });
  try {
    const data = Buffer.alloc(size, 1);
    const [a, b, c, d, e] = ['a1', 'b1', 'c1', 'd1', 'e1'].map((k) => meta(k, k === 'c1' ? 'repo2' : 'repo1'));
    store.noteRefsVersion('repo1', 'v1');
    store.noteRefsVersion('repo2', 'v1');
    await put(store, a!, data);
    await put(store, b!, data);
    await put(store, c!, data);
    await readEntry(store, a!.key); // a is now the most recently used
    await put(store, d!, data); // evicts b, the least recently used
    assert.deepEqual([a, b, c, d].map((m) => store.has(m!.key)), [true, false, true, true]);
    assert.equal(await count('gitstratum_pack_cache_evictions_total', { reason: 'size' }), 1);

    // repo2's refs moved on: its entry is deleted as soon as that is seen.
    store.noteRefsVersion('repo2', 'v2');
    assert.equal(store.has(c!.key), false);
    assert.equal(await count('gitstratum_pack_cache_evictions_total', { reason: 'stale' }), 1);
    // An entry generated for a version no longer current is not stored at all.
    assert.equal(await put(store, { ...e!, repoId: 'repo2', refsVersion: 'v1' }, data), false);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('an entry over the largest entry size is not stored', async () => {
  const { root, store } = await fresh({ maxBytes: 1 << 20, maxEntryBytes: 1000, minFreeBytes: 0 });
  try {
    assert.equal(await put(store, meta('ff'), Buffer.alloc(1001)), false);
    assert.equal(await put(store, meta('fe'), Buffer.alloc(1000)), true);
    assert.equal(store.entryCount, 1);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('free space under the threshold is reported', async () => {
  const { root, store } = await fresh({ ...roomy, minFreeBytes: Number.MAX_SAFE_INTEGER });
  try {
    assert.equal(await store.hasFreeSpace(), false);
    assert.equal(await (await fresh(roomy, root)).store.hasFreeSpace(), true);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('the data file holds exactly the response; its header file names the length and the CRC-32', async () => {
  const { root, store } = await fresh();
  try {
    const m = meta('ab');
    const data = Buffer.from('abc');
    await put(store, m, data);
    assert.ok((await readFile(entryFile(root, m.key))).equals(data), 'a front proxy can send the file as it is');
    const header = await readFile(entryFile(root, m.key) + '.meta');
    assert.equal(Number(header.readBigUInt64BE(8)), data.length);
    assert.equal(header.readUInt32BE(16), crc32(data));
    assert.ok(header.subarray(20, 48).equals(Buffer.alloc(28)), 'the rest of the checksum field is zero');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('on start, a data file without its header (a crash between the renames) is deleted, and so is a header without data', async () => {
  const { root, store } = await fresh();
  try {
    const kept = meta('ac');
    const headless = meta('ad');
    const dataless = meta('ae');
    for (const m of [kept, headless, dataless]) await put(store, m, Buffer.from(`data of ${m.key}`));
    await rm(entryFile(root, headless.key) + '.meta');
    await rm(entryFile(root, dataless.key));
    const again = await fresh(roomy, root);
    assert.deepEqual([kept, headless, dataless].map((m) => again.store.has(m.key)), [true, false, false]);
    assert.deepEqual((await readdir(path.join(root, 'entries', 'ac'))).sort(), [kept.key, `${kept.key}.meta`]);
    assert.deepEqual(await readdir(path.join(root, 'entries', 'ad')), []);
    assert.deepEqual(await readdir(path.join(root, 'entries', 'ae')), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
