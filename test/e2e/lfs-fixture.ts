/**
 * What the LFS end-to-end suites share: the store × transfer-mode configurations a server
 * can run in (each against its own server and, for S3, its own s3rver), a view of what the
 * object store holds (to prove that bad input stored nothing), seeded random content
 * streamed to disk (a 200 MB object never sits in memory), and the batch API as `fetch`.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Git, Server, type seed } from './harness.js';
import { s3StoreEnv, startS3, type TestS3 } from '../support/s3.js';
import { createS3Store } from '../../src/storage/s3-store.js';
import { lfsObjectKey, type ObjectStore } from '../../src/storage/object-store.js';

export type StoreKind = 'filesystem' | 's3';
export type TransferMode = 'proxy' | 'direct';

export interface LfsConfig {
  name: string;
  store: StoreKind;
  mode: TransferMode;
}

/** Direct transfers need pre-signed URLs, so they exist only with S3. */
export const LFS_CONFIGS: readonly LfsConfig[] = [
  { name: 'filesystem+proxy', store: 'filesystem', mode: 'proxy' },
  { name: 's3+proxy', store: 's3', mode: 'proxy' },
  { name: 's3+direct', store: 's3', mode: 'direct' },
];

export const LFS_MEDIA_TYPE = 'application/vnd.git-lfs+json';

