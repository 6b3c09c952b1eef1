/**
 * The storage node's claim on its shard (ShardWriter) and the frontend's routing through a
 * failover (shardRoutedHosts), against real leases on SQLite and real node routes on sockets.
 * Lease expiry is made by moving `expires_at` into the past (what time does) and every wait
 * is for a condition, with a generous bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify from 'fastify';
import { tempDir } from '../../test/e2e/harness.js';
import { scratchLocalHost } from '../../test/support/local-host.js';
import { openMetaStore, type MetaStore } from '../meta/db.js';
import { insertShard } from '../meta/shards.js';
import { createShardLeases, type ShardLeases } from '../meta/shard-leases.js';
import { registerNodeRoutes } from '../http/node-routes.js';
import { createLogger } from '../shared/log.js';
import { unavailable } from '../shared/errors.js';
import { Registry } from 'prom-client';
import { createRoutingMetrics, ReplicaHost, ShardWriter, shardRoutedHosts, WriterHost, type ShardWriterEvents } from './cluster-hosts.js';
import { PassThrough } from 'node:stream';
import type { RepoHost } from './host.js';

const SECRET = 'routing-test-cluster-secret-0123456789ab';
const log = createLogger('silent');

async function open(): Promise<{ meta: MetaStore; leases: ShardLeases; dispose: () => Promise<void> }> {
  const dataDir = await tempDir('gitstratum-writer-');
  const meta = await openMetaStore({ dataDir });
  await insertShard(meta.db, { name: 's1', acceptsNew: true, createdAt: new Date().toISOString() });
  return { meta, leases: createShardLeases(meta), dispose: async () => (await meta.close(), await rm(dataDir, { recursive: true, force: true })) };
}

async function until(what: string, check: () => boolean | Promise<boolean>, boundMs = 15_000): Promise<void> {
  for (const deadline = Date.now() + boundMs; Date.now() < deadline; await sleep(20)) if (await check()) return;
  throw new Error(`timed out waiting for ${what}`);
}

/** What the lease of a paused writer looks like once its time is up. */
async function expire(meta: MetaStore, shard: string): Promise<void> {
  await meta.db.updateTable('shard_leases').set({ expires_at: 0 }).where('shard', '=', shard).execute();
}

function recorder(takeover: (epoch: number) => Promise<void> = async () => {}) {
  const seen = { takeovers: [] as number[], deposed: [] as string[] };
  const events: ShardWriterEvents = {
    takeover: async (epoch) => (seen.takeovers.push(epoch), takeover(epoch)),
    deposed: (why) => void seen.deposed.push(why),
  };
  return { seen, events };
}

test('a standby takes the shard only once the writer lease ran out, and serves only after its takeover', async () => {
  const { meta, leases, dispose } = await open();
  const a = recorder();
  const writer = new ShardWriter({ shard: 's1', advertiseUrl: 'http://a', leaseMs: 60_000 }, { leases, log, events: a.events });
  let finishTakeover!: () => void;
  const b = recorder(() => new Promise<void>((resolve) => (finishTakeover = resolve)));
  const standby = new ShardWriter({ shard: 's1', advertiseUrl: 'http://b', leaseMs: 1000 }, { leases, log, events: b.events });
  try {
    await writer.start();
    assert.equal(writer.heldEpoch, 1, 'the first node serves at epoch 1 once start() resolves');
    await standby.start();
    await sleep(600); // several of the standby's tries
    assert.deepEqual(b.seen.takeovers, [], 'no takeover while the lease runs');
    assert.equal(standby.heldEpoch, undefined);

    await expire(meta, 's1');
    await until('the standby to take the lease', () => b.seen.takeovers.length === 1);
    assert.deepEqual(b.seen.takeovers, [2], 'the epoch grows with the new holder');
    assert.equal(standby.leaseEpoch, 2);
    assert.equal(standby.heldEpoch, undefined, 'it does not serve while it recovers');
    finishTakeover();
    await until('the standby to serve', () => standby.heldEpoch === 2);

    // The old writer still thinks it holds epoch 1 (its next renewal is a minute away); closing
    // it releases only a lease at its own epoch, so the new holder keeps the shard.
    await writer.close();
    assert.equal((await leases.current('s1'))?.holder, standby.holder);
  } finally {
    await standby.close();
    await writer.close();
    await dispose();
  }
});

