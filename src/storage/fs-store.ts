/**
 * The filesystem ObjectStore: one file per key under `root`, the key's segments as
 * directories (`lfs/ab/cd/<oid>`).
 *
 * A put streams into `<root>/.tmp/<random>` (the same filesystem, so rename is atomic),
 * fsyncs the file, renames it over the final path and fsyncs the directories it touched.
 * Readers therefore see either nothing or a whole, durable object; concurrent writers of one
 * key each rename a complete file and the last rename wins. A failed or aborted put removes
 * its temporary file. Temporary files orphaned by a crash stay in `.tmp/`, which list()
 * never shows.
 *
 * Versions (issue 15): a key written through `versions.copy` keeps every version as a file
 * `<root>/.versions/<key>/<version id>` (ids ordered by time), and the key's own file is a hard
 * link to the current one; list() never shows `.versions/`. A plain put or delete of such a key
 * leaves its versions alone.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, mkdir, open, opendir, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { addAbortSignal, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isDomainError, notFound, unavailable } from '../shared/errors.js';
import { resolveByteRange } from './byte-range.js';
import { objectKey, type ByteRange, type GetResult, type ObjectInfo, type ObjectKey, type ObjectStore, type Versions } from './object-store.js';

/** 1 MiB chunks: the 64 KiB default costs a syscall and an event-loop turn per 64 KiB. */
const CHUNK = 1 << 20;
const TMP = '.tmp';

