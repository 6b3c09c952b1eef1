/**
 * Seeded test repositories for the git benchmark, written through `git fast-import` so the
 * same seed gives the same commits (and object ids) on every machine, then fully repacked
 * with bitmaps and a commit graph, as a served repository would be. They are built once into
 * the cache directory (.bench/) and reused while the generator's version and parameters match
 * the stamp file written last (a half-built repository has no stamp and is rebuilt).
 *
 * - `medium`: about 100 MB of pack: a few thousand text files edited over several hundred
 *   commits (deltas, trees, tags, branches) plus incompressible binary blobs for the bulk.
 * - `large`: about 1 GB of pack: 20 commits of one 50 MiB random file each, stored without
 *   deltas or compression (they are incompressible), for the streaming-memory check.
 * - `history`: shaped like a long-lived source tree rather than by bytes: 15,000 small commits
 *   over a few thousand text files in nested directories, about 150,000 objects in a few tens
 *   of MB. Object count is what makes a clone without a bitmap slow (every object enumerated),
 *   so this is the repository on which the maintenance benchmark shows what bitmaps save.
 * - `source`: a long-lived source tree of about 100 MB of pack, all text: 36,000 commits over
 *   about 9,600 files of a few KiB at the tip (355,000 objects). Its shallow clones are what costs a plain git server most
 *   (the depth-1 pack of the tip cannot reuse the stored deltas, whose bases lie in history, so
 *   pack-objects searches for deltas again), which is the shape of the clone-storm benchmark's
 *   headline; `medium`, whose bulk is incompressible binaries, is the opposite case.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { rename, rm, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { run, track, untrack } from './processes.js';

const GENERATOR_VERSION = 1;
const MiB = 1024 * 1024;
const AUTHOR = 'Bench Author <bench@example.com>';
const START_TIME = 1_600_000_000;

export interface RepoInfo {
  path: string;
  head: string;
  commits: number;
  objects: number;
  packBytes: number;
}

interface RepoSpec {
  name: string;
  params: Record<string, number | string>;
  /** Config set before fast-import. */
  config: [string, string][];
  write(out: FastImport): Promise<void>;
}

/** Deterministic PRNG (mulberry32) seeded from a string (FNV-1a). */
class Rng {
  private state: number;
  constructor(seed: string) {
    let h = 0x811c9dc5;
    for (const c of Buffer.from(seed)) h = Math.imul(h ^ c, 0x01000193);
    this.state = h >>> 0;
  }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}

