/**
 * LFS pointer files in a repository's history, read with git (docs/spec.md of git-lfs: a
 * pointer is a small text blob, `version https://git-lfs.github.com/spec/v1`, `oid sha256:…`,
 * `size …`, sorted keys, each line ending in a newline, under 1024 bytes).
 *
 * Blobs are sized first (`ls-tree`'s own sizes, or `cat-file --batch-check`) and only those
 * small enough to be pointers are read (`cat-file --batch`), so a tree of large files costs no
 * reading of them; trees and histories stream through, never held whole.
 */
import type { Readable } from 'node:stream';
import { checkExit, runGitBytes, spawnGit } from '../git/command.js';

/** Pointer files are smaller than this (the git-lfs specification). */
export const MAX_POINTER_BYTES = 1024;

export interface LfsFile {
  /** Repository path, `/`-separated. */
  path: string;
  oid: string;
  size: number;
}

const VERSION_LINE = 'version https://git-lfs.github.com/spec/v1';

/** The oid and size a pointer names; undefined when the blob is not a pointer. */
export function parsePointer(blob: Buffer): { oid: string; size: number } | undefined {
  if (blob.length >= MAX_POINTER_BYTES || blob.length === 0 || blob[blob.length - 1] !== 0x0a) return undefined;
  const text = blob.toString('latin1');
  const lines = text.slice(0, -1).split('\n');
  if (lines[0] !== VERSION_LINE) return undefined;
  let oid: string | undefined;
  let size: number | undefined;
  let last = '';
  for (const line of lines.slice(1)) {
    const space = line.indexOf(' ');
    if (space <= 0) return undefined;
    const key = line.slice(0, space);
    const value = line.slice(space + 1);
    if (!/^[a-z0-9.-]+$/.test(key) || key <= last) return undefined;
    last = key;
    if (key === 'oid') {
      const m = /^sha256:([0-9a-f]{64})$/.exec(value);
      if (!m) return undefined;
      oid = m[1];
    } else if (key === 'size') {
      if (!/^(0|[1-9][0-9]{0,15})$/.test(value)) return undefined;
      size = Number(value);
    }
  }
  return oid !== undefined && size !== undefined && Number.isSafeInteger(size) ? { oid, size } : undefined;
}

/**
 * What LFS GC takes for a pointer: any small blob naming an `oid sha256:…`, however its lines
 * end, with or without the newer version URL. git-lfs reads pointers leniently (old version
 * URLs, CRLF, no final newline); an object is kept for anything git-lfs might still check out.
 */
export function lenientPointerOid(blob: Buffer): string | undefined {
  if (blob.length >= MAX_POINTER_BYTES) return undefined;
  return /(?:^|\n)\s*oid sha256:([0-9a-f]{64})\s*(?:\r?\n|$)/.exec(blob.toString('latin1'))?.[1];
}

interface BlobAt {
  path: string;
  blob: string;
}

/**
 * Calls `onRecord` for each `sep`-terminated record of a stream as it arrives (UTF-8: git
 * writes paths as bytes, and `-z` keeps them unquoted), so a whole tree or history is never
 * held at once.
 */
async function eachRecord(stream: Readable, sep: number, onRecord: (record: string) => void): Promise<void> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    const data: Buffer = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
    let at = 0;
    for (let end = data.indexOf(sep, at); end >= 0; end = data.indexOf(sep, at)) {
      onRecord(data.subarray(at, end).toString('utf8'));
      at = end + 1;
    }
    rest = data.subarray(at);
  }
  if (rest.length > 0) onRecord(rest.toString('utf8'));
}

/**
 * Runs git, handing each record of its output to `onRecord`; throws as runGit does when it
 * fails. `onRecord` answering false stops git there (a limit reached): no error then.
 */
async function gitRecords(args: string[], sep: number, onRecord: (record: string) => boolean | void, input?: string): Promise<void> {
  const child = await spawnGit(args);
  child.stdin.end(input ?? '');
  let stopped = false;
  await Promise.all([
    eachRecord(child.stdout, sep, (record) => {
      if (stopped) return;
      if (onRecord(record) === false) {
        stopped = true;
        child.kill('SIGKILL');
      }
    }),
    checkExit(args, child).catch((err: unknown) => {
      if (!stopped) throw err;
    }),
  ]);
}

/**
 * Bounds on what one tree or change is read for (a push controls both): entries streamed by,
 * and pointer files kept. Past either, reading stops and `truncated` says so.
 */
export interface TreeLimits {
  maxEntries: number;
  maxFiles: number;
}

export const DEFAULT_TREE_LIMITS: TreeLimits = { maxEntries: 5_000_000, maxFiles: 100_000 };

export interface LfsFiles {
  files: LfsFile[];
  truncated: boolean;
}

/** Of `blobs`, those small enough to be pointers, by `cat-file --batch-check`. */
async function pointerSized(repoPath: string, blobs: readonly string[]): Promise<string[]> {
  const small: string[] = [];
  for (let i = 0; i < blobs.length; i += 5000) {
    const chunk = blobs.slice(i, i + 5000);
    await gitRecords(['--git-dir', repoPath, 'cat-file', '--batch-check=%(objectname) %(objecttype) %(objectsize)'], NL, (line) => {
      const [oid, type, size] = line.split(' ');
      if (oid && type === 'blob' && Number(size) < MAX_POINTER_BYTES) small.push(oid);
    }, chunk.join('\n') + '\n');
  }
  return small;
}

const NL = 0x0a;
const NUL = 0;

/** The LFS files among `entries` (blobs known to be pointer-sized), read and parsed. */
async function pointersOf(repoPath: string, entries: readonly BlobAt[]): Promise<LfsFile[]> {
  const pointers = await readPointers(repoPath, [...new Set(entries.map((e) => e.blob))]);
  const out: LfsFile[] = [];
  for (const e of entries) {
    const p = pointers.get(e.blob);
    if (p) out.push({ path: e.path, ...p });
  }
  return out;
}

