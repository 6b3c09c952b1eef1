/**
 * The synchronous standby's record of ref transactions (meta/sync-refs.ts) on SQLite and
 * PostgreSQL: what a takeover would apply after transactions that committed, that were only
 * prepared, that deleted a ref, and that changed several refs at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { openMetaStore } from './db.js';
import { seedShardRepositories } from '../../test/support/shard-fixture.js';
import { deleteRepository } from './repositories.js';
import { committedRefs, recordCommitted, recordPrepared, transactionKey } from './sync-refs.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);
const ZERO = '0'.repeat(40);

for (const backend of databaseBackends()) {
  test(`a takeover would apply each ref's last committed value and no pending one, on ${backend}`, async () => {
    const dataDir = await tempDir('gitstratum-sync-refs-');
    const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
    try {
      await seedShardRepositories(meta);
      const push = async (repo: string, request: string, updates: { ref: string; new: string }[], commit: boolean, epoch = 1) => {
        const key = transactionKey(request, updates.map((u) => `x ${u.new} ${u.ref}\n`).join(''));
        await recordPrepared(meta.db, meta.dialect, repo, key, updates);
        return commit ? recordCommitted(meta.db, meta.dialect, repo, key, epoch) : 0;
      };
      const applied = async () => Object.fromEntries([...(await committedRefs(meta.db, 's1'))].map(([id, refs]) => [id, refs.map((r) => `${r.ref}=${r.value[0]}@${r.epoch}`)]));

      assert.deepEqual(await applied(), {});
      // main: A committed, then B committed, then C prepared only (its push never reported success).
      assert.equal(await push('R1', 'req-1', [{ ref: 'refs/heads/main', new: A }], true), 1);
      assert.equal(await push('R1', 'req-2', [{ ref: 'refs/heads/main', new: B }], true, 2), 1);
      assert.equal(await push('R1', 'req-3', [{ ref: 'refs/heads/main', new: C }], false), 0);
      // topic: created, then deleted; only prepared on a new ref: nothing to apply.
      await push('R1', 'req-4', [{ ref: 'refs/heads/topic', new: A }], true);
      await push('R1', 'req-5', [{ ref: 'refs/heads/topic', new: ZERO }], true);
      await push('R1', 'req-6', [{ ref: 'refs/heads/never', new: A }], false);
      // An atomic push of two refs commits both under one key; another shard's repository is not this shard's.
      assert.equal(await push('R2', 'req-7', [{ ref: 'refs/heads/a', new: A }, { ref: 'refs/tags/v1', new: B }], true), 2);
      await push('R3', 'req-8', [{ ref: 'refs/heads/main', new: A }], true);
      assert.deepEqual(await applied(), {
        R1: ['refs/heads/main=b@2', 'refs/heads/topic=0@1'],
        R2: ['refs/heads/a=a@1', 'refs/tags/v1=b@1'],
      });

      // The pending C commits later (a retry of the same transaction key commits nothing twice).
      const key = transactionKey('req-3', `x ${C} refs/heads/main\n`);
      assert.equal(await recordCommitted(meta.db, meta.dialect, 'R1', key, 3), 1);
      assert.equal(await recordCommitted(meta.db, meta.dialect, 'R1', key, 3), 0);
      assert.deepEqual((await applied())['R1'], ['refs/heads/main=c@3', 'refs/heads/topic=0@1']);

      // A deleted repository takes its records with it.
      await deleteRepository(meta.db, 'R2');
      assert.deepEqual(Object.keys(await applied()), ['R1']);
    } finally {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}
