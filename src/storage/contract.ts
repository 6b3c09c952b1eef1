/**
 * The ObjectStore contract: the tests every adapter passes, registered with node:test by
 * each adapter's own test file (`objectStoreContract('filesystem', …)`). One store serves the
 * whole suite; every test works under its own key prefix, so tests do not depend on each
 * other. Presigner tests run when the store has a presigner and say so when it has none.
 *
 * Key names (objectKey): the keys of the readable LFS layout (issue 15) are repository paths,
 * so every store is tried with spaces, capitals, punctuation that URLs and S3 treat specially,
 * and multi-byte characters, through every operation that names or returns a key.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDomainError } from '../shared/errors.js';
import { MAX_SEGMENT_BYTES, objectKey, type ObjectInfo, type ObjectKey, type ObjectStore, type VersionInfo } from './object-store.js';

export interface ContractStore {
  store: ObjectStore;
  dispose: () => Promise<void>;
}

const MiB = 1 << 20;

/** Path-like key tails: spaces, capitals, URL and S3 specials, multi-byte text, dots. */
const PATH_NAMES = [
  'documents/contracts/Lease Agreement (final).pdf',
  'Café/naïve – ü.pdf',
  'UPPER Case/a+b %20 #1?x=y&z.txt',
  "odd/it's [x] {y} ~ !@$^*;,=.md",
  '日本語/ファイル 😀.txt',
  'dots/.gitattributes',
  'dots/v1..v2/..x/...',
  // A segment at the limit, in two-byte characters: a name of 255 bytes, not 127. Not the last
  // segment: s3rver stores `<key>._S3rver_object`, and a file name has at most 255 bytes.
  `long/${'é'.repeat((MAX_SEGMENT_BYTES - 1) / 2)}x/end`,
];

