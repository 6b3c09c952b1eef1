/**
 * LFS pointer files in a repository's history, read with git (docs/spec.md of git-lfs: a
 * pointer is a small text blob, `version https://git-lfs.github.com/spec/v1`, `oid sha256:…`,
 * `size …`, sorted keys, each line ending in a newline, under 1024 bytes).
 *
 * Blobs are sized first (`cat-file --batch-check`) and only those small enough to be pointers
 * are read (`cat-file --batch`), so a tree of large files costs no reading of them.
 */
import { runGit, runGitBytes } from '../git/command.js';

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

interface BlobAt {
  path: string;
  blob: string;
}

/** The LFS files among `entries`: blobs small enough to be pointers, read and parsed. */
async function pointersOf(repoPath: string, entries: readonly BlobAt[]): Promise<LfsFile[]> {
  const unique = [...new Set(entries.map((e) => e.blob))];
  if (unique.length === 0) return [];
  const check = await runGit(['--git-dir', repoPath, 'cat-file', '--batch-check=%(objectname) %(objecttype) %(objectsize)'], { input: unique.join('\n') + '\n' });
  const small = check.stdout
    .split('\n')
    .map((line) => line.split(' '))
    .filter(([, type, size]) => type === 'blob' && Number(size) < MAX_POINTER_BYTES)
    .map(([oid]) => oid!);
  const pointers = await readPointers(repoPath, small);
  const out: LfsFile[] = [];
  for (const e of entries) {
    const p = pointers.get(e.blob);
    if (p) out.push({ path: e.path, ...p });
  }
  return out;
}

/** `cat-file --batch` of small blobs: `<oid> <type> <size>\n<content>\n` each. */
async function readPointers(repoPath: string, blobs: readonly string[]): Promise<Map<string, { oid: string; size: number }>> {
  const found = new Map<string, { oid: string; size: number }>();
  for (let i = 0; i < blobs.length; i += 5000) {
    const chunk = blobs.slice(i, i + 5000);
    const { stdout } = await runGitBytes(['--git-dir', repoPath, 'cat-file', '--batch'], { input: chunk.join('\n') + '\n' });
    let at = 0;
    while (at < stdout.length) {
      const eol = stdout.indexOf(0x0a, at);
      if (eol < 0) break;
      const [blob, type, sizeText] = stdout.subarray(at, eol).toString('latin1').split(' ');
      if (type === 'missing' || sizeText === undefined) {
        at = eol + 1;
        continue;
      }
      const size = Number(sizeText);
      const content = stdout.subarray(eol + 1, eol + 1 + size);
      at = eol + 1 + size + 1;
      const pointer = parsePointer(content);
      if (pointer && blob) found.set(blob, pointer);
    }
  }
  return found;
}

/** Every LFS file in the commit's tree. */
export async function lfsFilesAt(repoPath: string, commit: string): Promise<LfsFile[]> {
  const { stdout } = await runGit(['--git-dir', repoPath, 'ls-tree', '-r', '-z', '--full-tree', '--format=%(objectmode) %(objecttype) %(objectname)%x09%(path)', commit]);
  const entries: BlobAt[] = [];
  for (const record of stdout.split('\0')) {
    const tab = record.indexOf('\t');
    if (tab < 0) continue;
    const [mode, type, blob] = record.slice(0, tab).split(' ');
    // Regular files only: a symbolic link or a submodule is never an LFS file.
    if (type === 'blob' && (mode === '100644' || mode === '100755') && blob) entries.push({ path: record.slice(tab + 1), blob });
  }
  return pointersOf(repoPath, entries);
}

/**
 * The LFS files a change from `from` to `to` added or modified (renames count as added under
 * the new path; deletions are not listed).
 */
export async function lfsFilesChanged(repoPath: string, from: string, to: string): Promise<LfsFile[]> {
  const { stdout } = await runGit(['--git-dir', repoPath, 'diff-tree', '-r', '-z', '--no-renames', '--diff-filter=AMT', from, to]);
  const fields = stdout.split('\0');
  const entries: BlobAt[] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const meta = fields[i]!;
    if (!meta.startsWith(':')) {
      i -= 1; // a commit id line (none with two trees, but harmless)
      continue;
    }
    const [, newMode, , newBlob] = meta.slice(1).split(' ');
    if ((newMode === '100644' || newMode === '100755') && newBlob) entries.push({ path: fields[i + 1]!, blob: newBlob });
  }
  return pointersOf(repoPath, entries);
}

/** Oids of every LFS pointer any ref of the repository reaches, in any commit. */
export async function reachableLfsOids(repoPath: string): Promise<Set<string>> {
  // Blobs of 1024 bytes or more are left out by git itself: they cannot be pointers.
  const { stdout } = await runGit(['--git-dir', repoPath, 'rev-list', '--objects', '--all', `--filter=blob:limit=${MAX_POINTER_BYTES}`]);
  const objects = stdout.split('\n').map((line) => line.slice(0, line.indexOf(' ') < 0 ? line.length : line.indexOf(' '))).filter(Boolean);
  const entries = objects.map((blob) => ({ path: '', blob }));
  return new Set((await pointersOf(repoPath, entries)).map((f) => f.oid));
}
