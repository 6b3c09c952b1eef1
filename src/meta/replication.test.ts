/**
 * Replica positions on SQLite and PostgreSQL (meta/replication.ts): which repositories a replica
 * is behind on, by refs version, and how long since the writer reached the version it lacks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { sql } from 'kysely';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { openMetaStore } from './db.js';
import { seedShardRepositories } from '../../test/support/shard-fixture.js';
import { bumpRefsVersion, bumpShardRefsVersions } from './refs-versions.js';
import { behindRepositories, positions, recordPosition, replicaHeartbeat, shardHasReplicas, upToDateReplicas } from './replication.js';


for (const backend of databaseBackends()) {
  test(`a replica is behind on the repositories whose refs version passed its position, on ${backend}`, async () => {
    const dataDir = await tempDir('gitstratum-replication-');
    const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
    try {
      await seedShardRepositories(meta);
      await replicaHeartbeat(meta, { diskId: 'disk-a', shard: 's1', url: 'http://a:1', mode: 'async' });
      await replicaHeartbeat(meta, { diskId: 'disk-b', shard: 's1', url: 'http://b:1', mode: 'async' });

      // A new replica lacks every repository of its shard, and none of another shard.
      assert.deepEqual((await behindRepositories(meta, 'disk-a', 's1')).map((r) => [r.id, r.version, r.lagMs]), [
        ['R1', '0', 0],
        ['R2', '0', 0],
      ]);
      await recordPosition(meta, 'disk-a', 'R1', '0');
      await recordPosition(meta, 'disk-a', 'R2', '0');
      assert.deepEqual(await behindRepositories(meta, 'disk-a', 's1'), []);

      // A push bumps R1 twice; the replica lags by the age of the bump.
      await bumpRefsVersion(meta.db, meta.dialect, 'R1');
      await bumpRefsVersion(meta.db, meta.dialect, 'R1');
      await meta.db.updateTable('repository_refs_versions').set({ bumped_at: sql<number>`bumped_at - 5000` }).where('repository_id', '=', 'R1').execute();
      const behind = await behindRepositories(meta, 'disk-a', 's1');
      assert.deepEqual(behind.map((r) => [r.id, r.version]), [['R1', '2']]);
      assert.ok(behind[0]!.lagMs >= 5000 && behind[0]!.lagMs < 60_000, `lag ${behind[0]!.lagMs}`);

      // Positions never go backwards: a late round that read an older version changes nothing.
      await recordPosition(meta, 'disk-a', 'R1', '2');
      await recordPosition(meta, 'disk-a', 'R1', '1');
      assert.equal((await positions(meta, 'disk-a')).get('R1'), '2');
      assert.deepEqual(await behindRepositories(meta, 'disk-a', 's1'), []);
      assert.deepEqual((await behindRepositories(meta, 'disk-b', 's1')).map((r) => r.id), ['R1', 'R2'], 'another replica has its own positions');

      // A takeover bumps every repository of the shard.
      await bumpShardRefsVersions(meta.db, meta.dialect, 's1');
      assert.deepEqual((await behindRepositories(meta, 'disk-a', 's1')).map((r) => [r.id, r.version]), [
        ['R1', '3'],
        ['R2', '1'],
      ]);
      await assert.rejects(replicaHeartbeat(meta, { diskId: 'disk-c', shard: 'nope', url: 'http://c:1', mode: 'async' }), /shard not found/);

      // Reads go only to replicas at the repository's version, and heard from lately.
      assert.deepEqual(await upToDateReplicas(meta, 's1', 'R1', 60_000), [], 'the takeover left both behind');
      await recordPosition(meta, 'disk-a', 'R1', '3');
      await recordPosition(meta, 'disk-b', 'R1', '2');
      assert.deepEqual(await upToDateReplicas(meta, 's1', 'R1', 60_000), ['http://a:1']);
      await recordPosition(meta, 'disk-b', 'R1', '3');
      assert.deepEqual(await upToDateReplicas(meta, 's1', 'R1', 60_000), ['http://a:1', 'http://b:1']);
      await meta.db.updateTable('replicas').set({ last_seen_at: sql<number>`last_seen_at - 120000` }).where('disk_id', '=', 'disk-b').execute();
      assert.deepEqual(await upToDateReplicas(meta, 's1', 'R1', 60_000), ['http://a:1'], 'a replica unheard of for too long is out');
      assert.equal(await shardHasReplicas(meta, 's1', 60_000), true);
      assert.equal(await shardHasReplicas(meta, 'local', 60_000), false, 'a shard without replicas');
      assert.deepEqual(await upToDateReplicas(meta, 's1', 'R2', 60_000), [], 'positions are per repository');
      await bumpRefsVersion(meta.db, meta.dialect, 'R1');
      assert.deepEqual(await upToDateReplicas(meta, 's1', 'R1', 60_000), [], 'a push leaves them behind until they apply it');
    } finally {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}
