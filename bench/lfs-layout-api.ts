/**
 * What both parts of `bench:lfs-layout` (lfs-layout.ts, lfs-layout-gc.ts) ask of a gitstratum
 * server about the readable LFS layout (issue 15): readable repositories made with the CLI, the
 * publish jobs and published versions read through the REST API (as an administrator sees
 * them), the bytes under a filesystem store's root, and the warnings its log holds.
 */
import { readFile, readdir, lstat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GitstratumServer } from './gitstratum-server.js';

export const MiB = 1024 * 1024;

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
  /** Bytes of the distinct files (inodes) under the root. */
  total: number;
  files: number;
  /** By first path segment under the root (`.versions`, `lfs`, `files`, …); a hard-linked inode counts under the first area walked, `.versions` first. */
  byArea: Map<string, number>;
}

/**
 * Bytes a filesystem store holds: the sizes of the distinct inodes under its root. The readable
 * layout's current version of a key is a hard link to its version file (storage/fs-store.ts),
 * so it must not count twice.
 */
export async function storeBytes(root: string): Promise<StoreBytes> {
  const seen = new Set<string>();
  const byArea = new Map<string, number>();
  let total = 0;
  let files = 0;
  let areas: string[];
  try {
    areas = await readdir(root);
  } catch {
    return { total, files, byArea };
  }
  areas.sort((a, b) => Number(b === '.versions') - Number(a === '.versions') || a.localeCompare(b));
  for (const area of areas) {
    const top = path.join(root, area);
    const info = await lstat(top);
    const entries = info.isDirectory() ? (await readdir(top, { recursive: true })).map((rel) => path.join(top, rel)) : [top];
    for (const file of entries) {
      const st = await lstat(file).catch(() => undefined); // a temporary file may go meanwhile
      if (!st?.isFile()) continue;
      const id = `${st.dev}:${st.ino}`;
      if (seen.has(id)) continue;
      seen.add(id);
      total += st.size;
      files += 1;
      byArea.set(area, (byArea.get(area) ?? 0) + st.size);
    }
  }
  return { total, files, byArea };
}

/** `StoreBytes` by area, in MiB: ".versions 1024.0, lfs 0.0". */
export function describeAreas(bytes: Map<string, number>): string {
  return [...bytes].map(([area, n]) => `${area} ${(n / MiB).toFixed(1)}`).join(', ') || 'nothing';
}

/** The server log's warnings and errors (pino level ≥ 40), counted by message. */
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
      const entry = JSON.parse(line) as { level?: number; msg?: string };
      const level = entry.level ?? 0;
      if (level < 40) continue;
      const key = `${level >= 50 ? 'error' : 'warn'}: ${entry.msg ?? '?'}`;
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
