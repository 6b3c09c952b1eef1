import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { startS3, type TestS3 } from '../../test/support/s3.js';
import { startMoto } from '../../test/support/moto.js';
import { objectStoreContract, versionedStoreContract } from './contract.js';
import { objectKey } from './object-store.js';
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
