/**
 * `npm run bench:lfs-layout`: the readable LFS layout (issue 15) with the real git and git-lfs
 * clients, on the filesystem object store (proxy transfers, default settings), and, asked for,
 * the same on moto's S3 server with bucket versioning:
 *
 *   - publish latency: a push of 200 LFS files (1 GiB in all) to a fresh repository in the
 *     readable layout; per file, the time from the push's acknowledgement (`git push` exiting)
 *     to its publication (the `publishedAt` of its version: copied, read back and verified,
 *     recorded), p50 and p99 over the files, the last file, and the job's end (content-addressed
 *     copies removed); a fresh repository each run, on one server;
 *   - download throughput: `git lfs pull` of the whole tree, after a clone with
 *     GIT_LFS_SKIP_SMUDGE=1, from a readable repository and from a content-layout repository
 *     holding the same files, each on a server of its own (a content-layout repository next to
 *     a readable one on the same server would read the readable one's published versions:
 *     downloads prefer a publication of the object wherever it is), sides alternated;
 *   - bytes stored: what the readable server's store grew by for one push once published,
 *     against the content-layout server's store holding the same files;
 *   - LFS GC over 10,000 objects, half of them referenced (lfs-layout-gc.ts).
 *
 * Method as in /work/shared/BENCHMARKING.md: several runs, peers alternated, medians with
 * min–max, ratios last; nothing asserts on time. 127.0.0.1 only; every process stopped by PID.
 *
 * Options (flags after `npm run bench:lfs-layout --`, or environment):
 *   --files N           BENCH_LFS_FILES      LFS files in the pushed tree (default 200)
 *   --mib N             BENCH_LFS_MIB        their total size in MiB (default 1024)
 *   --runs N            BENCH_RUNS           pushes for the publish latency (default 3, at least 3)
 *   --download-runs N   BENCH_DOWNLOAD_RUNS  downloads per side (default 5, at least 3)
 *   --gc-objects N      BENCH_GC_OBJECTS     LFS objects for the GC (default 10000, even)
 *   --parts LIST        BENCH_PARTS          of layout, gc, moto-layout, moto-gc (default layout,gc): the
 *                                            moto- parts measure the same on moto's S3 server
 *   --moto-files N      BENCH_MOTO_FILES     LFS files of the tree pushed on moto (default 20)
 *   --moto-mib N        BENCH_MOTO_MIB       their total size in MiB (default 2)
 *   --moto-gc-objects N BENCH_MOTO_GC_OBJECTS LFS objects for the GC on moto (default 200, even)
 *                                            moto 5.2 deep-copies every version of a bucket at each
 *                                            ListObjectVersions, which a delete in a versioned bucket
 *                                            calls once per key: much more exhausts memory or disk
 *   --keep              BENCH_KEEP=1         keep the run directory (.bench/run-lfs-layout-*)
 */
import { mkdir, rename, rm, stat, writeFile, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256File, writeRandomFile } from '../test/e2e/lfs-fixture.js';
import { startGitstratum, type GitstratumServer } from './gitstratum-server.js';
import { gcPart } from './lfs-layout-gc.js';
import {
  adminToken,
  createReadableRepo,
  describeAreas,
  describeProblems,
  filesystemStore,
  lfsBytes,
  lfsKey,
  listPublished,
  logProblems,
  MiB,
  motoStore,
  waitForPublishJobs,
  type BenchStore,
  type StoreBytes,
} from './lfs-layout-api.js';
import { run, runBench, startRun } from './processes.js';
import { treeCpuSeconds, waitForTree } from './proc-stats.js';
import { median, percentile, spread, table } from './report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const MB = 1e6;
/** Bump when the generated tree changes (its bytes are a function of this, --files and --mib). */
const GENERATOR_VERSION = 1;
const TRANSFER_TIMEOUT_MS = 900_000;
const TARGET_DOWNLOAD = 0.95;
const TARGET_BYTES = 1.0;

const PARTS = ['layout', 'gc', 'moto-layout', 'moto-gc'] as const;
type Part = (typeof PARTS)[number];

