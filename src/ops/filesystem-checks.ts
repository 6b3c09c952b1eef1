/**
 * The POSIX behaviour a shard's filesystem must have (shared/DESIGN.md, issue 10), each
 * checked on files the check makes in its own empty scratch directory:
 * - rename over an existing file replaces it whole: git commits refs, the index and
 *   packed-refs that way, and the pack cache and the filesystem object store commit entries so;
 * - hard links: git links objects out of a push's quarantine, and `repo fork` links the
 *   source's objects;
 * - fsync of a file and of its directory: `core.fsync` and the pack cache's commit rely on
 *   both to keep an acknowledged push through a power loss;
 * - distinct names for `a` and `A`: refs such as `main` and `Main` are two refs to git;
 * - free space and free inodes (statfs) above the operator's minimums.
 * Locking between processes has its own file (lock-checks.ts).
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { formatBytes } from '../shared/bytes.js';
import { errorText, failed, ok, type CheckResult, type DoctorFs, type FileHandleLike } from './check.js';

/** Large enough to span several pages, so a partial copy would show. */
const RENAME_BYTES = 64 * 1024;
/** Renames made while a reader reads the file being replaced. */
const RENAME_ROUNDS = 8;

/**
 * Replaces a file by rename several times while another read of it is in flight; every read
 * must see the old content or the new one, whole, and the renamed file must be gone.
 */
export async function checkAtomicRename(fs: DoctorFs, dir: string): Promise<CheckResult> {
  const name = 'atomic-rename';
  const target = path.join(dir, 'ref');
  const next = path.join(dir, 'ref.lock');
  let step = 'writing the first file';
  try {
    let current = randomBytes(RENAME_BYTES);
    await fs.writeFile(target, current);
    for (let round = 0; round < RENAME_ROUNDS; round++) {
      const fresh = randomBytes(RENAME_BYTES);
      step = 'writing the replacement';
      await fs.writeFile(next, fresh);
      step = 'renaming over the existing file';
      const [seen] = await Promise.all([fs.readFile(target), fs.rename(next, target)]);
      if (!seen.equals(current) && !seen.equals(fresh)) {
        return failed(name, `a read during rename saw ${seen.length} bytes that are neither the old nor the new content`);
      }
      step = 'reading the renamed file';
      const after = await fs.readFile(target);
      if (!after.equals(fresh)) {
        const what = after.equals(current) ? 'still holds the old content' : `holds ${after.length} bytes that are neither the old nor the new content`;
        return failed(name, `after a rename over it the file ${what}`);
      }
      step = 'listing the directory';
      if ((await fs.readdir(dir)).includes('ref.lock')) return failed(name, 'the renamed file still exists under its old name after rename');
      current = fresh;
    }
  } catch (err) {
    return failed(name, `${step}: ${errorText(err)}`);
  }
  return ok(name, `${RENAME_ROUNDS} renames over an existing file each replaced it whole (${formatBytes(RENAME_BYTES)}), also for a concurrent reader`);
}

export async function checkHardLinks(fs: DoctorFs, dir: string): Promise<CheckResult> {
  const name = 'hard-links';
  const source = path.join(dir, 'object');
  const linked = path.join(dir, 'linked');
  let step = 'writing a file';
  try {
    await fs.writeFile(source, 'an object\n');
    step = 'linking it';
    await fs.link(source, linked);
    step = 'reading the link count';
    const [a, b] = await Promise.all([fs.stat(source), fs.stat(linked)]);
    if (a.ino !== b.ino || a.dev !== b.dev) return failed(name, 'the link is another inode than its source: a copy, not a hard link');
    if (a.nlink !== 2 || b.nlink !== 2) return failed(name, `link count ${a.nlink} after linking a file once (expected 2)`);
  } catch (err) {
    return failed(name, `${step}: ${errorText(err)}`);
  }
  return ok(name, 'link count 2, one inode');
}

/** fsync of a written file, then of the directory that holds its name. */
export async function checkFsync(fs: DoctorFs, dir: string): Promise<CheckResult> {
  const name = 'fsync';
  const file = path.join(dir, 'durable');
  try {
    await fs.writeFile(file, 'durable\n');
  } catch (err) {
    return failed(name, `writing a file: ${errorText(err)}`);
  }
  for (const [what, target, flags] of [
    ['file', file, 'r+'],
    ['directory', dir, 'r'],
  ] as const) {
    let handle: FileHandleLike | undefined;
    try {
      handle = await fs.open(target, flags);
      await handle.sync();
    } catch (err) {
      return failed(name, `fsync of a ${what}: ${errorText(err)}`);
    } finally {
      await handle?.close().catch(() => {});
    }
  }
  return ok(name, 'a file and its directory were fsynced');
}

/** Creates `a`, then `A` exclusively: on a filesystem that ignores case the second is the first. */
export async function checkCaseSensitive(fs: DoctorFs, dir: string): Promise<CheckResult> {
  const name = 'case-sensitive';
  const why = 'the filesystem ignores case: git would take refs such as main and Main for one';
  try {
    await fs.writeFile(path.join(dir, 'a'), 'lower\n', { flag: 'wx' });
    try {
      await fs.writeFile(path.join(dir, 'A'), 'upper\n', { flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return failed(name, `creating A found a: ${why}`);
      throw err;
    }
    const names = (await fs.readdir(dir)).sort();
    const lower = (await fs.readFile(path.join(dir, 'a'))).toString();
    if (names.join(',') !== 'A,a' || lower !== 'lower\n') return failed(name, `a and A are not two files (found ${names.join(', ') || 'none'}): ${why}`);
  } catch (err) {
    return failed(name, errorText(err));
  }
  return ok(name, 'a and A are two files');
}

export interface SpaceMinimums {
  minFreeBytes: number;
  minFreeInodes: number;
}

/** Space and inodes left to an unprivileged user on the filesystem of `dir`: two results. */
export async function checkSpace(fs: DoctorFs, dir: string, min: SpaceMinimums): Promise<CheckResult[]> {
  let s: Awaited<ReturnType<DoctorFs['statfs']>>;
  try {
    s = await fs.statfs(dir);
  } catch (err) {
    const detail = `statfs: ${errorText(err)}`;
    return [failed('free-space', detail), failed('free-inodes', detail)];
  }
  const free = s.bavail * s.bsize;
  const space =
    free < min.minFreeBytes
      ? failed('free-space', `${formatBytes(free)} free, below the minimum of ${formatBytes(min.minFreeBytes)} (--min-free-bytes)`)
      : ok('free-space', `${formatBytes(free)} free (minimum ${formatBytes(min.minFreeBytes)})`);
  // Filesystems that allocate inodes as they go (btrfs, ZFS) report no inode count at all.
  const inodes =
    s.files === 0
      ? ok('free-inodes', 'no fixed inode count on this filesystem (statfs reports none)')
      : s.ffree < min.minFreeInodes
        ? failed('free-inodes', `${s.ffree} free, below the minimum of ${min.minFreeInodes} (--min-free-inodes); every loose object and ref is a file`)
        : ok('free-inodes', `${s.ffree} free (minimum ${min.minFreeInodes})`);
  return [space, inodes];
}
