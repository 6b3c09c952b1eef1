/**
 * The change feed (changes.ts) on SQLite and PostgreSQL: a commit of work by another handle on
 * the same database (as the CLI or another node writes it) reaches every subscriber; on
 * PostgreSQL a commit to a table that holds no background work does not. A failing probe
 * counts as a change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { seedShardRepositories } from '../../test/support/shard-fixture.js';
import { createLogger } from '../shared/log.js';
import { changeFeed } from './changes.js';
import { now, openMetaStore, type MetaStore } from './db.js';
import { appendEvent } from './snapshots.js';
import { insertHook } from './webhooks.js';

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

for (const backend of databaseBackends()) {
  test(`a commit by another handle on the database reaches every subscriber (${backend})`, async (t) => {
    const dataDir = await tempDir('gitstratum-changes-');
    const databaseUrl = backend === 'postgres' ? await freshDatabaseUrl() : undefined;
    const mine: MetaStore = await openMetaStore({ dataDir, databaseUrl });
    const other: MetaStore = await openMetaStore({ dataDir, databaseUrl });
    const feed = changeFeed(mine, createLogger('silent'))!;
    t.after(async () => {
      await feed.close();
      await Promise.all([mine.close(), other.close()]);
    });
    await seedShardRepositories(mine);
    let first = 0;
    let second = 0;
    const stopFirst = feed.subscribe(() => first++);
    feed.subscribe(() => second++);
    await until('the feed to listen', () => feed.live());
    await sleep(1_500);
    const [a, b] = [first, second];

    // A push's event, as another process's hook writes it.
    await appendEvent(other.db, 'R1', 'push-end', now());
    await until('both subscribers called', () => first > a && second > b);

    // One that stopped is called no more.
    stopFirst();
    const [c, d] = [first, second];
    await appendEvent(other.db, 'R1', 'push-end', now());
    await until('the remaining subscriber called', () => second > d);
    assert.equal(first, c);

    if (backend === 'postgres') {
      // Only the work tables announce: a new hook is no background work.
      await sleep(500);
      const e = second;
      await insertHook(other.db, { id: 'H1', ownerId: 'O1', spaceId: null, repositoryId: null, url: 'http://127.0.0.1:9/', secret: null, events: ['push'], active: true, createdBy: 'test', createdAt: now() });
      await sleep(1_500);
      assert.equal(second, e, 'no call for a write to a table without work');
    }
  });
}

test('a store that can tell no change has no feed: its loops poll as before', () => {
  const store = { db: undefined, dialect: 'sqlite', location: 'x', close: async () => {} } as unknown as MetaStore;
  assert.equal(changeFeed(store, createLogger('silent')), undefined);
});

test('a SQLite probe that fails counts as a change, never as a crash', async () => {
  let fail = false;
  const changeMark = () => {
    if (fail) throw new Error('The database connection is not open');
    return '1:0';
  };
  const store = { db: undefined, dialect: 'sqlite', location: 'x', close: async () => {}, changeMark } as unknown as MetaStore;
  const feed = changeFeed(store, createLogger('silent'))!;
  let calls = 0;
  feed.subscribe(() => calls++);
  await sleep(1_200);
  assert.equal(calls, 0, 'no call while nothing changed');
  fail = true;
  await until('a call', () => calls > 0);
  await feed.close();
});