test('a writer whose lease was taken over is deposed at its next renewal and serves nothing', async () => {
  const { meta, leases, dispose } = await open();
  const a = recorder();
  const writer = new ShardWriter({ shard: 's1', advertiseUrl: 'http://a', leaseMs: 1000 }, { leases, log, events: a.events });
  try {
    await writer.start();
    assert.equal(writer.heldEpoch, 1);
    // As if the writer had been paused past its lease: it expired and another node took it.
    await expire(meta, 's1');
    assert.deepEqual(await leases.acquire('s1', 'other', 'http://b', 60_000), { epoch: 2 });
    await until('the writer to be deposed', () => a.seen.deposed.length === 1);
    assert.match(a.seen.deposed[0]!, /another node holds its lease/);
    assert.equal(writer.heldEpoch, undefined);
    assert.equal(writer.leaseEpoch, undefined);
    assert.equal((await leases.current('s1'))?.holder, 'other');
  } finally {
    await writer.close();
    await dispose();
  }
});

test('renewals that fail keep the writer serving only until its lease surely ran out, then depose it', async () => {
  const { leases, dispose } = await open();
  let down = false;
  const flaky: ShardLeases = {
    ...leases,
    renew: async (...args) => {
      if (down) throw new Error('connection refused');
      return leases.renew(...args);
    },
  };
  const a = recorder();
  const writer = new ShardWriter({ shard: 's1', advertiseUrl: 'http://a', leaseMs: 1500 }, { leases: flaky, log, events: a.events });
  try {
    await writer.start();
    down = true;
    await sleep(100);
    assert.equal(writer.heldEpoch, 1, 'one failed renewal does not stop it at once');
    await until('the writer to be deposed', () => a.seen.deposed.length === 1);
    assert.match(a.seen.deposed[0]!, /could not be renewed in time/);
    assert.equal(writer.heldEpoch, undefined);
  } finally {
    await writer.close();
    await dispose();
  }
});

test('a takeover that fails gives the lease up at once and deposes the node', async () => {
  const { leases, dispose } = await open();
  const a = recorder(async () => {
    throw new Error('disk not mounted');
  });
  const writer = new ShardWriter({ shard: 's1', advertiseUrl: 'http://a', leaseMs: 60_000 }, { leases, log, events: a.events });
  try {
    await writer.start();
    assert.equal(a.seen.deposed.length, 1);
    assert.match(a.seen.deposed[0]!, /takeover failed \(disk not mounted\)/);
    assert.equal(writer.heldEpoch, undefined);
    assert.equal(await leases.current('s1'), undefined, 'the lease is free for another node');
  } finally {
    await writer.close();
    await dispose();
  }
});

