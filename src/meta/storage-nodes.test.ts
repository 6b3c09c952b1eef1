/**
 * The storage-node registry on SQLite and PostgreSQL. Time passing is simulated by moving
 * `last_seen_at` into the past (what time does), never by waiting.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { sql } from 'kysely';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { openMetaStore, type MetaStore } from './db.js';
import { insertShard } from './shards.js';
import { FORGET_AFTER_MS, forget, heartbeat, listNodes } from './storage-nodes.js';

async function open(backend: 'sqlite' | 'postgres'): Promise<{ meta: MetaStore; dispose: () => Promise<void> }> {
  const dataDir = await tempDir('gitstratum-storage-nodes-');
  const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
  for (const name of ['s1', 's2']) await insertShard(meta.db, { name, acceptsNew: true, createdAt: new Date().toISOString() });
  return { meta, dispose: async () => (await meta.close(), await rm(dataDir, { recursive: true, force: true })) };
}

/** Moves a node's last heartbeat `ms` into the past. */
async function age(meta: MetaStore, holder: string, ms: number): Promise<void> {
  await meta.db.updateTable('storage_nodes').set({ last_seen_at: sql<number>`last_seen_at - ${ms}` }).where('holder', '=', holder).execute();
}

async function rowCount(meta: MetaStore): Promise<number> {
  const row = await meta.db.selectFrom('storage_nodes').select((eb) => eb.fn.countAll<number | string>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

for (const backend of databaseBackends()) {
  test(`storage nodes register by heartbeat, are listed with the database's "last seen", and leave by forget, on ${backend}`, async () => {
    const { meta, dispose } = await open(backend);
    try {
      assert.deepEqual(await listNodes(meta), []);
      const before = Date.now();
      await heartbeat(meta, { holder: 'node-a/1/x', shard: 's1', url: 'http://a:8080' });
      await heartbeat(meta, { holder: 'node-b/2/y', shard: 's1', url: 'http://b:8080' });
      await heartbeat(meta, { holder: 'node-c/3/z', shard: 's2', url: 'http://c:8080', startedAtMs: 1_700_000_000_000 });

      const all = await listNodes(meta);
      assert.deepEqual(
        all.map((n) => [n.holder, n.shard, n.url]),
        [
          ['node-a/1/x', 's1', 'http://a:8080'],
          ['node-b/2/y', 's1', 'http://b:8080'],
          ['node-c/3/z', 's2', 'http://c:8080'],
        ],
      );
      const a = all[0]!;
      // The database's clock, on this machine: close to ours; the node's own start time when given.
      assert.ok(Math.abs(a.startedAtMs - before) < 60_000, `started ${a.startedAtMs}, test began ${before}`);
      assert.ok(a.lastSeenAtMs >= a.startedAtMs);
      assert.ok(a.lastSeenAgoMs >= 0 && a.lastSeenAgoMs < 5_000, String(a.lastSeenAgoMs));
      assert.equal(all[2]!.startedAtMs, 1_700_000_000_000);
      assert.deepEqual((await listNodes(meta, { shard: 's2' })).map((n) => n.holder), ['node-c/3/z']);
      assert.deepEqual(await listNodes(meta, { shard: 'nope' }), []);

      // A later heartbeat moves "last seen" and the URL, and keeps the start time.
      await age(meta, 'node-a/1/x', 30_000);
      assert.ok((await listNodes(meta, { shard: 's1' }))[0]!.lastSeenAgoMs >= 30_000);
      await heartbeat(meta, { holder: 'node-a/1/x', shard: 's1', url: 'http://a2:8080' });
      const again = (await listNodes(meta, { shard: 's1' }))[0]!;
      assert.deepEqual([again.url, again.startedAtMs], ['http://a2:8080', a.startedAtMs]);
      assert.ok(again.lastSeenAgoMs < 30_000, String(again.lastSeenAgoMs));

      // Heartbeats at once, several per node: one row each.
      await Promise.all(Array.from({ length: 12 }, (_, i) => heartbeat(meta, { holder: `n${i % 4}`, shard: 's2', url: `http://n${i % 4}` })));
      assert.deepEqual((await listNodes(meta, { shard: 's2' })).map((n) => n.holder), ['n0', 'n1', 'n2', 'n3', 'node-c/3/z']);

      // A clean shutdown removes the row at once.
      assert.equal(await forget(meta, 'node-b/2/y'), true);
      assert.equal(await forget(meta, 'node-b/2/y'), false);
      assert.deepEqual((await listNodes(meta, { shard: 's1' })).map((n) => n.holder), ['node-a/1/x']);

      await assert.rejects(heartbeat(meta, { holder: 'node-d', shard: 'nope', url: 'http://d' }), { code: 'shard_not_found', message: 'shard not found: nope' });
    } finally {
      await dispose();
    }
  });

  test(`a storage node unseen for over an hour is no longer listed, and the next heartbeat deletes it, on ${backend}`, async () => {
    const { meta, dispose } = await open(backend);
    try {
      await heartbeat(meta, { holder: 'crashed', shard: 's1', url: 'http://a' });
      await heartbeat(meta, { holder: 'quiet', shard: 's1', url: 'http://b' });
      await age(meta, 'crashed', FORGET_AFTER_MS + 1_000);
      await age(meta, 'quiet', FORGET_AFTER_MS - 60_000);
      assert.deepEqual((await listNodes(meta)).map((n) => n.holder), ['quiet']);
      assert.equal(await rowCount(meta), 2);
      // Any node's heartbeat prunes: here one of another shard.
      await heartbeat(meta, { holder: 'live', shard: 's2', url: 'http://c' });
      assert.equal(await rowCount(meta), 2);
      assert.deepEqual((await listNodes(meta)).map((n) => n.holder), ['quiet', 'live']);
      // A node that comes back after being pruned registers again as new.
      await heartbeat(meta, { holder: 'crashed', shard: 's1', url: 'http://a' });
      assert.deepEqual((await listNodes(meta, { shard: 's1' })).map((n) => n.holder), ['crashed', 'quiet']);
    } finally {
      await dispose();
    }
  });
}
