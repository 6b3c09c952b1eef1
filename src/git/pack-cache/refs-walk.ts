/**
 * The walk behind the refs version (refs-version.ts). A repository with few loose refs and
 * small files is walked inline, synchronously, on the caller's thread (readInline): a few readdirs
 * and stats cost less than handing the walk to the refs worker and back (about 40 µs of CPU
 * against 175). Any larger one is walked in the refs worker (refs-version-worker.ts), never on the
 * server's main thread. See refs-version.ts for what is read and why the fingerprint changes
 * whenever any ref does; both walks give the same fingerprint for the same files.
 *
 * Within the worker, walks of several repositories interleave: files are stat'ed
 * synchronously in slices of SLICE with a yield between slices, so one repository of 100,000
 * loose refs does not hold up the fingerprint of every other one. Concurrent reads of one
 * repository share one walk: a caller that arrives while a walk runs waits for the next one,
 * which starts after it arrived, so an update acknowledged before a request is always seen.
 */
import { createHash, type Hash } from 'node:crypto';
import { readFileSync, readdirSync, statSync, type BigIntStats } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';

/** Files outside refs/ whose change can change an upload-pack response. */
const TOP_LEVEL = ['HEAD', 'packed-refs', 'config', 'shallow', 'reftable/tables.list'];

const RACY_WINDOW_NS = 2_000_000_000n;
const NS_PER_MS = 1_000_000n;
/** Fingerprints (repositories' refs, their configs) whose content digests are remembered; the least recently read go first. */
const MAX_REPOS = 2000;
/** Files stat'ed (and small ones read) per turn of the event loop. */
const SLICE = 256;
/** Larger files are read with the async API. */
const SMALL_FILE_BYTES = 64 * 1024;
/** The most loose refs an inline walk lists; a repository with more is walked by the worker. */
export const INLINE_MAX_REFS = 64;

interface Known {
  stat: string;
  /** base64 of the content's sha256: a string costs less memory than a Buffer per ref. */
  digest: string;
}

/** One walk of one repository, and the callers waiting for the walk after it. */
interface Walks {
  running: Promise<unknown>;
  next?: Promise<string>;
}

export class RefsWalker {
  /** Per repository path (and per path + config): file name → the digest of its content at a stat. */
  private readonly known = new Map<string, Map<string, Known>>();
  private readonly walks = new Map<string, Walks>();

  /** A 16-hex-digit fingerprint of the repository's refs; changes whenever any ref does. */
  read(repoPath: string, nowMs?: number): Promise<string> {
    return this.shared(repoPath, async () => {
      const refs = await listLooseRefs(repoPath);
      return this.fingerprint(repoPath, repoPath, [...TOP_LEVEL, ...refs.sort()], nowMs ?? Date.now());
    });
  }

  /**
   * The fingerprint of the repository's config alone: what a protocol v2 capability
   * advertisement depends on (it lists no refs), so a push does not make it a miss.
   */
  readConfig(repoPath: string, nowMs?: number): Promise<string> {
    const memo = `${repoPath}\0config`;
    return this.shared(memo, () => this.fingerprint(memo, repoPath, ['config'], nowMs ?? Date.now()));
  }

  /**
   * Runs `walk` for `memo`, or joins the walk that will start once the running one ends: a
   * walk that started before this call might have listed a ref before an update this caller
   * already saw acknowledged.
   */
  private shared(memo: string, walk: () => Promise<string>): Promise<string> {
    const current = this.walks.get(memo);
    if (current?.next) return current.next;
    const start = (): Promise<string> => {
      const run = walk();
      const entry: Walks = { running: run };
      this.walks.set(memo, entry);
      const done = () => {
        if (this.walks.get(memo) === entry && !entry.next) this.walks.delete(memo);
      };
      run.then(done, done);
      return run;
    };
    if (!current) return start();
    const next = current.running.then(start, start);
    current.next = next;
    return next;
  }

  /**
   * The fingerprint of `repoPath`'s refs computed here and now, synchronously; undefined when
   * the repository is too large for that (more than INLINE_MAX_REFS loose refs, or a changed
   * file over SMALL_FILE_BYTES to read): then `read` it in the worker.
   */
  readInline(repoPath: string, nowMs: number): string | undefined {
    const refs = listLooseRefsSync(repoPath, INLINE_MAX_REFS);
    if (!refs) return undefined;
    return this.fingerprintSync(repoPath, repoPath, [...TOP_LEVEL, ...refs.sort()], nowMs);
  }

  /** readConfig, here and now; undefined when the config is too large to read inline. */
  readConfigInline(repoPath: string, nowMs: number): string | undefined {
    return this.fingerprintSync(`${repoPath}\0config`, repoPath, ['config'], nowMs);
  }

