/**
 * The cache's decisions, against a scripted stand-in for the plain git services: the test
 * decides when "git" writes, fails or exits, which real git cannot be made to do on cue.
 * test/e2e/pack-cache.test.ts covers the same mechanism with the real git client and server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { Registry } from 'prom-client';
import { createLogger } from '../../shared/log.js';
import { invalid } from '../../shared/errors.js';
import { DEFAULT_PUSH_CAPS, FLUSH_PKT, pktLine } from '../pkt-line.js';
import type { GitResponse, GitServices, Outcome, RpcOptions } from '../smart-http.js';
import { openPackCache, type PackCacheOptions } from './cache.js';
import { createPackCacheMetrics } from './metrics.js';

interface Call {
  body: Buffer;
  signal: AbortSignal;
  out: PassThrough;
  exit(code: number): void;
}

/** Plain git services whose every call waits for the test to script its output. */
function scriptedGit() {
  const calls: Call[] = [];
  const waiters: ((c: Call) => void)[] = [];
  const respond = (body: Buffer, signal: AbortSignal): GitResponse => {
    const out = new PassThrough();
    let exit!: (code: number) => void;
    const done = new Promise<Outcome>((resolve) => {
      exit = (code) => {
        out.end();
        resolve({ code, signal: null, stderr: '', timedOut: false, bytesIn: body.length, bytesOut: 0, commands: [], spawned: true });
      };
    });
    signal.addEventListener('abort', () => exit(143), { once: true });
    const call = { body, signal, out, exit };
    calls.push(call);
    waiters.shift()?.(call);
    return { body: out, done };
  };
  const inner: GitServices = {
    async advertiseRefs(_opts, signal) {
      return respond(Buffer.alloc(0), signal);
    },
    async statelessRpc(opts, signal) {
      const chunks: Buffer[] = [];
      for await (const c of opts.input) chunks.push(Buffer.from(c as Buffer));
      const body = Buffer.concat(chunks);
      if (body.includes('refuse')) throw invalid('git_failed', 'refused');
      return respond(body, signal);
    },
  };
  if (gitWritesFile) {
    // As git started with its stdout on the file: what the test writes lands in the file, and
    // the cache learns of it only by looking at the file.
    inner.uploadPackInto = async (opts, file, signal) => {
      if (opts.body.includes('refuse')) throw invalid('git_failed', 'refused');
      const res = respond(opts.body, signal);
      const fd = openSync(file, 'r+');
      let position = 0;
      res.body.on('data', (c: Buffer) => (position += writeSync(fd, c, 0, c.length, position)));
      res.body.once('end', () => closeSync(fd));
      return { done: res.done };
    };
  }
  const next = () => new Promise<Call>((resolve) => waiters.push(resolve));
  return { inner, calls, next };
}

/**
 * Whether the scripted git writes its packs into the cache's file itself, as the local git
 * services do (GitServices.uploadPackInto), or hands them over a pipe, as a storage node's
 * services do to a frontend. bothWays() runs a test each way.
 */
let gitWritesFile = false;

function bothWays(title: string, fn: () => Promise<void>): void {
  test(title, () => {
    gitWritesFile = false;
    return fn();
  });
  test(`${title} (git writes the cache file itself)`, () => {
    gitWritesFile = true;
    return fn();
  });
}

const want = pktLine(`want ${'a'.repeat(40)} side-band-64k agent=git/2.39.5\n`);
const fetchBody = (extra = '') => Buffer.concat([want, ...(extra ? [pktLine(`${extra}\n`)] : []), FLUSH_PKT, pktLine('done\n')]);

