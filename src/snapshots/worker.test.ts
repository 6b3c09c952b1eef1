/**
 * The snapshot worker against a store that is down for its first puts: the repository stays
 * dirty with no snapshot row while puts fail, the worker retries with backoff, and once the
 * store is back the push is persisted and the repository is clean. Also: stopped mid-upload,
 * compaction, leases held elsewhere, open pushes, and an idle worker woken by a change feed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { now, openMetaStore } from '../meta/db.js';
import { changeFeed } from '../meta/changes.js';
import * as snapshots from '../meta/snapshots.js';
import { systemActor } from '../access/policy.js';
import { createFsStore } from '../storage/fs-store.js';
import { faulty } from '../storage/faulty-store.js';
import type { ObjectStore } from '../storage/object-store.js';
import { randomBytes } from 'node:crypto';
import { Transform } from 'node:stream';
import { createSnapshotMetrics, SnapshotWorker } from './worker.js';
import { acquireLease } from '../meta/leases.js';
import { gitEnv } from '../../test/e2e/harness.js';
import { coreWithAlice, onDisk } from '../../test/support/core.js';
import { repoDir } from '../repos/local-host.js';

const exec = promisify(execFile);

/** Waits for `done`, rechecking every 25 ms; fails only if it is still false after `boundMs`. */
async function until(what: string, done: () => boolean | Promise<boolean>, boundMs = 60_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!(await done())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** One commit of `file` holding `content`, pushed into the bare repository at `repoPath`. */
async function pushCommit(dir: string, repoPath: string, file: string, content: Buffer | string): Promise<void> {
  const env = gitEnv(dir);
  const work = path.join(dir, 'work');
  await exec('git', ['init', '-q', '-b', 'main', work], { env });
  await writeFile(path.join(work, file), content);
  await exec('git', ['add', '-A'], { cwd: work, env });
  await exec('git', ['commit', '-q', '-m', 'one'], { cwd: work, env });
  await exec('git', ['push', '-q', repoPath, 'main'], { cwd: work, env });
}

async function setup(dir: string, content: Buffer | string) {
  const core = await coreWithAlice(dir);
  const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/r'));
  await pushCommit(dir, repo.path, 'a.bin', content);
  await snapshots.appendEvent(core.meta.db, repo.id, 'push-end', now());
  return { core, repo };
}

test('a worker stopped in the middle of an upload leaves no object, no snapshot row, and the repository dirty', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-worker-'));
  const { core, repo } = await setup(dir, randomBytes(4 * 1024 * 1024));
  try {
    const inner = createFsStore(path.join(dir, 'objects'));
    let streamed = 0;
    // The upload crawls: 64 KiB every 20 ms.
    const slow: ObjectStore = {
      ...inner,
      put(key, body, opts) {
        const crawl = new Transform({
          highWaterMark: 64 * 1024,
          transform(chunk: Buffer, _enc, done) {
            streamed += chunk.length;
            setTimeout(() => done(null, chunk), 20);
          },
        });
        body.on('error', (err) => crawl.destroy(err));
        return inner.put(key, body.pipe(crawl), opts);
      },
    };
    const worker = new SnapshotWorker(
      { debounceMs: 0, maxDelayMs: 10_000, concurrency: 1, retryMaxMs: 1000, pollMs: 50 },
      { meta: core.meta, store: slow, repoPath: (id) => repoDir(core.dataDir, id), log: pino({ level: 'silent' }) },
    );
    worker.start();
    await until('the upload to start', () => streamed >= 256 * 1024);
    await worker.close();
    assert.deepEqual(await snapshots.listSnapshots(core.meta.db, repo.id), []);
    assert.deepEqual((await snapshots.dirtyRepositories(core.meta.db)).map((d) => d.repositoryId), [repo.id]);
    const objects = [];
    for await (const o of inner.list('snapshots/')) objects.push(o);
    assert.deepEqual(objects, []);
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a store outage is retried with backoff; the push is persisted once the store is back', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-worker-'));
  const core = await coreWithAlice(dir);
  try {
    const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/r'));
    await pushCommit(dir, repo.path, 'a.txt', 'hello\n');
    await snapshots.appendEvent(core.meta.db, repo.id, 'push-end', now());

    const store = faulty(createFsStore(path.join(dir, 'objects')), { failPuts: 3 });
    const registry = new Registry();
    const metrics = createSnapshotMetrics(registry, () => snapshots.dirtyRepositories(core.meta.db));
    const worker = new SnapshotWorker(
      { debounceMs: 0, maxDelayMs: 10_000, concurrency: 1, retryMaxMs: 150, pollMs: 50 },
      { meta: core.meta, store, repoPath: (id) => repoDir(core.dataDir, id), log: pino({ level: 'silent' }), metrics },
    );
    assert.match(await registry.metrics(), /gitstratum_snapshot_dirty_repositories 1\n/);
    worker.start();
    try {
      await until('a snapshot after the outage ended', async () => (await snapshots.listSnapshots(core.meta.db, repo.id)).length > 0);
    } finally {
      await worker.close();
    }
    const failed = await core.meta.db.selectFrom('events').select('details').where('repository_id', '=', repo.id).where('kind', '=', 'snapshot-end').execute();
    const outcomes = failed.map((e) => (JSON.parse(e.details) as { ok: boolean }).ok);
    assert.deepEqual(outcomes, [false, false, false, true], 'three failed attempts, then one that wrote');
    const [snap] = await snapshots.listSnapshots(core.meta.db, repo.id);
    assert.equal(snap!.kind, 'full');
    assert.equal(snap!.objectCount, 3);
    assert.deepEqual(await snapshots.dirtyRepositories(core.meta.db), []);
    const text = await registry.metrics();
    assert.match(text, /gitstratum_snapshots_total\{result="failed"\} 3/);
    assert.match(text, /gitstratum_snapshot_oldest_unpersisted_push_seconds 0\n/);
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('after a snapshot, a chain grown past snapshotChainMaxLength is compacted into one full snapshot', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-worker-'));
  const { core, repo } = await setup(dir, 'one\n');
  try {
    const env = gitEnv(dir);
    const work = path.join(dir, 'work');
    const registry = new Registry();
    const metrics = createSnapshotMetrics(registry, () => snapshots.dirtyRepositories(core.meta.db));
    const worker = new SnapshotWorker(
      {
        debounceMs: 0,
        maxDelayMs: 10_000,
        concurrency: 1,
        retryMaxMs: 1000,
        pollMs: 50,
        compaction: { maxChainLength: 2, maxSizeRatio: 0, scratchRoot: path.join(dir, 'data', 'tmp') },
      },
      { meta: core.meta, store: createFsStore(path.join(dir, 'objects')), repoPath: (id) => repoDir(core.dataDir, id), log: pino({ level: 'silent' }), metrics },
    );
    worker.start();
    const kinds = async () => (await snapshots.listSnapshots(core.meta.db, repo.id)).map((s) => s.kind);
    try {
      await until('first snapshot', async () => (await kinds()).length === 1);
      for (const n of [2, 3]) {
        await writeFile(path.join(work, 'a.bin'), `change ${n}\n`);
        await exec('git', ['commit', '-q', '-am', `change ${n}`], { cwd: work, env });
        await exec('git', ['push', '-q', repo.path, 'main'], { cwd: work, env });
        await snapshots.appendEvent(core.meta.db, repo.id, 'push-end', now());
        if (n === 2) await until('second snapshot', async () => (await kinds()).length === 2);
      }
      // The third snapshot makes a chain of 3 > 2: compacted into one full.
      await until('compaction', async () => /gitstratum_snapshot_compactions_total\{result="ok"\} 1/.test(await registry.metrics()));
    } finally {
      await worker.close();
    }
    assert.deepEqual(await kinds(), ['full']);
    assert.deepEqual(await snapshots.dirtyRepositories(core.meta.db), []);
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/** Two dirty repositories, `leased` and `free`, each with one pushed commit. */
async function twoDirty(dir: string) {
  const core = await coreWithAlice(dir);
  const env = gitEnv(dir);
  const work = path.join(dir, 'work');
  await exec('git', ['init', '-q', '-b', 'main', work], { env });
  await writeFile(path.join(work, 'a.txt'), 'hello\n');
  await exec('git', ['add', '-A'], { cwd: work, env });
  await exec('git', ['commit', '-q', '-m', 'one'], { cwd: work, env });
  const ids: string[] = [];
  for (const name of ['leased', 'free']) {
    const repo = onDisk(core, await core.repos.createRepo(systemActor, `alice/main/${name}`));
    await exec('git', ['push', '-q', repo.path, 'main'], { cwd: work, env });
    await snapshots.appendEvent(core.meta.db, repo.id, 'push-end', now());
    ids.push(repo.id);
  }
  return { core, leased: ids[0]!, free: ids[1]! };
}

/** A logger that records the messages it is given (pino calls write() with one JSON line). */
function recordingLog(lines: { msg: string }[]) {
  return pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line) as { msg: string }) });
}