  private async fingerprint(memo: string, repoPath: string, names: readonly string[], nowMs: number): Promise<string> {
    const walk = new Fingerprint(this.known.get(memo), nowMs);
    for (let i = 0; i < names.length; i += SLICE) {
      if (i > 0) await yieldToLoop();
      for (const name of names.slice(i, i + SLICE)) {
        const large = walk.visit(repoPath, name);
        if (large) walk.add(name, large.st, await contentDigestAsync(large.file), false);
      }
    }
    return this.finish(memo, walk);
  }

  private fingerprintSync(memo: string, repoPath: string, names: readonly string[], nowMs: number): string | undefined {
    const walk = new Fingerprint(this.known.get(memo), nowMs);
    for (const name of names) {
      if (walk.visit(repoPath, name)) return undefined;
    }
    return this.finish(memo, walk);
  }

  private finish(memo: string, walk: Fingerprint): string {
    this.known.delete(memo);
    this.known.set(memo, walk.after);
    if (this.known.size > MAX_REPOS) this.known.delete(this.known.keys().next().value!);
    return walk.hash.digest('hex').slice(0, 16);
  }
}

/** One walk's fingerprint being built: each file's name, stat and content digest, in order. */
class Fingerprint {
  readonly hash = createHash('sha256');
  readonly after = new Map<string, Known>();
  private readonly racyAfterNs: bigint;

  constructor(
    private readonly before: Map<string, Known> | undefined,
    nowMs: number,
  ) {
    this.racyAfterNs = BigInt(Math.floor(nowMs)) * NS_PER_MS - RACY_WINDOW_NS;
  }

  /**
   * Stats one file and adds it: absent, at a digest remembered for its stat, or read now when
   * small. A changed file over SMALL_FILE_BYTES is not read: returned, for the caller to add.
   */
  visit(repoPath: string, name: string): { file: string; st: BigIntStats } | undefined {
    const file = path.join(repoPath, name);
    const st = statSync(file, { bigint: true, throwIfNoEntry: false });
    if (!st) {
      this.hash.update(`${name}\0-\n`);
      return undefined;
    }
    const known = this.before?.get(name);
    if (known?.stat === statLine(st)) this.add(name, st, known.digest, true);
    else if (st.size > SMALL_FILE_BYTES) return { file, st };
    else this.add(name, st, contentDigest(file), false);
    return undefined;
  }

  /**
   * Adds a file at its stat with its content digest; a digest read now (not `remembered`) is
   * remembered only once the file is out of the racy window.
   */
  add(name: string, st: BigIntStats, digest: string, remembered: boolean): void {
    const stat = statLine(st);
    if (remembered || (st.mtimeNs < this.racyAfterNs && st.ctimeNs < this.racyAfterNs)) this.after.set(name, { stat, digest });
    update(this.hash, name, stat, digest);
  }
}

function statLine(st: BigIntStats): string {
  return `${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`;
}

function update(hash: Hash, name: string, stat: string, digest: string): void {
  hash.update(`${name}\0${stat}\0${digest}\n`);
}

function contentDigest(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('base64');
  } catch {
    // Gone between stat and read: the next request sees the new state.
    return 'gone';
  }
}

async function contentDigestAsync(file: string): Promise<string> {
  try {
    return createHash('sha256').update(await readFile(file)).digest('base64');
  } catch {
    return 'gone';
  }
}

/** The loose ref files under refs/ (`refs/heads/main`, …), lock files left out; unsorted. */
export async function listLooseRefs(repoPath: string): Promise<string[]> {
  const refs: string[] = [];
  await listRefFiles(path.join(repoPath, 'refs'), 'refs', refs);
  return refs;
}

/** listLooseRefs, synchronously; undefined once more than `max` are found. */
export function listLooseRefsSync(repoPath: string, max: number): string[] | undefined {
  const refs: string[] = [];
  return listRefFilesSync(path.join(repoPath, 'refs'), 'refs', refs, max) ? refs : undefined;
}

function listRefFilesSync(dir: string, rel: string, out: string[], max: number): boolean {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return true;
  }
  for (const entry of entries) {
    const name = `${rel}/${entry.name}`;
    if (entry.isDirectory()) {
      if (!listRefFilesSync(path.join(dir, entry.name), name, out, max)) return false;
    } else if (!entry.name.endsWith('.lock')) {
      out.push(name);
      if (out.length > max) return false;
    }
  }
  return true;
}

async function listRefFiles(dir: string, rel: string, out: string[]): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    const name = `${rel}/${entry.name}`;
    if (entry.isDirectory()) await listRefFiles(path.join(dir, entry.name), name, out);
    else if (!entry.name.endsWith('.lock')) out.push(name);
  }
}