export function objectStoreContract(name: string, makeStore: () => Promise<ContractStore>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let store: ObjectStore;
    let dispose: (() => Promise<void>) | undefined;
    const run = randomBytes(4).toString('hex');
    const key = (rest: string): ObjectKey => objectKey(`contract/${run}/${rest}`);
    const prefix = (rest: string) => `contract/${run}/${rest}`;

    before(async () => {
      ({ store, dispose } = await makeStore());
    });
    after(async () => {
      await dispose?.();
    });

    test('a streamed put of several MB reads back byte for byte', async () => {
      const source = randomSource(20 * MiB + 12_345);
      const k = key('roundtrip/big');
      assert.deepEqual(await store.put(k, source.body, { contentType: 'application/octet-stream' }), { size: source.size });
      assert.deepEqual(await store.head(k), { key: k, size: source.size });
      const got = await store.get(k);
      assert.equal(got.size, source.size);
      assert.equal(got.range, undefined);
      assert.equal(await sha256(got.body), source.sha256());
    });

    test('get serves inclusive byte ranges and reports them', async () => {
      const bytes = randomBytes(MiB + 17);
      const k = key('range/object');
      await store.put(k, Readable.from([bytes]), { size: bytes.length });
      const size = bytes.length;
      const cases: { range: { start: number; end?: number }; served: { start: number; end: number } }[] = [
        { range: { start: 1000 }, served: { start: 1000, end: size - 1 } },
        { range: { start: 1000, end: 1999 }, served: { start: 1000, end: 1999 } },
        { range: { start: size - 1, end: size - 1 }, served: { start: size - 1, end: size - 1 } },
        { range: { start: size - 10, end: size + 100 }, served: { start: size - 10, end: size - 1 } },
      ];
      for (const { range, served } of cases) {
        const got = await store.get(k, { range });
        assert.equal(got.size, size, `size for ${JSON.stringify(range)}`);
        assert.deepEqual(got.range, served);
        assert.ok((await collect(got.body)).equals(bytes.subarray(served.start, served.end + 1)), `bytes for ${JSON.stringify(range)}`);
      }
      await assert.rejects(store.get(k, { range: { start: size } }), isError('invalid', 'range_not_satisfiable'));
    });

    test('aborting a get ends its body with an AbortError', async () => {
      const k = key('abort-get/object');
      await store.put(k, Readable.from(chunks(4 * MiB)));
      const abort = new AbortController();
      const got = await store.get(k, { signal: abort.signal });
      await assert.rejects(
        (async () => {
          for await (const _chunk of got.body) abort.abort();
        })(),
        { name: 'AbortError' },
      );
      assert.ok(got.body.destroyed);
    });

    test('get and head of a missing key', async () => {
      await assert.rejects(store.get(key('missing/nothing')), isError('not_found', 'object_not_found'));
      assert.equal(await store.head(key('missing/nothing')), undefined);
    });

    test('delete removes the object and is idempotent', async () => {
      const k = key('delete/object');
      await store.put(k, Readable.from([Buffer.from('bye')]));
      await store.delete(k);
      assert.equal(await store.head(k), undefined);
      await assert.rejects(store.get(k), isError('not_found', 'object_not_found'));
      await store.delete(k);
      await store.delete(key('delete/never-written'));
    });

    test('list walks nested keys under a prefix, with sizes', async () => {
      const sizes: Record<string, number> = { 'a/one': 1, 'a/two': 2, 'a/b/three': 3, 'ab/four': 4, 'c/five': 5 };
      for (const [rest, size] of Object.entries(sizes)) await store.put(key(`list/${rest}`), Readable.from([Buffer.alloc(size)]));
      const listed = async (p: string) => sortInfos(await fromAsync(store.list(prefix(p))));
      const expect = (...rests: string[]) => sortInfos(rests.map((r) => ({ key: key(`list/${r}`), size: sizes[r]! })));
      assert.deepEqual(await listed('list/'), expect(...Object.keys(sizes)));
      assert.deepEqual(await listed('list/a/'), expect('a/one', 'a/two', 'a/b/three'));
      assert.deepEqual(await listed('list/a'), expect('a/one', 'a/two', 'a/b/three', 'ab/four'));
      assert.deepEqual(await listed('list/a/b/'), expect('a/b/three'));
      assert.deepEqual(await listed('list/none/'), []);
    });

    test('a zero-byte object', async () => {
      const k = key('empty/object');
      assert.deepEqual(await store.put(k, Readable.from([])), { size: 0 });
      assert.deepEqual(await store.head(k), { key: k, size: 0 });
      const got = await store.get(k);
      assert.equal(got.size, 0);
      assert.equal((await collect(got.body)).length, 0);
      assert.deepEqual(sortInfos(await fromAsync(store.list(prefix('empty/')))), [{ key: k, size: 0 }]);
    });

    for (const [label, size] of [
      ['early', 100_000],
      ['after several MB', 18 * MiB],
    ] as const) {
      test(`a body that fails ${label} leaves nothing under the key`, async () => {
        const k = key(`failed/${size}`);
        const failure = new Error('source failed');
        await assert.rejects(store.put(k, failingSource(size, failure)), (err) => err === failure);
        await assertAbsent(store, k, prefix('failed/'));
      });
    }

    test('a body whose last check fails (a verifying transform) leaves nothing under the key', async () => {
      const k = key('unverified/object');
      const failure = new Error('hash mismatch');
      const verifying = new Transform({
        transform: (chunk, _enc, done) => done(null, chunk),
        flush: (done) => done(failure),
      });
      Readable.from(chunks(3 * MiB)).pipe(verifying);
      await assert.rejects(store.put(k, verifying), (err) => err === failure);
      await assertAbsent(store, k, prefix('unverified/'));
    });

    test('an aborted put leaves nothing under the key', async () => {
      const k = key('aborted/object');
      const abort = new AbortController();
      const body = Readable.from(
        (async function* () {
          for (let sent = 0; ; sent += MiB) {
            if (sent === 2 * MiB) abort.abort();
            yield randomBytes(MiB);
            await sleep(1);
          }
        })(),
      );
      await assert.rejects(store.put(k, body, { signal: abort.signal }), { name: 'AbortError' });
      await assertAbsent(store, k, prefix('aborted/'));
    });

    // Keys are immutable once written, so writers racing on one key carry the same bytes (two
    // clients pushing the same LFS object). Both succeed and one whole object remains.
    // Different bytes under one key are a caller's bug; the filesystem adapter's own test
    // shows it still never mixes them (s3rver does: see test/support/s3.ts).
    test('two concurrent writers of the same bytes both succeed and leave one whole object', async () => {
      const k = key('concurrent/object');
      const bytes = randomBytes(3 * MiB + 5);
      const slowly = () => Readable.from(paced(bytes, 64 * 1024, 1));
      assert.deepEqual(await Promise.all([store.put(k, slowly()), store.put(k, slowly())]), [{ size: bytes.length }, { size: bytes.length }]);
      assert.deepEqual(await store.head(k), { key: k, size: bytes.length });
      assert.equal(await sha256((await store.get(k)).body), createHash('sha256').update(bytes).digest('hex'));
    });

    test('keys with spaces, capitals, punctuation and unicode: put, head, get, list, delete', async () => {
      const stored = PATH_NAMES.map((name, i) => ({ key: key(`names/${name}`), bytes: randomBytes(10 + i) }));
      for (const { key: k, bytes } of stored) {
        assert.deepEqual(await store.put(k, Readable.from([bytes])), { size: bytes.length }, k);
        assert.deepEqual(await store.head(k), { key: k, size: bytes.length }, k);
        assert.ok((await collect((await store.get(k)).body)).equals(bytes), k);
      }
      const listed = sortInfos(await fromAsync(store.list(prefix('names/'))));
      assert.deepEqual(listed, sortInfos(stored.map(({ key: k, bytes }) => ({ key: k, size: bytes.length }))));
      assert.deepEqual(sortInfos(await fromAsync(store.list(prefix('names/Café/')))), [{ key: key('names/Café/naïve – ü.pdf'), size: stored[1]!.bytes.length }]);
      assert.deepEqual(
        (await fromAsync(store.list(prefix('names/documents/contracts/Lease A')))).map((i) => i.key),
        [key('names/documents/contracts/Lease Agreement (final).pdf')],
      );
      for (const { key: k } of stored) await store.delete(k);
      assert.deepEqual(await fromAsync(store.list(prefix('names/'))), []);
    });

    test('pre-signed GET of a key with spaces and unicode', async (t) => {
      const presigner = store.presigner;
      if (!presigner) {
        t.skip(`${store.kind} has no presigner`);
        return;
      }
      const k = key('presigned-names/Café/Lease Agreement (final) + #1?.pdf');
      const bytes = randomBytes(1000);
      await store.put(k, Readable.from([bytes]));
      const got = await fetch(await presigner.presignGet(k, 300));
      assert.equal(got.status, 200);
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
    });

    test('pre-signed PUT with a signed Content-Type, then pre-signed GET', async (t) => {
      const presigner = store.presigner;
      if (!presigner) {
        t.skip(`${store.kind} has no presigner`);
        return;
      }
      const k = key('presigned/object');
      const bytes = randomBytes(256 * 1024 + 3);
      const contentType = 'application/octet-stream';
      const checksumSha256 = createHash('sha256').update(bytes).digest('base64');
      const putUrl = await presigner.presignPut(k, 300, { contentType, size: bytes.length, checksumSha256 });
      const put = await fetch(putUrl, {
        method: 'PUT',
        headers: { 'Content-Type': contentType, 'x-amz-checksum-sha256': checksumSha256 },
        body: new Uint8Array(bytes),
      });
      assert.equal(put.status, 200, await put.text());
      assert.deepEqual(await store.head(k), { key: k, size: bytes.length });
      const got = await fetch(await presigner.presignGet(k, 300));
      assert.equal(got.status, 200);
      assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes));
    });
  });
}

