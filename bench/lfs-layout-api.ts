/**
 * What both parts of `bench:lfs-layout` (lfs-layout.ts, lfs-layout-gc.ts) ask of a gitstratum
 * server about the readable LFS layout (issue 15): readable repositories made with the CLI, the
 * publish jobs and published versions read through the REST API (as an administrator sees
 * them), the object store beside the server (the filesystem store, or a bucket on moto's S3
 * server) with the bytes it holds and its current keys, and the warnings the server logs.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, readdir, lstat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListObjectVersionsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { startMoto } from '../test/support/moto.js';
import { s3StoreEnv } from '../test/support/s3.js';
import type { GitstratumServer } from './gitstratum-server.js';
import { childPids, currentRss } from './proc-stats.js';
import { stop, track } from './processes.js';

export const MiB = 1024 * 1024;
const MOTO_MAX_RSS = 4 * 1024 ** 3;

export interface PublishJob {
  id: string;
  state: 'pending' | 'done' | 'failed';
  filesTotal: number | null;
  filesDone: number;
  skipped: { path: string; reason: string }[];
  error: string | null;
  createdAt: string;
  finishedAt: string | null;
}

export interface Publication {
  id: string;
  path: string;
  oid: string;
  size: number;
  key: string;
  versionId: string;
  publishedAt: string;
}

const basic = (token: string) => `Basic ${Buffer.from(`git:${token}`).toString('base64')}`;

/** An admin-scoped token of `alice`: the publish jobs are an administrator's view. */
export async function adminToken(gs: GitstratumServer): Promise<string> {
  return (await gs.cli('token', 'create', 'alice', '--scope', 'admin')).trim().split('\n').pop()!;
}

/** Creates `alice/bench/<name>` in the readable layout (`gitstratum repo create --lfs-layout readable`). */
export async function createReadableRepo(gs: GitstratumServer, name: string): Promise<void> {
  await gs.cli('repo', 'create', `alice/bench/${name}`, '--lfs-layout', 'readable', '--json');
}

async function apiGet<T>(gs: GitstratumServer, token: string, route: string): Promise<T> {
  const res = await fetch(`${gs.url}/api/v1${route}`, { headers: { authorization: basic(token) }, signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET ${route}: HTTP ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as T;
}

/**
 * Polls the repository's publish jobs every `pollMs` until there is at least one and every one
 * is done; throws on a failed job or past `timeoutMs`. The polling only tells when to stop: the
 * times come from the records (`publishedAt`, `finishedAt`).
 */
export async function waitForPublishJobs(gs: GitstratumServer, token: string, name: string, opts: { timeoutMs: number; pollMs?: number }): Promise<PublishJob[]> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const jobs = await apiGet<PublishJob[]>(gs, token, `/repos/alice/bench/${name}/lfs/publish-jobs`);
    const failed = jobs.find((j) => j.state === 'failed');
    if (failed) throw new Error(`publish job ${failed.id} of alice/bench/${name} failed: ${failed.error}`);
    if (jobs.length > 0 && jobs.every((j) => j.state === 'done')) return jobs;
    if (Date.now() > deadline) throw new Error(`publish jobs of alice/bench/${name} not done within ${opts.timeoutMs / 1000} s: ${JSON.stringify(jobs).slice(0, 500)}`);
    await sleep(opts.pollMs ?? 250);
  }
}

/** Every published version of the repository, newest first (pages of 1,000). */
export async function listPublished(gs: GitstratumServer, token: string, name: string): Promise<Publication[]> {
  const out: Publication[] = [];
  for (let before: string | undefined; ; ) {
    const page = await apiGet<Publication[]>(gs, token, `/repos/alice/bench/${name}/lfs/published?limit=1000${before ? `&before=${before}` : ''}`);
    out.push(...page);
    if (page.length < 1000) return out;
    before = page[page.length - 1]!.id;
  }
}

export interface StoreBytes {
  /** Bytes held: every version, of current keys and of deleted ones; on disk, each inode once. */
  total: number;
  /** Of which versions that are no key's current one (S3's noncurrent versions; 0 on disk, see filesystemStore). */
  noncurrent: number;
  /** By first path segment of the key (`lfs`, `files`, `snapshots`; on disk `.versions` too). */
  byArea: Map<string, number>;
}

