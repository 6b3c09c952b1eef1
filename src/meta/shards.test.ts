import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { openMetaStore } from './db.js';
import { migrationProvider } from './migrations.js';
import { insertOwner, deleteUser } from './owners.js';
import { insertSpace } from './spaces.js';
import { insertRepository } from './repositories.js';
import { recordGitBytes } from './quotas.js';
import { deletePins, insertPin, insertShard, listPins, listShardLoads, setShardState, spacePins } from './shards.js';

const at = '2026-01-01T00:00:00.000Z';

/** A database of `backend` migrated only up to `last`, as an older version left it. */
async function databaseAt(backend: 'sqlite' | 'postgres', dataDir: string, last: string): Promise<{ db: Kysely<any>; url: string | undefined }> {
  const url = backend === 'postgres' ? await freshDatabaseUrl() : undefined;
  const db = url
    ? new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }) })
    : new Kysely<any>({ dialect: new SqliteDialect({ database: new SQLite(path.join(dataDir, 'meta.sqlite')) }) });
  const migrator = new Migrator({ db, provider: migrationProvider(backend), migrationTableName: 'schema_migrations', migrationLockTableName: 'schema_migrations_lock' });
  const { error } = await migrator.migrateTo(last);
  if (error) throw error;
  return { db, url };
}

for (const backend of databaseBackends()) {
  test(`0013_shards on ${backend}: every shard name existing repositories use becomes a shard, and \`local\` always exists`, async () => {
    const dataDir = await tempDir('gitstratum-shards-');
    try {
      const { db, url } = await databaseAt(backend, dataDir, '0012_quotas');
      await insertOwner(db, { id: 'O1', name: 'alice', kind: 'user', createdAt: at });
      await insertSpace(db, { id: 'S1', ownerId: 'O1', name: 'main', createdAt: at });
      for (const [id, shard] of [['R1', 'local'], ['R2', 'old-box'], ['R3', 'old-box']] as const) {
        await insertRepository(db, { id, spaceId: 'S1', name: id, visibility: 'public', defaultBranch: 'main', shard, createdAt: at });
      }
      await db.destroy();

      const meta = await openMetaStore({ dataDir, databaseUrl: url });
      try {
        await recordGitBytes(meta.db, 'R2', 1000);
        await recordGitBytes(meta.db, 'R3', 24);
        const loads = await listShardLoads(meta.db);
        assert.deepEqual(
          loads.map((s) => ({ name: s.name, state: s.state, acceptsNew: s.acceptsNew, repositories: s.repositories, gitBytes: s.gitBytes })),
          [
            { name: 'local', state: 'active', acceptsNew: true, repositories: 1, gitBytes: 0 },
            { name: 'old-box', state: 'active', acceptsNew: true, repositories: 2, gitBytes: 1024 },
          ],
        );
      } finally {
        await meta.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test(`shard rows, states and space pins on ${backend}; a deleted space takes its pins with it`, async () => {
    const dataDir = await tempDir('gitstratum-shards-');
    const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
    const { db } = meta;
    try {
      // A fresh database has the shard `local`, and nothing on it.
      assert.deepEqual((await listShardLoads(db)).map((s) => [s.name, s.repositories, s.gitBytes]), [['local', 0, 0]]);
      await insertShard(db, { name: 'b', acceptsNew: false, createdAt: at });
      await insertShard(db, { name: 'a', acceptsNew: true, createdAt: at });
      assert.equal(await setShardState(db, 'a', 'draining'), true);
      assert.equal(await setShardState(db, 'missing', 'draining'), false);
      assert.deepEqual(
        (await listShardLoads(db)).map((s) => [s.name, s.state, s.acceptsNew]),
        [
          ['a', 'draining', true],
          ['b', 'active', false],
          ['local', 'active', true],
        ],
      );

      await insertOwner(db, { id: 'O1', name: 'alice', kind: 'user', createdAt: at });
      await insertSpace(db, { id: 'S1', ownerId: 'O1', name: 'main', createdAt: at });
      assert.equal(await insertPin(db, { spaceId: 'S1', shard: 'b', createdAt: at }), true);
      assert.equal(await insertPin(db, { spaceId: 'S1', shard: 'a', createdAt: at }), true);
      assert.equal(await insertPin(db, { spaceId: 'S1', shard: 'a', createdAt: at }), false);
      assert.deepEqual(await spacePins(db, 'S1'), ['a', 'b']);
      assert.deepEqual((await listPins(db)).map((p) => `${p.space}:${p.shard}`), ['alice/main:a', 'alice/main:b']);
      assert.equal(await deletePins(db, 'S1', 'b'), 1);
      assert.deepEqual(await spacePins(db, 'S1'), ['a']);
      // A pin to a shard that does not exist is refused by the database.
      await assert.rejects(insertPin(db, { spaceId: 'S1', shard: 'nope', createdAt: at }));

      await deleteUser(db, 'O1');
      assert.deepEqual(await listPins(db), []);
    } finally {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}
