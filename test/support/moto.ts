/**
 * A second real S3-compatible server for tests: moto's server (`python3 -m moto.server`, from
 * the Python `moto` package these machines carry), on 127.0.0.1 and a free port, with one fresh
 * bucket. Unlike s3rver it has bucket versioning (issue 15: the readable LFS layout keeps every
 * version of a path), though, like s3rver, it checks no checksums. Started per test file and
 * stopped by its PID. If it cannot start, `startMoto` rejects: the tests fail rather than skip.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, PutBucketVersioningCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort } from './cluster.js';
import { s3StoreArgs, type TestS3 } from './s3.js';

/** moto accepts any credentials. */
const CREDENTIALS = { accessKeyId: 'moto', secretAccessKey: 'moto' };

export async function startMoto(opts: { versioning?: boolean } = {}): Promise<TestS3> {
  const port = await freePort();
  // scripts/test.sh names another Python when the first on PATH lacks moto.
  const child = spawn(process.env['GITSTRATUM_TEST_PYTHON'] ?? 'python3', ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '' },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  const endpoint = `http://127.0.0.1:${port}`;
  const region = 'us-east-1';
  const bucket = `test-${randomBytes(6).toString('hex')}`;
  const client = new S3Client({ endpoint, region, forcePathStyle: true, credentials: CREDENTIALS });
  try {
    // Python starts in a few seconds; bounded generously for a loaded machine.
    for (let tries = 0; ; tries++) {
      if (child.exitCode !== null) throw new Error(`moto's server exited at start (is the Python package moto[server] installed?): ${stderr.trim().split('\n').pop() ?? ''}`);
      try {
        const res = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        break;
      } catch {
        if (tries > 300) throw new Error(`moto's server did not answer on ${endpoint} within 60 s`);
        await sleep(200);
      }
    }
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    if (opts.versioning) await client.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
  } catch (err) {
    client.destroy();
    await stop();
    throw err;
  }
  client.destroy();
  return {
    endpoint,
    bucket,
    region,
    ...CREDENTIALS,
    storeArgs: () => s3StoreArgs(endpoint, bucket, region, CREDENTIALS),
    stop,
  };
}