export interface LfsServer {
  config: LfsConfig;
  server: Server;
  /** The environment the server was started with (to start it again on the same data). */
  env: NodeJS.ProcessEnv;
  s3?: TestS3;
  /** Whether the object store holds the object under its final key. */
  stored(oid: string): Promise<boolean>;
  /** Every LFS object key the store holds. */
  storedKeys(): Promise<string[]>;
  /** Stops s3rver under the running server (the store becomes unavailable); once only. */
  stopS3(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts s3rver when the configuration needs it, then the server on top of it. */
export async function startLfsServer(config: LfsConfig, extraEnv: NodeJS.ProcessEnv = {}): Promise<LfsServer> {
  const s3 = config.store === 's3' ? await startS3() : undefined;
  const env: NodeJS.ProcessEnv = {
    GITSTRATUM_LFS_TRANSFER_MODE: config.mode,
    GITSTRATUM_OBJECT_STORE: config.store,
    ...(s3 && s3StoreEnv(s3)),
    ...extraEnv,
  };
  let server: Server;
  try {
    server = await Server.start({ env });
  } catch (err) {
    await s3?.stop();
    throw err;
  }
  const view: ObjectStore | undefined = s3
    ? createS3Store({
        endpoint: s3.endpoint,
        region: s3.region,
        bucket: s3.bucket,
        forcePathStyle: true,
        accessKeyId: s3.accessKeyId,
        secretAccessKey: s3.secretAccessKey,
      })
    : undefined;
  const fsRoot = path.join(server.dataDir, 'objects', 'lfs');
  let s3Stopped: Promise<void> | undefined;
  const stopS3 = () => (s3Stopped ??= s3 ? s3.stop() : Promise.resolve());
  return {
    config,
    server,
    env,
    ...(s3 && { s3 }),
    async stored(oid) {
      if (view) return (await view.head(lfsObjectKey(oid))) !== undefined;
      return (await filesUnder(fsRoot)).some((f) => path.basename(f) === oid);
    },
    async storedKeys() {
      if (view) {
        const keys: string[] = [];
        for await (const info of view.list('lfs/')) keys.push(info.key);
        return keys;
      }
      return (await filesUnder(fsRoot)).map((f) => `lfs/${path.relative(fsRoot, f).split(path.sep).join('/')}`);
    },
    stopS3,
    async stop() {
      await server.cleanup();
      (view as { destroy?: () => void } | undefined)?.destroy?.();
      await stopS3();
    },
  };
}

/** Every regular file below `dir`, recursively; none when it does not exist. */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

export type Tokens = Awaited<ReturnType<typeof seed>>;

/**
 * The harness's standard fixture (alice, bob, root the site admin, space alice/main, the same
 * tokens), made through the REST API after the first two admin commands: each command is a
 * process that takes about a second, and the LFS suites start eight servers.
 */
export async function seedFast(server: Server): Promise<Tokens> {
  await server.createUser('root', { admin: true });
  const rootAdmin = await server.token('root', 'admin');
  await api(server, rootAdmin, 'POST', '/users', { name: 'alice', admin: false });
  await api(server, rootAdmin, 'POST', '/users', { name: 'bob', admin: false });
  await api(server, rootAdmin, 'POST', '/spaces', { owner: 'alice', name: 'main' });
  const token = async (user: string, scope: 'read' | 'write' | 'admin') =>
    String((await api(server, rootAdmin, 'POST', `/users/${user}/tokens`, { scope })).token);
  return {
    alice: { read: await token('alice', 'read'), write: await token('alice', 'write'), admin: await token('alice', 'admin') },
    bob: { write: await token('bob', 'write') },
    root: { admin: rootAdmin },
  };
}

/** One REST API call that must succeed; its JSON answer. */
export async function api(server: Server, token: string, method: string, route: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${server.url}/api/v1${route}`, {
    method,
    headers: { authorization: basic(token), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${method} ${route} answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

/** Creates `owner/space/name` through the REST API. */
export async function createRepo(server: Server, token: string, repoPath: string, visibility: 'public' | 'private' = 'private'): Promise<void> {
  const [owner, space, name] = repoPath.split('/');
  await api(server, token, 'POST', '/repos', { owner, space, name, visibility });
}

/** A git user with its own HOME in which git-lfs's filters and hooks are configured. */
export async function lfsGit(): Promise<Git> {
  const git = await Git.create();
  // --skip-repo and cwd = HOME: run inside a repository, `git lfs install` would also write
  // hooks into it (the test runner's cwd is this project's own checkout).
  await git.ok(['lfs', 'install', '--skip-repo'], { cwd: git.home });
  return git;
}

/** Deterministic pseudo-random bytes (xorshift32), so a failure reproduces with its seed. */
export function randomBytesSeeded(size: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return Buffer.from(words.buffer, 0, size);
}

/** Writes `size` seeded random bytes to `file` 1 MiB at a time: memory stays flat. */
export async function writeRandomFile(file: string, size: number, seed: number): Promise<void> {
  const out = createWriteStream(file);
  const chunk = 1 << 20;
  for (let written = 0, i = 0; written < size; written += chunk, i++) {
    if (!out.write(randomBytesSeeded(Math.min(chunk, size - written), seed + i * 7919))) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), hash);
  return hash.digest('hex');
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function basic(token: string): string {
  return `Basic ${Buffer.from(`git:${token}`).toString('base64')}`;
}

export interface LfsAction {
  href: string;
  header?: Record<string, string>;
  expires_in?: number;
  expires_at?: string;
}

export interface BatchObject {
  oid: string;
  size: number;
  authenticated?: boolean;
  actions?: { upload?: LfsAction; verify?: LfsAction; download?: LfsAction };
  error?: { code: number; message: string };
}

export interface BatchAnswer {
  status: number;
  headers: Headers;
  /** The parsed JSON body (objects for a 200, `{message, request_id}` otherwise). */
  body: { objects?: BatchObject[]; message?: string; request_id?: string; transfer?: string; [k: string]: unknown };
}

/** POSTs to a repository's batch endpoint. `body` may be a string to send malformed JSON. */
export async function batch(server: Server, repo: string, token: string | undefined, body: unknown): Promise<BatchAnswer> {
  const res = await fetch(`${server.url}/${repo}.git/info/lfs/objects/batch`, {
    method: 'POST',
    headers: {
      accept: LFS_MEDIA_TYPE,
      'content-type': `${LFS_MEDIA_TYPE}; charset=utf-8`,
      ...(token && { authorization: basic(token) }),
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: BatchAnswer['body'];
  try {
    parsed = JSON.parse(text) as BatchAnswer['body'];
  } catch {
    throw new Error(`batch answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** The single object of a one-object batch, failing when the batch itself failed. */
export async function batchOne(server: Server, repo: string, token: string, operation: 'upload' | 'download', oid: string, size: number): Promise<BatchObject> {
  const r = await batch(server, repo, token, { operation, transfers: ['basic'], objects: [{ oid, size }], hash_algo: 'sha256' });
  if (r.status !== 200) throw new Error(`batch ${operation} answered ${r.status}: ${JSON.stringify(r.body)}`);
  const obj = r.body.objects?.[0];
  if (!obj) throw new Error(`batch ${operation} answered no object: ${JSON.stringify(r.body)}`);
  return obj;
}

/** Follows an action the way git-lfs's basic adapter does: its href with its headers. */
export async function runAction(
  action: LfsAction,
  init: { method: string; body?: Buffer | string; headers?: Record<string, string>; signal?: AbortSignal },
): Promise<Response> {
  const { body } = init;
  return fetch(action.href, {
    method: init.method,
    ...(init.signal && { signal: init.signal }),
    headers: { ...action.header, ...init.headers },
    ...(body !== undefined && { body: typeof body === 'string' ? body : new Uint8Array(body) }),
  });
}

/** Uploads `data` to `repo` through the batch API and its upload and verify actions, as git-lfs does; returns the oid. */
export async function uploadObject(server: Server, repo: string, token: string, data: Buffer): Promise<string> {
  const oid = sha256(data);
  const obj = await batchOne(server, repo, token, 'upload', oid, data.length);
  if (!obj.actions?.upload || !obj.actions.verify) throw new Error(`no upload action: ${JSON.stringify(obj)}`);
  const put = await runAction(obj.actions.upload, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
  if (put.status !== 200) throw new Error(`upload answered ${put.status}: ${await put.text()}`);
  const verify = await runAction(obj.actions.verify, { method: 'POST', body: JSON.stringify({ oid, size: data.length }), headers: { 'content-type': LFS_MEDIA_TYPE } });
  if (verify.status !== 200) throw new Error(`verify answered ${verify.status}: ${await verify.text()}`);
  return oid;
}