interface Options {
  files: number;
  mib: number;
  runs: number;
  downloadRuns: number;
  gcObjects: number;
  motoFiles: number;
  motoMib: number;
  motoGcObjects: number;
  parts: Set<Part>;
  keep: boolean;
  timeoutS: number;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const parts = (list: string) => new Set(list.split(',').map((p) => p.trim()).filter(Boolean)) as Set<Part>;
  const opts: Options = {
    files: Number(env['BENCH_LFS_FILES'] ?? 200),
    mib: Number(env['BENCH_LFS_MIB'] ?? 1024),
    runs: Number(env['BENCH_RUNS'] ?? 3),
    downloadRuns: Number(env['BENCH_DOWNLOAD_RUNS'] ?? 5),
    gcObjects: Number(env['BENCH_GC_OBJECTS'] ?? 10_000),
    motoFiles: Number(env['BENCH_MOTO_FILES'] ?? 20),
    motoMib: Number(env['BENCH_MOTO_MIB'] ?? 2),
    motoGcObjects: Number(env['BENCH_MOTO_GC_OBJECTS'] ?? 200),
    parts: parts(env['BENCH_PARTS'] ?? 'layout,gc'),
    keep: env['BENCH_KEEP'] === '1',
    timeoutS: Number(env['BENCH_TIMEOUT_S'] ?? 3600),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') opts.keep = true;
    else if (arg === '--files') opts.files = Number(argv[++i]);
    else if (arg === '--mib') opts.mib = Number(argv[++i]);
    else if (arg === '--runs') opts.runs = Number(argv[++i]);
    else if (arg === '--download-runs') opts.downloadRuns = Number(argv[++i]);
    else if (arg === '--gc-objects') opts.gcObjects = Number(argv[++i]);
    else if (arg === '--parts') opts.parts = parts(argv[++i] ?? '');
    else if (arg === '--moto-files') opts.motoFiles = Number(argv[++i]);
    else if (arg === '--moto-mib') opts.motoMib = Number(argv[++i]);
    else if (arg === '--moto-gc-objects') opts.motoGcObjects = Number(argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --files N, --mib N, --runs N, --download-runs N, --gc-objects N, --parts LIST, --moto-files N, --moto-mib N, --moto-gc-objects N, --keep)`);
  }
  const integer = (v: number, min: number, max: number, what: string) => {
    if (!Number.isInteger(v) || v < min || v > max) throw new Error(`${what} must be an integer from ${min} to ${max}`);
  };
  integer(opts.files, 1, 10_000, '--files');
  integer(opts.mib, 1, 8192, '--mib');
  integer(opts.motoFiles, 1, 10_000, '--moto-files');
  integer(opts.motoMib, 1, 1024, '--moto-mib');
  integer(opts.motoGcObjects, 2, 100_000, '--moto-gc-objects');
  integer(opts.runs, 3, 20, '--runs');
  integer(opts.downloadRuns, 3, 20, '--download-runs');
  integer(opts.gcObjects, 2, 100_000, '--gc-objects');
  if (opts.gcObjects % 2 !== 0 || opts.motoGcObjects % 2 !== 0) throw new Error('--gc-objects and --moto-gc-objects must be even (half referenced, half not)');
  if (opts.parts.size === 0 || [...opts.parts].some((p) => !PARTS.includes(p))) throw new Error(`--parts takes a comma-separated list of ${PARTS.join(', ')}`);
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
const verdict = (ok: boolean) => (ok ? 'met' : 'missed');

// ---------------------------------------------------------------------------------------------
// The pushed tree: a git repository of seeded random LFS files, generated once into .bench/.

interface ContentFile {
  path: string;
  size: number;
  oid: string;
}

interface Content {
  /** The repository (work tree and .git, LFS objects in .git/lfs) pushed by every run. */
  dir: string;
  files: ContentFile[];
  bytes: number;
  commit: string;
}

/**
 * `files` files of seeded random bytes (test/e2e/lfs-fixture.ts writeRandomFile: incompressible,
 * the same every time, streamed to disk 1 MiB at a time), `--mib` in all, ten to a directory
 * under `assets/`, committed as LFS files on `main` with fixed dates. The stamp beside the
 * repository records the generator's version, the files' oids and the commit; a mismatch
 * regenerates it.
 */
async function ensureContent(opts: { files: number; mib: number }, env: NodeJS.ProcessEnv): Promise<Content> {
  const dir = path.join(CACHE, `lfs-layout-${opts.files}x${opts.mib}mib`);
  const stampFile = `${dir}.json`;
  const git = async (args: string[], cwd: string) => (await run('git', args, { cwd, env, timeoutMs: TRANSFER_TIMEOUT_MS })).stdout.trim();
  try {
    const stamp = JSON.parse(await readFile(stampFile, 'utf8')) as Content & { version: number };
    if (stamp.version === GENERATOR_VERSION && stamp.files.length === opts.files && stamp.bytes === opts.mib * MiB && (await git(['rev-parse', 'HEAD'], dir)) === stamp.commit) {
      return { dir, files: stamp.files, bytes: stamp.bytes, commit: stamp.commit };
    }
  } catch {
    // no usable stamp or repository: generate
  }
  say(`generating ${path.relative(ROOT, dir)}: ${opts.files} LFS files, ${opts.mib} MiB of seeded random bytes, committed with git-lfs`);
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(dir, { recursive: true, force: true });
  await rm(stampFile, { force: true });
  await mkdir(tmp, { recursive: true });
  try {
    await git(['init', '-q', '-b', 'main', '.'], tmp);
    await git(['lfs', 'install', '--local'], tmp); // its pre-push hook uploads the objects
    await git(['lfs', 'track', '*.bin'], tmp);
    const total = opts.mib * MiB;
    const each = Math.floor(total / opts.files);
    const width = String(opts.files - 1).length;
    const chunks = Math.ceil((each + opts.files) / MiB);
    const files: ContentFile[] = [];
    for (let i = 0; i < opts.files; i++) {
      const rel = `assets/set-${String(Math.floor(i / 10)).padStart(width, '0')}/file-${String(i).padStart(width, '0')}.bin`;
      const file = path.join(tmp, rel);
      const size = each + (i < total - each * opts.files ? 1 : 0);
      await mkdir(path.dirname(file), { recursive: true });
      // writeRandomFile seeds each MiB with seed + chunk × 7919: seeds spaced wider never meet.
      await writeRandomFile(file, size, 1 + i * (chunks * 7919 + 1));
      files.push({ path: rel, size, oid: await sha256File(file) });
    }
    await git(['add', '-A'], tmp);
    await git(['commit', '-q', '-m', `${opts.files} LFS files, ${opts.mib} MiB`], tmp);
    const commit = await git(['rev-parse', 'HEAD'], tmp);
    await rename(tmp, dir);
    await writeFile(stampFile, JSON.stringify({ version: GENERATOR_VERSION, files, bytes: total, commit }) + '\n');
    return { dir, files, bytes: total, commit };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Publish latency, bytes stored and downloads.

interface PublishSample {
  pushWall: number;
  /** Seconds from the push's acknowledgement to the job's createdAt (negative: queued before git answered). */
  queued: number;
  /** Seconds from the push's acknowledgement to each file's publishedAt. */
  p50: number;
  p99: number;
  last: number;
  /** To the job's finishedAt: every file published and the content-addressed copies removed. */
  jobDone: number;
  cpuPush: number;
  cpuPublish: number;
  grew: StoreBytes;
  /** Content-addressed copies of the pushed objects still current in the store once the job ended. */
  contentLeft: number;
}

interface DownloadSample {
  wall: number;
  rate: number;
  cpu: number;
}

const idle = (gs: GitstratumServer) => waitForTree([gs.pid], new Set([gs.pid]), 60_000);
const cpuOf = (gs: GitstratumServer) => treeCpuSeconds([gs.pid]);

function difference(after: StoreBytes, before: StoreBytes): StoreBytes {
  const byArea = new Map<string, number>();
  for (const area of new Set([...after.byArea.keys(), ...before.byArea.keys()])) byArea.set(area, (after.byArea.get(area) ?? 0) - (before.byArea.get(area) ?? 0));
  return { total: after.total - before.total, noncurrent: after.noncurrent - before.noncurrent, byArea };
}

/** One push of the tree to a fresh readable repository, followed until the publish job ended. */
async function publishRun(gs: GitstratumServer, store: BenchStore, token: string, content: Content, name: string, env: NodeJS.ProcessEnv): Promise<PublishSample> {
  await createReadableRepo(gs, name);
  const before = await store.bytes();
  await run('sync', [], { timeoutMs: 120_000 });
  await idle(gs);
  const cpu0 = cpuOf(gs);
  const push = await run('git', ['push', '-q', `${gs.authUrl}/alice/bench/${name}.git`, 'main:main'], { cwd: content.dir, env, timeoutMs: TRANSFER_TIMEOUT_MS });
  const ack = Date.now();
  // The job may already be running: this reading splits the CPU roughly, not exactly.
  const cpu1 = cpuOf(gs);
  const jobs = await waitForPublishJobs(gs, token, name, { timeoutMs: TRANSFER_TIMEOUT_MS });
  await idle(gs);
  const cpu2 = cpuOf(gs);

  const published = await listPublished(gs, token, name);
  const byPath = new Map(published.map((p) => [p.path, p]));
  const wrong = content.files.filter((f) => byPath.get(f.path)?.oid !== f.oid);
  if (published.length !== content.files.length || wrong.length > 0) {
    throw new Error(`alice/bench/${name}: ${published.length} versions published for ${content.files.length} files; ${wrong.length} paths missing or with another oid (e.g. ${wrong[0]?.path})`);
  }
  const skipped = jobs.flatMap((j) => j.skipped);
  if (skipped.length > 0) throw new Error(`alice/bench/${name}: the publish job skipped ${skipped.length} files, e.g. ${JSON.stringify(skipped[0])}`);
  const latencies = published.map((p) => (Date.parse(p.publishedAt) - ack) / 1000);
  const finished = Math.max(...jobs.map((j) => Date.parse(j.finishedAt!)));
  const after = await store.bytes();
  const current = await store.currentKeys('lfs/');
  return {
    pushWall: push.seconds,
    queued: (Math.min(...jobs.map((j) => Date.parse(j.createdAt))) - ack) / 1000,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    last: Math.max(...latencies),
    jobDone: (finished - ack) / 1000,
    cpuPush: cpu1 - cpu0,
    cpuPublish: cpu2 - cpu1,
    grew: difference(after, before),
    contentLeft: content.files.filter((f) => current.has(lfsKey(f.oid))).length,
  };
}

interface Side {
  name: 'readable' | 'content';
  gs: GitstratumServer;
  repo: string;
  /** Store files its downloads read, `cat` before each run so both start from a warm page cache (filesystem store). */
  warm: string | undefined;
}

/** A clone without LFS content (untimed), then `git lfs pull` (timed); every file's SHA-256 checked after, untimed. */
async function downloadRun(side: Side, content: Content, dest: string, env: NodeJS.ProcessEnv): Promise<DownloadSample> {
  await rm(dest, { recursive: true, force: true });
  await run('git', ['clone', '-q', `${side.gs.authUrl}/alice/bench/${side.repo}.git`, dest], { env: { ...env, GIT_LFS_SKIP_SMUDGE: '1' }, timeoutMs: TRANSFER_TIMEOUT_MS });
  if (side.warm) await run('sh', ['-c', 'find "$1" -type f -exec cat {} + > /dev/null', 'sh', side.warm], { timeoutMs: TRANSFER_TIMEOUT_MS });
  await run('sync', [], { timeoutMs: 120_000 });
  await idle(side.gs);
  const cpu0 = cpuOf(side.gs);
  const pull = await run('git', ['lfs', 'pull'], { cwd: dest, env, timeoutMs: TRANSFER_TIMEOUT_MS });
  await idle(side.gs);
  const cpu = cpuOf(side.gs) - cpu0;
  for (const f of content.files) {
    const file = path.join(dest, f.path);
    const size = (await stat(file)).size;
    if (size !== f.size || (await sha256File(file)) !== f.oid) throw new Error(`${side.name} download: ${f.path} is not the pushed file (${size} bytes)`);
  }
  await rm(dest, { recursive: true, force: true });
  return { wall: pull.seconds, rate: content.bytes / pull.seconds / MB, cpu };
}

/**
 * The layout measurements on one kind of store: the filesystem store (each server its own data
 * directory), or moto (each server its own moto process and bucket: the readable one with
 * versioning, the content one without, as each layout would be deployed).
 */
async function layoutPart(opts: Options, kind: 'filesystem' | 'moto', content: Content, workDir: string, env: NodeJS.ProcessEnv): Promise<{ lines: string[]; verdicts: string[][] }> {
  const label = `${content.files.length} LFS files, ${(content.bytes / MiB).toFixed(0)} MiB`;
  const dirs = { readable: path.join(workDir, `${kind}-readable`), content: path.join(workDir, `${kind}-content`) };
  const stores: BenchStore[] = [];
  try {
    const readableStore = kind === 'filesystem' ? filesystemStore(dirs.readable) : await motoStore({ versioning: true });
    stores.push(readableStore);
    const contentStore = kind === 'filesystem' ? filesystemStore(dirs.content) : await motoStore({ versioning: false });
    stores.push(contentStore);
    const where = `${readableStore.label}${kind === 'moto' ? `; the content-layout server's bucket: versioning off` : ''}`;
    say(`${kind}: starting two gitstratum servers (proxy mode), one for the readable repositories, one for the content-layout repository`);
    const readable = await startGitstratum(ROOT, dirs.readable, { ...env, ...readableStore.env }, ['--lfs-transfer-mode', 'proxy']);
    const plain = await startGitstratum(ROOT, dirs.content, { ...env, ...contentStore.env }, ['--lfs-transfer-mode', 'proxy']);
    const token = await adminToken(readable);

    say(`${kind}: push of ${label} to alice/bench/content (content layout), the download peer`);
    await plain.createRepo('content');
    const contentPush = await run('git', ['push', '-q', `${plain.authUrl}/alice/bench/content.git`, 'main:main'], { cwd: content.dir, env, timeoutMs: TRANSFER_TIMEOUT_MS });
    await idle(plain);
    const contentBytes = await contentStore.bytes();

    const publishes: PublishSample[] = [];
    for (let i = 1; i <= opts.runs; i++) {
      const s = await publishRun(readable, readableStore, token, content, `readable-${i}`, env);
      publishes.push(s);
      say(
        `${kind}: publish ${i}/${opts.runs}: push ${s.pushWall.toFixed(2)} s; published p50 ${s.p50.toFixed(2)} s, p99 ${s.p99.toFixed(2)} s, last ${s.last.toFixed(2)} s, ` +
          `job done ${s.jobDone.toFixed(2)} s after the acknowledgement; LFS bytes stored grew ${(lfsBytes(s.grew) / MiB).toFixed(1)} MiB; ${s.contentLeft} content-addressed copies left`,
      );
    }

    const sides: Side[] = [
      { name: 'readable', gs: readable, repo: 'readable-1', warm: readableStore.warmDir('files/alice/bench/readable-1') },
      { name: 'content', gs: plain, repo: 'content', warm: contentStore.warmDir('lfs') },
    ];
    const downloads = new Map<string, DownloadSample[]>(sides.map((s) => [s.name, []]));
    for (let i = 1; i <= opts.downloadRuns; i++) {
      for (const side of i % 2 === 1 ? sides : [...sides].reverse()) {
        const s = await downloadRun(side, content, path.join(workDir, 'clone'), env);
        downloads.get(side.name)!.push(s);
        say(`${kind}: download ${i}/${opts.downloadRuns} ${side.name}: ${s.wall.toFixed(2)} s, ${s.rate.toFixed(0)} MB/s, server CPU ${s.cpu.toFixed(2)} s`);
      }
    }

    const lines: string[] = [];
    const pick = (f: (s: PublishSample) => number, digits = 2) => spread(publishes.map(f), digits);
    lines.push(`[${where}]`);
    lines.push(`publish latency: ${opts.runs} pushes of ${label}, each to a fresh repository in the readable layout on one server; seconds from the`);
    lines.push('  acknowledgement (`git push` exiting) to publishedAt (copied, read back and verified, recorded); p50/p99 over the files of each push');
    const runRows = [['push', 'push wall s', 'job queued s', 'file p50 s', 'file p99 s', 'last file s', 'job done s', 'server CPU push s', 'server CPU publish s', 'LFS bytes grew MiB']];
    publishes.forEach((s, k) =>
      runRows.push([
        String(k + 1),
        s.pushWall.toFixed(2),
        s.queued.toFixed(2),
        s.p50.toFixed(2),
        s.p99.toFixed(2),
        s.last.toFixed(2),
        s.jobDone.toFixed(2),
        s.cpuPush.toFixed(2),
        s.cpuPublish.toFixed(2),
        (lfsBytes(s.grew) / MiB).toFixed(1),
      ]),
    );
    runRows.push([
      'median [min–max]',
      pick((s) => s.pushWall),
      pick((s) => s.queued),
      pick((s) => s.p50),
      pick((s) => s.p99),
      pick((s) => s.last),
      pick((s) => s.jobDone),
      pick((s) => s.cpuPush),
      pick((s) => s.cpuPublish),
      spread(publishes.map((s) => lfsBytes(s.grew)), 1, MiB),
    ]);
    lines.push(table(runRows));
    lines.push(`  the same push to the content-layout server (once, for context): ${contentPush.seconds.toFixed(2)} s`);
    lines.push("  job queued: the job's createdAt (negative: before git answered); job done: its finishedAt, after the last file and the");
    lines.push('  removal of the content-addressed copies. Server CPU: the Node process tree, read when `git push` exited (the job may');
    lines.push('  have begun by then) and when the job was done.');
    lines.push('');

    const rows = [['download: `git lfs pull` after a GIT_LFS_SKIP_SMUDGE=1 clone', 'wall s', 'MB/s', 'server CPU s']];
    for (const side of sides) {
      const s = downloads.get(side.name)!;
      rows.push([`${side.name} layout (alice/bench/${side.repo})`, spread(s.map((x) => x.wall), 2), spread(s.map((x) => x.rate), 0), spread(s.map((x) => x.cpu), 2)]);
    }
    lines.push(`download of the whole tree (${label}), ${opts.downloadRuns} runs per side alternated (A B, B A, …), \`sync\` before each;`);
    lines.push(
      kind === 'filesystem'
        ? "  each server's stored files read into the page cache first; git-lfs defaults (8 concurrent transfers); every file's SHA-256 checked after, untimed"
        : "  both buckets on moto (Python, on the same 2 cores); git-lfs defaults (8 concurrent transfers); every file's SHA-256 checked after, untimed",
    );
    lines.push(table(rows));
    lines.push('');

