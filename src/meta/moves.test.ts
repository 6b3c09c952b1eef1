/**
 * The record of moves between shards (meta/moves.ts) on SQLite and PostgreSQL: one live move
 * per repository, a pause that ends by itself, a switch that refuses once the pause ran out,
 * and which copies a shard's disks must keep.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { openMetaStore } from './db.js';
import { seedShardRepositories } from '../../test/support/shard-fixture.js';
import { findRepositoryById } from './repositories.js';
import { readRefsVersion } from './refs-versions.js';
import { recordCommitted, recordPrepared } from './sync-refs.js';
import { copiesToKeep, failMove, findMove, pausePushes, pushAdmission, startMove, switchShard } from './moves.js';

for (const backend of databaseBackends()) {
  test(`a move pauses pushes, switches the shard once, and lifts the pause when it fails, on ${backend}`, async () => {
    const dataDir = await tempDir('gitstratum-moves-');
    const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
    try {
      await seedShardRepositories(meta);
      const start = (id: string, repositoryId = 'R1', leaseMs = 60_000) => startMove(meta, { id, repositoryId, from: 's1', to: 'local', actorName: 'root', leaseMs });

      // One live move per repository; a move from a shard the repository is not on is refused.
      const move = await start('M1');
      assert.equal(move?.state, 'copying');
      assert.equal(await start('M2'), undefined);
      assert.equal(await startMove(meta, { id: 'M3', repositoryId: 'R3', from: 's1', to: 'local', actorName: 'root', leaseMs: 1000 }), undefined);
      assert.deepEqual(await pushAdmission(meta, 'R1'), { shard: 's1', pausedForMs: 0 });

      // Paused: a writer sees how long; both shards keep their copies meanwhile.
      assert.equal(await pausePushes(meta, move!, 30_000), true);
      const paused = await pushAdmission(meta, 'R1');
      assert.ok(paused!.pausedForMs > 20_000 && paused!.pausedForMs <= 30_000, `paused for ${paused!.pausedForMs} ms`);
      assert.ok((await copiesToKeep(meta, 's1', 60_000)).has('R1'));
      assert.ok((await copiesToKeep(meta, 'local', 60_000)).has('R1'));

      // Failed: routing unchanged, pushes resume, and a new move may start.
      await failMove(meta, move!, 'the target went away');
      assert.deepEqual(await pushAdmission(meta, 'R1'), { shard: 's1', pausedForMs: 0 });
      assert.equal((await findMove(meta.db, 'M1'))?.state, 'failed');
      assert.equal((await copiesToKeep(meta, 'local', 60_000)).has('R1'), false);

      // A pause that ran out: the switch refuses (a push may have reached the source since).
      const late = await start('M4');
      assert.equal(await pausePushes(meta, late!, 1), true);
      await sleep(20);
      assert.equal(await switchShard(meta, late!, 1), false);
      assert.equal((await findRepositoryById(meta.db, 'R1'))?.shard, 's1');
      await failMove(meta, late!, 'pause ran out');

      // A switch in time: the shard changes, the pause is lifted, the version bumped, and the
      // source's synchronous-standby record of the repository dropped.
      await recordPrepared(meta.db, meta.dialect, 'R1', 'k', [{ ref: 'refs/heads/main', new: 'a'.repeat(40) }]);
      await recordCommitted(meta.db, meta.dialect, 'R1', 'k', 1);
      const version = await readRefsVersion(meta.db, 'R1');
      const good = await start('M5');
      assert.equal(await pausePushes(meta, good!, 30_000), true);
      assert.equal(await switchShard(meta, good!, 250), true);
      assert.deepEqual(await pushAdmission(meta, 'R1'), { shard: 'local', pausedForMs: 0 });
      const done = await findMove(meta.db, 'M5');
      assert.deepEqual([done?.state, done?.pauseMs], ['moved', 250]);
      assert.equal(BigInt(await readRefsVersion(meta.db, 'R1')), BigInt(version) + 1n);
      assert.equal((await meta.db.selectFrom('sync_refs').select('ref').where('repository_id', '=', 'R1').execute()).length, 0);
      assert.equal(await switchShard(meta, good!, 250), false, 'a switch happens once');
      // The old shard keeps its copy for the grace period only.
      assert.ok((await copiesToKeep(meta, 's1', 60_000)).has('R1'));
      await sleep(20);
      assert.equal((await copiesToKeep(meta, 's1', 1)).has('R1'), false);

      // An abandoned move (its mover stopped renewing) gives way to the next, its pause lifted.
      const stale = await startMove(meta, { id: 'M6', repositoryId: 'R2', from: 's1', to: 'local', actorName: 'root', leaseMs: 1 });
      assert.equal(await pausePushes(meta, stale!, 30_000), true);
      await sleep(20);
      const next = await startMove(meta, { id: 'M7', repositoryId: 'R2', from: 's1', to: 'local', actorName: 'root', leaseMs: 60_000 });
      assert.equal(next?.state, 'copying');
      assert.equal((await findMove(meta.db, 'M6'))?.state, 'failed');
      assert.deepEqual(await pushAdmission(meta, 'R2'), { shard: 's1', pausedForMs: 0 });
    } finally {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}