async function setup(overrides: Partial<PackCacheOptions> = {}) {
  const root = await mkdtemp(path.join(tmpdir(), 'gitstratum-cache-'));
  const registry = new Registry();
  const git = scriptedGit();
  const cache = await openPackCache(
    git.inner,
    {
      dir: path.join(root, 'cache'),
      limits: { maxBytes: 1 << 30, maxEntryBytes: 1 << 30, minFreeBytes: 0 },
      admitAfter: 1,
      admitWindowMs: 60_000,
      maxRequestBytes: 64 * 1024,
      admission: { maxRunning: 4, maxRunningPerRepo: 4, maxQueue: 10, queueTimeoutMs: 1000 },
      ...overrides,
    },
    { metrics: createPackCacheMetrics(registry), log: createLogger('silent') },
  );
  const rpc = (body: Buffer, signal = new AbortController().signal, service: 'upload-pack' | 'receive-pack' = 'upload-pack') => {
    const opts: RpcOptions = {
      service,
      repoId: 'repo1',
      repoPath: root,
      protocol: undefined,
      input: Readable.from([body]),
      limits: { timeoutMs: 60_000, niceness: 0, maxPushBytes: 1 << 30, maxFetchRequestBytes: 1 << 20, push: DEFAULT_PUSH_CAPS },
    };
    return cache.statelessRpc(opts, signal);
  };
  const metric = async (name: string, labels: Record<string, string> = {}) => {
    const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
    return m?.values.filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val)).reduce((n, v) => n + v.value, 0) ?? 0;
  };
  const cleanup = async () => {
    await cache.close();
    await rm(root, { recursive: true, force: true });
  };
  return { root, cache, git, rpc, metric, cleanup };
}

async function text(res: GitResponse): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res.body) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

const tick = (ms = 10) => new Promise((r) => setTimeout(r, ms));

/** Waits until `read()` gives `want` (storing an entry takes two fsyncs: slow on a busy disk), at most 5 s. */
async function eventually<T>(read: () => Promise<T>, want: T): Promise<T> {
  let got = await read();
  for (let i = 0; i < 250 && got !== want; i++) {
    await tick(20);
    got = await read();
  }
  return got;
}

bothWays('identical concurrent requests share one generation; the next one is a hit with no git', async () => {
  const t = await setup();
  try {
    const first = t.git.next();
    const responses = Array.from({ length: 5 }, () => t.rpc(fetchBody()));
    const call = await first;
    call.out.write('first part ');
    const all = Promise.all(responses.map(async (r) => text(await r)));
    await tick();
    call.out.write('second part');
    call.exit(0);
    assert.deepEqual(await all, Array(5).fill('first part second part'));
    assert.equal(t.git.calls.length, 1);
    await tick(50);

    // Another client with another agent string: same key, served from disk.
    const hit = await t.rpc(Buffer.concat([pktLine(`want ${'a'.repeat(40)} side-band-64k agent=JGit/6\n`), FLUSH_PKT, pktLine('done\n')]));
    assert.equal(await text(hit), 'first part second part');
    assert.equal((await hit.done).spawned, false);
    assert.equal(t.git.calls.length, 1);
    assert.equal(await t.metric('gitstratum_pack_cache_requests_total', { result: 'miss' }), 1);
    assert.equal(await t.metric('gitstratum_pack_cache_requests_total', { result: 'coalesced' }), 4);
    assert.equal(await t.metric('gitstratum_pack_cache_requests_total', { result: 'hit' }), 1);
    assert.equal(await t.metric('gitstratum_pack_cache_served_bytes_total', { result: 'hit' }), 22);
  } finally {
    await t.cleanup();
  }
});

bothWays('the request that started a generation reports the git process; followers report none', async () => {
  const t = await setup();
  try {
    const first = t.git.next();
    const leader = t.rpc(fetchBody('deepen 1'));
    const call = await first;
    call.out.write('x');
    const follower = t.rpc(fetchBody('deepen 1'));
    call.exit(0);
    const [a, b] = await Promise.all([leader, follower]);
    await Promise.all([text(a), text(b)]);
    assert.equal((await a.done).spawned, true);
    assert.equal((await b.done).spawned, false);
  } finally {
    await t.cleanup();
  }
});

