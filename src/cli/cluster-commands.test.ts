/**
 * `gitstratum cluster status`: the text it prints, and the real command line against a
 * database holding two shards, a lease taken on one, two registered storage nodes and two
 * replicas (made
 * here with the same functions the storage nodes call), on SQLite and PostgreSQL.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { sql } from 'kysely';
import { BIN, databaseBackends, freshDatabaseUrl, run, tempDir, type RunResult } from '../../test/e2e/harness.js';
import { openMetaStore } from '../meta/db.js';
import { createShardLeases } from '../meta/shard-leases.js';
import { appendEvent } from '../meta/snapshots.js';
import { heartbeat } from '../meta/storage-nodes.js';
import { readRefsVersion, bumpRefsVersion } from '../meta/refs-versions.js';
import { recordPosition, replicaHeartbeat } from '../meta/replication.js';
import type { ClusterStatus, ShardStatus } from '../repos/cluster-status.js';
import { describeClusterStatus } from './cluster-commands.js';

const shard = (over: Partial<ShardStatus>): ShardStatus => ({
  name: 'eu-1',
  state: 'active',
  acceptsNew: true,
  placeable: true,
  createdAt: '',
  repositories: 0,
  gitBytes: 0,
  writer: null,
  standbys: [],
  replicas: [],
  snapshotLag: { dirtyRepositories: 0, oldestUnpersistedAt: null, oldestUnpersistedAgeMs: null },
  ...over,
});

test('cluster status text: a block per shard with its writer, standbys and snapshot lag, then the verdict', () => {
  const status: ClusterStatus = {
    shards: [
      shard({
        repositories: 12,
        gitBytes: 3 * 1024 * 1024,
        writer: { holder: 'node-a/41/x', url: 'http://a:8080', epoch: 7, heldForMs: 95_000, expiresInMs: 4_200, live: true },
        standbys: [
          { holder: 'node-b/52/y', url: 'http://b:8080', startedAtMs: 0, lastSeenAgoMs: 1_400, gone: false },
          { holder: 'node-c/9/q', url: 'http://c:8080', startedAtMs: 0, lastSeenAgoMs: 180_000, gone: true },
        ],
        replicas: [
          { diskId: '0123456789abcdef0123456789abcdef', url: 'http://r1:8080', mode: 'async', lastSeenAgoMs: 900, silent: false, behindRepositories: 0, lagMs: 0 },
          { diskId: 'fedcba9876543210fedcba9876543210', url: 'http://r2:8080', mode: 'async', lastSeenAgoMs: 1_900, silent: false, behindRepositories: 3, lagMs: 4_000 },
          { diskId: 'aaaaaaaabbbbbbbbccccccccdddddddd', url: 'http://r3:8080', mode: 'async', lastSeenAgoMs: 45_000, silent: true, behindRepositories: 12, lagMs: 60_000 },
        ],
        snapshotLag: { dirtyRepositories: 2, oldestUnpersistedAt: '2025-01-01T00:00:00.000Z', oldestUnpersistedAgeMs: 12_000 },
      }),
      shard({ name: 'eu-2', repositories: 1 }),
      shard({ name: 'eu-3', state: 'draining', repositories: 4 }),
      shard({ name: 'eu-4', state: 'draining' }),
      shard({
        name: 'local',
        state: 'draining',
        acceptsNew: false,
        writer: { holder: 'old', url: 'http://o', epoch: 2, heldForMs: 3 * 3600_000, expiresInMs: -130_000, live: false },
        snapshotLag: { dirtyRepositories: 1, oldestUnpersistedAt: '2025-01-01T00:00:00.000Z', oldestUnpersistedAgeMs: 7_000 },
      }),
    ],
    withoutWriter: ['eu-2'],
    healthy: false,
    registeredNodes: 3,
    goneAfterMs: 30_000,
  };
  assert.deepEqual(describeClusterStatus(status), [
    'shard eu-1: active, accepts new, 12 repositories, 3.0 MiB',
    '  writer     node-a/41/x at http://a:8080, epoch 7, held for 95 s, expires in 4 s',
    '  standby    node-b/52/y at http://b:8080, seen 1 s ago',
    '  standby    node-c/9/q at http://c:8080, gone (seen 3 min ago)',
    '  replica    http://r1:8080 (async, disk 01234567), up to date, seen 1 s ago',
    '  replica    http://r2:8080 (async, disk fedcba98), 3 repositories behind, oldest change 4 s ago, seen 2 s ago',
    '  replica    http://r3:8080 (async, disk aaaaaaaa), SILENT (seen 45 s ago): no reads',
    '  snapshots  2 dirty repositories, oldest un-persisted change 12 s ago',
    '',
    'shard eu-2: active, accepts new, 1 repository, 0 B',
    '  writer     NONE: its repositories cannot be served',
    '  standbys   none',
    '  snapshots  every push persisted',
    '',
    'shard eu-3: draining, accepts new, 4 repositories, 0 B',
    '  writer     NONE: its repositories cannot be served',
    '  standbys   none',
    '  snapshots  every push persisted',
    '',
    'shard eu-4: draining, accepts new, 0 repositories, 0 B',
    '  writer     none',
    '  standbys   none',
    '  snapshots  every push persisted',
    '',
    'shard local: draining, no new, 0 repositories, 0 B',
    '  writer     old at http://o, epoch 2, held for 3.0 h, EXPIRED 2 min ago',
    '  standbys   none',
    '  snapshots  1 dirty repository, oldest un-persisted change 7 s ago',
    '',
    'NO LIVE WRITER on shard(s) in use: eu-2',
  ]);
  const fine = { ...status, shards: status.shards.slice(0, 1), withoutWriter: [], healthy: true };
  assert.equal(describeClusterStatus(fine).at(-1), 'ok: every shard in use has a live writer (3 storage nodes registered)');
  // A single server: nothing registered, no lease anywhere.
  const single = describeClusterStatus({ shards: [shard({ name: 'local' })], withoutWriter: ['local'], healthy: false, registeredNodes: 0, goneAfterMs: 30_000 });
  assert.deepEqual(single.slice(-2), [
    'note: no storage node has registered; a single server (role all) takes no shard lease, so this reports on clusters only',
    'NO LIVE WRITER on shard(s) in use: local',
  ]);
});

for (const backend of databaseBackends()) {
  test(`cluster status through the command line: writers, standbys, gone nodes, snapshot lag and the exit code, on ${backend}`, async () => {
    const dataDir = await tempDir('gitstratum-cluster-status-');
    const databaseUrl = backend === 'postgres' ? await freshDatabaseUrl() : undefined;
    const cli = (args: string[]): Promise<RunResult> => run(process.execPath, [BIN, ...args, '--data', dataDir, ...(databaseUrl ? ['--database-url', databaseUrl] : [])]);
    const ok = async (args: string[]) => {
      const r = await cli(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const status = async (args: string[] = []) => {
      const r = await cli(['cluster', 'status', '--json', ...args]);
      assert.equal(r.stderr, '');
      return { code: r.code, json: JSON.parse(r.stdout) as ClusterStatus };
    };
    const byName = (s: ClusterStatus) => new Map(s.shards.map((x) => [x.name, x]));

    // Two shards; `local` (made by the first migration, unused here) drained, so it does not count.
    await ok(['shard', 'create', 'eu-1']);
    await ok(['shard', 'create', 'eu-2']);
    await ok(['shard', 'drain', 'local']);
    await ok(['user', 'create', 'alice']);
    await ok(['space', 'create', 'alice/main']);
    const one = JSON.parse(await ok(['repo', 'create', 'alice/main/one', '--json'])) as { id: string; shard: string };
    const two = JSON.parse(await ok(['repo', 'create', 'alice/main/two', '--json'])) as { id: string; shard: string };
    assert.deepEqual([one.shard, two.shard], ['eu-1', 'eu-2']);

    const meta = await openMetaStore({ dataDir, databaseUrl });
    try {
      // eu-1: node-a writes, node-b stands by; a push on eu-1 not yet in a snapshot, 90 s old.
      const leases = createShardLeases(meta);
      assert.deepEqual(await leases.acquire('eu-1', 'node-a/1/x', 'http://a:8080', 600_000), { epoch: 1 });
      await heartbeat(meta, { holder: 'node-a/1/x', shard: 'eu-1', url: 'http://a:8080' });
      await heartbeat(meta, { holder: 'node-b/2/y', shard: 'eu-1', url: 'http://b:8080' });
      await appendEvent(meta.db, one.id, 'push-end', new Date(Date.now() - 90_000).toISOString());
      // Two replicas of eu-1: r1 holds repository one's current version, r2 has no copy yet.
      await bumpRefsVersion(meta.db, meta.dialect, one.id);
      await replicaHeartbeat(meta, { diskId: '11111111111111111111111111111111', shard: 'eu-1', url: 'http://r1:8080', mode: 'async' });
      await replicaHeartbeat(meta, { diskId: '22222222222222222222222222222222', shard: 'eu-1', url: 'http://r2:8080', mode: 'async' });
      await recordPosition(meta, '11111111111111111111111111111111', one.id, await readRefsVersion(meta.db, one.id));

      // eu-2 is active with no writer: exit 1, and the text says which shard.
      const text = await cli(['cluster', 'status']);
      assert.equal(text.code, 1, text.stderr);
      const lines = text.stdout.trimEnd().split('\n');
      const block = (name: string) => lines.slice(lines.findIndex((l) => l.startsWith(`shard ${name}: `)));
      const eu1 = block('eu-1');
      assert.equal(eu1[0], 'shard eu-1: active, accepts new, 1 repository, 0 B');
      assert.match(eu1[1]!, /^ {2}writer {5}node-a\/1\/x at http:\/\/a:8080, epoch 1, held for \d+ s, expires in \d+ min$/);
      assert.match(eu1[2]!, /^ {2}standby {4}node-b\/2\/y at http:\/\/b:8080, seen \d s ago$/);
      assert.match(eu1[3]!, /^ {2}replica {4}http:\/\/r1:8080 \(async, disk 11111111\), up to date, seen \d s ago$/);
      assert.match(eu1[4]!, /^ {2}replica {4}http:\/\/r2:8080 \(async, disk 22222222\), 1 repository behind, oldest change \d s ago, seen \d s ago$/);
      assert.match(eu1[5]!, /^ {2}snapshots {2}1 dirty repository, oldest un-persisted change 9\d s ago$/);
      assert.deepEqual(block('eu-2').slice(0, 4), [
        'shard eu-2: active, accepts new, 1 repository, 0 B',
        '  writer     NONE: its repositories cannot be served',
        '  standbys   none',
        '  snapshots  every push persisted',
      ]);
      assert.equal(block('local')[0], 'shard local: draining, accepts new, 0 repositories, 0 B');
      assert.equal(lines.at(-1), 'NO LIVE WRITER on shard(s) in use: eu-2');

      // The same as JSON.
      const first = await status();
      assert.equal(first.code, 1);
      assert.deepEqual([first.json.healthy, first.json.withoutWriter, first.json.registeredNodes, first.json.goneAfterMs], [false, ['eu-2'], 2, 15_000]);
      const s1 = byName(first.json).get('eu-1')!;
      assert.deepEqual([s1.writer?.holder, s1.writer?.url, s1.writer?.epoch, s1.writer?.live], ['node-a/1/x', 'http://a:8080', 1, true]);
      assert.ok(s1.writer!.expiresInMs > 500_000 && s1.writer!.heldForMs >= 0, JSON.stringify(s1.writer));
      assert.deepEqual(s1.standbys.map((n) => [n.holder, n.url, n.gone]), [['node-b/2/y', 'http://b:8080', false]]);
      assert.deepEqual(s1.replicas.map((r) => [r.url, r.mode, r.silent, r.behindRepositories]), [
        ['http://r1:8080', 'async', false, 0],
        ['http://r2:8080', 'async', false, 1],
      ]);
      assert.equal(s1.snapshotLag.dirtyRepositories, 1);
      assert.ok(s1.snapshotLag.oldestUnpersistedAgeMs! >= 90_000 && s1.snapshotLag.oldestUnpersistedAgeMs! < 150_000, JSON.stringify(s1.snapshotLag));
      const s2 = byName(first.json).get('eu-2')!;
      assert.deepEqual([s2.writer, s2.standbys, s2.replicas, s2.snapshotLag.dirtyRepositories, s2.repositories], [null, [], [], 0, 1]);

      // r1 falls silent (unheard of for 11 s, past REPLICA_SEEN_WITHIN_MS): frontends send it nothing, and status says so.
      await meta.db.updateTable('replicas').set({ last_seen_at: sql<number>`last_seen_at - 11000` }).where('url', '=', 'http://r1:8080').execute();
      assert.match((await cli(['cluster', 'status'])).stdout, /\n {2}replica {4}http:\/\/r1:8080 \(async, disk 11111111\), SILENT \(seen 1\d s ago\): no reads\n/);

      // node-b unheard of for 31 s: more than 3 lease lifetimes of 5 s (the default), not of 20 s.
      await meta.db.updateTable('storage_nodes').set({ last_seen_at: sql<number>`last_seen_at - 31000` }).where('holder', '=', 'node-b/2/y').execute();
      assert.match((await cli(['cluster', 'status'])).stdout, /\n {2}standby {4}node-b\/2\/y at http:\/\/b:8080, gone \(seen 3\d s ago\)\n/);
      assert.deepEqual(byName((await status()).json).get('eu-1')!.standbys.map((n) => n.gone), [true]);
      assert.deepEqual(byName((await status(['--shard-lease-seconds', '20'])).json).get('eu-1')!.standbys.map((n) => n.gone), [false]);

      // A writer on eu-2 (node-c, not registered): every shard in use has one, exit 0.
      assert.deepEqual(await leases.acquire('eu-2', 'node-c/3/z', 'http://c:8080', 600_000), { epoch: 1 });
      const healthy = await cli(['cluster', 'status']);
      assert.equal(healthy.code, 0, healthy.stderr);
      assert.equal(healthy.stdout.trimEnd().split('\n').at(-1), 'ok: every shard in use has a live writer (2 storage nodes registered)');
      assert.equal((await status()).code, 0);

      // eu-1's lease runs out with no one to take it: EXPIRED, exit 1 again.
      await meta.db.updateTable('shard_leases').set({ expires_at: sql<number>`expires_at - 1200000` }).where('shard', '=', 'eu-1').execute();
      const expired = await cli(['cluster', 'status']);
      assert.equal(expired.code, 1);
      assert.match(expired.stdout, /\n {2}writer {5}node-a\/1\/x at http:\/\/a:8080, epoch 1, held for \d+ s, EXPIRED 10 min ago\n/);
      assert.match(expired.stdout, /\nNO LIVE WRITER on shard\(s\) in use: eu-1\n$/);
    } finally {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}