    const grew = median(publishes.map((s) => lfsBytes(s.grew)));
    const last = publishes[publishes.length - 1]!;
    lines.push(
      kind === 'filesystem'
        ? "bytes stored: the objects/ tree, distinct inodes (a current version's hard link counts once); LFS bytes: all but snapshots/"
        : 'bytes stored: every version the bucket holds, current or not (ListObjectVersions); LFS bytes: all but snapshots/',
    );
    lines.push("  (the git repositories' snapshots, which both layouts write alike in the background), MiB");
    const bytesRows = [['side', 'LFS bytes', 'of all: noncurrent', 'by area']];
    bytesRows.push(['readable: growth for one push, once published (median)', (grew / MiB).toFixed(1), (median(publishes.map((s) => s.grew.noncurrent)) / MiB).toFixed(1), `last push: ${describeAreas(last.grew.byArea)}`]);
    bytesRows.push(['content: the store holding the same files', (lfsBytes(contentBytes) / MiB).toFixed(1), (contentBytes.noncurrent / MiB).toFixed(1), describeAreas(contentBytes.byArea)]);
    lines.push(table(bytesRows));
    lines.push(`  the pushed files: ${(content.bytes / MiB).toFixed(1)} MiB; content-addressed copies still current after publication: ${publishes.map((s) => s.contentLeft).join(', ')} (per push)`);
    if (kind === 'filesystem') lines.push('  (on disk, noncurrent is not told apart: 0)');
    lines.push('');
    lines.push(`server logs: readable ${describeProblems(await logProblems(readable.dataDir))}; content ${describeProblems(await logProblems(plain.dataDir))}`);
    lines.push('');

