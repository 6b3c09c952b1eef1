/**
 * Dirty tracking counts what git did (issue 16): a push-begin without its push-end makes a
 * repository dirty, and at start a repository whose live refs moved past its latest snapshot
 * with nothing in the event log is marked dirty.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { now } from '../meta/db.js';
import * as snapshots from '../meta/snapshots.js';
import { systemActor } from '../access/policy.js';
import { createFsStore } from '../storage/fs-store.js';
import { gitEnv } from '../../test/e2e/harness.js';
import { coreWithAlice, onDisk } from '../../test/support/core.js';
import { createSnapshot } from './create.js';
import { closeCutOffPushes, markChangedRepositoriesDirty } from './reconcile.js';

const exec = promisify(execFile);

test('regression (issue 16): a push that began and moved the refs is dirty without its push-end; refs changed behind the log are marked at start', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-reconcile-'));
  const core = await coreWithAlice(dir);
  try {
    const store = createFsStore(path.join(dir, 'objects'));
    const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/r'));
    const untouched = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/empty'));
    const env = gitEnv(dir);
    const work = path.join(dir, 'work');
    const commitAndPush = async (n: number) => {
      await writeFile(path.join(work, 'a.txt'), `change ${n}\n`);
      await exec('git', ['add', '-A'], { cwd: work, env });
      await exec('git', ['commit', '-q', '-m', `change ${n}`], { cwd: work, env });
      await exec('git', ['push', '-q', repo.path, 'main'], { cwd: work, env });
    };
    const dirty = async () => (await snapshots.dirtyRepositories(core.meta.db)).map((d) => d.repositoryId);
    const all = async () => [repo, untouched].map((r) => ({ id: r.id, path: r.path }));
    await exec('git', ['init', '-q', '-b', 'main', work], { env });

    // Refs and no snapshot, nothing in the log (a repository pushed while no server recorded it).
    await commitAndPush(1);
    assert.deepEqual(await dirty(), []);
    assert.deepEqual(await markChangedRepositoriesDirty({ meta: core.meta, repositories: all }), [repo.id]);
    assert.deepEqual(await dirty(), [repo.id]);
    await createSnapshot({ meta: core.meta, store }, { repositoryId: repo.id, repoPath: repo.path });
    assert.deepEqual(await dirty(), []);
    assert.deepEqual(await markChangedRepositoriesDirty({ meta: core.meta, repositories: all }), [], 'refs equal the latest snapshot');

    // The server died after git committed the refs, before post-receive wrote push-end.
    await snapshots.appendEvent(core.meta.db, repo.id, 'push-begin', now());
    await commitAndPush(2);
    assert.deepEqual(await dirty(), [repo.id]);
    assert.equal(await snapshots.isDirty(core.meta.db, repo.id), true);
    await createSnapshot({ meta: core.meta, store }, { repositoryId: repo.id, repoPath: repo.path });
    assert.deepEqual(await dirty(), []);

    // git ran on the disk with no server to record it: no event at all.
    await commitAndPush(3);
    assert.deepEqual(await dirty(), []);
    assert.deepEqual(await markChangedRepositoriesDirty({ meta: core.meta, repositories: all }), [repo.id]);
    assert.deepEqual(await dirty(), [repo.id]);
    assert.deepEqual(await markChangedRepositoriesDirty({ meta: core.meta, repositories: all }), [], 'already dirty: no second mark');
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('regression (issue 16): a push left open by a dead server is marked cut off at the next start, and only then', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-reconcile-'));
  const core = await coreWithAlice(dir);
  try {
    const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/r'));
    const other = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/ended'));
    const mine = async () => [repo, other].map((r) => ({ id: r.id, path: r.path }));
    await snapshots.appendEvent(core.meta.db, repo.id, 'push-begin', now());
    await snapshots.appendEvent(core.meta.db, other.id, 'push-begin', now());
    await snapshots.appendEvent(core.meta.db, other.id, 'push-end', now());
    const open = async () => (await snapshots.dirtyRepositories(core.meta.db)).filter((d) => d.openPushSince).map((d) => d.repositoryId);
    assert.deepEqual(await open(), [repo.id]);
    assert.deepEqual(await closeCutOffPushes({ meta: core.meta, repositories: async () => [] }), [], 'not this server\'s repository');
    assert.deepEqual(await closeCutOffPushes({ meta: core.meta, repositories: mine }), [repo.id]);
    assert.deepEqual(await open(), []);
    assert.deepEqual((await snapshots.dirtyRepositories(core.meta.db)).map((d) => d.repositoryId).sort(), [repo.id, other.id].sort(), 'both still to be persisted');
    assert.deepEqual(await closeCutOffPushes({ meta: core.meta, repositories: mine }), []);
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("a storage node's snapshot worker sees only its own shard's dirty repositories", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-reconcile-'));
  const core = await coreWithAlice(dir);
  try {
    const here = await core.repos.createRepo(systemActor, 'alice/main/here');
    const there = await core.repos.createRepo(systemActor, 'alice/main/there');
    await core.meta.db.updateTable('repositories').set({ shard: 'eu-2' }).where('id', '=', there.id).execute();
    for (const r of [here, there]) await snapshots.appendEvent(core.meta.db, r.id, 'push-end', now());
    const ids = async (shard?: string) => (await snapshots.dirtyRepositories(core.meta.db, { shard })).map((d) => d.repositoryId).sort();
    assert.deepEqual(await ids(), [here.id, there.id].sort());
    assert.deepEqual(await ids(here.shard), [here.id]);
    assert.deepEqual(await ids('eu-2'), [there.id]);
  } finally {
    await core.close();
    await rm(dir, { recursive: true, force: true });
  }
});
