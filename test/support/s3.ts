/**
 * A real S3-compatible server for tests: s3rver, in process, on 127.0.0.1 and a free port,
 * storing into a fresh temporary directory, with one fresh bucket. s3rver speaks the S3 wire
 * protocol (multipart, ranges, pre-signed URLs) but verifies no V4 signatures, so tests that
 * care about what is signed inspect the URL itself.
 *
 * If s3rver cannot start, `startS3` rejects: S3 tests fail rather than skip.
 *
 * Where s3rver 3.7.1 differs from S3 (seen on Node 20), and what the tests do about it:
 * - It writes a PUT straight into the object's final file. Concurrent PUTs of one key with
 *   different bytes interleave into a mix (S3 is atomic, last writer wins); the contract races
 *   writers of the same bytes only, which is what immutable keys allow. A PUT whose request
 *   dies midway would leave a partial object, which is one reason the S3 adapter sends a
 *   single PutObject only with a body it has read completely.
 * - AbortMultipartUpload is not routed (405 MethodNotAllowed): the parts of an aborted upload
 *   stay in its upload directory, never under the key.
 * - `Range: bytes=0-0` returns the whole object (`end || Infinity`); other ranges are right.
 * - Truncated ListObjectsV2 pages fail with a 500 (see allowS3rverContinuationTokens) unless
 *   patched, and continuation tokens are accepted only for region us-east-1.
 */
import crypto, { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverClass = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  vhostBuckets: boolean;
  configureBuckets: { name: string; configs: [] }[];
}) => S3rverInstance;

export interface TestS3 {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** The `gitstratum` flags that put its object store in this bucket. */
  storeArgs(): string[];
  stop(): Promise<void>;
}

/** The `gitstratum` environment that puts its object store in a test server's bucket. */
export function s3StoreEnv(s3: { endpoint: string; bucket: string; region: string; accessKeyId: string; secretAccessKey: string }): Record<string, string> {
  return {
    GITSTRATUM_OBJECT_STORE: 's3',
    GITSTRATUM_S3_ENDPOINT: s3.endpoint,
    GITSTRATUM_S3_BUCKET: s3.bucket,
    GITSTRATUM_S3_REGION: s3.region,
    GITSTRATUM_S3_FORCE_PATH_STYLE: 'true',
    GITSTRATUM_S3_ACCESS_KEY_ID: s3.accessKeyId,
    GITSTRATUM_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
  };
}

/** The `gitstratum` flags that put its object store in a test server's bucket. */
export function s3StoreArgs(endpoint: string, bucket: string, region: string, credentials: { accessKeyId: string; secretAccessKey: string }): string[] {
  return [
    '--object-store', 's3', '--s3-endpoint', endpoint, '--s3-bucket', bucket, '--s3-region', region,
    '--s3-force-path-style', 'true', '--s3-access-key-id', credentials.accessKeyId, '--s3-secret-access-key', credentials.secretAccessKey,
  ];
}

/** s3rver's built-in account; it knows no other. */
const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export async function startS3(): Promise<TestS3> {
  allowS3rverContinuationTokens();
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;
  const directory = await mkdtemp(path.join(tmpdir(), 'gitstratum-s3-'));
  const bucket = `test-${randomBytes(6).toString('hex')}`;
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    vhostBuckets: false,
    configureBuckets: [{ name: bucket, configs: [] }],
  });
  let address: AddressInfo;
  try {
    address = await server.run();
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  const endpoint = `http://127.0.0.1:${address.port}`;
  // s3rver accepts continuation tokens only for us-east-1.
  const region = 'us-east-1';
  return {
    endpoint,
    bucket,
    region,
    ...CREDENTIALS,
    storeArgs: () => s3StoreArgs(endpoint, bucket, region, CREDENTIALS),
    async stop() {
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/**
 * s3rver 3.7.1 encrypts ListObjectsV2 continuation tokens with single DES, which OpenSSL 3
 * (Node >= 17) only has in its legacy provider: every truncated listing then fails with
 * ERR_OSSL_EVP_UNSUPPORTED (HTTP 500). Three-key DES with all three keys equal is single DES,
 * and it is in the default provider, so this maps s3rver's 'des' onto it, byte for byte.
 * Only the 'des' algorithm is touched, and only in the test process.
 */
let desPatched = false;
function allowS3rverContinuationTokens(): void {
  if (desPatched) return;
  desPatched = true;
  const mutable = crypto as unknown as Record<'createCipheriv' | 'createDecipheriv', (...args: unknown[]) => unknown>;
  for (const name of ['createCipheriv', 'createDecipheriv'] as const) {
    const original = mutable[name];
    mutable[name] = function (this: unknown, algorithm: unknown, key: unknown, ...rest: unknown[]) {
      if (algorithm === 'des' && Buffer.isBuffer(key) && key.length === 8) {
        return original.call(this, 'des-ede3-cbc', Buffer.concat([key, key, key]), ...rest);
      }
      return original.call(this, algorithm, key, ...rest);
    };
  }
}
