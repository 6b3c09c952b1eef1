import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { startS3, type TestS3 } from '../../test/support/s3.js';
import { startMoto } from '../../test/support/moto.js';
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectVersionsCommand, S3Client } from '@aws-sdk/client-s3';
import { objectStoreContract, versionedStoreContract } from './contract.js';
import { MAX_KEY_BYTES, MAX_SEGMENT_BYTES, objectKey } from './object-store.js';
import { createS3Store } from './s3-store.js';

/**
 * A store in a fresh bucket of a test S3 server, disposed with it. A page size of 2 makes the
 * contract's listings page through continuation tokens.
 */
function contractStore(server: () => Promise<TestS3>) {
  return async () => {
    const s3 = await server();
    const store = createS3Store({ ...s3, forcePathStyle: true, prefix: 'store', listPageSize: 2 });
    return {
      store,
      dispose: async () => {
        store.destroy();
        await s3.stop();
      },
    };
  };
}

objectStoreContract('s3 (s3rver)', contractStore(startS3));
// moto's server: a second implementation of the S3 API, with bucket versioning (issue 15).
objectStoreContract('s3 (moto)', contractStore(startMoto));
versionedStoreContract('s3 (moto, bucket versioning on)', contractStore(() => startMoto({ versioning: true })));

test('a bucket without versioning says so, and a copy into it is refused as versioning_disabled', async (t) => {
  const s3 = await startS3();
  const store = createS3Store({ ...s3, forcePathStyle: true });
  t.after(async () => {
    store.destroy();
    await s3.stop();
  });
  assert.equal(await store.versions!.enabled(), false);
  await store.put(objectKey('a/source'), Readable.from([Buffer.from('x')]));
  await assert.rejects(store.versions!.copy(objectKey('a/source'), objectKey('a/target')), (err: unknown) => {
    assert.equal((err as { code?: string }).code, 'versioning_disabled');
    return true;
  });
});

test('pre-signed PUT URLs sign Content-Type, Content-Length and the SHA-256 checksum, and no CRC32', async (t) => {
  const s3 = await startS3();
  const store = createS3Store({ ...s3, forcePathStyle: true });
  t.after(async () => {
    store.destroy();
    await s3.stop();
  });
  const checksum = Buffer.alloc(32, 7).toString('base64');
  const url = new URL(
    await store.presigner!.presignPut(objectKey('lfs/aa/bb/object'), 60, { contentType: 'application/octet-stream', size: 1234, checksumSha256: checksum }),
  );
  const signed = url.searchParams.get('X-Amz-SignedHeaders')?.split(';') ?? [];
  assert.deepEqual(signed.sort(), ['content-length', 'content-type', 'host', 'x-amz-checksum-sha256']);
  assert.equal(url.searchParams.get('X-Amz-Expires'), '60');
  const names = [...url.searchParams.keys()].map((n) => n.toLowerCase());
  assert.ok(!names.some((n) => n.includes('crc32') || n === 'x-amz-sdk-checksum-algorithm'), url.search);
  assert.equal(url.pathname, `/${s3.bucket}/lfs/aa/bb/object`);
});

test('an unreachable endpoint is unavailable', async (t) => {
  const s3 = await startS3();
  const endpoint = s3.endpoint;
  await s3.stop();
  const store = createS3Store({ ...s3, endpoint, forcePathStyle: true });
  t.after(() => store.destroy());
  const attempts = [() => store.head(objectKey('a/b')), () => store.get(objectKey('a/b')), () => store.put(objectKey('a/b'), Readable.from([Buffer.from('x')]))];
  for (const attempt of attempts) {
    await assert.rejects(attempt(), (err: unknown) => {
      assert.equal((err as { kind?: string }).kind, 'unavailable', String(err));
      return true;
    });
  }
});

test('a key that the store prefix takes past 1024 bytes is refused before any request; unprefixed, it is stored', async (t) => {
  const s3 = await startMoto();
  const prefixed = createS3Store({ ...s3, forcePathStyle: true, prefix: 'store' });
  const bare = createS3Store({ ...s3, forcePathStyle: true });
  t.after(async () => {
    prefixed.destroy();
    bare.destroy();
    await s3.stop();
  });
  const dirs = `files/${['a', 'b', 'c'].map((c) => c.repeat(MAX_SEGMENT_BYTES)).join('/')}/`;
  const k = objectKey(dirs + 'é'.repeat((MAX_KEY_BYTES - Buffer.byteLength(dirs)) / 2));
  assert.equal(Buffer.byteLength(k), MAX_KEY_BYTES);
  const tooLong = { kind: 'invalid', code: 'object_key_too_long' };
  const body = Readable.from([Buffer.from('x')]);
  await assert.rejects(prefixed.put(k, body), tooLong);
  assert.equal(body.readableDidRead, false, 'the body is left to the caller');
  await assert.rejects(prefixed.get(k), tooLong);
  await assert.rejects(prefixed.head(k), tooLong);
  await assert.rejects(prefixed.delete(k), tooLong);
  await assert.rejects(prefixed.presigner!.presignGet(k, 60), tooLong);
  await assert.rejects(prefixed.presigner!.presignPut(k, 60), tooLong);

  assert.deepEqual(await bare.put(k, Readable.from([Buffer.from('at the limit')])), { size: 12 });
  assert.deepEqual(await bare.head(k), { key: k, size: 12 });
  const listed = [];
  for await (const info of bare.list('files/')) listed.push(info.key);
  assert.deepEqual(listed, [k]);
});