/** An object store as the benchmark looks at it, beside the server that uses it. */
export interface BenchStore {
  /** "filesystem", "moto S3, versioning on", … */
  label: string;
  /** The store's settings as environment, for the server and its admin commands alike. */
  env: NodeJS.ProcessEnv;
  bytes(): Promise<StoreBytes>;
  /** The keys under `prefix` that have a current object (a get would find them). */
  currentKeys(prefix: string): Promise<Set<string>>;
  /** A directory to `cat` into the page cache before a download of `prefix` (filesystem only). */
  warmDir(prefix: string): string | undefined;
  stop(): Promise<void>;
}

const areaOf = (key: string) => key.split('/')[0]!;

/**
 * The filesystem store of the server on `dataDir`: the sizes of the distinct inodes under its
 * root. The current version of a versioned key is a hard link to its version file
 * (storage/fs-store.ts), so it must not count twice; walking `.versions/` first puts such an
 * inode under `.versions`. Every version file counts in `total` (noncurrent stays 0: telling
 * them apart would need each key's link).
 */
export function filesystemStore(dataDir: string): BenchStore {
  const root = path.join(dataDir, 'objects');
  const filesUnder = async (dir: string) => {
    const info = await lstat(dir).catch(() => undefined);
    if (!info) return [];
    return info.isDirectory() ? (await readdir(dir, { recursive: true })).map((rel) => path.join(dir, rel)) : [dir];
  };
  return {
    label: 'filesystem',
    env: { GITSTRATUM_OBJECT_STORE: 'filesystem' },
    async bytes() {
      const seen = new Set<string>();
      const byArea = new Map<string, number>();
      let total = 0;
      const areas = (await readdir(root).catch(() => [] as string[])).sort((a, b) => Number(b === '.versions') - Number(a === '.versions') || a.localeCompare(b));
      for (const area of areas) {
        for (const file of await filesUnder(path.join(root, area))) {
          const st = await lstat(file).catch(() => undefined); // a temporary file may go meanwhile
          if (!st?.isFile()) continue;
          const id = `${st.dev}:${st.ino}`;
          if (seen.has(id)) continue;
          seen.add(id);
          total += st.size;
          byArea.set(area, (byArea.get(area) ?? 0) + st.size);
        }
      }
      return { total, noncurrent: 0, byArea };
    },
    async currentKeys(prefix) {
      const out = new Set<string>();
      for (const file of await filesUnder(path.join(root, ...prefix.split('/').filter(Boolean)))) {
        if ((await lstat(file).catch(() => undefined))?.isFile()) out.add(path.relative(root, file).split(path.sep).join('/'));
      }
      return out;
    },
    warmDir: (prefix) => path.join(root, ...prefix.split('/').filter(Boolean)),
    stop: async () => {},
  };
}

/**
 * A bucket of its own on a moto server of its own (test/support/moto.ts), with or without
 * versioning. startMoto spawns Python as this process's child: that PID is found in /proc and
 * registered, so the benchmark stops it by PID however it ends. Bytes are those of every
 * version the bucket holds (ListObjectVersions), which is what a bucket is billed for.
 */