/** Incompressible, deterministic bytes: the AES-128-CTR keystream of a key derived from `label`. */
function keystream(label: string): (bytes: number) => Buffer {
  const key = createHash('sha256').update(`gitstratum-bench:${label}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return (bytes) => cipher.update(Buffer.alloc(bytes));
}

/** A fast-import stream writer that respects backpressure. */
class FastImport {
  private mark = 0;
  constructor(private readonly out: Writable) {}

  async write(chunk: string | Buffer): Promise<void> {
    if (!this.out.write(chunk)) await once(this.out, 'drain');
  }

  private async data(content: string | Buffer): Promise<void> {
    const buf = typeof content === 'string' ? Buffer.from(content) : content;
    await this.write(`data ${buf.length}\n`);
    await this.write(buf);
    await this.write('\n');
  }

  /** Writes a commit on `ref`; `files` maps a path to new content, or to null to delete it. Returns its mark. */
  async commit(ref: string, n: number, message: string, files: Map<string, string | Buffer | null>, streamed?: { path: string; bytes: number; chunk: (n: number) => Buffer }): Promise<number> {
    const mark = ++this.mark;
    const when = `${START_TIME + n * 3600} +0000`;
    await this.write(`commit ${ref}\nmark :${mark}\nauthor ${AUTHOR} ${when}\ncommitter ${AUTHOR} ${when}\n`);
    await this.data(message);
    for (const [file, content] of files) {
      if (content === null) await this.write(`D ${file}\n`);
      else {
        await this.write(`M 100644 inline ${file}\n`);
        await this.data(content);
      }
    }
    if (streamed) {
      await this.write(`M 100644 inline ${streamed.path}\ndata ${streamed.bytes}\n`);
      for (let left = streamed.bytes; left > 0; left -= MiB) await this.write(streamed.chunk(Math.min(MiB, left)));
      await this.write('\n');
    }
    await this.write('\n');
    return mark;
  }

  async tag(name: string, target: number, n: number, message: string): Promise<void> {
    await this.write(`tag ${name}\nfrom :${target}\ntagger ${AUTHOR} ${START_TIME + n * 3600} +0000\n`);
    await this.data(message);
  }

  async branch(ref: string, target: number): Promise<void> {
    await this.write(`reset ${ref}\nfrom :${target}\n\n`);
  }
}

/** Text that compresses and deltifies like prose or code: lines of Zipf-ish words. */
function textSource(rng: Rng) {
  const letters = 'etaoinshrdlucmfwypvbgkjqxz';
  const vocab = Array.from({ length: 3000 }, () => {
    let w = '';
    for (let i = rng.int(2, 10); i > 0; i--) w += letters[Math.floor(rng.next() ** 1.6 * letters.length)];
    return w;
  });
  const word = () => vocab[Math.floor(rng.next() ** 2.2 * vocab.length)]!;
  const line = () => {
    const words = Array.from({ length: rng.int(3, 12) }, word);
    return '  '.repeat(rng.int(0, 3)) + words.join(rng.next() < 0.2 ? ', ' : ' ') + (rng.next() < 0.3 ? ';' : '');
  };
  const lines = (n: number) => Array.from({ length: n }, line);
  return { line, lines, word };
}

function editLines(rng: Rng, text: ReturnType<typeof textSource>, content: string[]): string[] {
  const out = [...content];
  for (let ops = rng.int(1, 3); ops > 0; ops--) {
    const at = rng.int(0, out.length);
    const kind = rng.next();
    if (kind < 0.45) out.splice(at, rng.int(1, 8), ...text.lines(rng.int(1, 8)));
    else if (kind < 0.8) out.splice(at, 0, ...text.lines(rng.int(1, 20)));
    else if (out.length > 10) out.splice(at, rng.int(1, 6));
  }
  return out;
}

const mediumParams = { seed: 'medium-1', commits: 600, textFiles: 3000, binaries: 40, binaryMinKiB: 1200, binaryMaxKiB: 3200 };

/**
 * The `medium` shape scaled to about `mib` MiB of pack (commits, text files and binaries in
 * proportion); 100 gives `medium` itself (and shares its cache).
 */
export function mediumOfSize(mib: number): RepoSpec {
  if (mib === 100) return medium;
  const k = mib / 100;
  const params = {
    ...mediumParams,
    commits: Math.max(20, Math.round(mediumParams.commits * k)),
    textFiles: Math.max(50, Math.round(mediumParams.textFiles * k)),
    binaries: Math.max(1, Math.round(mediumParams.binaries * k)),
  };
  return { ...mediumShape(params), name: `medium-${mib}mib` };
}

const medium: RepoSpec = mediumShape(mediumParams);

function mediumShape(params: typeof mediumParams): RepoSpec {
  return {
    name: 'medium',
    params,
    config: [],
    async write(fi) {
      const p = params;
      const rng = new Rng(p.seed);
      const text = textSource(rng);
      const files = new Map<string, string[]>();
      const dirs = Array.from({ length: 40 }, (_, i) => `src/${text.word()}${i}/${rng.next() < 0.5 ? 'lib' : 'impl'}`);
      const newPath = () => `${rng.pick(dirs)}/${text.word()}-${files.size}.${rng.pick(['ts', 'md', 'c', 'txt', 'json'])}`;
      const binaryAt = new Set(Array.from({ length: p.binaries }, (_, i) => Math.floor(((i + 0.5) * p.commits) / p.binaries)));
      const binaries: string[] = [];
      let previous = 0;
      for (let n = 0; n < p.commits; n++) {
        const changes = new Map<string, string | Buffer | null>();
        if (n === 0) {
          for (let i = 0; i < p.textFiles; i++) files.set(newPath(), text.lines(rng.int(20, 200)));
          for (const [file, content] of files) changes.set(file, content.join('\n') + '\n');
        } else {
          const paths = [...files.keys()];
          for (let k = rng.int(1, 6); k > 0; k--) {
            const file = rng.pick(paths);
            files.set(file, editLines(rng, text, files.get(file)!));
            changes.set(file, files.get(file)!.join('\n') + '\n');
          }
          if (rng.next() < 0.25) {
            const file = newPath();
            files.set(file, text.lines(rng.int(20, 200)));
            changes.set(file, files.get(file)!.join('\n') + '\n');
          }
          if (rng.next() < 0.03) {
            const file = rng.pick(paths);
            if (!changes.has(file)) {
              files.delete(file);
              changes.set(file, null);
            }
          }
        }
        if (binaryAt.has(n)) {
          const replace = binaries.length > 0 && rng.next() < 0.3;
          const file = replace ? rng.pick(binaries) : `assets/${text.word()}-${binaries.length}.bin`;
          if (!replace) binaries.push(file);
          changes.set(file, keystream(`${p.seed}:${n}`)(rng.int(p.binaryMinKiB, p.binaryMaxKiB) * 1024));
        }
        const message = `${text.lines(1)[0]!.trim()}\n\nChange ${n}.\n`;
        previous = await fi.commit('refs/heads/main', n, message, changes);
        if (n > 0 && n % 60 === 0) await fi.tag(`v1.${n / 60}`, previous, n, `Release 1.${n / 60}\n`);
        if (n === 200 || n === 400) await fi.branch(`refs/heads/release/${n / 200}`, previous);
      }
    },
  };
}

const largeParams = { seed: 'large-1', files: 20, fileMiB: 50 };

const large: RepoSpec = {
  name: 'large',
  params: largeParams,
  // The blobs are random: no delta search, no compression effort (level 0 stores them).
  config: [
    ['core.bigFileThreshold', '16m'],
    ['core.compression', '0'],
  ],
  async write(fi) {
    const p = largeParams;
    for (let n = 0; n < p.files; n++) {
      const name = `data/blob-${String(n).padStart(2, '0')}.bin`;
      const chunk = keystream(`${p.seed}:${n}`);
      await fi.commit('refs/heads/main', n, `Add ${name}\n`, new Map(), { path: name, bytes: p.fileMiB * MiB, chunk });
    }
  },
};

const historyParams = { seed: 'history-1', commits: 15000, topDirs: 16, subDirs: 12, textFiles: 3000, minLines: 10, maxLines: 80, maxEdits: 3 };

const history = sourceTree('history', historyParams);

const source = sourceTree('source', { seed: 'source-1', commits: 36000, topDirs: 24, subDirs: 16, textFiles: 6000, minLines: 30, maxLines: 200, maxEdits: 4 });

/** Text files in nested directories, edited a few at a time over many small commits. */
function sourceTree(name: string, p: typeof historyParams): RepoSpec {
  return {
    name,
    params: p,
    config: [],
    async write(fi) {
      const rng = new Rng(p.seed);
      const text = textSource(rng);
      const files = new Map<string, string[]>();
      const dirs: string[] = [];
      for (let t = 0; t < p.topDirs; t++) {
        const top = `${text.word()}${t}`;
        for (let d = 0; d < p.subDirs; d++) dirs.push(`${top}/${text.word()}${d}`);
      }
      const newPath = () => `${rng.pick(dirs)}/${text.word()}-${files.size}.${rng.pick(['c', 'h', 'ts', 'md'])}`;
      let previous = 0;
      for (let n = 0; n < p.commits; n++) {
        const changes = new Map<string, string | Buffer | null>();
        if (n === 0) {
          for (let i = 0; i < p.textFiles; i++) files.set(newPath(), text.lines(rng.int(p.minLines, p.maxLines)));
          for (const [file, content] of files) changes.set(file, content.join('\n') + '\n');
        } else {
          const paths = [...files.keys()];
          for (let k = rng.int(1, p.maxEdits); k > 0; k--) {
            const file = rng.pick(paths);
            files.set(file, editLines(rng, text, files.get(file)!));
            changes.set(file, files.get(file)!.join('\n') + '\n');
          }
          if (rng.next() < 0.1) {
            const file = newPath();
            files.set(file, text.lines(rng.int(p.minLines, p.maxLines)));
            changes.set(file, files.get(file)!.join('\n') + '\n');
          }
        }
        previous = await fi.commit('refs/heads/main', n, `${text.lines(1)[0]!.trim()}\n\nChange ${n}.\n`, changes);
        if (n > 0 && n % 1000 === 0) await fi.tag(`v${n / 1000}.0`, previous, n, `Release ${n / 1000}.0\n`);
      }
    },
  };
}

export const SPECS = { medium, large, history, source } as const;

/** Head, commit and object counts and pack size of a repository. */
export async function describeRepo(dir: string, env: NodeJS.ProcessEnv): Promise<Omit<RepoInfo, 'path'>> {
  const git = (...args: string[]) => run('git', ['--git-dir', dir, ...args], { env }).then((r) => r.stdout.trim());
  const counts = Object.fromEntries(
    (await git('count-objects', '-v')).split('\n').map((l) => l.split(': ') as [string, string]),
  );
  return {
    head: await git('rev-parse', 'HEAD'),
    commits: Number(await git('rev-list', '--all', '--count')),
    objects: Number(counts['in-pack'] ?? 0),
    packBytes: Number(counts['size-pack'] ?? 0) * 1024,
  };
}

/** Full repack with bitmaps and a commit graph, as the benchmark does for every served copy. */
export async function repackForServing(dir: string, env: NodeJS.ProcessEnv, opts: { recompute?: boolean } = {}): Promise<void> {
  const flags = opts.recompute ? ['-adf'] : ['-adb'];
  await run('git', ['--git-dir', dir, 'repack', ...flags, '--write-bitmap-index', '-q'], { env, timeoutMs: 900_000 });
  await run('git', ['--git-dir', dir, 'commit-graph', 'write', '--reachable', '--no-progress'], { env, timeoutMs: 300_000 });
}

/** The repository of `spec` in `cacheDir`, built first when missing or stale. */
export async function ensureRepo(
  spec: RepoSpec,
  cacheDir: string,
  env: NodeJS.ProcessEnv,
  say: (msg: string) => void,
): Promise<RepoInfo> {
  const dir = path.join(cacheDir, `${spec.name}.git`);
  const stampFile = path.join(dir, 'bench-stamp.json');
  const wanted = JSON.stringify({ generator: GENERATOR_VERSION, spec: spec.name, params: spec.params });
  if (existsSync(stampFile)) {
    const stamp = JSON.parse(readFileSync(stampFile, 'utf8')) as { key: string; info: Omit<RepoInfo, 'path'> };
    if (stamp.key === wanted) return { path: dir, ...stamp.info };
  }
  say(`generating the ${spec.name} repository in ${dir} (cached for later runs)`);
  const started = Date.now();
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await run('git', ['init', '--bare', '-q', '--initial-branch=main', tmp], { env });
  for (const [key, value] of [['gc.auto', '0'], ...spec.config]) await run('git', ['--git-dir', tmp, 'config', key!, value!], { env });

  const child = spawn('git', ['--git-dir', tmp, 'fast-import', '--quiet', '--done'], { env, stdio: ['pipe', 'ignore', 'pipe'] });
  if (child.pid !== undefined) track(child.pid, 'git fast-import');
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = once(child, 'close') as Promise<[number | null]>;
  const fi = new FastImport(child.stdin);
  await spec.write(fi);
  await fi.write('done\n');
  child.stdin.end();
  const [code] = await exited;
  untrack(child.pid);
  if (code !== 0) throw new Error(`git fast-import failed (exit ${code}): ${stderr.trim()}`);

  // Recompute deltas once here; served copies reuse them (`repack -adb`), as a server would.
  await repackForServing(tmp, env, { recompute: spec.name !== 'large' });
  const info = await describeRepo(tmp, env);
  await writeFile(path.join(tmp, 'bench-stamp.json'), JSON.stringify({ key: wanted, info }, null, 2) + '\n');
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  say(`generated ${spec.name}: ${(info.packBytes / MiB).toFixed(1)} MiB of pack, ${info.objects} objects, ${info.commits} commits, in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return { path: dir, ...info };
}

/**
 * Adds one small commit on `main` of a bare repository with plumbing (no work tree): a new
 * version of `bench-changes.txt` at the top. Its objects are loose, as a small push leaves
 * them. Deterministic for a given `n`. Returns the commit id.
 */
export async function addCommit(dir: string, env: NodeJS.ProcessEnv, n: number): Promise<string> {
  const when = `${START_TIME + 10_000_000 + n * 60} +0000`;
  const commitEnv = { ...env, GIT_AUTHOR_NAME: 'Bench Author', GIT_AUTHOR_EMAIL: 'bench@example.com', GIT_AUTHOR_DATE: when, GIT_COMMITTER_NAME: 'Bench Author', GIT_COMMITTER_EMAIL: 'bench@example.com', GIT_COMMITTER_DATE: when };
  const git = async (args: string[], input?: string) => (await run('git', ['--git-dir', dir, ...args], { env: commitEnv, ...(input !== undefined && { input }) })).stdout.trim();
  const blob = await git(['hash-object', '-w', '--stdin'], `change ${n}\n`);
  const entries = (await git(['ls-tree', 'HEAD'])).split('\n').filter((l) => l && !l.endsWith('\tbench-changes.txt'));
  entries.push(`100644 blob ${blob}\tbench-changes.txt`);
  const tree = await git(['mktree'], entries.join('\n') + '\n');
  const commit = await git(['commit-tree', tree, '-p', 'HEAD', '-m', `Bench change ${n}`]);
  await git(['update-ref', 'refs/heads/main', commit]);
  return commit;
}