// moto 5 lists every multipart upload as initiated at 2010-11-10T20:48:33Z, in one page, so
// this shows the prefix, the time cut and the aborts; the paging is S3's protocol, not tried.
test('uploads.abortStale aborts the multipart uploads begun under the store prefix before the time (moto)', async (t) => {
  const s3 = await startMoto();
  const store = createS3Store({ ...s3, forcePathStyle: true, prefix: 'store' });
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  t.after(async () => {
    store.destroy();
    client.destroy();
    await s3.stop();
  });
  const begin = (Key: string) => client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key }));
  await begin('store/lfs/aa/bb/abandoned');
  await begin('store/files/acme/Lease Agreement (final).pdf');
  const foreign = await begin('elsewhere/not-ours');
  const uploadKeys = async () => {
    const out = await client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    return (out.Uploads ?? []).map((u) => u.Key).sort();
  };

  assert.deepEqual(await store.uploads!.abortStale(new Date('2001-01-01T00:00:00Z')), { aborted: 0 }, 'none begun before 2001');
  assert.equal((await uploadKeys()).length, 3);
  assert.deepEqual(await store.uploads!.abortStale(new Date()), { aborted: 2 });
  assert.deepEqual(await uploadKeys(), ['elsewhere/not-ours'], 'outside the prefix: not the store\'s');
  assert.deepEqual(await store.uploads!.abortStale(new Date()), { aborted: 0 });
  await client.send(new AbortMultipartUploadCommand({ Bucket: s3.bucket, Key: 'elsewhere/not-ours', UploadId: foreign.UploadId }));
});

test('a copy larger than one CopyObject goes in parts: the new version has every byte, in order', async (t) => {
  const s3 = await startMoto({ versioning: true });
  const store = createS3Store({ ...s3, forcePathStyle: true, prefix: 'store', singleCopyMaxBytes: 5 << 20, copyPartBytes: 5 << 20 });
  t.after(async () => {
    store.destroy();
    await s3.stop();
  });
  const data = randomBytes(12 * 1024 * 1024 + 123);
  await store.put(objectKey('lfs/aa/bb/big'), Readable.from([data]));
  const copied = await store.versions!.copy(objectKey('lfs/aa/bb/big'), objectKey('files/a/b/c/big file.bin'));
  assert.equal(copied.size, data.length);
  const chunks: Buffer[] = [];
  for await (const c of (await store.versions!.get(objectKey('files/a/b/c/big file.bin'), copied.versionId)).body) chunks.push(c as Buffer);
  assert.ok(Buffer.concat(chunks).equals(data), 'three parts, whole and in order');
  const again = await store.versions!.copy(objectKey('files/a/b/c/big file.bin'), objectKey('files/a/b/c/again.bin'), { fromVersionId: copied.versionId });
  assert.equal(again.size, data.length);
});

test('in a bucket with versioning on, deleting a key deletes all its versions: the space is freed', async (t) => {
  const s3 = await startMoto({ versioning: true });
  const store = createS3Store({ ...s3, forcePathStyle: true, prefix: 'store' });
  const raw = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  t.after(async () => {
    raw.destroy();
    store.destroy();
    await s3.stop();
  });
  const k = objectKey('lfs/aa/bb/object');
  await store.put(k, Readable.from([Buffer.from('one')]));
  await store.put(k, Readable.from([Buffer.from('two')]));
  await store.put(objectKey('lfs/aa/bb/object-other'), Readable.from([Buffer.from('kept')]));
  await store.delete(k);
  const left = await raw.send(new ListObjectVersionsCommand({ Bucket: s3.bucket, Prefix: 'store/lfs/aa/bb/' }));
  assert.deepEqual([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])].map((v) => v.Key), ['store/lfs/aa/bb/object-other'], 'no version and no delete marker left of the deleted key');
  assert.equal(await store.head(k), undefined);
});
