/**
 * Deliveries (meta/webhooks.ts, delivery.ts) on SQLite and PostgreSQL with a real HTTP
 * receiver: two Deliverers racing over one database send each event exactly once, each
 * repository's events in order; an idle Deliverer with a change feed is woken by another
 * process's event and, by itself, when a delivery falls due; a hook that keeps failing is
 * disabled; the backoff grows and stays within its jitter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Registry } from 'prom-client';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { seedShardRepositories } from '../../test/support/shard-fixture.js';
import { HookReceiver } from '../../test/support/hook-receiver.js';
import { now, openMetaStore, type MetaStore } from '../meta/db.js';
import { appendEvents, findHook, insertHook, type NewEvent } from '../meta/webhooks.js';
import { listAudit } from '../meta/audit.js';
import { createLogger } from '../shared/log.js';
import { backoffMs, createDeliveryMetrics, Deliverer } from './delivery.js';
import { allowList } from './url-safety.js';
import { changeFeed, type ChangeFeed } from '../meta/changes.js';
import { nowMs } from '../meta/leases.js';
import { sql } from 'kysely';

const AT = '2026-01-01T00:00:00.000Z';

function deliverer(meta: MetaStore, holder: string, overrides: Partial<ConstructorParameters<typeof Deliverer>[0]> = {}, changes?: ChangeFeed) {
  return new Deliverer(
    {
      holder,
      concurrency: 4,
      timeoutMs: 5_000,
      maxAttempts: 5,
      backoffBaseMs: 50,
      maxBackoffMs: 100,
      disableAfterFailures: 0,
      pollMs: 20,
      retentionMs: 86_400_000,
      allowed: allowList(['127.0.0.1']),
      ...overrides,
    },
    { meta, log: createLogger('silent'), metrics: createDeliveryMetrics(new Registry()), changes },
  );
}

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A seeded database of `backend` and a receiver; `closing` is run in reverse after the test. */
async function setup(t: { after(fn: () => Promise<void>): void }, backend: 'sqlite' | 'postgres') {
  const where = { dataDir: await tempDir('gitstratum-deliveries-'), databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined };
  const meta = await openMetaStore(where);
  const closing: (() => Promise<unknown>)[] = [() => meta.close()];
  // node:test runs after-hooks in the order registered: close what was opened last first.
  t.after(async () => {
    for (const close of closing.reverse()) await close();
  });
  await seedShardRepositories(meta);
  const receiver = await HookReceiver.start();
  closing.push(() => receiver.close());
  return { meta, receiver, closing, where };
}