bothWays('a refusal before any byte reaches every waiting request, and nothing is stored', async () => {
  const t = await setup();
  try {
    const results = await Promise.allSettled([t.rpc(fetchBody('refuse')), t.rpc(fetchBody('refuse'))]);
    for (const r of results) assert.equal(r.status === 'rejected' && (r.reason as { code: string }).code, 'git_failed');
    assert.equal(await t.metric('gitstratum_pack_cache_entries'), 0);
  } finally {
    await t.cleanup();
  }
});

bothWays('git failing after its first bytes: clients get what it wrote, nothing is stored, the next request runs git again', async () => {
  const t = await setup();
  try {
    const first = t.git.next();
    const res = t.rpc(fetchBody());
    const call = await first;
    call.out.write('ERR something broke');
    call.exit(128);
    assert.equal(await text(await res), 'ERR something broke');
    await tick(20);
    assert.equal(await t.metric('gitstratum_pack_cache_not_stored_total', { reason: 'failed' }), 1);
    assert.deepEqual(await readdir(path.join(t.root, 'cache', 'tmp')), []);

    const second = t.git.next();
    const again = t.rpc(fetchBody());
    (await second).exit(0);
    await text(await again);
    assert.equal(t.git.calls.length, 2);
  } finally {
    await t.cleanup();
  }
});

bothWays('over the generation bound a miss waits, then gets 503 before any byte; hits are not bounded', async () => {
  const t = await setup({ admission: { maxRunning: 1, maxRunningPerRepo: 1, maxQueue: 10, queueTimeoutMs: 50 } });
  try {
    // A stored entry first.
    const warm = t.git.next();
    const stored = t.rpc(fetchBody('deepen 3'));
    (await warm).exit(0);
    await text(await stored);
    await tick(20);

    const first = t.git.next();
    const busy = t.rpc(fetchBody('deepen 1'));
    const call = await first;
    await assert.rejects(t.rpc(fetchBody('deepen 2')), { code: 'git_queue_timeout' });
    assert.equal(await t.metric('gitstratum_pack_cache_admission_rejections_total', { code: 'git_queue_timeout' }), 1);
    const hit = await t.rpc(fetchBody('deepen 3'));
    await text(hit);
    call.exit(0);
    await text(await busy);
  } finally {
    await t.cleanup();
  }
});

bothWays('admitAfter 2: a first sighting is not stored and stops git when its client leaves; a second one is', async () => {
  const t = await setup({ admitAfter: 2 });
  try {
    const first = t.git.next();
    const client = new AbortController();
    // The response comes once git has written its first bytes.
    const responding = t.rpc(fetchBody(), client.signal);
    const call = await first;
    call.out.write('partial');
    const res = await responding;
    res.body.resume();
    await tick();
    client.abort();
    await tick(20);
    assert.equal(call.signal.aborted, true, 'git was stopped');
    assert.equal(await t.metric('gitstratum_pack_cache_not_stored_total', { reason: 'abandoned' }), 1);

    const second = t.git.next();
    const again = t.rpc(fetchBody());
    (await second).exit(0);
    await text(await again);
    assert.equal(await eventually(() => t.metric('gitstratum_pack_cache_entries'), 1), 1);
  } finally {
    await t.cleanup();
  }
});

bothWays('a generation that will be stored runs to the end after its only client left', async () => {
  const t = await setup();
  try {
    const first = t.git.next();
    const client = new AbortController();
    const responding = t.rpc(fetchBody(), client.signal);
    const call = await first;
    call.out.write('all ');
    const res = await responding;
    res.body.resume();
    client.abort();
    await tick();
    assert.equal(call.signal.aborted, false);
    call.out.write('of it');
    call.exit(0);
    await tick(30);
    const hit = await t.rpc(fetchBody());
    assert.equal(await text(hit), 'all of it');
    assert.equal(t.git.calls.length, 1);
  } finally {
    await t.cleanup();
  }
});