/** A failed or aborted put: no object under the key, and list does not show it. */
async function assertAbsent(store: ObjectStore, k: ObjectKey, listPrefix: string): Promise<void> {
  assert.equal(await store.head(k), undefined);
  assert.deepEqual(await fromAsync(store.list(listPrefix)), []);
  await assert.rejects(store.get(k), isError('not_found', 'object_not_found'));
}

function isError(kind: string, code: string) {
  return (err: unknown) => {
    assert.ok(isDomainError(err), `expected a DomainError, got ${String(err)}`);
    assert.equal(err.kind, kind);
    assert.equal(err.code, code);
    return true;
  };
}

/** Random bytes streamed in chunks, hashed on the way. */
function randomSource(size: number) {
  const hash = createHash('sha256');
  let digest: string | undefined;
  const body = Readable.from(
    (async function* () {
      for await (const c of chunks(size)) {
        hash.update(c);
        yield c;
      }
    })(),
  );
  return { body, size, sha256: () => (digest ??= hash.digest('hex')) };
}

/** `bytes` in chunks with a pause after each, so that concurrent writers interleave. */
export async function* paced(bytes: Buffer, chunk: number, pauseMs: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += chunk) {
    yield bytes.subarray(at, at + chunk);
    await sleep(pauseMs);
  }
}

async function* chunks(size: number, chunk = MiB): AsyncGenerator<Buffer> {
  for (let left = size; left > 0; left -= chunk) yield randomBytes(Math.min(chunk, left));
}

function failingSource(bytesBeforeFailure: number, failure: Error): Readable {
  return Readable.from(
    (async function* () {
      yield* chunks(bytesBeforeFailure, 64 * 1024);
      await sleep(5);
      throw failure;
    })(),
  );
}