    const rate = (name: string) => median(downloads.get(name)!.map((s) => s.rate));
    const downloadRatio = rate('readable') / rate('content');
    const bytesRatio = grew / lfsBytes(contentBytes);
    const med = (f: (s: PublishSample) => number) => median(publishes.map(f)).toFixed(2);
    const tag = `[${kind}]`;
    const verdicts = [
      [`${tag} publish latency per file, p50 / p99 (s after the push acknowledgement)`, `${med((s) => s.p50)} / ${med((s) => s.p99)}`, 'none given', '—'],
      [`${tag} time until all published / job done (s after the acknowledgement)`, `${med((s) => s.last)} / ${med((s) => s.jobDone)}`, 'none given', '—'],
      [`${tag} download throughput, readable ÷ content (MB/s medians)`, `${downloadRatio.toFixed(3)}×`, `≥ ${TARGET_DOWNLOAD.toFixed(2)}×`, verdict(downloadRatio >= TARGET_DOWNLOAD)],
      [`${tag} bytes stored after publication, readable ÷ content`, `${bytesRatio.toFixed(3)}×`, `≤ ${TARGET_BYTES.toFixed(1)}×`, verdict(bytesRatio <= TARGET_BYTES)],
    ];
    await readable.stop();
    await plain.stop();
    return { lines, verdicts };
  } finally {
    for (const s of stores) await s.stop();
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (process.platform !== 'linux') throw new Error('this benchmark reads /proc: it runs on Linux only');
  const { workDir, home, env: baseEnv, finish } = await startRun(CACHE, 'run-lfs-layout', { keep: opts.keep, timeoutS: opts.timeoutS });
  try {
    const env: NodeJS.ProcessEnv = {
      ...baseEnv,
      GIT_AUTHOR_NAME: 'Bench',
      GIT_AUTHOR_EMAIL: 'bench@example.com',
      GIT_COMMITTER_NAME: 'Bench',
      GIT_COMMITTER_EMAIL: 'bench@example.com',
      GIT_AUTHOR_DATE: '2026-01-01T00:00:00Z',
      GIT_COMMITTER_DATE: '2026-01-01T00:00:00Z',
    };
    // git-lfs's filters in the run's HOME, with cwd = HOME so that no repository gets hooks.
    await run('git', ['lfs', 'install', '--skip-repo'], { cwd: home, env });
    const versions = `Node ${process.version}, ${(await run('git', ['--version'], { env })).stdout.trim()}, ${(await run('git', ['lfs', 'version'], { env })).stdout.trim().split(' ')[0]}`;
    const loadBefore = os.loadavg()[0]!;
    const verdicts = [['measure', 'value', 'target', 'verdict']];
    const content = opts.parts.has('layout') ? await ensureContent(opts, env) : undefined;
    const motoContent = opts.parts.has('moto-layout') ? await ensureContent({ files: opts.motoFiles, mib: opts.motoMib }, env) : undefined;
    process.stdout.write(
      [
        '',
        `gitstratum readable LFS layout (issue 15) — proxy transfers, default settings; ${versions}, ${os.cpus().length} CPUs; each section names its store`,
        `load average ${loadBefore.toFixed(1)} at start; median [min–max]; MB/s = 10^6 bytes per second`,
        '',
        '',
      ].join('\n'),
    );
    // Each part's section is printed as it ends, and the figures so far even when a later part fails.
    try {
      for (const part of PARTS.filter((p) => opts.parts.has(p))) {
        const kind = part.startsWith('moto-') ? 'moto' : 'filesystem';
        const r = part.endsWith('layout')
          ? await layoutPart(opts, kind, kind === 'moto' ? motoContent! : content!, workDir, env)
          : await gcPart({ root: ROOT, workDir, env, kind, objects: kind === 'moto' ? opts.motoGcObjects : opts.gcObjects, say });
        process.stdout.write([...r.lines, ''].join('\n'));
        verdicts.push(...r.verdicts);
      }
    } finally {
      process.stdout.write([`load average ${os.loadavg()[0]!.toFixed(1)} at end`, '', 'figures and targets, last (medians)', table(verdicts), ''].join('\n'));
    }
  } finally {
    await finish();
  }
}

runBench(main);