for (const backend of databaseBackends()) {
  test(`two deliverers on one database send each event once, each repository's in order (${backend})`, async (t) => {
    const { meta, receiver, closing } = await setup(t, backend);
    await insertHook(meta.db, { id: 'H1', ownerId: 'O1', spaceId: null, repositoryId: null, url: receiver.url, secret: null, events: ['push'], active: true, createdBy: 'test', createdAt: AT });
    const [one, two] = [deliverer(meta, 'one'), deliverer(meta, 'two')];
    one.start();
    two.start();
    closing.push(() => Promise.all([one.close(), two.close()]));
    // 120 events over three repositories, written in small transactions while both run.
    const repos = ['R1', 'R2', 'R3'];
    for (let i = 0; i < 40; i++) {
      const events: NewEvent[] = repos.map((r) => ({ ownerId: 'O1', spaceId: 'S1', repositoryId: r, kind: 'push', payload: { n: i, repo: r } }));
      await meta.db.transaction().execute((trx) => appendEvents(trx, meta.dialect, events, now()));
    }
    await until('120 deliveries', () => receiver.received.length >= 120);
    await sleep(300);
    const ids = receiver.received.map((r) => r.body['delivery'].event_id as number);
    assert.equal(ids.length, 120, 'no event twice');
    assert.equal(new Set(ids).size, 120);
    for (const r of repos) {
      const ns = receiver.received.filter((x) => x.body['repo'] === r).map((x) => x.body['n'] as number);
      assert.deepEqual(ns, [...Array(40).keys()], `${r} in order`);
    }
  });

  test(`an idle deliverer sleeps until another process writes an event, or a retry falls due (${backend})`, async (t) => {
    const { meta, receiver, closing, where } = await setup(t, backend);
    // The CLI, or another node: a handle of its own on the same database.
    const other = await openMetaStore(where);
    closing.push(() => other.close());
    const feed = changeFeed(meta, createLogger('silent'))!;
    closing.push(() => feed.close());
    await insertHook(meta.db, { id: 'H3', ownerId: 'O1', spaceId: null, repositoryId: null, url: receiver.url, secret: null, events: ['push'], active: true, createdBy: 'test', createdAt: AT });
    // Idle, it would poll again only after ten minutes: only the feed, or a due time, wakes it.
    const d = deliverer(meta, 'one', { idlePollMs: 600_000 }, feed);
    d.start();
    closing.push(() => d.close());
    await until('the feed to listen', () => feed.live());
    await sleep(500);
    await appendEvents(other.db, other.dialect, [{ ownerId: 'O1', spaceId: 'S1', repositoryId: 'R1', kind: 'push', payload: { n: 1 } }], now());
    await until('the event written elsewhere delivered', () => receiver.received.length === 1);
    // An event whose delivery is due only in 1.5 s: the commit wakes the deliverer, which finds
    // nothing due yet and must wake again at the due time by itself.
    await other.db.transaction().execute(async (trx) => {
      await appendEvents(trx, other.dialect, [{ ownerId: 'O1', spaceId: 'S1', repositoryId: 'R2', kind: 'push', payload: { n: 2 } }], now());
      await trx.updateTable('webhook_deliveries').set({ next_attempt_at: sql<number>`${nowMs(other.dialect)} + 1500` }).where('status', '=', 'pending').execute();
    });
    await until('the delivery sent when due', () => receiver.received.length === 2);
    assert.equal(receiver.received[1]!.body['n'], 2);
  });

  test(`a hook failing too often in a row is disabled and audited (${backend})`, async (t) => {
    const { meta, receiver, closing } = await setup(t, backend);
    receiver.down = true;
    await insertHook(meta.db, { id: 'H2', ownerId: 'O1', spaceId: null, repositoryId: 'R1', url: receiver.url, secret: null, events: ['push'], active: true, createdBy: 'test', createdAt: AT });
    const d = deliverer(meta, 'one', { disableAfterFailures: 3 });
    d.start();
    closing.push(() => d.close());
    await appendEvents(meta.db, meta.dialect, [{ ownerId: 'O1', spaceId: 'S1', repositoryId: 'R1', kind: 'push', payload: {} }], now());
    await until('the hook to be disabled', async () => (await findHook(meta.db, 'H2'))?.active === false);
    const hook = (await findHook(meta.db, 'H2'))!;
    assert.match(hook.disabledReason ?? '', /3 deliveries in a row failed \(last: HTTP 503\)/);
    assert.equal((await listAudit(meta.db, { action: 'webhook.disabled' })).length, 1);
    // A disabled hook is owed no new deliveries.
    const before = (await meta.db.selectFrom('webhook_deliveries').select('id').execute()).length;
    await appendEvents(meta.db, meta.dialect, [{ ownerId: 'O1', spaceId: 'S1', repositoryId: 'R1', kind: 'push', payload: {} }], now());
    assert.equal((await meta.db.selectFrom('webhook_deliveries').select('id').execute()).length, before);
  });
}

test('the backoff doubles from its base up to its bound, within ±50% jitter', () => {
  assert.equal(backoffMs(1, 1000, 60_000, () => 0.5), 1000);
  assert.equal(backoffMs(3, 1000, 60_000, () => 0.5), 4000);
  assert.equal(backoffMs(20, 1000, 60_000, () => 0.5), 60_000);
  assert.equal(backoffMs(2, 1000, 60_000, () => 0), 1000);
  assert.equal(backoffMs(2, 1000, 60_000, () => 0.999999), 3000);
});