async function sha256(body: Readable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of body) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function collect(body: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

async function fromAsync<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/**
 * Keys and sizes in key order. When a store says when an object was written, it is a date of
 * this run (LFS GC counts its grace period from it): checked here, then left out of comparisons.
 */
function sortInfos(infos: ObjectInfo[]): ObjectInfo[] {
  const day = 86_400_000;
  for (const i of infos) {
    if (i.modifiedAt === undefined) continue;
    assert.ok(i.modifiedAt instanceof Date && Math.abs(i.modifiedAt.getTime() - Date.now()) < day, `modifiedAt of ${i.key}: ${String(i.modifiedAt)}`);
  }
  return infos.map(({ key, size }) => ({ key, size })).sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
}

function sortVersions(listed: VersionInfo[]): VersionInfo[] {
  return listed
    .map(({ key, versionId, size, latest }) => ({ key, versionId, size, latest }))
    .sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : x.versionId < y.versionId ? -1 : 1));
}

/**
 * The contract of versioned keys (object-store.ts Versions), for stores whose versioning is on:
 * the filesystem store, and an S3 bucket with versioning enabled (moto's server).
 */
export function versionedStoreContract(name: string, makeStore: () => Promise<ContractStore>): void {
  describe(`ObjectStore versions contract: ${name}`, () => {
    let store: ObjectStore;
    let dispose: (() => Promise<void>) | undefined;
    const run = randomBytes(4).toString('hex');
    const key = (rest: string): ObjectKey => objectKey(`versions/${run}/${rest}`);
    const versions = () => {
      assert.ok(store.versions, 'the store has versions');
      return store.versions;
    };

    before(async () => {
      ({ store, dispose } = await makeStore());
    });
    after(async () => {
      await dispose?.();
    });

    test('versioning is reported on', async () => {
      assert.equal(await versions().enabled(), true);
    });

    test('copying to a key twice keeps both versions, each readable exactly; the key serves the newest', async () => {
      const first = randomBytes(100_000);
      const second = randomBytes(70_000);
      await store.put(key('staging/a'), Readable.from([first]));
      await store.put(key('staging/b'), Readable.from([second]));
      const target = key('documents/contracts/lease.pdf');
      const v1 = await versions().copy(key('staging/a'), target);
      const v2 = await versions().copy(key('staging/b'), target);
      assert.notEqual(v1.versionId, v2.versionId);
      assert.deepEqual([v1.size, v2.size], [first.length, second.length]);
      assert.ok((await collect((await versions().get(target, v1.versionId)).body)).equals(first), 'the first version, byte for byte');
      assert.ok((await collect((await versions().get(target, v2.versionId)).body)).equals(second), 'the second version');
      assert.ok((await collect((await store.get(target)).body)).equals(second), 'the key itself serves the newest');
      const ranged = await versions().get(target, v1.versionId, { range: { start: 10, end: 19 } });
      assert.ok((await collect(ranged.body)).equals(first.subarray(10, 20)), 'a range of an older version');

      const listed = (await fromAsync(versions().list(`versions/${run}/documents/`))).sort((a, b) => a.size - b.size);
      assert.deepEqual(
        listed.map((v) => ({ key: v.key, versionId: v.versionId, size: v.size, latest: v.latest })),
        [
          { key: target, versionId: v2.versionId, size: second.length, latest: true },
          { key: target, versionId: v1.versionId, size: first.length, latest: false },
        ],
      );
      // Versions are not keys of their own: the plain listing shows the key once.
      assert.deepEqual((await fromAsync(store.list(`versions/${run}/documents/`))).map((i) => i.key), [target]);
    });

    test('deleting the current version makes the previous one current; deleting the last removes the key', async () => {
      const one = Buffer.from('version one');
      const two = Buffer.from('version two, longer');
      await store.put(key('src/one'), Readable.from([one]));
      await store.put(key('src/two'), Readable.from([two]));
      const target = key('docs/readme.md');
      const v1 = await versions().copy(key('src/one'), target);
      const v2 = await versions().copy(key('src/two'), target);
      await versions().delete(target, v2.versionId);
      assert.ok((await collect((await store.get(target)).body)).equals(one));
      await assert.rejects(versions().get(target, v2.versionId), isError('not_found', 'object_not_found'));
      await versions().delete(target, v2.versionId); // again: not an error
      await versions().delete(target, v1.versionId);
      assert.equal(await store.head(target), undefined);
      assert.deepEqual(await fromAsync(versions().list(`versions/${run}/docs/`)), []);
    });

    test('versions of keys with spaces, capitals and unicode: copy, get, list, delete', async () => {
      const names = PATH_NAMES.map((name, i) => ({ target: key(`names/${name}`), source: key(`names-src/${i} Sóurce (${i}).bin`), bytes: randomBytes(20 + i) }));
      const copied = [];
      for (const { target, source, bytes } of names) {
        await store.put(source, Readable.from([bytes]));
        const v = await versions().copy(source, target);
        assert.equal(v.size, bytes.length, target);
        assert.ok((await collect((await versions().get(target, v.versionId)).body)).equals(bytes), target);
        assert.ok((await collect((await store.get(target)).body)).equals(bytes), target);
        copied.push({ key: target, versionId: v.versionId, size: bytes.length, latest: true });
      }
      const listed = await fromAsync(versions().list(`versions/${run}/names/`));
      assert.deepEqual(sortVersions(listed), sortVersions(copied));
      assert.deepEqual(
        (await fromAsync(versions().list(`versions/${run}/names/Café/`))).map((v) => v.key),
        [key('names/Café/naïve – ü.pdf')],
      );
      for (const v of copied) await versions().delete(v.key, v.versionId);
      assert.deepEqual(await fromAsync(versions().list(`versions/${run}/names/`)), []);
      assert.deepEqual(await fromAsync(store.list(`versions/${run}/names/`)), []);
    });

    test('copying from a given version of the source', async () => {
      const first = Buffer.from('first words (v1)');
      const second = Buffer.from('second words, v2');
      await store.put(key('from-version/staging/1'), Readable.from([first]));
      await store.put(key('from-version/staging/2'), Readable.from([second]));
      const source = key('from-version/Café Menu (draft).txt');
      const v1 = await versions().copy(key('from-version/staging/1'), source);
      const v2 = await versions().copy(key('from-version/staging/2'), source);

      const target = key('from-version/copies/Menu (v1).txt');
      const copied = await versions().copy(source, target, { fromVersionId: v1.versionId });
      assert.equal(copied.size, first.length);
      assert.ok((await collect((await store.get(target)).body)).equals(first), 'the old version, not the current one');
      assert.ok((await collect((await versions().get(target, copied.versionId)).body)).equals(first));

      // Onto itself: an old version becomes the newest, and every version stays.
      const restored = await versions().copy(source, source, { fromVersionId: v1.versionId });
      assert.ok((await collect((await store.get(source)).body)).equals(first));
      const ids = (await fromAsync(versions().list(`versions/${run}/from-version/Café`))).map((v) => v.versionId).sort();
      assert.deepEqual(ids, [v1.versionId, v2.versionId, restored.versionId].sort());

      await assert.rejects(versions().copy(source, target, { fromVersionId: 'no-such-version' }), isError('not_found', 'object_not_found'));
      // A real version id, but of another key.
      await assert.rejects(versions().copy(source, key('from-version/other'), { fromVersionId: copied.versionId }), isError('not_found', 'object_not_found'));
    });

    test('a pre-signed GET of a version serves that version, whatever is current', async (t) => {
      const presigner = store.presigner;
      if (!presigner) {
        t.skip(`${store.kind} has no presigner`);
        return;
      }
      const first = randomBytes(50_000);
      const second = randomBytes(30_000);
      await store.put(key('presigned/one'), Readable.from([first]));
      await store.put(key('presigned/two'), Readable.from([second]));
      const target = key('presigned/Lease Agreement (final) – ü.pdf');
      const v1 = await versions().copy(key('presigned/one'), target);
      const v2 = await versions().copy(key('presigned/two'), target);
      const expected: [string, Buffer][] = [
        [v1.versionId, first],
        [v2.versionId, second],
      ];
      for (const [versionId, bytes] of expected) {
        const url: string = await presigner.presignGet(target, 300, { versionId });
        const got: Response = await fetch(url);
        assert.equal(got.status, 200, versionId);
        assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes), `the bytes of ${versionId}`);
      }
      const current = await fetch(await presigner.presignGet(target, 300));
      assert.ok(Buffer.from(await current.arrayBuffer()).equals(second), 'no version: the current one');
    });

    test('an unknown version is not found; copying from a missing key is not found', async () => {
      await store.put(key('x/source'), Readable.from([Buffer.from('x')]));
      const target = key('x/target');
      await versions().copy(key('x/source'), target);
      await assert.rejects(versions().get(target, 'no-such-version'), isError('not_found', 'object_not_found'));
      await assert.rejects(versions().copy(key('x/missing'), key('x/other')), isError('not_found', 'object_not_found'));
    });
  });
}
