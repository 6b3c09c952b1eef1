/**
 * The filesystem ObjectStore: one file per key under `root`, the key's segments as
 * directories (`lfs/ab/cd/<oid>`).
 *
 * A put streams into `<root>/.tmp/<random>` (the same filesystem, so rename is atomic),
 * fsyncs the file, renames it over the final path and fsyncs the directories it touched.
 * Readers therefore see either nothing or a whole, durable object; concurrent writers of one
 * key each rename a complete file and the last rename wins. A failed or aborted put removes
 * its temporary file.
 *
 * Temporary files orphaned by a crash stay in `.tmp/`, which list() never shows, until
 * `uploads.abortStale` removes them.
 *
 * Versions (issue 15): a key written through `versions.copy` keeps every version as a file
 * `<root>/.versions/<key>/<version id>` (ids ordered by time), and the key's own file is a hard
 * link to the current one; list() never shows `.versions/`. A plain put or delete of such a key
 * leaves its versions alone. `.versions/<key>/` holds the key's version files and, beside
 * them, the directories of longer keys (`.versions/x/docs/a.txt/` within `.versions/x/docs/`).
 *
 * Path conflicts of versioned keys. A git path can be a file in one commit and a directory in a
 * later one, so `x/docs` and `x/docs/a.txt` can both have versions, which S3 holds side by side
 * but a filesystem cannot: `<root>/x/docs` is either the one's current link or the other's
 * directory. A versioned copy takes the path for the key being written:
 * - to `x/docs/a.txt` while `<root>/x/docs` is the current link of the versioned key `x/docs`
 *   (a file sharing its inode with one of `.versions/x/docs/*`): that link goes. The versions of
 *   `x/docs` stay readable by id, list() and get() no longer see `x/docs`, and its versions all
 *   list as `latest: false`. Any other file in the way (a plain key) fails the copy as a put.
 * - to `x/docs` while `<root>/x/docs` is a directory: an empty one is removed; otherwise the
 *   version is kept and its id returned, but the key gets no current link (`latest: false`,
 *   get() `not_found`) until a later copy finds the path free. Directories are never removed
 *   by deletes, so a publisher frees a path by deleting the old keys before copying new ones.
 * S3 stores report `latest: true` in both cases: there both keys stay current.
 * A key segment spelled exactly like one of its parent key's version ids would collide with
 * that version file in `.versions/`; ids hold time and randomness, and such a copy fails.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, lstat, mkdir, open, opendir, readdir, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { addAbortSignal, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isDomainError, notFound, unavailable } from '../shared/errors.js';
import { resolveByteRange } from './byte-range.js';
import { objectKey, type ByteRange, type GetResult, type ObjectInfo, type ObjectKey, type ObjectStore, type Uploads, type Versions } from './object-store.js';

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
        yield { key, size: info.size, modifiedAt: info.mtime };
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

  /**
   * Points the key at a version file: a new link renamed over the key's file. False when the
   * key's path is a directory that is not empty: the key is then left with no current link.
   */
  async function makeCurrent(key: ObjectKey, file: string): Promise<boolean> {
    const tmp = path.join(tmpDir, randomUUID());
    const final = fileOf(key);
    try {
      await mkdir(tmpDir, { recursive: true });
      await link(file, tmp);
      const created = await mkdirTakingLinks(key);
      if (!(await renameOverFile(tmp, final))) {
        await unlink(tmp);
        return false;
      }
      await syncDirectories(path.dirname(final), created);
      return true;
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw storageError(err, key, 'put');
    }
  }

  /** rename(2), except onto a directory: an empty one is replaced, a full one left (false). */
  async function renameOverFile(from: string, to: string): Promise<boolean> {
    try {
      await rename(from, to);
      return true;
    } catch (err) {
      if (errno(err) !== 'EISDIR') throw err;
    }
    try {
      await rmdir(to);
    } catch (err) {
      if (errno(err) === 'ENOTEMPTY' || errno(err) === 'EEXIST') return false;
      if (!isMissing(err)) throw err;
    }
    await rename(from, to);
    return true;
  }

  /**
   * mkdir -p of the key's directory, taking the path from a shorter versioned key whose current
   * link stands where a directory must go (see the module comment); mkdir's `created`.
   */
  async function mkdirTakingLinks(key: ObjectKey): Promise<string | undefined> {
    const dir = path.dirname(fileOf(key));
    // Each turn removes one link, and only an ancestor of the key can be one.
    for (let turns = key.split('/').length; ; turns--) {
      try {
        return await mkdir(dir, { recursive: true });
      } catch (err) {
        const code = errno(err);
        if (turns <= 0 || (code !== 'ENOTDIR' && code !== 'EEXIST') || !(await unlinkVersionedAncestor(key))) throw err;
      }
    }
  }

  /** Removes the first ancestor of `key` that is a file, if it is a versioned key's current link. */
  async function unlinkVersionedAncestor(key: ObjectKey): Promise<boolean> {
    const segments = key.split('/');
    for (let n = 1; n < segments.length; n++) {
      const ancestor = objectKey(segments.slice(0, n).join('/'));
      const info = await lstat(fileOf(ancestor)).catch(() => undefined);
      if (info?.isDirectory()) continue;
      // A link has a second name; a plain key's file has one, and is never removed here.
      if (!info?.isFile() || info.nlink < 2 || !(await isVersionOf(ancestor, info))) return false;
      await unlink(fileOf(ancestor));
      return true;
    }
    return false;
  }

  /** Whether `info` is the inode of one of the key's version files. */
  async function isVersionOf(key: ObjectKey, info: Stats): Promise<boolean> {
    for (const name of await versionNames(key)) {
      const version = await stat(versionFile(key, name)).catch(() => undefined);
      if (version && version.ino === info.ino && version.dev === info.dev) return true;
    }
    return false;
  }

  /** The ids of the key's versions, oldest first; the directories of longer keys beside them are not. */
  async function versionNames(key: ObjectKey): Promise<string[]> {
    const entries = await readdir(path.join(versionsDir, ...key.split('/')), { withFileTypes: true }).catch((err: unknown) => {
      if (isMissing(err) || errno(err) === 'ENOTDIR') return [];
      throw err;
    });
    return entries
      .filter((e) => e.isFile() && VERSION_ID.test(e.name))
      .map((e) => e.name)
      .sort();
  }

  const versions: Versions = {
    enabled: async () => true,

    async copy(from, to, opts = {}) {
      const source = opts.fromVersionId === undefined ? await get(from) : await getFile(versionFile(from, opts.fromVersionId), from);
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
      // Every file here is a version, `<key>/<version id>`; the walk also enters the directories
      // of longer keys that share a version directory with a shorter key's version files.
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
      // Not a version: the directory of a longer key whose segment looks like an id.
      if (!version.isFile()) return;
      const current = await stat(fileOf(key)).catch(() => undefined);
      try {
        await unlink(file);
      } catch (err) {
        if (!isMissing(err)) throw storageError(err, key, 'delete');
      }
      if (!current || current.ino !== version.ino || current.dev !== version.dev) return;
      // The current version went: the newest one left becomes current, or the key goes.
      let left;
      try {
        left = await versionNames(key);
      } catch (err) {
        throw storageError(err, key, 'delete');
      }
      if (left.length > 0) await makeCurrent(key, versionFile(key, left[left.length - 1]!));
      else await remove(key);
    },
  };

  const uploads: Uploads = {
    /**
     * A temporary file is stale when its ctime (its last change) is older than `olderThan`:
     * a put's file changes with every write, and the link makeCurrent holds in `.tmp/` for a
     * moment shares the inode, and so the mtime, of a version perhaps written long ago, but
     * its ctime is when the link was made.
     */
    async abortStale(olderThan) {
      let aborted = 0;
      let dir;
      try {
        dir = await opendir(tmpDir, { bufferSize: 128 });
      } catch (err) {
        if (isMissing(err)) return { aborted };
        throw storageError(err, undefined, 'abort_stale');
      }
      for await (const entry of dir) {
        const file = path.join(tmpDir, entry.name);
        try {
          const info = await lstat(file);
          if (!info.isFile() || info.ctimeMs >= olderThan.getTime()) continue;
          await unlink(file);
          aborted++;
        } catch (err) {
          if (!isMissing(err)) throw storageError(err, undefined, 'abort_stale'); // renamed into place meanwhile
        }
      }
      return { aborted };
    },
  };

  return { kind: 'filesystem', put, get, head, delete: remove, list, versions, uploads };
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

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function isMissing(err: unknown): boolean {
  return errno(err) === 'ENOENT';
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
