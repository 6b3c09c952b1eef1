import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { coreWithAlice } from '../../test/support/core.js';
import { systemActor, type Actor } from '../access/policy.js';
import { listAudit } from '../meta/audit.js';
import { recordGitBytes } from '../meta/quotas.js';
import { createShardLeases } from '../meta/shard-leases.js';
import { parseShardName } from './shards.js';

test('shard names are DNS labels: lower-case letters, digits and inner hyphens, 1-63 long', () => {
  for (const ok of ['a', 'local', 'eu-west-1', 'x'.repeat(63)]) assert.equal(parseShardName(ok), ok);
  for (const bad of ['', 'A', 'eu_west', '-a', 'a-', 'a.b', 'x'.repeat(64), 'a/b']) {
    assert.throws(() => parseShardName(bad), { code: 'invalid_shard_name' }, bad);
  }
});

for (const backend of databaseBackends()) {
  test(`new repositories go to the lightest placeable shard, pinned spaces to their pins, forks to their source's shard (${backend})`, async () => {
    const dir = await tempDir('gitstratum-shards-');
    const core = await coreWithAlice(dir, backend === 'postgres' ? await freshDatabaseUrl() : undefined);
    const { shards, repos } = core;
    const create = async (p: string) => (await repos.createRepo(systemActor, p)).shard;
    try {
      const alice: Actor = { kind: 'user', userId: (await core.accounts.listUsers(systemActor))[0]!.id, name: 'alice', isAdmin: false, scope: 'admin', tokenId: null };
      await assert.rejects(shards.create(alice, 'a'), { code: 'admin_required' });
      await assert.rejects(shards.list(alice), { code: 'admin_required' });
      await assert.rejects(shards.drain(alice, 'local'), { code: 'admin_required' });

      // Before any shard is added, everything goes to `local`.
      assert.equal(await create('alice/main/first'), 'local');
      await shards.setAcceptsNew(systemActor, 'local', false);
      const a = await shards.create(systemActor, 'a');
      assert.deepEqual([a.name, a.state, a.acceptsNew, a.placeable, a.repositories, a.lease], ['a', 'active', true, true, 0, null]);
      await shards.create(systemActor, 'b');
      await assert.rejects(shards.create(systemActor, 'b'), { code: 'shard_exists', message: 'shard already exists: b' });
      await assert.rejects(shards.create(systemActor, 'Bad_Name'), { code: 'invalid_shard_name' });

      // Equal loads: the first by name; then whichever holds fewer git bytes.
      const r1 = await repos.createRepo(systemActor, 'alice/main/r1');
      assert.equal(r1.shard, 'a');
      await recordGitBytes(core.meta.db, r1.id, 1000);
      const r2 = await repos.createRepo(systemActor, 'alice/main/r2');
      assert.equal(r2.shard, 'b');
      await recordGitBytes(core.meta.db, r2.id, 500);
      assert.equal(await create('alice/main/r3'), 'b');

      // A fork stays with its source, whatever the loads.
      assert.equal((await repos.forkRepo(systemActor, 'alice/main/r1', 'alice/main/f1')).shard, 'a');

      // A pinned space goes to its pins only.
      await repos.createSpace(systemActor, 'alice/pinned');
      const pin = await shards.pin(systemActor, 'alice/pinned', 'a');
      assert.deepEqual([pin.space, pin.added, pin.pins], ['alice/pinned', true, ['a']]);
      assert.equal((await shards.pin(systemActor, 'alice/pinned', 'a')).added, false);
      await assert.rejects(shards.pin(systemActor, 'alice/pinned', 'nope'), { code: 'shard_not_found' });
      await assert.rejects(shards.pin(systemActor, 'alice/none', 'a'), { code: 'space_not_found' });
      assert.equal(await create('alice/pinned/p1'), 'a');

      // Draining: no new repository is placed there; a pinned space with no other pin cannot get one; forks still follow their source.
      const drained = await shards.drain(systemActor, 'a');
      assert.deepEqual([drained.from, drained.state, drained.changed, drained.repositories, drained.nonePlaceable], ['active', 'draining', true, 3, false]);
      assert.equal((await shards.drain(systemActor, 'a')).changed, false);
      await assert.rejects(repos.createRepo(systemActor, 'alice/pinned/p2'), {
        kind: 'unavailable',
        code: 'no_shard_available',
        message: 'no shard that space alice/pinned is pinned to (a) accepts new repositories',
      });
      assert.equal(await create('alice/main/r4'), 'b');
      assert.equal((await repos.forkRepo(systemActor, 'alice/main/r1', 'alice/pinned/f2')).shard, 'a');
      assert.deepEqual((await shards.unpin(systemActor, 'alice/pinned')).pins, []);
      assert.equal(await create('alice/pinned/p2'), 'b');

      // The listing: loads, and the writer's lease when one is held.
      const leases = createShardLeases(core.meta);
      assert.deepEqual(await leases.acquire('b', 'node-b/1/x', 'http://b.internal:8080', 60_000), { epoch: 1 });
      const list = await shards.list(systemActor);
      assert.deepEqual(
        list.map((s) => [s.name, s.state, s.acceptsNew, s.placeable, s.repositories, s.gitBytes]),
        [
          ['a', 'draining', true, false, 4, 1000],
          ['b', 'active', true, true, 4, 500],
          ['local', 'active', false, false, 1, 0],
        ],
      );
      const b = list.find((s) => s.name === 'b')!;
      assert.deepEqual([b.lease?.holder, b.lease?.url, b.lease?.epoch], ['node-b/1/x', 'http://b.internal:8080', 1]);
      assert.ok(b.lease!.expiresInMs > 0);

      // Draining the last placeable shard says so; creating fails until one is back.
      assert.equal((await shards.drain(systemActor, 'b')).nonePlaceable, true);
      await assert.rejects(repos.createRepo(systemActor, 'alice/main/r5'), { code: 'no_shard_available', message: 'no shard accepts new repositories' });
      const back = await shards.activate(systemActor, 'a');
      assert.deepEqual([back.from, back.state, back.nonePlaceable], ['draining', 'active', false]);
      assert.equal(await create('alice/main/r5'), 'a');

      const actions = (await listAudit(core.meta.db, { limit: 100 })).map((e) => e.action).filter((x) => x.startsWith('shard.'));
      assert.deepEqual(actions.sort(), ['shard.accept_new', 'shard.activate', 'shard.create', 'shard.create', 'shard.drain', 'shard.drain', 'shard.pin', 'shard.unpin']);
    } finally {
      await core.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
