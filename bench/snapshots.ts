/**
 * `npm run bench:snapshots`: what persisting repositories as snapshots costs (issue 5), on the
 * generated `medium` repository (about 100 MiB of pack), against what git itself does:
 *
 *   1. a full snapshot (time, size) against `git bundle create --all` of the same repository;
 *   2. an incremental snapshot after one new commit (a push's worth: loose objects, one ref);
 *   3. a restore of that chain (full + incremental, index-pack --strict, refs, repack, fsck) against
 *      `git clone --mirror --no-local` of the same repository from local disk (a real pack
 *      transfer and index-pack; the default local clone hard-links the packs and is printed too,
 *      for reference), with a full `git fsck --strict` of the result timed apart for reference;
 *   4. push-to-durable delay through a real `gitstratum serve` (default settings: snapshot worker,
 *      maintenance and cache on): a push of one commit every second for a minute; for each push,
 *      from the client's acknowledgement (`git push` returned) to the commit of the snapshot row
 *      that contains it (its snapshot-end event), p50 and p99.
 *
 * 1–3 run in this process with the library the server uses (createSnapshot, restoreRepository,
 * the filesystem object store), each run on a fresh copy of the repository, `sync` before each
 * timed step so no step pays for another's writeback; the page cache stays warm for all.
 * Targets: snapshot size ≤ 1.1× the bundle; restore ≤ 1.5× the mirror clone; RPO p99 ≤ 10 s.
 *
 * Options (flags after `npm run bench:snapshots --`, or environment):
 *   --runs N        BENCH_RUNS            runs of 1–3 (default 3, at least 1)
 *   --size-mib N    BENCH_SNAPSHOT_MIB    repository size (default 100; smaller for a quick look)
 *   --pushes N      BENCH_PUSHES          pushes of 4, one a second (default 60)
 *   --keep          BENCH_KEEP=1          keep the run directory (.bench/run-snapshots-*)
 */
import { mkdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { ulid } from 'ulid';
import { openMetaStore } from '../src/meta/db.js';
import { createFsStore } from '../src/storage/fs-store.js';
import { createSnapshot } from '../src/snapshots/create.js';
import { restoreRepository } from '../src/snapshots/restore.js';
import { repositoryConfig } from '../src/repos/local-host.js';
import { startGitstratum } from './gitstratum-server.js';
import { run, runBench, startRun } from './processes.js';
import { addCommit, ensureRepo, mediumOfSize, type RepoInfo } from './repo-generator.js';
import { median, mib, percentile, spread, table } from './report.js';
import { scrapeMetrics, sumSeries } from './sides.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const MiB = 1024 * 1024;

interface Options {
  runs: number;
  sizeMib: number;
  pushes: number;
  keep: boolean;
  timeoutS: number;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const opts: Options = {
    runs: Number(env['BENCH_RUNS'] ?? 3),
    sizeMib: Number(env['BENCH_SNAPSHOT_MIB'] ?? 100),
    pushes: Number(env['BENCH_PUSHES'] ?? 60),
    keep: env['BENCH_KEEP'] === '1',
    timeoutS: Number(env['BENCH_TIMEOUT_S'] ?? 1800),
  };
  const int = (flag: string, value: string | undefined) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') opts.keep = true;
    else if (arg === '--runs') opts.runs = int(arg, argv[++i]);
    else if (arg === '--size-mib') opts.sizeMib = int(arg, argv[++i]);
    else if (arg === '--pushes') opts.pushes = int(arg, argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --runs N, --size-mib N, --pushes N, --keep)`);
  }
  for (const [name, v] of Object.entries({ runs: opts.runs, 'size-mib': opts.sizeMib, pushes: opts.pushes })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
  }
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

interface RunFigures {
  fullS: number;
  fullBytes: number;
  bundleS: number;
  bundleBytes: number;
  incrementalS: number;
  incrementalBytes: number;
  restoreS: number;
  fsckS: number;
  mirrorS: number;
  mirrorLocalS: number;
}

const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;

/** Steps 1–3 on a fresh copy of the repository. */
async function snapshotRun(info: RepoInfo, runDir: string, env: NodeJS.ProcessEnv, n: number): Promise<RunFigures> {
  await mkdir(runDir, { recursive: true });
  const repo = path.join(runDir, 'repo.git');
  await run('cp', ['-a', info.path, repo], { env });
  const meta = await openMetaStore({ dataDir: runDir });
  const store = createFsStore(path.join(runDir, 'objects'));
  const deps = { meta, store };
  const repositoryId = ulid();
  const git = (args: string[]) => run('git', args, { env, timeoutMs: 900_000 });
  try {
    await run('sync', []);
    let t = process.hrtime.bigint();
    const full = await createSnapshot(deps, { repositoryId, repoPath: repo, full: true });
    const fullS = seconds(t);

    await run('sync', []);
    const bundle = path.join(runDir, 'all.bundle');
    const bundleS = (await git(['--git-dir', repo, 'bundle', 'create', '-q', bundle, '--all'])).seconds;
    const bundleBytes = (await stat(bundle)).size;
    await rm(bundle);

    await addCommit(repo, env, 100 + n);
    await run('sync', []);
    t = process.hrtime.bigint();
    const incremental = await createSnapshot(deps, { repositoryId, repoPath: repo });
    const incrementalS = seconds(t);
    if (incremental.kind !== 'incremental') throw new Error('expected an incremental snapshot');

    await run('sync', []);
    const restored = path.join(runDir, 'restored.git');
    t = process.hrtime.bigint();
    await restoreRepository(deps, {
      repositoryId,
      defaultBranch: 'main',
      target: restored,
      scratchRoot: path.join(runDir, 'tmp'),
      config: repositoryConfig(),
    });
    const restoreS = seconds(t);
    // For reference: what a full `fsck --strict` costs on the restored repository (restore checks
    // objects with index-pack --strict and runs only a connectivity fsck).
    const fsckS = (await git(['--git-dir', restored, 'fsck', '--no-progress', '--strict'])).seconds;
    const same = (await git(['--git-dir', restored, 'rev-parse', 'refs/heads/main'])).stdout === (await git(['--git-dir', repo, 'rev-parse', 'refs/heads/main'])).stdout;
    if (!same) throw new Error('the restored repository differs from the original');

    await run('sync', []);
    const mirrorS = (await git(['clone', '-q', '--mirror', '--no-local', repo, path.join(runDir, 'mirror.git')])).seconds;
    await run('sync', []);
    const mirrorLocalS = (await git(['clone', '-q', '--mirror', repo, path.join(runDir, 'mirror-local.git')])).seconds;
    return {
      fullS,
      fullBytes: full.byteSize,
      bundleS,
      bundleBytes,
      incrementalS,
      incrementalBytes: incremental.byteSize,
      restoreS,
      fsckS,
      mirrorS,
      mirrorLocalS,
    };
  } finally {
    await meta.close();
    await rm(runDir, { recursive: true, force: true });
  }
}

/** Nearest-rank percentile. */
interface RpoFigures {
  /** Client acknowledgement → snapshot row, seconds, one per push. */
  delays: number[];
  /** Server's own view: push-end event → snapshot row. */
  serverDelays: number[];
  snapshots: number;
  pushSeconds: number[];
}

/** Step 4: a push every second through a real server, and when each became durable. */
async function pushToDurable(info: RepoInfo, workDir: string, env: NodeJS.ProcessEnv, pushes: number): Promise<RpoFigures> {
  const dataDir = path.join(workDir, 'gitstratum');
  await mkdir(dataDir, { recursive: true });
  say('starting gitstratum (default settings)');
  const gs = await startGitstratum(ROOT, dataDir, env);
  const repoDir = await gs.createRepo('rpo');
  const repositoryId = path.basename(repoDir, '.git');
  const url = `${gs.authUrl}/alice/bench/rpo.git`;
  const metricsUrl = `${gs.url}/metrics`;
  const client = path.join(workDir, 'client.git');
  await run('cp', ['-a', info.path, client], { env });
  const git = (args: string[]) => run('git', ['--git-dir', client, ...args], { env, timeoutMs: 600_000 });

  const persisted = async (timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (sumSeries(await scrapeMetrics(metricsUrl), 'gitstratum_snapshot_dirty_repositories') === 0) return;
      if (Date.now() > deadline) throw new Error(`still dirty after ${timeoutMs / 1000} s`);
      await sleep(200);
    }
  };
  say('pushing the repository and waiting for its full snapshot');
  await git(['push', '-q', url, 'refs/heads/*:refs/heads/*', 'refs/tags/*:refs/tags/*']);
  await sleep(1000);
  await persisted(600_000);

  say(`${pushes} pushes of one commit, one a second`);
  const acks: number[] = [];
  const pushSeconds: number[] = [];
  const t0 = Date.now();
  for (let k = 0; k < pushes; k++) {
    const due = t0 + k * 1000;
    if (Date.now() < due) await sleep(due - Date.now());
    await addCommit(client, env, 10_000 + k);
    const pushed = await git(['push', '-q', url, 'main']);
    acks.push(Date.now());
    pushSeconds.push(pushed.seconds);
  }
  await persisted(120_000);

  // The server's event log: pushes are sequential, so the k-th push-end after the seed push is
  // push k; a push is in the first snapshot whose begin event follows its push-end event.
  const meta = await openMetaStore({ dataDir });
  try {
    const events = await meta.db.selectFrom('events').selectAll().where('repository_id', '=', repositoryId).orderBy('id').execute();
    const rows = await meta.db.selectFrom('snapshots').select(['id', 'begin_event_id']).where('repository_id', '=', repositoryId).execute();
    const endAt = new Map<string, number>();
    for (const e of events) {
      const d = JSON.parse(e.details) as { snapshot?: string; ok?: boolean };
      if (e.kind === 'snapshot-end' && d.ok && d.snapshot) endAt.set(d.snapshot, Date.parse(e.at));
    }
    const snaps = rows.map((r) => ({ begin: Number(r.begin_event_id), at: endAt.get(r.id)! })).sort((a, b) => a.begin - b.begin);
    const pushEnds = events.filter((e) => e.kind === 'push-end').slice(-pushes);
    if (pushEnds.length !== pushes) throw new Error(`expected ${pushes} push-end events, found ${pushEnds.length}`);
    const delays: number[] = [];
    const serverDelays: number[] = [];
    for (const [k, e] of pushEnds.entries()) {
      const snap = snaps.find((s) => s.begin > Number(e.id));
      if (!snap) throw new Error(`push ${k} is in no snapshot`);
      delays.push((snap.at - acks[k]!) / 1000);
      serverDelays.push((snap.at - Date.parse(e.at)) / 1000);
    }
    const used = new Set(pushEnds.map((e) => snaps.find((s) => s.begin > Number(e.id))!.begin));
    return { delays, serverDelays, snapshots: used.size, pushSeconds };
  } finally {
    await meta.close();
    await gs.stop();
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const { workDir, env, finish } = await startRun(CACHE, 'run-snapshots', { keep: opts.keep, timeoutS: opts.timeoutS });
  const started = Date.now();

  try {
    const info = await ensureRepo(mediumOfSize(opts.sizeMib), CACHE, env, say);
    const loadBefore = os.loadavg()[0]!;
    const head = (await run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { env })).stdout.trim();
    const dirty = (await run('git', ['-C', ROOT, 'status', '--porcelain', '--untracked-files=no'], { env })).stdout.trim() !== '';

    const runs: RunFigures[] = [];
    for (let n = 0; n < opts.runs; n++) {
      say(`snapshot, bundle, restore and mirror clone: run ${n + 1} of ${opts.runs}`);
      runs.push(await snapshotRun(info, path.join(workDir, `run-${n}`), env, n));
    }
    const rpo = await pushToDurable(info, workDir, env, opts.pushes);

    const med = (pick: (r: RunFigures) => number) => median(runs.map(pick));
    const secs = (pick: (r: RunFigures) => number) => spread(runs.map(pick), 2);
    const sizes = (pick: (r: RunFigures) => number) => spread(runs.map(pick), 1, MiB);
    const verdict = (value: number, target: number) => `${value <= target ? 'met' : 'missed'}`;
    const sizeRatio = med((r) => r.fullBytes) / med((r) => r.bundleBytes);
    const restoreRatio = med((r) => r.restoreS) / med((r) => r.mirrorS);
    const p50 = percentile(rpo.delays, 50);
    const p99 = percentile(rpo.delays, 99);

    const out: string[] = [];
    out.push(
      `snapshots: gitstratum ${head}${dirty ? ' (with uncommitted changes)' : ''}; ${os.cpus().length} CPUs, load ${loadBefore.toFixed(2)} at start, ` +
        `${((Date.now() - started) / 60000).toFixed(1)} min`,
    );
    out.push(`  repository ${path.basename(info.path)}: ${mib(info.packBytes)} of pack, ${info.objects} objects, ${info.commits} commits`);
    out.push(`  steps 1–3: median [min–max] of ${opts.runs} run(s), filesystem object store, page cache warm, sync before each step`);
    out.push('');
    out.push(
      table([
        ['step', 'gitstratum', 'git', 'ratio'],
        ['full snapshot: time s', secs((r) => r.fullS), `bundle create --all: ${secs((r) => r.bundleS)}`, `${(med((r) => r.fullS) / med((r) => r.bundleS)).toFixed(2)}×`],
        ['full snapshot: size MiB', sizes((r) => r.fullBytes), `bundle: ${sizes((r) => r.bundleBytes)}`, `${sizeRatio.toFixed(3)}×`],
        ['incremental (1 commit): time s', secs((r) => r.incrementalS), '', ''],
        ['incremental: size KiB', spread(runs.map((r) => r.incrementalBytes), 1, 1024), '', ''],
        ['restore (full + incremental): time s', secs((r) => r.restoreS), `clone --mirror --no-local: ${secs((r) => r.mirrorS)}`, `${restoreRatio.toFixed(2)}×`],
        ['  (a full fsck --strict, not part of it) s', secs((r) => r.fsckS), `clone --mirror (hard links): ${secs((r) => r.mirrorLocalS)}`, ''],
      ]),
    );
    out.push('');
    out.push(
      `push-to-durable, ${opts.pushes} pushes of one commit a second through gitstratum serve (default settings), ${rpo.snapshots} snapshots:`,
    );
    out.push(
      `  client ack → snapshot row: p50 ${p50.toFixed(2)} s, p99 ${p99.toFixed(2)} s, max ${Math.max(...rpo.delays).toFixed(2)} s; ` +
        `push-end event → row: p50 ${percentile(rpo.serverDelays, 50).toFixed(2)} s, p99 ${percentile(rpo.serverDelays, 99).toFixed(2)} s; ` +
        `git push itself: median ${median(rpo.pushSeconds).toFixed(2)} s`,
    );
    out.push('');
    out.push('targets');
    out.push(
      table([
        ['target', 'measured', 'verdict'],
        ['snapshot size ≤ 1.1× bundle', `${sizeRatio.toFixed(3)}×`, verdict(sizeRatio, 1.1)],
        ['restore ≤ 1.5× clone --mirror --no-local', `${restoreRatio.toFixed(2)}×`, verdict(restoreRatio, 1.5)],
        ['push-to-durable p99 ≤ 10 s', `${p99.toFixed(2)} s`, verdict(p99, 10)],
      ]),
    );
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await finish();
  }
}

runBench(main);
