/**
 * The refs version of a repository: a short fingerprint that changes whenever any ref changes,
 * whoever changes it (a push through us, a mirror sync, an admin running git on the disk). It
 * is read from disk on every request, so no hook or event can be missed.
 *
 * Git writes every ref file (loose refs, HEAD, packed-refs) by writing `<name>.lock` and
 * renaming it over the old file, so each update gives the file a new inode. The fingerprint
 * hashes (name, inode, size, mtime, ctime) of HEAD, packed-refs, the repository's config and
 * shallow files, and every loose ref under refs/. Lock files are skipped: until the rename,
 * the state they stand for has not happened.
 *
 * Inode numbers are reused and file times come from a coarse clock (a jiffy), so two updates
 * within one tick could in theory bring back an identical stat. As git does for its index
 * ("racy git", Documentation/technical/racy-git.txt), a file modified within RACY_WINDOW_MS
 * of the reading has its content hashed too: a later identical stat then implies identical
 * content, because an update made after the window would carry a later time.
 *
 * Synchronous on purpose: about 1,000 stat calls cost a few milliseconds of CPU (see
 * docs/design/pack-cache.md), less than the thread-pool round trips of the async API.
 */
import { createHash, type Hash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, type BigIntStats } from 'node:fs';
import path from 'node:path';

/** Files outside refs/ whose change can change an upload-pack response. */
const TOP_LEVEL = ['HEAD', 'packed-refs', 'config', 'shallow', 'reftable/tables.list'];

const RACY_WINDOW_MS = 2000n;
const NS_PER_MS = 1_000_000n;

/** A 16-hex-digit fingerprint of the repository's refs; changes whenever any ref does. */
export function refsVersion(repoPath: string, nowMs: number = Date.now()): string {
  const hash = createHash('sha256');
  const racyAfterNs = BigInt(Math.floor(nowMs)) * NS_PER_MS - RACY_WINDOW_MS * NS_PER_MS;
  for (const name of TOP_LEVEL) addFile(hash, repoPath, name, racyAfterNs);
  const refs: string[] = [];
  listRefFiles(path.join(repoPath, 'refs'), 'refs', refs);
  refs.sort();
  for (const name of refs) addFile(hash, repoPath, name, racyAfterNs);
  return hash.digest('hex').slice(0, 16);
}

function addFile(hash: Hash, repoPath: string, name: string, racyAfterNs: bigint): void {
  const file = path.join(repoPath, name);
  const st = statSync(file, { bigint: true, throwIfNoEntry: false });
  if (!st) {
    hash.update(`${name}\0-\n`);
    return;
  }
  hash.update(`${name}\0${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}\n`);
  if (isRacy(st, racyAfterNs)) {
    try {
      hash.update(createHash('sha256').update(readFileSync(file)).digest());
    } catch {
      // Gone between stat and read: the next request sees the new state.
      hash.update('\0gone');
    }
  }
}

function isRacy(st: BigIntStats, racyAfterNs: bigint): boolean {
  return st.mtimeNs >= racyAfterNs || st.ctimeNs >= racyAfterNs;
}

function listRefFiles(dir: string, rel: string, out: string[]): void {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    const name = `${rel}/${entry.name}`;
    if (entry.isDirectory()) listRefFiles(path.join(dir, entry.name), name, out);
    else if (!entry.name.endsWith('.lock')) out.push(name);
  }
}
