/**
 * Shard leases and the fence, on SQLite and PostgreSQL. Expiry is waited for by the
 * database's clock (polling `current`), never assumed from the test's own timers; the
 * property test expires leases by moving `expires_at` into the past, which is what time does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import fc from 'fast-check';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { openMetaStore, type MetaStore } from './db.js';
import { nowMs } from './leases.js';
import { appendAudit } from './audit.js';
import { insertShard } from './shards.js';
import { createShardLeases, type ShardLeases } from './shard-leases.js';
import { isDomainError } from '../shared/errors.js';

const LONG = 600_000;

async function open(backend: 'sqlite' | 'postgres'): Promise<{ meta: MetaStore; leases: ShardLeases; dispose: () => Promise<void> }> {
  const dataDir = await tempDir('gitstratum-shard-lease-');
  const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
  return { meta, leases: createShardLeases(meta), dispose: async () => (await meta.close(), await rm(dataDir, { recursive: true, force: true })) };
}

async function addShard(meta: MetaStore, name: string): Promise<void> {
  await insertShard(meta.db, { name, acceptsNew: true, createdAt: new Date().toISOString() });
}

/** Waits until the shard's lease has expired by the database's clock. */
async function expired(leases: ShardLeases, shard: string): Promise<void> {
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(10)) {
    const lease = await leases.current(shard);
    if (!lease || lease.expiresInMs <= 0) return;
  }
  throw new Error(`the lease of ${shard} did not expire`);
}

async function auditCount(meta: MetaStore, target: string): Promise<number> {
  const row = await meta.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number | string>().as('n')).where('target', '=', target).executeTakeFirstOrThrow();
  return Number(row.n);
}

/** A metadata write by the shard's writer at `epoch`: an audit entry, fenced. The fence comes after the write here, to show the rollback. */
async function fencedWrite(meta: MetaStore, leases: ShardLeases, shard: string, epoch: number): Promise<'written' | 'stale_epoch'> {
  try {
    await meta.db.transaction().execute(async (trx) => {
      await appendAudit(trx, { at: new Date().toISOString(), actorId: null, actorName: 'node', action: 'test.event', target: shard, details: { epoch } });
      await leases.fenced(trx, shard, epoch);
    });
    return 'written';
  } catch (err) {
    if (isDomainError(err) && err.code === 'stale_epoch') return 'stale_epoch';
    throw err;
  }
}

