/**
 * The refs version of a repository: a short fingerprint that changes whenever any ref changes,
 * whoever changes it (a push through us, a mirror sync, an admin running git on the disk). It
 * is read from disk on every request, so no hook or event can be missed.
 *
 * What is read: HEAD, packed-refs, the repository's config and shallow files, reftable's
 * table list (if any), and every loose ref under refs/ (lock files skipped: until git renames
 * one into place, the update it stands for has not happened). For each file the fingerprint
 * hashes its name, its stat (inode, size, mtime, ctime) and a digest of its content.
 *
 * The stat alone would nearly do: git writes every ref file by renaming a lock file over it,
 * so each update brings a new inode. But inode numbers are reused and file times come from a
 * coarse clock, so two updates within one tick could bring back an identical stat with other
 * content. Reading every file's content on every request would cost a read per ref, so the
 * content digest is remembered per (file, stat), and only once the file is older than
 * RACY_WINDOW_MS when it is read ("racy git", Documentation/technical/racy-git.txt): a later
 * write would carry a later time, hence another stat. A file modified more recently is read
 * again on every request until it has aged. The fingerprint of an unchanged repository is
 * therefore the same whenever it is taken, and any change to any ref changes it.
 *
 * Synchronous on purpose: a stat per loose ref costs microseconds, less than the thread-pool
 * round trip of the async API (measured in docs/design/pack-cache.md).
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** Files outside refs/ whose change can change an upload-pack response. */
const TOP_LEVEL = ['HEAD', 'packed-refs', 'config', 'shallow', 'reftable/tables.list'];

const RACY_WINDOW_NS = 2_000_000_000n;
const NS_PER_MS = 1_000_000n;
/** Fingerprints (repositories' refs, their configs) whose content digests are remembered; the least recently read go first. */
const MAX_REPOS = 2000;

interface Known {
  stat: string;
  digest: Buffer;
}

export class RefsVersions {
  /** Per repository path (and per path + config): file name → the digest of its content at a stat. */
  private readonly known = new Map<string, Map<string, Known>>();

  /** A 16-hex-digit fingerprint of the repository's refs; changes whenever any ref does. */
  read(repoPath: string, nowMs: number = Date.now()): string {
    const refs: string[] = [];
    listRefFiles(path.join(repoPath, 'refs'), 'refs', refs);
    return this.fingerprint(repoPath, repoPath, [...TOP_LEVEL, ...refs.sort()], nowMs);
  }

  /**
   * The fingerprint of the repository's config alone: what a protocol v2 capability
   * advertisement depends on (it lists no refs), so a push does not make it a miss.
   */
  readConfig(repoPath: string, nowMs: number = Date.now()): string {
    return this.fingerprint(`${repoPath}\0config`, repoPath, ['config'], nowMs);
  }

  private fingerprint(memo: string, repoPath: string, names: readonly string[], nowMs: number): string {
    const racyAfterNs = BigInt(Math.floor(nowMs)) * NS_PER_MS - RACY_WINDOW_NS;
    const before = this.known.get(memo);
    const after = new Map<string, Known>();
    const hash = createHash('sha256');
    for (const name of names) {
      const file = path.join(repoPath, name);
      const st = statSync(file, { bigint: true, throwIfNoEntry: false });
      if (!st) {
        hash.update(`${name}\0-\n`);
        continue;
      }
      const stat = `${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`;
      let digest = before?.get(name)?.stat === stat ? before.get(name)!.digest : undefined;
      if (!digest) {
        digest = contentDigest(file);
        if (st.mtimeNs < racyAfterNs && st.ctimeNs < racyAfterNs) after.set(name, { stat, digest });
      } else {
        after.set(name, { stat, digest });
      }
      hash.update(`${name}\0${stat}\0`).update(digest);
    }
    this.known.delete(memo);
    this.known.set(memo, after);
    if (this.known.size > MAX_REPOS) this.known.delete(this.known.keys().next().value!);
    return hash.digest('hex').slice(0, 16);
  }
}

function contentDigest(file: string): Buffer {
  try {
    return createHash('sha256').update(readFileSync(file)).digest();
  } catch {
    // Gone between stat and read: the next request sees the new state.
    return Buffer.from('gone');
  }
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
