/**
 * Finished responses on local disk, size-bounded, least recently used first out; entries of
 * a refs version that is no longer current go before any other.
 *
 * Layout (all of it disposable; rebuilt from the files on start):
 *   <dir>/tmp/<key>.<random>             responses being written (deleted on start)
 *   <dir>/entries/<key[0:2]>/<key>       finished responses: exactly the bytes sent, so a
 *                                        front proxy can send the file itself (X-Accel-Redirect)
 *   <dir>/entries/<key[0:2]>/<key>.meta  its header: length, checksum of the data (CRC-32), key,
 *                                        repository, refs version
 *
 * An entry is written under tmp/; then both files are fsynced and renamed into entries/, the
 * data first and the header last: the header is the commit point, and on start a data file
 * without a header (a crash between the two renames) is deleted, so a crash never leaves a
 * partial entry. Before an entry is served its size is checked against the header (a stat);
 * its checksum is verified when it is first opened after a start, and again whenever its inode
 * or ctime differ from what was recorded when it was stored or last verified (anything that
 * wrote to it changed its ctime). A damaged entry is deleted and reported as a miss. A small
 * entry (MEMORY_ENTRY_BYTES) is read whole and checked the first time it is served, then kept
 * in memory and served from there.
 */
import { randomBytes } from 'node:crypto';
import { close, closeSync, fchmod, fstat, fstatSync, fsync, open, openSync, read, readSync, write, type BigIntStats } from 'node:fs';
import { chmod, mkdir, readFile, readdir, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../shared/log.js';
import { Checksum, CHECKSUM_BYTES } from './checksum.js';
import type { Endpoint } from './key.js';
import type { PackCacheMetrics } from './metrics.js';

/** What an entry's header file is counted for in the size bound: one file system block. */
export const ENTRY_OVERHEAD = 4096;
const META_SUFFIX = '.meta';
const MAX_META_BYTES = 4096;
// Version 2: a CRC-32 (checksum.ts) where version 1 had a sha256; a version 1 header is not read,
// so its entry is dropped at start like any other file without a valid header.
const MAGIC = Buffer.from('GSPCACH2');
const VERIFY_CHUNK = 1 << 20;
const STATFS_TTL_MS = 1000;
/**
 * Entries up to this size (ref advertisements, ls-refs answers, the packs of small fetches) are
 * kept in memory once served, up to MEMORY_TOTAL_BYTES in all, least recently used dropped
 * first: a hit on one then makes no file system call at all. Each asynchronous one (open,
 * fstat, read, close) costs about 25 µs of CPU here in the hand-off to libuv's thread pool,
 * more than the rest of sending a small answer (issue 12's fetch storm).
 */
export const MEMORY_ENTRY_BYTES = 64 * 1024;
const MEMORY_TOTAL_BYTES = 16 * 1024 * 1024;

export interface EntryMeta {
  key: string;
  repoId: string;
  refsVersion: string;
  endpoint: Endpoint;
}

interface Entry extends EntryMeta {
  /** The data file; its header is `file + META_SUFFIX`. */
  file: string;
  /** Bytes of response data: the data file's size. */
  length: number;
  /** The data's checksum (checksum.ts), hex. */
  checksum: string;
  /** Identity of the file when it was last known good; undefined: verify before serving. */
  verified: { ino: bigint; ctimeNs: bigint } | undefined;
  /** The whole data, checked, for a small entry that was served (MEMORY_ENTRY_BYTES). */
  bytes?: Buffer;
}

export interface StoreLimits {
  maxBytes: number;
  maxEntryBytes: number;
  minFreeBytes: number;
}

/** A stored entry opened for reading; the caller owns `fd` until it calls close(). */
export interface OpenedEntry {
  fd: number;
  length: number;
  /** The data file, relative to the entries directory (`<key[0:2]>/<key>`): for a hand-off to a front proxy. */
  relativePath: string;
  close(): void;
}

export type DamageReason = 'missing' | 'length' | 'header' | 'checksum';

/** Entries are also read by a front proxy that was handed their path (X-Accel-Redirect). */
export interface StoreHandoff {
  /**
   * Mode of the data files, e.g. 0o640 for a proxy running in the server's group. Set
   * explicitly (the process umask is 077), with the directories above them traversable (0710).
   */
  fileMode: number;
  /** How long a dropped entry's data file keeps its name: a proxy handed it may not have opened it yet. */
  unlinkGraceMs: number;
}

/** A response being written: its path under tmp/ and a descriptor open for reading and writing. */
export interface TempFile {
  file: string;
  fd: number;
}

/**
 * Numeric file descriptors, promisified by hand: readers share one descriptor with positional
 * reads, which a FileHandle (closed by the GC if dropped) cannot safely be lent out for.
 */
export const fd = {
  open: (file: string, flags: string, mode = 0o600) =>
    // Owner-only by default: entries hold packs of private repositories.
    new Promise<number>((resolve, reject) => open(file, flags, mode, (err, n) => (err ? reject(err) : resolve(n)))),
  close: (n: number) => new Promise<void>((resolve, reject) => close(n, (err) => (err ? reject(err) : resolve()))),
  stat: (n: number) =>
    new Promise<BigIntStats>((resolve, reject) => fstat(n, { bigint: true }, (err, st) => (err ? reject(err) : resolve(st)))),
  chmod: (n: number, mode: number) => new Promise<void>((resolve, reject) => fchmod(n, mode, (err) => (err ? reject(err) : resolve()))),
  sync: (n: number) => new Promise<void>((resolve, reject) => fsync(n, (err) => (err ? reject(err) : resolve()))),
  read: (n: number, buf: Buffer, length: number, position: number) =>
    new Promise<number>((resolve, reject) => read(n, buf, 0, length, position, (err, got) => (err ? reject(err) : resolve(got)))),
  write: (n: number, buf: Buffer, position: number) =>
    new Promise<void>((resolve, reject) =>
      write(n, buf, 0, buf.length, position, (err, wrote) =>
        err ? reject(err) : wrote === buf.length ? resolve() : reject(new Error('short write to cache file')),
      ),
    ),
};

/** Directories a front proxy in the server's group must pass through, not list. */
const HANDOFF_DIR_MODE = 0o710;

export class PackStore {
  private readonly entries = new Map<string, Entry>();
  private readonly byRepo = new Map<string, Set<string>>();
  private readonly current = new Map<string, string>();
  private bytes = 0;
  /** Bytes of the entries' data held in memory (Entry.bytes). */
  private memoryBytes = 0;
  private free: { at: number; bytes: number } | undefined;

  private constructor(
    private readonly dir: string,
    private readonly limits: StoreLimits,
    private readonly metrics: PackCacheMetrics,
    private readonly log: Logger,
    private readonly handoff: StoreHandoff | undefined,
  ) {}

  /**
   * Opens the cache directory: deletes temporary files and indexes the entries found.
   * `handoff`: entries are also sent by a front proxy (X-Accel-Redirect), see StoreHandoff.
   */
  static async open(dir: string, limits: StoreLimits, metrics: PackCacheMetrics, log: Logger, handoff?: StoreHandoff): Promise<PackStore> {
    const store = new PackStore(dir, limits, metrics, log, handoff);
    await rm(path.join(dir, 'tmp'), { recursive: true, force: true });
    await mkdir(path.join(dir, 'tmp'), { recursive: true });
    await mkdir(path.join(dir, 'entries'), { recursive: true });
    if (handoff) for (const d of [dir, path.join(dir, 'entries')]) await chmod(d, HANDOFF_DIR_MODE);
    await store.scan();
    return store;
  }

  get entryCount(): number {
    return this.entries.size;
  }

  get totalBytes(): number {
    return this.bytes;
  }

  /** The largest response that may be stored. */
  get maxEntryBytes(): number {
    return Math.min(this.limits.maxEntryBytes, this.limits.maxBytes);
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** A new temporary file for a response being generated, opened for reading and writing. */
  async createTemp(key: string): Promise<TempFile> {
    const file = path.join(this.dir, 'tmp', `${key}.${randomBytes(6).toString('hex')}`);
    const n = await fd.open(file, 'wx+', this.handoff?.fileMode);
    if (this.handoff) await fd.chmod(n, this.handoff.fileMode);
    return { file, fd: n };
  }

  /** Whether free space on the cache's filesystem is above the threshold (cached for 1 s). */
  async hasFreeSpace(): Promise<boolean> {
    const now = Date.now();
    if (!this.free || now - this.free.at > STATFS_TTL_MS) {
      try {
        const s = await statfs(this.dir);
        this.free = { at: now, bytes: Number(s.bavail) * Number(s.bsize) };
      } catch {
        this.free = { at: now, bytes: 0 };
      }
    }
    return this.free.bytes >= this.limits.minFreeBytes;
  }

  /**
   * Records the refs version a request just read for a repository. Entries of any other
   * version can never be asked for again (the version hashes inodes and times), so they go.
   */
  noteRefsVersion(repoId: string, version: string): void {
    if (this.current.get(repoId) === version) return;
    this.current.set(repoId, version);
    for (const key of [...(this.byRepo.get(repoId) ?? [])]) {
      const entry = this.entries.get(key);
      if (entry && entry.refsVersion !== version) this.remove(entry, 'stale');
    }
  }

  isCurrent(repoId: string, version: string): boolean {
    const current = this.current.get(repoId);
    return current === undefined || current === version;
  }

  /**
   * A small entry's whole data (up to MEMORY_ENTRY_BYTES), from memory, or else read from disk
   * and checked (length and checksum) before it is kept there; undefined when the entry is
   * absent, larger, or damaged (then it is deleted and counted). The reads are synchronous:
   * an open, an fstat and one read of at most 64 KiB from the local disk, once per entry.
   */
  cached(key: string): Buffer | undefined {
    const entry = this.entries.get(key);
    if (!entry || entry.length > MEMORY_ENTRY_BYTES) return undefined;
    if (!entry.bytes) {
      let data: Buffer | DamageReason;
      try {
        data = readWhole(entry);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        data = 'missing';
      }
      if (typeof data === 'string') {
        this.damaged(entry, data);
        return undefined;
      }
      entry.bytes = data;
      this.memoryBytes += data.length;
    }
    this.entries.delete(key);
    this.entries.set(key, entry);
    this.trimMemory();
    return entry.bytes;
  }

  /**
   * Opens an entry for serving, after checking it is whole. Returns undefined when it is
   * absent or damaged (then it is deleted and counted).
   */
  async openEntry(key: string): Promise<OpenedEntry | undefined> {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    let handle: number;
    try {
      handle = await fd.open(entry.file, 'r');
    } catch {
      // Evicted while we looked it up is not damage; vanishing from under the index is.
      if (this.entries.get(key) === entry) this.damaged(entry, 'missing');
      return undefined;
    }
    let damage: DamageReason | undefined;
    try {
      const st = await fd.stat(handle);
      if (st.size !== BigInt(entry.length)) damage = 'length';
      else if (!sameFile(entry.verified, st)) {
        damage = await verify(handle, entry);
        if (!damage) entry.verified = { ino: st.ino, ctimeNs: st.ctimeNs };
      }
    } catch (err) {
      await fd.close(handle).catch(() => {});
      throw err;
    }
    if (damage) {
      this.damaged(entry, damage);
      await fd.close(handle).catch(() => {});
      return undefined;
    }
    if (this.entries.get(key) === entry) {
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    let closed = false;
    return {
      fd: handle,
      length: entry.length,
      relativePath: path.relative(path.join(this.dir, 'entries'), entry.file),
      close: () => {
        if (closed) return;
        closed = true;
        close(handle, () => {});
      },
    };
  }

  /**
   * Makes a fully written temporary file an entry: fsync, rename the data, then write and
   * rename its header (the commit point). Returns false (and leaves the file to the caller)
   * when it cannot be stored.
   */
  async commit(temp: TempFile, meta: EntryMeta, length: number, checksum: Buffer): Promise<boolean> {
    if (length > this.maxEntryBytes || !this.isCurrent(meta.repoId, meta.refsVersion)) return false;
    const tempMeta = temp.file + META_SUFFIX;
    const metaFd = await fd.open(tempMeta, 'wx');
    try {
      await fd.write(metaFd, encodeHeader(meta, length, checksum), 0);
      await fd.sync(metaFd);
    } finally {
      await fd.close(metaFd).catch(() => {});
    }
    const file = this.entryPath(meta.key);
    try {
      await fd.sync(temp.fd);
      await mkdir(path.dirname(file), { recursive: true });
      if (this.handoff) await chmod(path.dirname(file), HANDOFF_DIR_MODE);
      const old = this.entries.get(meta.key);
      if (old) this.forget(old);
      await rename(temp.file, file);
      await rename(tempMeta, file + META_SUFFIX);
    } catch (err) {
      await unlink(tempMeta).catch(() => {});
      throw err;
    }
    const st = await stat(file, { bigint: true });
    // Re-checked: the refs may have moved on while we synced.
    if (!this.isCurrent(meta.repoId, meta.refsVersion)) {
      await unlinkBoth(file);
      return false;
    }
    this.add({ ...meta, file, length, checksum: checksum.toString('hex'), verified: { ino: st.ino, ctimeNs: st.ctimeNs } });
    this.evict();
    return true;
  }

  private entryPath(key: string): string {
    return path.join(this.dir, 'entries', key.slice(0, 2), key);
  }

  private add(entry: Entry): void {
    this.entries.set(entry.key, entry);
    this.bytes += ENTRY_OVERHEAD + entry.length;
    let keys = this.byRepo.get(entry.repoId);
    if (!keys) this.byRepo.set(entry.repoId, (keys = new Set()));
    keys.add(entry.key);
    this.updateGauges();
  }

  private forget(entry: Entry): void {
    if (this.entries.get(entry.key) !== entry) return;
    this.entries.delete(entry.key);
    this.dropBytes(entry);
    this.bytes -= ENTRY_OVERHEAD + entry.length;
    const keys = this.byRepo.get(entry.repoId);
    keys?.delete(entry.key);
    if (keys?.size === 0) this.byRepo.delete(entry.repoId);
    this.updateGauges();
  }

  private remove(entry: Entry, reason: 'stale' | 'size'): void {
    this.forget(entry);
    this.metrics.evictions.inc({ reason });
    this.drop(entry);
  }

  private damaged(entry: Entry, reason: DamageReason): void {
    this.forget(entry);
    this.metrics.damaged.inc({ reason });
    this.log.warn({ key: entry.key, repo_id: entry.repoId, reason }, 'pack cache entry damaged; dropped');
    unlinkBoth(entry.file).catch(() => {});
  }

  /**
   * Deletes a forgotten entry's files. Readers that have it open keep reading. The header goes
   * now (after a restart the data is an orphan and is deleted); the data file keeps its name
   * for the grace period when a front proxy may have been handed it and not opened it yet,
   * unless an entry of the same key has taken the name meanwhile.
   */
  private drop(entry: Entry): void {
    unlink(entry.file + META_SUFFIX).catch(() => {});
    if (!this.handoff) {
      unlink(entry.file).catch(() => {});
      return;
    }
    setTimeout(() => {
      if (!this.entries.has(entry.key)) unlink(entry.file).catch(() => {});
    }, this.handoff.unlinkGraceMs).unref();
  }

  /** Least recently used out first, but any entry of a superseded refs version before that. */
  private evict(): void {
    while (this.bytes > this.limits.maxBytes && this.entries.size > 0) {
      let victim: Entry | undefined;
      for (const e of this.entries.values()) {
        if (!this.isCurrent(e.repoId, e.refsVersion)) {
          victim = e;
          break;
        }
      }
      this.remove(victim ?? this.entries.values().next().value!, victim ? 'stale' : 'size');
    }
  }

  private dropBytes(entry: Entry): void {
    if (!entry.bytes) return;
    this.memoryBytes -= entry.bytes.length;
    entry.bytes = undefined;
  }

  /** Least recently used first out of memory (the entries stay on disk). */
  private trimMemory(): void {
    if (this.memoryBytes <= MEMORY_TOTAL_BYTES) return;
    for (const e of this.entries.values()) {
      this.dropBytes(e);
      if (this.memoryBytes <= MEMORY_TOTAL_BYTES) return;
    }
  }

  private updateGauges(): void {
    this.metrics.entries.set(this.entries.size);
    this.metrics.bytes.set(this.bytes);
  }

  private async scan(): Promise<void> {
    const root = path.join(this.dir, 'entries');
    const found: (Entry & { mtimeMs: number })[] = [];
    for (const fan of await readdir(root)) {
      let names: string[];
      try {
        names = await readdir(path.join(root, fan));
      } catch {
        await rm(path.join(root, fan), { force: true });
        continue;
      }
      const present = new Set(names);
      for (const name of names) {
        const file = path.join(root, fan, name);
        if (!name.endsWith(META_SUFFIX)) {
          // Data without its header: a crash between the two renames, or a dropped entry.
          if (!present.has(name + META_SUFFIX)) await rm(file, { recursive: true, force: true });
          continue;
        }
        const key = name.slice(0, -META_SUFFIX.length);
        const entry = await readEntryHeader(path.join(root, fan, key)).catch(() => undefined);
        if (!entry || entry.key !== key || fan !== key.slice(0, 2)) {
          this.metrics.damaged.inc({ reason: 'header' });
          await unlinkBoth(path.join(root, fan, key));
          continue;
        }
        found.push(entry);
      }
    }
    // Oldest first, so the map's order is least recently used first.
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const { mtimeMs: _, ...entry } of found) this.add(entry);
    this.evict();
    this.log.info({ entries: this.entries.size, bytes: this.bytes }, 'pack cache opened');
  }
}

function sameFile(known: Entry['verified'], st: BigIntStats): boolean {
  return known !== undefined && known.ino === st.ino && known.ctimeNs === st.ctimeNs;
}

function encodeHeader(meta: EntryMeta, length: number, checksum: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify({ key: meta.key, repoId: meta.repoId, refsVersion: meta.refsVersion, endpoint: meta.endpoint }));
  if (52 + json.length > MAX_META_BYTES) throw new RangeError('pack cache entry metadata too long');
  const header = Buffer.alloc(52 + json.length);
  MAGIC.copy(header, 0);
  header.writeBigUInt64BE(BigInt(length), 8);
  if (checksum.length !== CHECKSUM_BYTES) throw new RangeError('pack cache entry checksum of the wrong size');
  checksum.copy(header, 16);
  header.writeUInt32BE(json.length, 48);
  json.copy(header, 52);
  return header;
}

function decodeHeader(header: Buffer): (EntryMeta & { length: number; checksum: string }) | undefined {
  if (header.length < 52 || !header.subarray(0, 8).equals(MAGIC)) return undefined;
  const length = Number(header.readBigUInt64BE(8));
  const jsonLength = header.readUInt32BE(48);
  if (52 + jsonLength !== header.length) return undefined;
  const meta = JSON.parse(header.subarray(52, 52 + jsonLength).toString('utf8')) as Partial<EntryMeta>;
  if (typeof meta.key !== 'string' || typeof meta.repoId !== 'string' || typeof meta.refsVersion !== 'string') return undefined;
  if (meta.endpoint !== 'advertisement' && meta.endpoint !== 'ls-refs' && meta.endpoint !== 'fetch') return undefined;
  return {
    key: meta.key,
    repoId: meta.repoId,
    refsVersion: meta.refsVersion,
    endpoint: meta.endpoint,
    length,
    checksum: header.subarray(16, 16 + CHECKSUM_BYTES).toString('hex'),
  };
}

/** The entry whose data file is `file`, from its header file, if both agree. */
async function readEntryHeader(file: string): Promise<(Entry & { mtimeMs: number }) | undefined> {
  const header = await readFile(file + META_SUFFIX);
  if (header.length > MAX_META_BYTES) return undefined;
  const meta = decodeHeader(header);
  const st = await stat(file, { bigint: true });
  if (!meta || st.size !== BigInt(meta.length)) return undefined;
  return { ...meta, file, verified: undefined, mtimeMs: Number(st.mtimeMs) };
}

/** Reads an entry's data and checks its checksum; returns what is wrong, if anything. */
async function verify(handle: number, entry: Entry): Promise<DamageReason | undefined> {
  const hash = new Checksum();
  const buf = Buffer.allocUnsafe(VERIFY_CHUNK);
  let position = 0;
  while (position < entry.length) {
    const bytesRead = await fd.read(handle, buf, Math.min(VERIFY_CHUNK, entry.length - position), position);
    if (bytesRead === 0) return 'length';
    hash.update(buf.subarray(0, bytesRead));
    position += bytesRead;
  }
  return hash.digest().toString('hex') === entry.checksum ? undefined : 'checksum';
}

/** A small entry's data read whole from disk, or what is wrong with it. */
function readWhole(entry: Entry): Buffer | DamageReason {
  const handle = openSync(entry.file, 'r');
  try {
    if (fstatSync(handle).size !== entry.length) return 'length';
    const data = Buffer.allocUnsafe(entry.length);
    let got = 0;
    while (got < entry.length) {
      const n = readSync(handle, data, got, entry.length - got, got);
      if (n === 0) return 'length';
      got += n;
    }
    return new Checksum().update(data).digest().toString('hex') === entry.checksum ? data : 'checksum';
  } finally {
    closeSync(handle);
  }
}

async function unlinkBoth(file: string): Promise<void> {
  await Promise.all([unlink(file).catch(() => {}), unlink(file + META_SUFFIX).catch(() => {})]);
}