export async function motoStore(opts: { versioning: boolean }): Promise<BenchStore> {
  const s3 = await startMoto({ versioning: opts.versioning });
  const port = new URL(s3.endpoint).port;
  const pid = childPids(process.pid).find((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ').includes(`moto.server -H 127.0.0.1 -p ${port}`);
    } catch {
      return false;
    }
  });
  if (pid === undefined) {
    await s3.stop();
    throw new Error(`moto's server on port ${port} not found among this process's children`);
  }
  track(pid, 'moto server');
  // A guard for the shared machine: moto 5.2 deep-copies every version of the bucket, bytes
  // included, at each ListObjectVersions (which the S3 store's delete in a versioned bucket
  // calls once per key), and the copies can pile up faster than Python frees them (one run
  // reached 23 GB and the kernel's OOM killer). Past MOTO_MAX_RSS the whole benchmark stops.
  const guard = setInterval(() => {
    let rss = 0;
    try {
      rss = currentRss(pid);
    } catch {
      return; // gone
    }
    if (rss <= MOTO_MAX_RSS) return;
    clearInterval(guard);
    process.stderr.write(`bench: moto's server (PID ${pid}) holds ${(rss / 1024 ** 3).toFixed(1)} GiB, over ${MOTO_MAX_RSS / 1024 ** 3} GiB: stopping the benchmark (try smaller --moto-files, --moto-mib or --moto-gc-objects)\n`);
    process.kill(process.pid, 'SIGTERM');
  }, 1000);
  guard.unref();
  const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  return {
    label: `moto S3 (moto ${motoVersion()}), versioning ${opts.versioning ? 'on' : 'off'}`,
    env: s3StoreEnv(s3),
    // moto 5.2's ListObjectVersions deep-copies every version of the bucket, bytes included
    // (into temporary files past 5 MiB), at every call: keep the bucket small (--moto-mib).
    async bytes() {
      const byArea = new Map<string, number>();
      let total = 0;
      let noncurrent = 0;
      let KeyMarker: string | undefined;
      let VersionIdMarker: string | undefined;
      do {
        const page = await client.send(new ListObjectVersionsCommand({ Bucket: s3.bucket, ...(KeyMarker && { KeyMarker }), ...(VersionIdMarker && { VersionIdMarker }) }));
        for (const v of page.Versions ?? []) {
          const size = v.Size ?? 0;
          total += size;
          if (!v.IsLatest) noncurrent += size;
          byArea.set(areaOf(v.Key!), (byArea.get(areaOf(v.Key!)) ?? 0) + size);
        }
        KeyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
        VersionIdMarker = page.IsTruncated ? page.NextVersionIdMarker : undefined;
      } while (KeyMarker);
      return { total, noncurrent, byArea };
    },
    async currentKeys(prefix) {
      const out = new Set<string>();
      let ContinuationToken: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, ...(ContinuationToken && { ContinuationToken }) }));
        for (const o of page.Contents ?? []) out.add(o.Key!);
        ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (ContinuationToken);
      return out;
    },
    warmDir: () => undefined,
    async stop() {
      clearInterval(guard);
      client.destroy();
      await stop(pid);
    },
  };
}

function motoVersion(): string {
  try {
    return execFileSync(process.env['GITSTRATUM_TEST_PYTHON'] ?? 'python3', ['-c', 'import moto; print(moto.__version__)'], { encoding: 'utf8' }).trim();
  } catch {
    return '?';
  }
}

/** The LFS key of an object (storage/object-store.ts lfsObjectKey). */
export const lfsKey = (oid: string) => `lfs/${oid.slice(0, 2)}/${oid.slice(2, 4)}/${oid}`;

/**
 * The LFS part of `StoreBytes`: all but `snapshots/`, where the server keeps its repositories'
 * snapshots whatever their LFS layout, written in the background at a time of their own.
 */
export function lfsBytes(b: StoreBytes): number {
  return b.total - (b.byArea.get('snapshots') ?? 0);
}

/** `StoreBytes` by area, in MiB: ".versions 1024.0, lfs 0.0". */
export function describeAreas(bytes: Map<string, number>): string {
  return [...bytes].map(([area, n]) => `${area} ${(n / MiB).toFixed(1)}`).join(', ') || 'nothing';
}

/** The server log's warnings and errors, counted by message. */
export async function logProblems(dataDir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let text = '';
  try {
    text = await readFile(path.join(dataDir, 'server.log'), 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      // The server logs level labels (src/shared/log.ts), not pino's numbers.
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level !== 'warn' && entry.level !== 'error' && entry.level !== 'fatal') continue;
      const key = `${entry.level}: ${entry.msg ?? '?'}`;
      out.set(key, (out.get(key) ?? 0) + 1);
    } catch {
      // not a log line of the server's
    }
  }
  return out;
}

export function describeProblems(problems: Map<string, number>): string {
  return problems.size === 0 ? 'no warnings or errors' : [...problems].map(([msg, n]) => `${n} × ${msg}`).join('; ');
}
