/**
 * Compaction with the real git against a filesystem store, on each metadata database: a chain
 * compacted at an older snapshot and then at the latest restores exactly the same refs (fsck
 * clean) from a shorter chain, the replaced objects are gone and dirty tracking is untouched;
 * a fork's parent snapshot survives compaction of its source (and the fork restores), or is
 * re-pointed to the new full when it was the compacted one; old orphan objects are swept, young
 * ones left; and the triggers of the worker.
 */
import { test, after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { ulid } from 'ulid';
import { now } from '../meta/db.js';
import type { Core } from '../core.js';
import { systemActor } from '../access/policy.js';
import * as snapshots from '../meta/snapshots.js';
import { createFsStore } from '../storage/fs-store.js';
import { objectKey, type ObjectStore } from '../storage/object-store.js';
import { databaseBackends, freshDatabaseUrl, gitEnv } from '../../test/e2e/harness.js';
import { createSnapshot, readRefs } from './create.js';
import { compactionDue, compactRepository } from './compact.js';
import { restoreRepository } from './restore.js';
import { snapshotKey } from './format.js';
import { coreWithAlice, onDisk } from '../../test/support/core.js';

const exec = promisify(execFile);

test('compactionDue: by chain length, by the incrementals’ size against the full’s above a floor, never for a lone full', () => {
  const snap = (kind: 'full' | 'incremental', byteSize: number) => ({ kind, byteSize }) as snapshots.SnapshotRow;
  const limits = { maxChainLength: 3, maxSizeRatio: 1 };
  assert.equal(compactionDue([snap('full', 100)], limits), false);
  assert.equal(compactionDue([snap('full', 100), snap('incremental', 60), snap('incremental', 30)], limits), false);
  assert.equal(compactionDue([snap('full', 100), snap('incremental', 60), snap('incremental', 50)], limits), true);
  assert.equal(compactionDue([snap('full', 100), snap('incremental', 1), snap('incremental', 1), snap('incremental', 1)], limits), true);
  assert.equal(compactionDue([snap('full', 100), snap('incremental', 1), snap('incremental', 1), snap('incremental', 1)], { maxChainLength: 0, maxSizeRatio: 0 }), false);
  assert.equal(compactionDue([snap('full', 100), snap('incremental', 150)], { ...limits, minBytes: 200 }), false, 'under the floor: by length only');
  assert.equal(compactionDue([snap('full', 100), snap('incremental', 250)], { ...limits, minBytes: 200 }), true);
});

for (const database of databaseBackends()) {
  describe(`compaction on ${database}`, () => {
    let dir: string;
    let core: Core;
    let store: ObjectStore;

    before(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-compact-'));
      core = await coreWithAlice(dir, database === 'postgres' ? await freshDatabaseUrl() : undefined);
      store = createFsStore(path.join(dir, 'objects'));
    });
    after(async () => {
      await core.close();
      await rm(dir, { recursive: true, force: true });
    });

    async function git(args: string[], cwd?: string): Promise<string> {
      const env = gitEnv(dir);
      return (await exec('git', args, { cwd, env, maxBuffer: 1 << 26 })).stdout;
    }

    async function commit(work: string, n: number, tag: string): Promise<void> {
      for (let i = 0; i < n; i++) {
        await writeFile(path.join(work, `f-${i % 3}.txt`), `${tag} ${i} ${'x'.repeat(300)} ${Math.random()}\n`);
        await git(['add', '-A'], work);
        await git(['commit', '-q', '-m', `${tag} ${i}`], work);
      }
    }

    /** Pushes `refspecs` from `work` to the repository and snapshots it, as a push and the worker would. */
    async function pushAndSnapshot(repo: { id: string; path: string }, work: string, refspecs: string[]) {
      await git(['push', '-q', '--force', repo.path, ...refspecs], work);
      await snapshots.appendEvent(core.meta.db, repo.id, 'push-end', now());
      return createSnapshot({ meta: core.meta, store }, { repositoryId: repo.id, repoPath: repo.path });
    }

    const refsOf = async (repo: string) => (await readRefs(repo)).sort((a, b) => a.name.localeCompare(b.name));
    const stored = async (key: string) => (await store.head(objectKey(key))) !== undefined;
    const compact = (repositoryId: string, at?: string) => compactRepository({ meta: core.meta, store, scratchRoot: path.join(dir, 'data', 'tmp') }, { repositoryId, at });

    async function restoreInto(repositoryId: string, name: string) {
      const target = path.join(dir, name);
      const result = await restoreRepository({ meta: core.meta, store }, { repositoryId, defaultBranch: 'main', target, scratchRoot: dir, config: [] });
      await git(['--git-dir', target, 'fsck', '--strict', '--no-progress']);
      return { target, result };
    }

    test('compaction at an older snapshot, then at the latest: the same refs restore from a shorter chain', async () => {
      const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/chain'));
      const work = path.join(dir, 'work-chain');
      await git(['init', '-q', '-b', 'main', work]);
      await commit(work, 3, 'a');
      const s1 = await pushAndSnapshot(repo, work, ['main', 'main:refs/heads/old']);
      await commit(work, 2, 'b');
      await git(['tag', '-a', '-m', 'v1', 'v1'], work);
      const s2 = await pushAndSnapshot(repo, work, ['main', 'v1']);
      const s3 = await pushAndSnapshot(repo, work, ['main~4:refs/heads/main', ':refs/heads/old']);
      await commit(work, 1, 'c');
      const s4 = await pushAndSnapshot(repo, work, ['HEAD:refs/heads/next']);
      const live = await refsOf(repo.path);

      const atS2 = await compact(repo.id, s2.id);
      assert.equal(atS2.full.kind, 'full');
      assert.equal(atS2.full.refsDigest, s2.refsDigest);
      assert.equal(atS2.full.beginEventId, s2.beginEventId);
      assert.equal(atS2.repointed, 1, 's3 now stands on the full');
      assert.deepEqual(atS2.deleted.sort(), [s1.id, s2.id].sort());
      assert.equal(await stored(s1.objectKey), false);
      assert.equal(await stored(s2.objectKey), false);
      assert.deepEqual((await snapshots.listSnapshots(core.meta.db, repo.id)).map((s) => s.id), [atS2.full.id, s3.id, s4.id]);
      const mid = await restoreInto(repo.id, 'chain-mid.git');
      assert.deepEqual(mid.result.chain, [atS2.full.id, s3.id, s4.id]);
      assert.deepEqual(await refsOf(mid.target), live);
      // Restoring the full gives s2's refs: `--at` on the compacted point still works.
      const older = await restoreRepository({ meta: core.meta, store }, { repositoryId: repo.id, defaultBranch: 'main', target: path.join(dir, 'chain-s2.git'), scratchRoot: dir, config: [], at: atS2.full.id });
      assert.equal(older.snapshot!.refsDigest, s2.refsDigest);

      const latest = await compact(repo.id);
      assert.deepEqual(latest.deleted.sort(), [atS2.full.id, s3.id, s4.id].sort());
      const [only, ...rest] = await snapshots.listSnapshots(core.meta.db, repo.id);
      assert.deepEqual(rest, []);
      assert.equal(only!.id, latest.full.id);
      const restored = await restoreInto(repo.id, 'chain-latest.git');
      assert.deepEqual(restored.result.chain, [latest.full.id]);
      assert.deepEqual(await refsOf(restored.target), live);
      assert.deepEqual(restored.result.unpersistedPushes, [], 'the full keeps s4’s begin event');
      assert.deepEqual(await snapshots.dirtyRepositories(core.meta.db), []);

      // A push after compaction: the next incremental stands on the full.
      await commit(work, 1, 'd');
      const s5 = await pushAndSnapshot(repo, work, ['HEAD:refs/heads/next']);
      assert.deepEqual(s5.parents, [latest.full.id]);
    });

    test('a fork’s parent snapshot survives compaction of its source; a compacted parent is re-pointed; the fork restores', async () => {
      const source = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/source'));
      const work = path.join(dir, 'work-fork');
      await git(['init', '-q', '-b', 'main', work]);
      await commit(work, 3, 'a');
      const s1 = await pushAndSnapshot(source, work, ['main']);
      await commit(work, 2, 'b');
      const s2 = await pushAndSnapshot(source, work, ['main']);

      const fork = onDisk(core, await core.repos.forkRepo(systemActor, 'alice/main/source', 'alice/main/fork'));
      const f1 = await createSnapshot({ meta: core.meta, store }, { repositoryId: fork.id, repoPath: fork.path });
      assert.equal(f1.kind, 'incremental');
      assert.deepEqual(f1.parents, [s2.id]);
      const forkWork = path.join(dir, 'work-fork-2');
      await git(['clone', '-q', fork.path, forkWork]);
      await commit(forkWork, 1, 'f');
      const f2 = await pushAndSnapshot(fork, forkWork, ['main:refs/heads/topic']);
      const forkRefs = await refsOf(fork.path);

      await commit(work, 2, 'c');
      const s3 = await pushAndSnapshot(source, work, ['main']);
      await commit(work, 1, 'd');
      const s4 = await pushAndSnapshot(source, work, ['main']);

      const first = await compact(source.id);
      assert.deepEqual(first.kept.sort(), [s1.id, s2.id].sort(), 'the fork stands on s2, s2 on s1');
      assert.deepEqual(first.deleted.sort(), [s3.id, s4.id].sort());
      assert.equal(await stored(s2.objectKey), true);
      assert.equal(await stored(s4.objectKey), false);
      await rm(fork.path, { recursive: true, force: true });
      const restored = await restoreInto(fork.id, 'fork-1.git');
      assert.deepEqual(restored.result.chain, [s1.id, s2.id, f1.id, f2.id]);
      assert.deepEqual(await refsOf(restored.target), forkRefs);

      // Compacting the source at s2 itself: the fork's snapshot is re-pointed to the new full.
      const second = await compact(source.id, s2.id);
      assert.equal(second.repointed, 1);
      assert.deepEqual(second.deleted.sort(), [s1.id, s2.id].sort());
      assert.deepEqual((await snapshots.findSnapshot(core.meta.db, f1.id))!.parents, [second.full.id]);
      const again = await restoreInto(fork.id, 'fork-2.git');
      assert.deepEqual(again.result.chain, [second.full.id, f1.id, f2.id]);
      assert.deepEqual(await refsOf(again.target), forkRefs);

      // And the source still restores its latest from its own full.
      const src = await restoreInto(source.id, 'source.git');
      assert.deepEqual(src.result.chain, [first.full.id]);
      assert.deepEqual(await refsOf(src.target), await refsOf(source.path));
    });

    test('a snapshot written on a parent that compaction retired meanwhile is not recorded; the next one stands on the full', async () => {
      const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/race'));
      const work = path.join(dir, 'work-race');
      await git(['init', '-q', '-b', 'main', work]);
      await commit(work, 2, 'a');
      await pushAndSnapshot(repo, work, ['main']);
      await commit(work, 1, 'b');
      const parent = await pushAndSnapshot(repo, work, ['main']);
      await commit(work, 1, 'c');
      await git(['push', '-q', repo.path, 'main'], work);
      await snapshots.appendEvent(core.meta.db, repo.id, 'push-end', now());
      // The compaction runs while the snapshot's object is being uploaded.
      let compacted: Awaited<ReturnType<typeof compact>> | undefined;
      const racing: ObjectStore = {
        ...store,
        async put(key, body, opts) {
          if (!compacted) compacted = await compact(repo.id);
          return store.put(key, body, opts);
        },
      };
      await assert.rejects(createSnapshot({ meta: core.meta, store: racing }, { repositoryId: repo.id, repoPath: repo.path }), { code: 'snapshot_parent_retired' });
      assert.ok(compacted!.deleted.includes(parent.id));
      assert.deepEqual((await snapshots.dirtyRepositories(core.meta.db)).map((d) => d.repositoryId), [repo.id]);
      const next = await createSnapshot({ meta: core.meta, store }, { repositoryId: repo.id, repoPath: repo.path });
      assert.deepEqual(next.parents, [compacted!.full.id]);
      const restored = await restoreInto(repo.id, 'race.git');
      assert.deepEqual(await refsOf(restored.target), await refsOf(repo.path));
    });

    test('objects without a row are swept once older than a day; young ones are left', async () => {
      const repo = onDisk(core, await core.repos.createRepo(systemActor, 'alice/main/orphans'));
      const work = path.join(dir, 'work-orphans');
      await git(['init', '-q', '-b', 'main', work]);
      await commit(work, 1, 'a');
      await pushAndSnapshot(repo, work, ['main']);
      const oldKey = snapshotKey(repo.id, ulid(Date.now() - 2 * 24 * 3600_000));
      const youngKey = snapshotKey(repo.id, ulid());
      for (const key of [oldKey, youngKey]) await store.put(key, Readable.from([Buffer.from('left by a crash')]));
      const result = await compact(repo.id);
      assert.deepEqual(result.orphans, [oldKey]);
      assert.equal(await stored(oldKey), false);
      assert.equal(await stored(youngKey), true);
      assert.ok(await stat(path.join(dir, 'objects', ...result.full.objectKey.split('/'))));
    });
  });
}
