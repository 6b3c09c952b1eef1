import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import SQLite from 'better-sqlite3';
import { compiledOnce, isUniqueViolation, migrate, openMetaStore, withStatementCache, type MetaStore } from './db.js';
import { findOwnerByName, insertOwner } from './owners.js';

async function open(backend: 'sqlite' | 'postgres'): Promise<{ store: MetaStore; dispose: () => Promise<void> }> {
  const dataDir = await tempDir('gitstratum-meta-');
  const store = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
  return { store, dispose: async () => (await store.close(), await rm(dataDir, { recursive: true, force: true })) };
}

for (const backend of databaseBackends()) {
  test(`an empty ${backend} database migrates to the latest schema, and again without change`, async () => {
    const { store, dispose } = await open(backend);
    try {
      await migrate(store);
      const tables = (await store.db.introspection.getTables()).map((t) => t.name).sort();
      for (const name of ['access_tokens', 'audit_log', 'memberships', 'organizations', 'owners', 'projects', 'repositories', 'spaces', 'storage_nodes', 'users']) {
        assert.ok(tables.includes(name), `${name} missing on ${backend}: ${tables.join(', ')}`);
      }
    } finally {
      await dispose();
    }
  });

  test(`owner names are unique regardless of case on ${backend}, reported as a unique violation`, async () => {
    const { store, dispose } = await open(backend);
    try {
      await insertOwner(store.db, { id: '01AAAAAAAAAAAAAAAAAAAAAAAA', name: 'Alice', kind: 'user', createdAt: new Date().toISOString() });
      const err = await insertOwner(store.db, { id: '01BBBBBBBBBBBBBBBBBBBBBBBB', name: 'alice', kind: 'org', createdAt: new Date().toISOString() }).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(isUniqueViolation(err), `expected a unique violation, got ${String(err)}`);
      assert.equal((await findOwnerByName(store.db, 'ALICE'))?.name, 'Alice');
    } finally {
      await dispose();
    }
  });

  test(`a query compiled once runs with each call's values on ${backend}, constants kept, and refuses a build that changes its arguments`, async () => {
    const { store, dispose } = await open(backend);
    try {
      const at = new Date().toISOString();
      await insertOwner(store.db, { id: '01AAAAAAAAAAAAAAAAAAAAAAAA', name: 'alice', kind: 'user', createdAt: at });
      await insertOwner(store.db, { id: '01BBBBBBBBBBBBBBBBBBBBBBBB', name: 'bob', kind: 'user', createdAt: at });
      await insertOwner(store.db, { id: '01CCCCCCCCCCCCCCCCCCCCCCCC', name: 'carol', kind: 'org', createdAt: at });
      const byName = compiledOnce((db, name: string) => db.selectFrom('owners').select(['id', 'name']).where('kind', '=', 'user').where('name', '=', name));
      assert.deepEqual(await byName(store.db, 'alice'), [{ id: '01AAAAAAAAAAAAAAAAAAAAAAAA', name: 'alice' }]);
      assert.deepEqual(await byName(store.db, 'bob'), [{ id: '01BBBBBBBBBBBBBBBBBBBBBBBB', name: 'bob' }]);
      assert.deepEqual(await byName(store.db, 'carol'), [], 'the constant (kind = user) still applies');
      const changed = compiledOnce((db, name: string) => db.selectFrom('owners').select('id').where('name', '=', name.toUpperCase()));
      await assert.rejects(changed(store.db, 'alice'), /not a value of the query/);
    } finally {
      await dispose();
    }
  });
}

test('on sqlite, processes writing at once (the CLI beside the server) wait for each other instead of failing "database is locked"', async () => {
  const dataDir = await tempDir('gitstratum-meta-');
  try {
    await (await openMetaStore({ dataDir })).close();
    // Each process runs transactions that read, then write: the shape of rename, revoke, fork.
    const script = `
      import { openMetaStore } from ${JSON.stringify(new URL('./db.js', import.meta.url).href)};
      import { findOwnerByName, insertOwner } from ${JSON.stringify(new URL('./owners.js', import.meta.url).href)};
      const store = await openMetaStore({ dataDir: process.argv[1] });
      for (let i = 0; i < 60; i++) {
        const name = 'p' + process.argv[2] + '-' + i;
        await store.db.transaction().execute(async (trx) => {
          if (await findOwnerByName(trx, name)) throw new Error('already there: ' + name);
          await new Promise((r) => setTimeout(r, 2));
          await insertOwner(trx, { id: (process.argv[2] + String(i).padStart(3, '0')).padEnd(26, 'A'), name, kind: 'user', createdAt: new Date().toISOString() });
        });
      }
      await store.close();`;
    const runs = [1, 2, 3].map(
      (n) =>
        new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const child = spawn(process.execPath, ['--input-type=module', '-e', script, dataDir, String(n)], { stdio: ['ignore', 'ignore', 'pipe'] });
          let stderr = '';
          child.stderr.on('data', (d: Buffer) => (stderr += d));
          child.on('close', (code) => resolve({ code, stderr }));
        }),
    );
    for (const { code, stderr } of await Promise.all(runs)) assert.equal(code, 0, stderr);
    const store = await openMetaStore({ dataDir });
    try {
      const { n } = await store.db.selectFrom('owners').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      assert.equal(Number(n), 180);
    } finally {
      await store.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('SQLite statements are prepared once per SQL text and reused with new parameters; one still iterating is not reused', () => {
  const raw = new SQLite(':memory:');
  try {
    const db = withStatementCache(raw, 3);
    db.prepare('create table t (n integer)').run([]);
    const insert = db.prepare('insert into t (n) values (?)');
    for (const n of [1, 2, 3]) {
      assert.equal(db.prepare('insert into t (n) values (?)'), insert);
      insert.run([n]);
    }
    assert.deepEqual(db.prepare('select n from t where n >= ? order by n').all([2]), [{ n: 2 }, { n: 3 }]);
    assert.deepEqual(db.prepare('select n from t where n >= ? order by n').all([3]), [{ n: 3 }]);

    const iterating = db.prepare('select n from t order by n').iterate([]);
    iterating.next();
    const again = db.prepare('select n from t order by n');
    assert.deepEqual(again.all([]), [{ n: 1 }, { n: 2 }, { n: 3 }], 'a second statement, not the busy one');
    iterating.return?.();

    // Bounded: past `max` texts the cache starts over instead of growing.
    for (let i = 0; i < 10; i++) assert.deepEqual(db.prepare(`select ${i} as v`).all([]), [{ v: i }]);
  } finally {
    raw.close();
  }
});