test('a frontend sends a ref advertisement and a fetch again to the new writer when the old one is deposed or gone', async () => {
  const { meta, leases, dispose } = await open();
  const local = await scratchLocalHost();
  // The old writer: deposed, it answers every request 503 not_shard_writer, as WriterHost does.
  const refusing: RepoHost = {
    location: (id) => id,
    create: async () => {},
    remove: async () => {},
    advertiseRefs: async () => {
      throw unavailable('not_shard_writer', 'this node does not hold shard s1 now');
    },
    statelessRpc: async (_r, call) => {
      call.input.resume();
      throw unavailable('not_shard_writer', 'this node does not hold shard s1 now');
    },
    uploadPackSession: async () => {
      throw unavailable('not_shard_writer', 'this node does not hold shard s1 now');
    },
  };
  const oldNode = Fastify();
  registerNodeRoutes(oldNode, { host: refusing, secret: SECRET });
  const oldUrl = await oldNode.listen({ host: '127.0.0.1', port: 0 });
  const newNode = Fastify();
  registerNodeRoutes(newNode, { host: local.host, secret: SECRET });
  const newUrl = await newNode.listen({ host: '127.0.0.1', port: 0 });
  const routing = shardRoutedHosts(leases, SECRET, { cacheMs: 60_000, failoverWaitMs: 20_000 });
  const registry = new Registry();
  routing.useMetrics(createRoutingMetrics(registry));
  const abort = new AbortController();
  try {
    await local.host.create({ id: '01JR0V7NGAAAAAAAAAAAAAAAAA', defaultBranch: 'main' });
    const repo = { id: '01JR0V7NGAAAAAAAAAAAAAAAAA', defaultBranch: 'main', label: 'o/s/r' };
    await leases.acquire('s1', 'old', oldUrl, 60_000);
    const host = routing({ id: repo.id, shard: 's1' });

    // The lease passes to the new node a little after the request started.
    const moved = (async () => {
      await sleep(300);
      await expire(meta, 's1');
      await leases.acquire('s1', 'new', newUrl, 60_000);
    })();
    const res = await host.advertiseRefs(repo, { service: 'upload-pack', protocol: 'version=2' }, abort.signal);
    let text = '';
    for await (const chunk of res.body) text += String(chunk);
    await moved;
    assert.match(text, /version 2/, 'the advertisement came from the new writer');
    assert.equal((await res.done).code, 0);
    await until('the proxied bytes to be counted', async () => (await registry.getSingleMetricAsString('gitstratum_proxied_bytes_total')).includes(`direction="from_node"} ${text.length}`));
    assert.match(await registry.getSingleMetricAsString('gitstratum_routing_retries_total'), /result="ok"} 1/);

    // A v2 fetch body is kept and sent again too (here: ls-refs, answered by the new writer).
    await expire(meta, 's1');
    await leases.acquire('s1', 'old', oldUrl, 60_000);
    routing.invalidate('s1');
    const body = Buffer.from('0014command=ls-refs\n0001' + '0000');
    const again = (async () => {
      await sleep(300);
      await expire(meta, 's1');
      await leases.acquire('s1', 'new', newUrl, 60_000);
      routing.invalidate('s1');
    })();
    const { Readable } = await import('node:stream');
    const rpc = await host.statelessRpc(
      repo,
      { service: 'upload-pack', protocol: 'version=2', input: Readable.from([body]), pusher: { actorId: null, actorName: 'a', requestId: 'r' } },
      abort.signal,
    );
    let out = '';
    for await (const chunk of rpc.body) out += String(chunk);
    await again;
    assert.equal((await rpc.done).code, 0);
    assert.equal(out, '0000', 'an empty repository lists no refs');

    // No writer at all within the wait: 503 shard_unavailable, in the client's terms.
    await expire(meta, 's1');
    routing.invalidate('s1');
    const short = shardRoutedHosts(leases, SECRET, { failoverWaitMs: 500 });
    await assert.rejects(short({ id: repo.id, shard: 's1' }).advertiseRefs(repo, { service: 'upload-pack' }, abort.signal), (err: Error & { code?: string }) => err.code === 'shard_unavailable');
    await short.close();
  } finally {
    abort.abort();
    await routing.close();
    await oldNode.close();
    await newNode.close();
    await local.close();
    await dispose();
  }
});

