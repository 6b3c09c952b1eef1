/**
 * The S3-compatible server of a benchmark: s3rver, the one the tests use (test/support/s3.ts,
 * with its fixes for Node 20), but in a process of its own so that its CPU is neither the
 * benchmark's nor any server's, registered by PID and stopped by it. Its directory is under
 * the run directory (TMPDIR), removed with it.
 *
 * Run as a script (`node dist/bench/s3-server.js`), this file starts s3rver, prints one JSON
 * line with the endpoint, bucket and credentials, and stops it on SIGTERM.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { s3StoreEnv, startS3 } from '../test/support/s3.js';
import { track, untrack } from './processes.js';

export interface S3Server {
  pid: number;
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** gitstratum's settings, as environment, for objects under `prefix` (e.g. `failover/`) of the bucket. */
  storeEnv(prefix: string): NodeJS.ProcessEnv;
}

type Address = Omit<S3Server, 'pid' | 'storeEnv'>;

export async function startS3Server(dir: string, env: NodeJS.ProcessEnv): Promise<S3Server> {
  await mkdir(dir, { recursive: true });
  const fd = openSync(path.join(dir, 's3rver.log'), 'a');
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], { env: { ...env, TMPDIR: dir }, stdio: ['ignore', 'pipe', fd] });
  closeSync(fd);
  const pid = child.pid!;
  track(pid, 's3rver');
  child.on('exit', () => untrack(pid));
  const address = await new Promise<Address>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within 30 s; see ${dir}/s3rver.log`)), 30_000);
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code} at start; see ${dir}/s3rver.log`)));
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as Address);
    });
  });
  return {
    pid,
    ...address,
    storeEnv: (prefix) => ({ ...s3StoreEnv(address), GITSTRATUM_S3_PREFIX: prefix }),
  };
}

async function main(): Promise<void> {
  const s3 = await startS3();
  const { endpoint, bucket, region, accessKeyId, secretAccessKey } = s3;
  process.stdout.write(JSON.stringify({ endpoint, bucket, region, accessKeyId, secretAccessKey }) + '\n');
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => void s3.stop().finally(() => process.exit(0)));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    process.stderr.write(`s3rver: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