test('regression (issue 16): a repository leased by another holder is retried with backoff, not in a loop, and the others are snapshotted', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-worker-'));
  const { core, leased, free } = await twoDirty(dir);
  try {
    assert.equal(await acquireLease(core.meta.db, core.meta.dialect, leased, 'elsewhere/1/x', 60_000), true);
    const lines: { msg: string }[] = [];
    const worker = new SnapshotWorker(
      { debounceMs: 0, maxDelayMs: 10_000, concurrency: 1, retryMaxMs: 1000, pollMs: 20 },
      { meta: core.meta, store: createFsStore(path.join(dir, 'objects')), repoPath: (id) => repoDir(core.dataDir, id), log: recordingLog(lines) },
    );
    worker.start();
    try {
      await until('the free repository to be snapshotted', async () => (await snapshots.listSnapshots(core.meta.db, free)).length > 0);
      // Let the worker poll (every 20 ms) for a second and a half more: a loop would try the
      // leased repository dozens of times; the backoff (1 s, then 2 s) allows two attempts.
      await sleep(1500);
    } finally {
      await worker.close();
    }
    const attempts = lines.filter((l) => l.msg === 'snapshot lease held elsewhere; retrying later').length;
    assert.ok(attempts >= 1 && attempts <= 3, `lease attempts on the leased repository: ${attempts}`);
    assert.deepEqual(await snapshots.listSnapshots(core.meta.db, leased), []);
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('regression (issue 16): a worker releases at start the leases its killed predecessor on the same node held', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-worker-'));
  const { core, leased } = await twoDirty(dir);
  try {
    // A predecessor on this node (its pid, 2^22 + 1, is above Linux's pid_max: not running).
    assert.equal(await acquireLease(core.meta.db, core.meta.dialect, leased, `node-a/${2 ** 22 + 1}/dead`, 60_000), true);
    const worker = new SnapshotWorker(
      { debounceMs: 0, maxDelayMs: 10_000, concurrency: 1, retryMaxMs: 1000, pollMs: 20, node: 'node-a' },
      { meta: core.meta, store: createFsStore(path.join(dir, 'objects')), repoPath: (id) => repoDir(core.dataDir, id), log: pino({ level: 'silent' }) },
    );
    worker.start();
    try {
      // Inside the 60 s the dead holder's lease would otherwise have blocked it.
      await until('the repository leased by the dead predecessor to be snapshotted', async () => (await snapshots.listSnapshots(core.meta.db, leased)).length > 0, 45_000);
    } finally {
      await worker.close();
    }
    assert.ok(worker.holder.startsWith('node-a/'));
    assert.equal(await snapshots.isDirty(core.meta.db, leased), false);
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a push still being received is not snapshotted until it ends: one push, one snapshot', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-worker-'));
  const { core, repo } = await setup(dir, 'first\n');
  try {
    const store = createFsStore(path.join(dir, 'objects'));
    const worker = new SnapshotWorker(
      // maxDelay 0: any acknowledged push would be taken at the first poll.
      { debounceMs: 0, maxDelayMs: 0, concurrency: 1, retryMaxMs: 1000, pollMs: 20, openPushGraceMs: 3_600_000 },
      { meta: core.meta, store, repoPath: (id) => repoDir(core.dataDir, id), log: pino({ level: 'silent' }) },
    );
    worker.start();
    const snapshotCount = async () => (await snapshots.listSnapshots(core.meta.db, repo.id)).length;
    await until('the first push was snapshotted', async () => (await snapshotCount()) === 1);

    // A second push begins: git is receiving it.
    await snapshots.appendEvent(core.meta.db, repo.id, 'push-begin', now());
    assert.ok((await snapshots.dirtyRepositories(core.meta.db))[0]?.openPushSince, 'the push is seen as in flight');
    // Many polls later, still no snapshot of the half-received push.
    const polled = Date.now() + 1000;
    while (Date.now() < polled) {
      assert.equal(await snapshotCount(), 1);
      await sleep(50);
    }
    await snapshots.appendEvent(core.meta.db, repo.id, 'push-end', now());
    worker.notify(repo.id);
    await until('the ended push was snapshotted', async () => (await snapshotCount()) === 2 && !(await snapshots.isDirty(core.meta.db, repo.id)));
    await worker.close();
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('an idle worker with a change feed sleeps, and snapshots a push recorded by another process', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-worker-'));
  const core = await coreWithAlice(dir);
  // The CLI, or `serve` beside a `gitstratum worker`: a handle of its own on the database.
  const other = await openMetaStore({ dataDir: core.dataDir });
  const feed = changeFeed(core.meta, pino({ level: 'silent' }))!;
  try {
    const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/r'));
    const worker = new SnapshotWorker(
      // Idle, it would read the dirty list again only after ten minutes.
      { debounceMs: 0, maxDelayMs: 10_000, concurrency: 1, retryMaxMs: 1000, pollMs: 50, idlePollMs: 600_000 },
      { meta: core.meta, store: createFsStore(path.join(dir, 'objects')), repoPath: (id) => repoDir(core.dataDir, id), log: pino({ level: 'silent' }), changes: feed },
    );
    worker.start();
    try {
      await sleep(500);
      await pushCommit(dir, repo.path, 'a.txt', 'hello\n');
      await snapshots.appendEvent(other.db, repo.id, 'push-end', now());
      // Asleep for ten minutes unless the feed wakes it: a generous bound still tells the two apart.
      await until('the push to be snapshotted (the worker slept through it)', async () => (await snapshots.listSnapshots(core.meta.db, repo.id)).length > 0, 120_000);
    } finally {
      await worker.close();
    }
    assert.deepEqual(await snapshots.dirtyRepositories(core.meta.db), []);
  } finally {
    await feed.close();
    await other.close();
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});