for (const backend of databaseBackends()) {
  test(`a shard lease passes from a holder to another only after it expired, with a higher epoch, on ${backend}`, async () => {
    const { meta, leases, dispose } = await open(backend);
    try {
      await addShard(meta, 's1');
      assert.equal(await leases.current('s1'), undefined);

      // First acquisition: epoch 1. The other holder is refused while it runs.
      assert.deepEqual(await leases.acquire('s1', 'node-a', 'http://a:8080', LONG), { epoch: 1 });
      assert.equal(await leases.acquire('s1', 'node-b', 'http://b:8080', LONG), undefined);
      const held = await leases.current('s1');
      assert.deepEqual({ holder: held?.holder, url: held?.url, epoch: held?.epoch }, { holder: 'node-a', url: 'http://a:8080', epoch: 1 });
      assert.ok(held!.expiresInMs > 0 && held!.expiresInMs <= LONG, String(held!.expiresInMs));
      // Acquiring again or renewing keeps the epoch; a renew by someone else, or at another epoch, fails.
      assert.deepEqual(await leases.acquire('s1', 'node-a', 'http://a:8080', LONG), { epoch: 1 });
      assert.equal(await leases.renew('s1', 'node-a', 1, LONG), true);
      assert.equal(await leases.renew('s1', 'node-b', 1, LONG), false);
      assert.equal(await leases.renew('s1', 'node-a', 2, LONG), false);
      assert.equal(await fencedWrite(meta, leases, 's1', 1), 'written');

      // node-a stops renewing; once the lease expired by the database's clock, node-b takes it at epoch 2.
      assert.equal(await leases.renew('s1', 'node-a', 1, 30), true);
      await expired(leases, 's1');
      assert.deepEqual(await leases.acquire('s1', 'node-b', 'http://b:8080', LONG), { epoch: 2 });
      assert.deepEqual((({ holder, epoch }) => ({ holder, epoch }))((await leases.current('s1'))!), { holder: 'node-b', epoch: 2 });

      // The deposed holder can neither renew, nor take it back, nor write; nothing it wrote stays.
      const before = await auditCount(meta, 's1');
      assert.equal(await leases.renew('s1', 'node-a', 1, LONG), false);
      assert.equal(await leases.acquire('s1', 'node-a', 'http://a:8080', LONG), undefined);
      assert.equal(await leases.release('s1', 'node-a', 1), false);
      assert.equal(await fencedWrite(meta, leases, 's1', 1), 'stale_epoch');
      assert.equal(await auditCount(meta, 's1'), before);
      assert.equal(await fencedWrite(meta, leases, 's1', 2), 'written');
      assert.equal(await auditCount(meta, 's1'), before + 1);

      // Its own lease expired, even the current writer is fenced until it renews (no one took it over).
      assert.equal(await leases.renew('s1', 'node-b', 2, 30), true);
      await expired(leases, 's1');
      assert.equal(await fencedWrite(meta, leases, 's1', 2), 'stale_epoch');
      assert.equal(await leases.renew('s1', 'node-b', 2, LONG), true);
      assert.equal(await fencedWrite(meta, leases, 's1', 2), 'written');

      // A release frees it at once; the next holder, even a previous one, gets a new epoch.
      assert.equal(await leases.release('s1', 'node-b', 2), true);
      assert.equal(await leases.current('s1'), undefined);
      assert.equal(await fencedWrite(meta, leases, 's1', 2), 'stale_epoch');
      assert.deepEqual(await leases.acquire('s1', 'node-b', 'http://b:8080', LONG), { epoch: 3 });

      // Unknown shards and bad lifetimes are refused with clear errors; a fence on a shard no one ever leased refuses.
      await assert.rejects(leases.acquire('nope', 'node-a', 'http://a:8080', LONG), { code: 'shard_not_found' });
      await assert.rejects(leases.acquire('s1', 'node-a', 'http://a:8080', 0), { code: 'invalid_lease_ttl' });
      await addShard(meta, 's2');
      assert.equal(await fencedWrite(meta, leases, 's2', 0), 'stale_epoch');
      await assert.rejects(leases.fenced(meta.db, 's1', 3), /needs a transaction/);
    } finally {
      await dispose();
    }
  });

  test(`holders racing for a free shard lease: exactly one wins, on ${backend}`, async () => {
    const { meta, leases, dispose } = await open(backend);
    try {
      await addShard(meta, 's1');
      const won = await Promise.all(Array.from({ length: 12 }, (_, i) => leases.acquire('s1', `node-${i}`, `http://n${i}`, LONG)));
      assert.deepEqual(won.filter((w) => w !== undefined), [{ epoch: 1 }]);
      const winner = won.findIndex((w) => w !== undefined);
      assert.equal((await leases.current('s1'))?.holder, `node-${winner}`);
      // After it expires, a second race: one winner again, at epoch 2.
      assert.equal(await leases.renew('s1', `node-${winner}`, 1, 30), true);
      await expired(leases, 's1');
      const again = await Promise.all(Array.from({ length: 12 }, (_, i) => leases.acquire('s1', `other-${i}`, `http://o${i}`, LONG)));
      assert.deepEqual(again.filter((w) => w !== undefined), [{ epoch: 2 }]);
    } finally {
      await dispose();
    }
  });

  test(`a takeover waits for a fenced write in progress, so the write commits before it or not at all, on ${backend}`, async () => {
    const { meta, leases, dispose } = await open(backend);
    try {
      await addShard(meta, 's1');
      // Long enough for the fence below to pass on a busy machine; then waited out inside the transaction.
      assert.deepEqual(await leases.acquire('s1', 'node-a', 'http://a', 1500), { epoch: 1 });
      const order: string[] = [];
      let takeover: Promise<{ epoch: number } | undefined> | undefined;
      await meta.db.transaction().execute(async (trx) => {
        await leases.fenced(trx, 's1', 1);
        await appendAudit(trx, { at: new Date().toISOString(), actorId: null, actorName: 'node-a', action: 'test.event', target: 's1' });
        // The lease runs out while the fenced transaction is still open (by the database's clock).
        for (const deadline = Date.now() + 10_000; ; await sleep(20)) {
          const { rows } = await sql<{ left: number | string }>`select expires_at - ${nowMs(meta.dialect)} as left from shard_leases where shard = 's1'`.execute(trx);
          if (Number(rows[0]!.left) <= 0) break;
          if (Date.now() > deadline) throw new Error('the lease did not expire');
        }
        takeover = leases.acquire('s1', 'node-b', 'http://b', LONG).then((r) => (order.push('takeover'), r));
        if (backend === 'postgres') {
          // The takeover is blocked on the lease row that fenced() locked.
          for (const deadline = Date.now() + 10_000; ; await sleep(10)) {
            const { rows } = await sql<{ n: number | string }>`select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(meta.db);
            if (Number(rows[0]!.n) >= 1) break;
            if (Date.now() > deadline) throw new Error('the takeover did not wait for the fenced transaction');
          }
        } else {
          // One connection, one writer: the takeover queues behind this transaction.
          for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
        }
        order.push('commit');
      });
      assert.deepEqual(await takeover, { epoch: 2 });
      assert.deepEqual(order, ['commit', 'takeover']);
      assert.equal(await auditCount(meta, 's1'), 1);
      assert.equal(await fencedWrite(meta, leases, 's1', 1), 'stale_epoch');
    } finally {
      await dispose();
    }
  });

  test(`random interleavings of acquire, renew, release, expiry and fenced writes by 3 holders follow the lease model, on ${backend}`, async () => {
    const { meta, leases, dispose } = await open(backend);
    const holders = ['h0', 'h1', 'h2'];
    const op = fc.oneof(
      fc.record({ kind: fc.constantFrom('acquire', 'renew', 'release', 'write'), who: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ kind: fc.constant('expire'), who: fc.constant(0) }),
      fc.record({ kind: fc.constant('race'), who: fc.constant(0) }),
    );
    let run = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
          const shard = `p${run++}`;
          await addShard(meta, shard);
          // The model: who holds the lease, at which epoch, whether it is unexpired; what each holder was granted.
          const m = { holder: null as number | null, epoch: 0, live: false, granted: [0, 0, 0], written: 0 };
          const mine = (who: number) => m.holder === who && m.granted[who] === m.epoch;
          const take = (who: number, got: { epoch: number } | undefined) => {
            const free = m.holder === null || !m.live || m.holder === who;
            assert.equal(got !== undefined, free, `acquire by ${holders[who]}`);
            if (!got) return;
            assert.equal(got.epoch, m.holder === who ? m.epoch : m.epoch + 1, 'epoch of an acquisition');
            Object.assign(m, { holder: who, epoch: got.epoch, live: true });
            m.granted[who] = got.epoch;
          };
          for (const { kind, who } of ops) {
            const name = holders[who]!;
            switch (kind) {
              case 'acquire':
                take(who, await leases.acquire(shard, name, `http://${name}`, LONG));
                break;
              case 'race': {
                const got = await Promise.all(holders.map((h) => leases.acquire(shard, h, `http://${h}`, LONG)));
                const winners = got.flatMap((g, i) => (g ? [i] : []));
                assert.equal(winners.length, 1, `one winner of a race, not ${winners.length}`);
                take(winners[0]!, got[winners[0]!]);
                break;
              }
              case 'renew': {
                const ok = await leases.renew(shard, name, m.granted[who]!, LONG);
                assert.equal(ok, mine(who), `renew by ${name}`);
                if (ok) m.live = true;
                break;
              }
              case 'release': {
                const ok = await leases.release(shard, name, m.granted[who]!);
                assert.equal(ok, mine(who), `release by ${name}`);
                if (ok) Object.assign(m, { holder: null, live: false });
                break;
              }
              case 'expire':
                // Time passing beyond the lease's end, without waiting for it.
                await meta.db.updateTable('shard_leases').set({ expires_at: sql<number>`expires_at - ${2 * LONG}` }).where('shard', '=', shard).execute();
                m.live = false;
                break;
              case 'write': {
                const outcome = await fencedWrite(meta, leases, shard, m.granted[who]!);
                assert.equal(outcome, mine(who) && m.live ? 'written' : 'stale_epoch', `fenced write by ${name}`);
                if (outcome === 'written') m.written++;
                break;
              }
            }
            const seen = await leases.current(shard);
            if (m.holder === null) {
              assert.equal(seen, undefined);
            } else {
              assert.deepEqual([seen?.holder, seen?.epoch], [holders[m.holder], m.epoch]);
              assert.equal(seen!.expiresInMs > 0, m.live, 'expiry by the database clock matches the model');
            }
            // At most one holder passes the fence at any moment.
            let passing = 0;
            for (const h of [0, 1, 2]) {
              if (m.granted[h] === 0) continue;
              await meta.db
                .transaction()
                .execute(async (trx) => {
                  await leases.fenced(trx, shard, m.granted[h]!);
                  passing++;
                })
                .catch((err: unknown) => assert.ok(isDomainError(err) && err.code === 'stale_epoch', String(err)));
            }
            assert.ok(passing <= 1, `${passing} holders pass the fence`);
            const row = await meta.db.selectFrom('shard_leases').select('epoch').where('shard', '=', shard).executeTakeFirst();
            assert.equal(Number(row?.epoch ?? 0), m.epoch, 'the stored epoch (kept across releases) is the newest grant');
          }
          assert.equal(await auditCount(meta, shard), m.written, 'only the writes the fence let through are in the database');
        }),
        { numRuns: backend === 'postgres' ? 25 : 40 },
      );
    } finally {
      await dispose();
    }
  });
}