test('a frontend reads from an up-to-date replica, falls back to the writer when it fails, and never pushes to it', async () => {
  const { leases, dispose } = await open();
  const writerDisk = await scratchLocalHost();
  const replicaDisk = await scratchLocalHost();
  const id = '01JR0V7NGBBBBBBBBBBBBBBBBB';
  const repo = { id, defaultBranch: 'main', label: 'o/s/r' };
  await writerDisk.host.create({ id, defaultBranch: 'main' });
  await replicaDisk.host.create({ id, defaultBranch: 'main' });
  const writerNode = Fastify();
  registerNodeRoutes(writerNode, { host: writerDisk.host, secret: SECRET });
  const writerUrl = await writerNode.listen({ host: '127.0.0.1', port: 0 });
  const replicaNode = Fastify();
  registerNodeRoutes(replicaNode, { host: new ReplicaHost(replicaDisk.host, 's1'), secret: SECRET });
  const replicaUrl = await replicaNode.listen({ host: '127.0.0.1', port: 0 });
  let upToDate: string[] = [replicaUrl];
  const routing = shardRoutedHosts(leases, SECRET, { replicas: async () => upToDate, replicaPauseMs: 60_000 });
  const registry = new Registry();
  routing.useMetrics(createRoutingMetrics(registry));
  const abort = new AbortController();
  const reads = async (target: string) => Number(new RegExp(`target="${target}"} (\\d+)`).exec(await registry.getSingleMetricAsString('gitstratum_routing_reads_total'))?.[1] ?? 0);
  const advertise = async () => {
    const res = await routing({ id, shard: 's1' }).advertiseRefs(repo, { service: 'upload-pack', protocol: 'version=2' }, abort.signal);
    for await (const _ of res.body);
    return (await res.done).code;
  };
  try {
    await leases.acquire('s1', 'writer', writerUrl, 60_000);
    assert.equal(await advertise(), 0);
    assert.equal(await reads('replica'), 1, 'the up-to-date replica answered');
    upToDate = [];
    assert.equal(await advertise(), 0);
    assert.equal(await reads('writer'), 1, 'with none up to date, the writer');

    // A push goes to the writer even with a replica up to date; the replica itself refuses one.
    upToDate = [replicaUrl];
    const push = await routing({ id, shard: 's1' }).advertiseRefs(repo, { service: 'receive-pack' }, abort.signal);
    for await (const _ of push.body);
    assert.equal((await push.done).code, 0);
    assert.equal(await reads('replica'), 1, 'not counted as a read');
    await assert.rejects(new ReplicaHost(replicaDisk.host, 's1').advertiseRefs(repo, { service: 'receive-pack' }, abort.signal), /replica of shard s1/);

    // A shard known to have no replicas costs its reads no replica query at all.
    let asked = 0;
    const none = shardRoutedHosts(leases, SECRET, { cacheMs: 60_000, shardHasReplicas: async () => false, replicas: async () => (asked++, [replicaUrl]) });
    try {
      for (let i = 0; i < 2; i++) {
        const res = await none({ id, shard: 's1' }).advertiseRefs(repo, { service: 'upload-pack', protocol: 'version=2' }, abort.signal);
        for await (const _ of res.body);
        assert.equal((await res.done).code, 0);
      }
      assert.equal(asked, 0);
    } finally {
      await none.close();
    }

    // The replica goes away: the writer answers, and the replica is left out for a while.
    await replicaNode.close();
    assert.equal(await advertise(), 0);
    assert.equal(await reads('replica_failed'), 1);
    assert.equal(await advertise(), 0);
    assert.equal(await reads('replica_failed'), 1, 'not tried again at once');
    assert.equal(await reads('writer'), 2);
  } finally {
    abort.abort();
    await routing.close();
    await writerNode.close();
    await replicaNode.close().catch(() => {});
    await writerDisk.close();
    await replicaDisk.close();
    await dispose();
  }
});

test("a writer admits a push only as its repository allows, and a move's quiesce waits for the pushes running", async () => {
  const { leases, dispose } = await open();
  const disk = await scratchLocalHost();
  const id = '01JR0V7NGCCCCCCCCCCCCCCCCC';
  const repo = { id, defaultBranch: 'main', label: 'o/s/r' };
  await disk.host.create({ id, defaultBranch: 'main' });
  const writer = new ShardWriter({ shard: 's1', advertiseUrl: 'http://a', leaseMs: 60_000 }, { leases, log, events: recorder().events });
  let refusal: Error | undefined;
  const host = new WriterHost(disk.host, writer, 's1', { admitPush: async () => { if (refusal) throw refusal; } });
  const abort = new AbortController();
  const push = (input: PassThrough) =>
    host.statelessRpc(repo, { service: 'receive-pack', input, pusher: { actorId: null, actorName: 'root', requestId: 'r' } }, abort.signal);
  try {
    await writer.start();
    // A push still sending its pack runs: a quiesce does not end while it does.
    const body = new PassThrough();
    const command = `${'0'.repeat(40)} ${'1'.repeat(40)} refs/heads/topic\0report-status`;
    body.write(`${(command.length + 4).toString(16).padStart(4, '0')}${command}0000`);
    const running = push(body);
    assert.equal(await host.quiesce(id, 50), false);
    const quiet = host.quiesce(id, 60_000);
    body.end();
    const res = await running;
    for await (const _ of res.body);
    await res.done;
    assert.equal(await quiet, true, 'quiet once the push ended');

    // Paused (a move finishing): refused before git starts, with when to retry, and not counted.
    refusal = unavailable('repo_moving', 'pushes are paused', { retryAfterSeconds: 3 });
    await assert.rejects(push(new PassThrough()), /pushes are paused/);
    await assert.rejects(host.advertiseRefs(repo, { service: 'receive-pack' }, abort.signal), /pushes are paused/);
    assert.equal(await host.quiesce(id, 0), true);
    // Reads go on.
    const read = await host.advertiseRefs(repo, { service: 'upload-pack' }, abort.signal);
    for await (const _ of read.body);
    assert.equal((await read.done).code, 0);
  } finally {
    abort.abort();
    await writer.close();
    await disk.close();
    await dispose();
  }
});