export function createFsStore(root: string): ObjectStore {
  const base = path.resolve(root);
  const tmpDir = path.join(base, TMP);
  const fileOf = (key: ObjectKey) => path.join(base, ...key.split('/'));

  function put(key: ObjectKey, body: Readable, opts: { signal?: AbortSignal } = {}): Promise<{ size: number }> {
    return putFile(fileOf(key), key, body, opts);
  }

  async function putFile(final: string, key: ObjectKey, body: Readable, opts: { signal?: AbortSignal } = {}): Promise<{ size: number }> {
    const dir = path.dirname(final);
    const tmp = path.join(tmpDir, randomUUID());
    // Whichever side fails first is the cause; the pipeline then destroys the other with the
    // same error. The body's failures (a verifying transform, a client gone) pass through.
    let firstFailure: 'body' | 'file' | undefined;
    body.once('error', () => (firstFailure ??= 'body'));
    let out: ReturnType<typeof createWriteStream> | undefined;
    try {
      await mkdir(tmpDir, { recursive: true });
      // `flush` fsyncs the file before it closes; pipeline resolves after the close.
      out = createWriteStream(tmp, { flags: 'wx', flush: true, highWaterMark: CHUNK });
      out.once('error', () => (firstFailure ??= 'file'));
      await pipeline(body, out, opts.signal ? { signal: opts.signal } : {});
      const created = await mkdir(dir, { recursive: true });
      await rename(tmp, final);
      await syncDirectories(dir, created);
      return { size: out.bytesWritten };
    } catch (err) {
      // The stream opens its file asynchronously: a body failing first would otherwise be
      // unlinked before the file exists, and the file created after.
      if (out && !out.closed) await new Promise<void>((resolve) => out!.once('close', () => resolve()));
      await unlink(tmp).catch(() => {});
      throw firstFailure === 'body' ? err : storageError(err, key, 'put');
    }
  }

  function get(key: ObjectKey, opts: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<GetResult> {
    return getFile(fileOf(key), key, opts);
  }

  async function getFile(filePath: string, key: ObjectKey, opts: { range?: ByteRange; signal?: AbortSignal } = {}): Promise<GetResult> {
    opts.signal?.throwIfAborted();
    let file: FileHandle;
    try {
      file = await open(filePath, 'r');
    } catch (err) {
      throw storageError(err, key, 'get');
    }
    try {
      const info = await file.stat();
      if (!info.isFile()) throw notFound('object_not_found', 'object not found', { key });
      const size = info.size;
      const range = opts.range ? resolveByteRange(opts.range, size) : undefined;
      let body: Readable;
      if (size === 0) {
        // No last byte to name: fs streams take `end` as inclusive and cannot express "none".
        await file.close();
        body = Readable.from([]);
      } else {
        body = file.createReadStream({ start: range?.start ?? 0, end: range?.end ?? size - 1, highWaterMark: CHUNK });
      }
      if (opts.signal) addAbortSignal(opts.signal, body);
      return { body, size, ...(range && { range }) };
    } catch (err) {
      await file.close().catch(() => {});
      throw storageError(err, key, 'get');
    }
  }

  async function head(key: ObjectKey): Promise<ObjectInfo | undefined> {
    try {
      const info = await stat(fileOf(key));
      return info.isFile() ? { key, size: info.size } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw storageError(err, key, 'head');
    }
  }

  async function remove(key: ObjectKey): Promise<void> {
    try {
      await unlink(fileOf(key));
    } catch (err) {
      if (!isMissing(err)) throw storageError(err, key, 'delete');
    }
  }

  /**
   * Walks the deepest directory the prefix names and filters by the rest, so `lfs/ab/` and
   * `lfs/a` both work as they do on S3. Directories are read lazily, one at a time.
   */
  async function* list(prefix: string): AsyncIterable<ObjectInfo> {
    assertPrefix(prefix);
    const cut = prefix.lastIndexOf('/') + 1;
    const start = path.join(base, ...prefix.slice(0, cut).split('/').filter(Boolean));
    for await (const [rel, file] of walk(start, prefix.slice(0, cut))) {
      if (!rel.startsWith(prefix)) continue;
      let key: ObjectKey;
      try {
        key = objectKey(rel);
      } catch {
        continue; // not written by this store
      }
      try {
        const info = await stat(file);
        yield { key, size: info.size };
      } catch (err) {
        if (!isMissing(err)) throw storageError(err, key, 'list'); // deleted while listing: skip it
      }
    }
  }

  // Versions (object-store.ts Versions): each version of a key written through `versions` is a
  // file `<root>/.versions/<key>/<version id>`, never written again; the key's own file is a
  // hard link to its current version, so get() and head() serve it as any other key.
  const versionsDir = path.join(base, VERSIONS);
  const versionFile = (key: ObjectKey, versionId: string) => {
    if (!VERSION_ID.test(versionId)) throw notFound('object_not_found', 'no such version', { key, version_id: versionId.slice(0, 80) });
    return path.join(versionsDir, ...key.split('/'), versionId);
  };

  /** Points the key at a version file: a new link renamed over the key's file. */
  async function makeCurrent(key: ObjectKey, file: string): Promise<void> {
    const tmp = path.join(tmpDir, randomUUID());
    const final = fileOf(key);
    try {
      await mkdir(tmpDir, { recursive: true });
      await link(file, tmp);
      const created = await mkdir(path.dirname(final), { recursive: true });
      await rename(tmp, final);
      await syncDirectories(path.dirname(final), created);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw storageError(err, key, 'put');
    }
  }

  const versions: Versions = {
    enabled: async () => true,

    async copy(from, to) {
      const source = await get(from);
      const versionId = newVersionId();
      const { size } = await putFile(versionFile(to, versionId), to, source.body);
      await makeCurrent(to, versionFile(to, versionId));
      return { versionId, size };
    },

    get: async (key, versionId, opts = {}) => getFile(versionFile(key, versionId), key, opts),

    async *list(prefix) {
      assertPrefix(prefix);
      const cut = prefix.lastIndexOf('/') + 1;
      const start = path.join(versionsDir, ...prefix.slice(0, cut).split('/').filter(Boolean));
      for await (const [rel, file] of walk(start, prefix.slice(0, cut))) {
        const slash = rel.lastIndexOf('/');
        const versionId = rel.slice(slash + 1);
        if (slash < 0 || !VERSION_ID.test(versionId) || !rel.startsWith(prefix)) continue;
        let key: ObjectKey;
        try {
          key = objectKey(rel.slice(0, slash));
        } catch {
          continue;
        }
        try {
          const info = await stat(file);
          const current = await stat(fileOf(key)).catch(() => undefined);
          yield { key, versionId, size: info.size, latest: current !== undefined && current.ino === info.ino && current.dev === info.dev };
        } catch (err) {
          if (!isMissing(err)) throw storageError(err, key, 'list');
        }
      }
    },

    async delete(key, versionId) {
      const file = versionFile(key, versionId);
      let version;
      try {
        version = await stat(file);
      } catch (err) {
        if (isMissing(err)) return;
        throw storageError(err, key, 'delete');
      }
      const current = await stat(fileOf(key)).catch(() => undefined);
      try {
        await unlink(file);
      } catch (err) {
        if (!isMissing(err)) throw storageError(err, key, 'delete');
      }
      if (!current || current.ino !== version.ino || current.dev !== version.dev) return;
      // The current version went: the newest one left becomes current, or the key goes.
      const left = (await readdir(path.dirname(file)).catch(() => [] as string[])).filter((n) => VERSION_ID.test(n)).sort();
      if (left.length > 0) await makeCurrent(key, versionFile(key, left[left.length - 1]!));
      else await remove(key);
    },
  };

  return { kind: 'filesystem', put, get, head, delete: remove, list, versions };
}

const VERSIONS = '.versions';
/** Time-ordered: milliseconds and a per-process sequence, fixed width, then randomness. */
const VERSION_ID = /^[0-9a-z]{9}-[0-9a-z]{4}-[0-9a-f]{8}$/;
let versionSeq = 0;

function newVersionId(): string {
  versionSeq = (versionSeq + 1) % 36 ** 4;
  return `${Date.now().toString(36).padStart(9, '0')}-${versionSeq.toString(36).padStart(4, '0')}-${randomBytes(4).toString('hex')}`;
}

async function* walk(dir: string, rel: string): AsyncGenerator<[string, string]> {
  let handle;
  try {
    handle = await opendir(dir, { bufferSize: 128 });
  } catch (err) {
    if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
    throw storageError(err, undefined, 'list');
  }
  for await (const entry of handle) {
    if (rel === '' && (entry.name === TMP || entry.name === VERSIONS)) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(full, `${rel}${entry.name}/`);
    else if (entry.isFile()) yield [`${rel}${entry.name}`, full];
  }
}

/**
 * fsync `dir`, where the rename landed, and, when mkdir had to create directories (`created`
 * is the top-most one), each parent whose entries changed, so the new path survives a crash.
 */
async function syncDirectories(dir: string, created: string | undefined): Promise<void> {
  const dirs = [dir];
  if (created) {
    for (let d = dir; d !== path.dirname(created); d = path.dirname(d)) dirs.push(path.dirname(d));
  }
  for (const d of dirs) {
    const handle = await open(d, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

function assertPrefix(prefix: string): void {
  if (prefix.startsWith('/') || prefix.split('/').some((s) => s === '..' || s === '.') || /[\\\0]/.test(prefix)) {
    throw new RangeError(`invalid list prefix: ${prefix}`);
  }
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/**
 * The filesystem's own errors become `not_found` (a missing key on read) or `unavailable`;
 * anything else (a DomainError, an AbortError) passes through as it is.
 */
function storageError(err: unknown, key: ObjectKey | undefined, op: string): unknown {
  if (isDomainError(err) || !(err instanceof Error) || !('syscall' in err)) return err;
  if (isMissing(err) && key && op === 'get') return notFound('object_not_found', 'object not found', { key });
  return unavailable('storage_unavailable', 'filesystem object store failed', {
    op,
    ...(key && { key }),
    cause: (err as NodeJS.ErrnoException).code,
  });
}