/** `cat-file --batch` of small blobs: `<oid> <type> <size>\n<content>\n` each. */
async function readPointers(
  repoPath: string,
  blobs: readonly string[],
  parse: (blob: Buffer) => { oid: string; size: number } | undefined = parsePointer,
): Promise<Map<string, { oid: string; size: number }>> {
  const found = new Map<string, { oid: string; size: number }>();
  for (let i = 0; i < blobs.length; i += 5000) {
    const chunk = blobs.slice(i, i + 5000);
    // At most 5000 blobs of under 1 KiB each: held whole.
    const { stdout } = await runGitBytes(['--git-dir', repoPath, 'cat-file', '--batch'], { input: chunk.join('\n') + '\n' });
    let at = 0;
    while (at < stdout.length) {
      const eol = stdout.indexOf(NL, at);
      if (eol < 0) break;
      const [blob, type, sizeText] = stdout.subarray(at, eol).toString('latin1').split(' ');
      if (type === 'missing' || sizeText === undefined) {
        at = eol + 1;
        continue;
      }
      const size = Number(sizeText);
      const content = stdout.subarray(eol + 1, eol + 1 + size);
      at = eol + 1 + size + 1;
      const pointer = parse(content);
      if (pointer && blob) found.set(blob, pointer);
    }
  }
  return found;
}

/** Regular files only: a symbolic link or a submodule is never an LFS file. */
const isFileMode = (mode: string | undefined) => mode === '100644' || mode === '100755';

/** Every LFS file in the commit's tree; only pointer-sized blobs are kept while the tree streams by. */
export async function lfsFilesAt(repoPath: string, commit: string, limits: TreeLimits = DEFAULT_TREE_LIMITS): Promise<LfsFiles> {
  const entries: BlobAt[] = [];
  let seen = 0;
  let truncated = false;
  // `-l` adds each blob's size (padded); not `--format`, whose %(path) git 2.39 quotes even with -z.
  await gitRecords(['--git-dir', repoPath, 'ls-tree', '-r', '-z', '-l', '--full-tree', commit], NUL, (record) => {
    if (++seen > limits.maxEntries || entries.length >= limits.maxFiles) return !(truncated = true);
    const tab = record.indexOf('\t');
    if (tab < 0) return;
    const [mode, type, blob, size] = record.slice(0, tab).split(/ +/);
    if (type === 'blob' && isFileMode(mode) && blob && Number(size) < MAX_POINTER_BYTES) entries.push({ path: record.slice(tab + 1), blob });
  });
  return { files: await pointersOf(repoPath, entries), truncated };
}

/**
 * The LFS files a change from `from` to `to` added or modified (renames count as added under
 * the new path; deletions are not listed).
 */
export async function lfsFilesChanged(repoPath: string, from: string, to: string, limits: TreeLimits = DEFAULT_TREE_LIMITS): Promise<LfsFiles> {
  const changed: BlobAt[] = [];
  let meta: string | undefined;
  let truncated = false;
  // -z: a record of metadata, then one of the path. Sizes are not in the output: every changed
  // file is kept until sized, so the file limit counts them all.
  await gitRecords(['--git-dir', repoPath, 'diff-tree', '-r', '-z', '--no-renames', '--diff-filter=AMT', from, to], NUL, (record) => {
    if (changed.length >= limits.maxFiles) return !(truncated = true);
    if (meta === undefined) {
      if (record.startsWith(':')) meta = record;
      return;
    }
    const [, newMode, , newBlob] = meta.slice(1).split(' ');
    meta = undefined;
    if (isFileMode(newMode) && newBlob) changed.push({ path: record, blob: newBlob });
  });
  const small = new Set(await pointerSized(repoPath, [...new Set(changed.map((c) => c.blob))]));
  return { files: await pointersOf(repoPath, changed.filter((c) => small.has(c.blob))), truncated };
}

/**
 * Oids of every LFS pointer any ref of the repository reaches, in any commit, read leniently
 * (lenientPointerOid: GC keeps rather than deletes). The history's
 * objects stream from `rev-list` into `cat-file --batch-check` (git leaves out blobs too large
 * to be pointers); only pointer-sized blobs are kept, so memory follows their number, not the
 * history's.
 */
export async function reachableLfsOids(repoPath: string): Promise<Set<string>> {
  const listArgs = ['--git-dir', repoPath, 'rev-list', '--objects', '--no-object-names', '--all', `--filter=blob:limit=${MAX_POINTER_BYTES}`];
  const checkArgs = ['--git-dir', repoPath, 'cat-file', '--batch-check=%(objecttype) %(objectsize) %(objectname)'];
  // The reader first, then the lister piped to it at once: output nobody reads when a process
  // exits is drained away (command.ts helperChild).
  const check = await spawnGit(checkArgs);
  const list = await spawnGit(listArgs);
  list.stdout.pipe(check.stdin);
  list.stdin.end();
  const small = new Set<string>();
  await Promise.all([
    eachRecord(check.stdout, NL, (line) => {
      const [type, size, oid] = line.split(' ');
      if (type === 'blob' && oid && Number(size) < MAX_POINTER_BYTES) small.add(oid);
    }),
    checkExit(listArgs, list),
    checkExit(checkArgs, check),
  ]);
  const oids = new Set<string>();
  const lenient = (blob: Buffer) => {
    const oid = lenientPointerOid(blob);
    return oid === undefined ? undefined : { oid, size: 0 };
  };
  for (const p of (await readPointers(repoPath, [...small], lenient)).values()) oids.add(p.oid);
  return oids;
}
