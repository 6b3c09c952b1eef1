/**
 * Snapshot create and restore with the real git against a filesystem store and SQLite: a full
 * then incremental snapshots, an empty incremental for a delete and a rewind, restore of the
 * latest and of an older snapshot, and the dirty bookkeeping around them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { now, type MetaStore } from '../meta/db.js';
import type { Core } from '../core.js';
import { systemActor } from '../access/policy.js';
import * as snapshots from '../meta/snapshots.js';
import { createFsStore } from '../storage/fs-store.js';
import { createSnapshot, readRefs } from './create.js';
import { restoreRepository } from './restore.js';
import { gitEnv } from '../../test/e2e/harness.js';
import { coreWithAlice, onDisk } from '../../test/support/core.js';

const exec = promisify(execFile);
let dir: string;
let meta: MetaStore;
let core: Core;
let home: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-snap-'));
  home = path.join(dir, 'home');
  core = await coreWithAlice(dir);
  meta = core.meta;
});
after(async () => {
  await core.close();
  await rm(dir, { recursive: true, force: true });
});

async function git(args: string[], cwd?: string): Promise<string> {
  return (await exec('git', args, { cwd, env: gitEnv(home), maxBuffer: 1 << 26 })).stdout;
}

async function commit(work: string, n: number, tag: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    await writeFile(path.join(work, `f-${i % 3}.txt`), `${tag} ${i} ${'x'.repeat(200)} ${Math.random()}\n`);
    await git(['add', '-A'], work);
    await git(['commit', '-q', '-m', `${tag} ${i}`], work);
  }
}

async function refsOf(repo: string) {
  return (await readRefs(repo)).sort((a, b) => a.name.localeCompare(b.name));
}

test('full then incremental snapshots restore exactly, latest and older, with deletes and rewinds', async () => {
  const store = createFsStore(path.join(dir, 'objects'));
  const created = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/snap'));
  const repoId = created.id;
  const bare = created.path;
  const work = path.join(dir, 'work');
  await git(['init', '-q', '-b', 'main', work]);
  await commit(work, 3, 'one');
  await git(['push', '-q', bare, 'main', 'main:refs/heads/old'], work);
  await snapshots.appendEvent(meta.db, repoId, 'push-end', now());
  assert.deepEqual((await snapshots.dirtyRepositories(meta.db)).map((d) => d.repositoryId), [repoId]);

  const first = await createSnapshot({ meta, store }, { repositoryId: repoId, repoPath: bare });
  assert.equal(first.kind, 'full');
  assert.ok(first.objectCount >= 9, `objects: ${first.objectCount}`);
  assert.deepEqual(await snapshots.dirtyRepositories(meta.db), []);
  const firstRefs = await refsOf(bare);

  await commit(work, 2, 'two');
  await git(['tag', '-a', '-m', 'v1', 'v1'], work);
  await git(['push', '-q', bare, 'main', 'v1', 'main:refs/heads/feature'], work);
  await snapshots.appendEvent(meta.db, repoId, 'push-end', now());
  const second = await createSnapshot({ meta, store }, { repositoryId: repoId, repoPath: bare });
  assert.equal(second.kind, 'incremental');
  assert.deepEqual(second.parents, [first.id]);
  assert.equal(second.objectCount, 2 * 3 + 1, 'two commits, their trees and blobs, and the tag');

  // A delete and a rewind: no new objects, new refs.
  const mainBefore = (await git(['rev-parse', 'main~3'], work)).trim();
  await git(['push', '-q', '--force', bare, `${mainBefore}:refs/heads/main`, ':refs/heads/old'], work);
  await snapshots.appendEvent(meta.db, repoId, 'push-end', now());
  const third = await createSnapshot({ meta, store }, { repositoryId: repoId, repoPath: bare });
  assert.equal(third.objectCount, 0);
  const latestRefs = await refsOf(bare);
  assert.ok(!latestRefs.some((r) => r.name === 'refs/heads/old'));

  await rm(bare, { recursive: true, force: true });
  const config = [['core.logAllRefUpdates', 'true']] as const;
  const restored = await restoreRepository({ meta, store }, { repositoryId: repoId, defaultBranch: 'main', target: bare, scratchRoot: path.join(dir, 'tmp'), config });
  assert.deepEqual(restored.chain, [first.id, second.id, third.id]);
  assert.deepEqual(await refsOf(bare), latestRefs);
  assert.equal(restored.unpersistedPushes.length, 0);
  await git(['--git-dir', bare, 'fsck', '--strict', '--no-progress']);
  // Three packs installed, one left: repacked with a bitmap for the clones to come.
  const packs = await readdir(path.join(bare, 'objects', 'pack'));
  assert.equal(packs.filter((f) => f.endsWith('.pack')).length, 1, packs.join(' '));
  assert.equal(packs.filter((f) => f.endsWith('.bitmap')).length, 1, packs.join(' '));

  const older = path.join(dir, 'older.git');
  const atFirst = await restoreRepository({ meta, store }, { repositoryId: repoId, defaultBranch: 'main', target: older, scratchRoot: dir, config, at: first.id });
  assert.deepEqual(atFirst.chain, [first.id]);
  assert.deepEqual(await refsOf(older), firstRefs);

  // An acknowledged push after the last snapshot is reported as not persisted.
  await snapshots.appendEvent(meta.db, repoId, 'push-end', now(), { refs: ['refs/heads/main'] });
  const again = await restoreRepository({ meta, store }, { repositoryId: repoId, defaultBranch: 'main', target: path.join(dir, 'again.git'), scratchRoot: dir, config });
  assert.equal(again.unpersistedPushes.length, 1);
  await assert.rejects(
    restoreRepository({ meta, store }, { repositoryId: repoId, defaultBranch: 'main', target: bare, scratchRoot: dir, config }),
    { code: 'restore_target_exists' },
  );
});
