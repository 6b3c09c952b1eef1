import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { openMetaStore } from './db.js';
import { acquireLease, leaseHolder, releaseDeadLeases, releaseLease, renewLease } from './leases.js';

const REPO = '01JREPOAAAAAAAAAAAAAAAAAAA';

for (const backend of databaseBackends()) {
  test(`a snapshot lease has one holder at a time on ${backend}, until it is released or expires`, async () => {
    const dataDir = await tempDir('gitstratum-lease-');
    const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
    const { db, dialect } = meta;
    try {
      // Twenty holders race for a free lease: exactly one wins.
      const won = await Promise.all(Array.from({ length: 20 }, (_, i) => acquireLease(db, dialect, REPO, `w${i}`, 60_000)));
      assert.equal(won.filter(Boolean).length, 1);
      const winner = `w${won.indexOf(true)}`;
      assert.equal(await leaseHolder(db, REPO), winner);
      assert.equal(await acquireLease(db, dialect, REPO, 'other', 60_000), false);
      assert.equal(await renewLease(db, dialect, REPO, winner, 60_000), true);
      assert.equal(await renewLease(db, dialect, REPO, 'other', 60_000), false);
      // Releasing someone else's lease does nothing.
      await releaseLease(db, REPO, 'other');
      assert.equal(await leaseHolder(db, REPO), winner);
      await releaseLease(db, REPO, winner);
      assert.equal(await leaseHolder(db, REPO), undefined);

      // An expired lease is taken over; its old holder can no longer renew or release it.
      assert.equal(await acquireLease(db, dialect, REPO, 'a', 50), true);
      assert.equal(await acquireLease(db, dialect, REPO, 'b', 60_000), false);
      await sleep(120);
      const racing = await Promise.all(['b', 'c', 'd'].map((h) => acquireLease(db, dialect, REPO, h, 60_000)));
      assert.equal(racing.filter(Boolean).length, 1);
      assert.equal(await renewLease(db, dialect, REPO, 'a', 60_000), false);
      await releaseLease(db, REPO, 'a');
      assert.notEqual(await leaseHolder(db, REPO), undefined);
    } finally {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}

for (const backend of databaseBackends()) {
  test(`releaseDeadLeases on ${backend} frees the leases of this node's dead processes only`, async () => {
    const dataDir = await tempDir('gitstratum-lease-');
    const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
    const { db, dialect } = meta;
    const repos = ['01JREPOAAAAAAAAAAAAAAAAAA1', '01JREPOAAAAAAAAAAAAAAAAAA2', '01JREPOAAAAAAAAAAAAAAAAAA3', '01JREPOAAAAAAAAAAAAAAAAAA4'];
    try {
      assert.equal(await acquireLease(db, dialect, repos[0]!, 'host:abc/4001/aa', 60_000), true); // dead, this node
      assert.equal(await acquireLease(db, dialect, repos[1]!, 'host:abc/4002/bb', 60_000), true); // alive, this node
      assert.equal(await acquireLease(db, dialect, repos[2]!, 'host:xyz/4001/cc', 60_000), true); // another node
      assert.equal(await acquireLease(db, dialect, repos[3]!, 'host:abcd/4001/dd', 60_000), true); // a node whose name extends ours
      const released = await releaseDeadLeases(db, 'host:abc', (pid) => pid === 4002);
      assert.equal(released, 1);
      assert.equal(await leaseHolder(db, repos[0]!), undefined);
      assert.equal(await leaseHolder(db, repos[1]!), 'host:abc/4002/bb');
      assert.equal(await leaseHolder(db, repos[2]!), 'host:xyz/4001/cc');
      assert.equal(await leaseHolder(db, repos[3]!), 'host:abcd/4001/dd');
    } finally {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}
