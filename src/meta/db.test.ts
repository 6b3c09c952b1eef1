import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { isUniqueViolation, migrate, openMetaStore, type MetaStore } from './db.js';
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
      for (const name of ['access_tokens', 'audit_log', 'memberships', 'organizations', 'owners', 'projects', 'repositories', 'spaces', 'users']) {
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
}