bothWays('a negotiation goes to git uncached when first seen; seen again it is generated once for all its followers, then hit', async () => {
  const t = await setup();
  try {
    const withHave = fetchBody(`have ${'b'.repeat(40)}`);
    const answer = async (call: Promise<Call>, out: string) => {
      const c = await call;
      assert.ok(c.body.equals(withHave) || c.body.includes('have '), 'git got the request as sent');
      c.out.write(out);
      c.exit(0);
    };
    // First sighting: plain git, nothing written to the cache.
    let next = t.git.next();
    const first = t.rpc(withHave);
    await answer(next, 'ACK and pack, 1');
    assert.equal(await text(await first), 'ACK and pack, 1');
    assert.equal(await t.metric('gitstratum_pack_cache_uncacheable_total', { reason: 'have' }), 1);
    // No generation ran through the cache (a flight not admitted would count as not stored).
    assert.equal((await t.metric('gitstratum_pack_cache_stored_total')) + (await t.metric('gitstratum_pack_cache_not_stored_total')), 0);

    // Second sighting, with a follower from another git version: one generation, stored.
    next = t.git.next();
    const second = [t.rpc(withHave), t.rpc(Buffer.from(withHave.toString().replace('agent=git/2.39.5', 'agent=git/2.47.1')))];
    const texts = Promise.all(second.map(async (r) => text(await r)));
    await answer(next, 'ACK and pack, 2');
    assert.deepEqual(await texts, ['ACK and pack, 2', 'ACK and pack, 2']);
    assert.equal(t.git.calls.length, 2);
    assert.equal(await eventually(() => t.metric('gitstratum_pack_cache_stored_total'), 1), 1);

    // Third: from disk, no git.
    const hit = await t.rpc(withHave);
    assert.equal(await text(hit), 'ACK and pack, 2');
    assert.equal((await hit.done).spawned, false);
    assert.equal(t.git.calls.length, 2);

    // Another have list is another request: git again, first sighting.
    next = t.git.next();
    const other = t.rpc(fetchBody(`have ${'c'.repeat(40)}`));
    await answer(next, 'other');
    assert.equal(await text(await other), 'other');
    assert.equal(await t.metric('gitstratum_pack_cache_uncacheable_total', { reason: 'have' }), 2);
  } finally {
    await t.cleanup();
  }
});

bothWays('large bodies and pushes go to git every time, body intact', async () => {
  const t = await setup({ maxRequestBytes: 200 });
  try {
    const large = Buffer.concat([fetchBody(), ...Array.from({ length: 5 }, () => pktLine(`want ${'c'.repeat(40)}\n`))]);
    for (const [body, service] of [[large, 'upload-pack'], [large, 'upload-pack'], [fetchBody(`have ${'b'.repeat(40)}`), 'receive-pack']] as const) {
      const next = t.git.next();
      const res = t.rpc(body, undefined, service);
      const call = await next;
      assert.ok(call.body.equals(body));
      call.exit(0);
      await text(await res);
    }
    assert.equal(t.git.calls.length, 3);
    assert.equal(await t.metric('gitstratum_pack_cache_uncacheable_total', { reason: 'request_too_large' }), 2);
  } finally {
    await t.cleanup();
  }
});

bothWays('with free space under the threshold, requests go to git uncached', async () => {
  const t = await setup({ limits: { maxBytes: 1 << 30, maxEntryBytes: 1 << 30, minFreeBytes: Number.MAX_SAFE_INTEGER } });
  try {
    for (let i = 0; i < 2; i++) {
      const next = t.git.next();
      const res = t.rpc(fetchBody());
      (await next).exit(0);
      await text(await res);
    }
    assert.equal(t.git.calls.length, 2);
    assert.equal(await t.metric('gitstratum_pack_cache_uncacheable_total', { reason: 'no_space' }), 2);
    assert.deepEqual(await readdir(path.join(t.root, 'cache', 'tmp')), []);
  } finally {
    await t.cleanup();
  }
});
