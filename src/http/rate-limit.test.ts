/**
 * The client budget at the edge, in process: the real edge (createHttpServer) with the budget
 * hook and stand-in routes at the real paths, driven by inject(). Each test builds its own app,
 * so no budget leaks from one test into the next.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Actor } from '../access/policy.js';
import { createLogger } from '../shared/log.js';
import { unauthenticated } from '../shared/errors.js';
import { authenticate } from './auth.js';
import { createMetrics } from './metrics.js';
import { createHttpServer } from './server.js';
import { addressKey, ChunkBuckets, connectRedis, registerBudget, requestClass, type BudgetSettings } from './rate-limit.js';

const log = createLogger('silent');

const USERS: Record<string, Actor> = {
  'tok-alice': { kind: 'user', userId: 'u1', name: 'alice', isAdmin: false, scope: 'write', tokenId: 't1' },
  'tok-bob': { kind: 'user', userId: 'u2', name: 'bob', isAdmin: false, scope: 'write', tokenId: 't2' },
};

const generous: BudgetSettings = {
  windowSeconds: 60,
  requests: { git: 1000, lfs: 1000, api: 1000 },
  authFailures: 1000,
  concurrentRequests: 1000,
  concurrentGit: 1000,
  gitQueue: { maxWaiting: 1000, timeoutMs: 30_000 },
  bodyChunksPerSecond: 0,
};

interface Fixture {
  app: FastifyInstance;
  /** Token lookups the accounts service was asked for. */
  lookups: () => number;
  /** Lets every held request (see `?hold`) finish. */
  releaseHeld: () => void;
  /** Requests in the route, held. */
  heldCount: () => number;
  metric: (limit: string, name?: string) => Promise<number>;
}

async function fixture(overrides: Partial<BudgetSettings> = {}, opts: { redis?: Redis; prefix?: string } = {}): Promise<Fixture> {
  const metrics = createMetrics({ gitRunning: () => 0, gitQueued: () => 0 });
  const app = createHttpServer({ config: { trustProxy: 'true', requestIdleTimeoutSeconds: 30, maxJsonBodyBytes: 1024 ** 2 }, log, metrics, ready: async () => true });
  let lookups = 0;
  const accounts = {
    async authenticate(secret: string): Promise<Actor> {
      lookups++;
      const actor = USERS[secret];
      if (!actor) throw unauthenticated('invalid_token', 'invalid or revoked access token');
      return actor;
    },
  };
  registerBudget(app, { ...generous, ...overrides }, { accounts, registry: metrics.registry, log, redis: opts.redis, redisKeyPrefix: opts.prefix ?? 'test:' });
  let held: (() => void)[] = [];
  // Stand-ins at the real paths; they authenticate as the real routes do.
  const handler = async (req: FastifyRequest) => {
    const actor = await authenticate(accounts, req);
    if ((req.query as { hold?: string }).hold !== undefined) await new Promise<void>((resolve) => held.push(resolve));
    return { actor: actor.kind === 'user' ? actor.name : 'anonymous' };
  };
  app.addContentTypeParser('application/vnd.git-lfs+json', { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.get('/:owner/:space/:repo/info/refs', handler);
  app.post('/:owner/:space/:repo/info/lfs/objects/batch', handler);
  app.get('/api/v1/ping', handler);
  await app.ready();
  return {
    app,
    lookups: () => lookups,
    heldCount: () => held.length,
    releaseHeld: () => {
      const now = held;
      held = [];
      for (const resolve of now) resolve();
    },
    metric: async (limit, name = 'gitstratum_rate_limited_total') => {
      const values = (await metrics.registry.getSingleMetric(name)!.get()).values;
      return values.find((v) => v.labels['limit'] === limit)?.value ?? 0;
    },
  };
}

const GIT = '/alice/main/repo.git/info/refs?service=git-upload-pack';
const LFS = '/alice/main/repo.git/info/lfs/objects/batch';
const API = '/api/v1/ping';

function auth(token: string) {
  return { authorization: `Basic ${Buffer.from(`git:${token}`).toString('base64')}` };
}

function from(address: string, headers: Record<string, string> = {}) {
  return { 'x-forwarded-for': address, ...headers };
}

test('routes are classed by protocol; health and metrics are not budgeted', () => {
  assert.equal(requestClass('/:owner/:space/:repo/info/refs'), 'git');
  assert.equal(requestClass('/:owner/:space/:repo/git-receive-pack'), 'git');
  assert.equal(requestClass('/:owner/:space/:repo/info/lfs/objects/:oid'), 'lfs');
  assert.equal(requestClass('/api/v1/repos'), 'api');
  assert.equal(requestClass(undefined), 'api');
  for (const url of ['/healthz', '/readyz', '/metrics']) assert.equal(requestClass(url), undefined);
});

test('an IPv6 client is one client per /64; IPv4 and mapped IPv4 are themselves', () => {
  assert.equal(addressKey('203.0.113.7'), '203.0.113.7');
  assert.equal(addressKey('::ffff:203.0.113.7'), '203.0.113.7');
  assert.equal(addressKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(addressKey('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
  assert.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(addressKey('::1'), '0:0:0:0::/64');
});

test('over the git budget: 429 with Retry-After and a text/plain message git prints; health stays open', async () => {
  const f = await fixture({ requests: { git: 3, lfs: 1000, api: 1000 } });
  for (let i = 0; i < 3; i++) assert.equal((await f.app.inject({ url: GIT, headers: from('198.51.100.1') })).statusCode, 200);
  const res = await f.app.inject({ url: GIT, headers: from('198.51.100.1') });
  assert.equal(res.statusCode, 429);
  assert.match(res.headers['content-type'] as string, /^text\/plain/);
  const retry = Number(res.headers['retry-after']);
  assert.ok(retry >= 1 && retry <= 60, `Retry-After ${res.headers['retry-after']}`);
  assert.match(res.body, /^rate limit exceeded: 3 git requests per 60 s for address 198\.51\.100\.1; retry in \d+ s\n$/);
  assert.equal(await f.metric('git'), 1);
  for (const url of ['/healthz', '/readyz', '/metrics']) {
    for (let i = 0; i < 5; i++) assert.equal((await f.app.inject({ url, headers: from('198.51.100.1') })).statusCode, 200, url);
  }
  // Another address, and the same address on another protocol, have their own budgets.
  assert.equal((await f.app.inject({ url: GIT, headers: from('198.51.100.2') })).statusCode, 200);
  assert.equal((await f.app.inject({ url: API, headers: from('198.51.100.1') })).statusCode, 200);
  await f.app.close();
});

test('LFS and API refusals come in their own JSON shapes', async () => {
  const f = await fixture({ requests: { git: 1000, lfs: 1, api: 1 } });
  const lfs = () => f.app.inject({ method: 'POST', url: LFS, headers: from('198.51.100.3', { 'content-type': 'application/vnd.git-lfs+json' }), payload: '{}' });
  assert.equal((await lfs()).statusCode, 200);
  const lfsRes = await lfs();
  assert.equal(lfsRes.statusCode, 429);
  assert.match(lfsRes.headers['content-type'] as string, /^application\/vnd\.git-lfs\+json/);
  assert.ok(Number(lfsRes.headers['retry-after']) >= 1);
  assert.match(lfsRes.json().message, /^rate limit exceeded: 1 git lfs requests per 60 s/);

  assert.equal((await f.app.inject({ url: API, headers: from('198.51.100.3') })).statusCode, 200);
  const apiRes = await f.app.inject({ url: API, headers: from('198.51.100.3') });
  assert.equal(apiRes.statusCode, 429);
  assert.equal(apiRes.json().error.code, 'rate_limited');
  assert.ok(Number(apiRes.headers['retry-after']) >= 1);
  await f.app.close();
});

test('a user is charged apart from the address and from other users, and authenticated once per request', async () => {
  const f = await fixture({ requests: { git: 2, lfs: 1000, api: 1000 } });
  const ask = (headers: Record<string, string>) => f.app.inject({ url: GIT, headers: from('198.51.100.4', headers) });
  assert.equal((await ask({})).statusCode, 200);
  assert.equal((await ask({})).statusCode, 200);
  assert.equal((await ask({})).statusCode, 429);
  const alice = await ask(auth('tok-alice'));
  assert.equal(alice.statusCode, 200);
  assert.equal(alice.json().actor, 'alice');
  assert.equal(f.lookups(), 1, 'the route reuses the answer of the budget hook');
  assert.equal((await ask(auth('tok-alice'))).statusCode, 200);
  const over = await ask(auth('tok-alice'));
  assert.equal(over.statusCode, 429);
  assert.match(over.body, /for user alice/);
  assert.equal((await ask(auth('tok-bob'))).statusCode, 200);
  await f.app.close();
});

test('random tokens are charged to their address: spraying them buys no budget', async () => {
  const f = await fixture({ requests: { git: 1000, lfs: 1000, api: 3 } });
  const statuses: number[] = [];
  for (let i = 0; i < 5; i++) {
    statuses.push((await f.app.inject({ url: API, headers: from('198.51.100.5', { authorization: `Bearer random-${i}` }) })).statusCode);
  }
  assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
  assert.equal((await f.app.inject({ url: API, headers: from('198.51.100.5') })).statusCode, 429, 'the anonymous budget of the address is the same');
  await f.app.close();
});

test('failed authentications have their own budget; once spent, credentials from the address are not even looked up', async () => {
  const f = await fixture({ authFailures: 3 });
  const bad = () => f.app.inject({ url: GIT, headers: from('198.51.100.6', auth('guess')) });
  for (let i = 0; i < 3; i++) assert.notEqual((await bad()).statusCode, 429);
  const fourth = await bad();
  assert.equal(fourth.statusCode, 429);
  assert.match(fourth.body, /too many failed authentications from address 198\.51\.100\.6/);
  const lookups = f.lookups();
  const valid = await f.app.inject({ url: GIT, headers: from('198.51.100.6', auth('tok-alice')) });
  assert.equal(valid.statusCode, 429);
  assert.equal(f.lookups(), lookups, 'no token lookup while the address is blocked');
  // Anonymous requests from the address, and credentials from elsewhere, still work.
  assert.equal((await f.app.inject({ url: GIT, headers: from('198.51.100.6') })).statusCode, 200);
  assert.equal((await f.app.inject({ url: GIT, headers: from('198.51.100.7', auth('tok-alice')) })).statusCode, 200);
  assert.equal(await f.metric('auth_failures'), 2);
  await f.app.close();
});

test('requests in flight are capped per client: over the cap, 429 at once', async () => {
  const f = await fixture({ concurrentRequests: 3 });
  const headers = from('198.51.100.8');
  // inject() starts only when awaited or then()'d.
  const held = [1, 2, 3].map(() => f.app.inject({ url: `${API}?hold`, headers }).then((res) => res));
  await waitFor(async () => f.heldCount() === 3);
  const over = await f.app.inject({ url: GIT, headers });
  assert.equal(over.statusCode, 429);
  assert.match(over.body, /too many concurrent requests for address 198\.51\.100\.8 \(at most 3\)/);
  assert.equal((await f.app.inject({ url: API, headers: from('198.51.100.9') })).statusCode, 200, 'another client is unaffected');
  f.releaseHeld();
  for (const res of await Promise.all(held)) assert.equal(res.statusCode, 200);
  assert.equal((await f.app.inject({ url: API, headers })).statusCode, 200, 'slots come back when requests finish');
  assert.equal(await f.metric('concurrent_requests'), 1);
  await f.app.close();
});

test('git requests over the per-client cap wait their turn; beyond the client queue, 429', async () => {
  const f = await fixture({ concurrentGit: 2, gitQueue: { maxWaiting: 1, timeoutMs: 30_000 } });
  const headers = from('198.51.100.10');
  const start = (url: string, h = headers) => f.app.inject({ url, headers: h }).then((res) => res);
  const held = [start(`${GIT}&hold`), start(`${GIT}&hold`)];
  await waitFor(async () => f.heldCount() === 2);
  // Two more: one waits in the client's queue (room for one), the other is refused at once.
  const more = [start(GIT), start(GIT)];
  const first = await Promise.race(more);
  assert.equal(first.statusCode, 429);
  assert.match(first.body, /too many concurrent git requests for address 198\.51\.100\.10 \(at most 2 at once/);
  assert.equal(first.headers['retry-after'], '5');
  assert.equal((await start(GIT, from('198.51.100.11'))).statusCode, 200, 'another client runs meanwhile');
  f.releaseHeld();
  assert.deepEqual((await Promise.all([...held, ...more])).map((r) => r.statusCode).sort(), [200, 200, 200, 429]);
  assert.equal(await f.metric('concurrent_git'), 1);
  await f.app.close();
});

test('a git request that waits longer than the queue timeout gets 429', async () => {
  const f = await fixture({ concurrentGit: 1, gitQueue: { maxWaiting: 10, timeoutMs: 50 } });
  const headers = from('198.51.100.12');
  const held = f.app.inject({ url: `${GIT}&hold`, headers }).then((res) => res);
  await waitFor(async () => f.heldCount() === 1);
  assert.equal((await f.app.inject({ url: GIT, headers })).statusCode, 429);
  f.releaseHeld();
  assert.equal((await held).statusCode, 200);
  assert.equal((await f.app.inject({ url: GIT, headers })).statusCode, 200);
  await f.app.close();
});

test('two servers sharing one Redis share the budget', async (t) => {
  const url = process.env['GITSTRATUM_TEST_REDIS_URL'];
  if (!url) {
    if (process.env['CI']) throw new Error('CI requires Redis: GITSTRATUM_TEST_REDIS_URL is not set');
    t.skip('Redis not configured (GITSTRATUM_TEST_REDIS_URL unset; `npm test` starts one)');
    return;
  }
  const redis = connectRedis(url, log);
  t.after(() => redis.disconnect());
  await waitFor(async () => redis.status === 'ready');
  const prefix = `test-${process.pid}-${Date.now()}:`;
  const a = await fixture({ requests: { git: 1000, lfs: 1000, api: 4 } }, { redis, prefix });
  const b = await fixture({ requests: { git: 1000, lfs: 1000, api: 4 } }, { redis, prefix });
  const headers = from('198.51.100.20');
  const statuses = [];
  for (const app of [a.app, b.app, a.app, b.app, a.app, b.app]) statuses.push((await app.inject({ url: API, headers })).statusCode);
  assert.deepEqual(statuses, [200, 200, 200, 200, 429, 429]);
  await a.app.close();
  await b.app.close();
});

test('with Redis unreachable, requests are served and still limited in memory', async (t) => {
  // A port nothing listens on: the client never becomes ready.
  const redis = connectRedis('redis://127.0.0.1:1', log);
  t.after(() => redis.disconnect());
  const f = await fixture({ requests: { git: 1000, lfs: 1000, api: 2 } }, { redis });
  const headers = from('198.51.100.21');
  assert.deepEqual(
    [await f.app.inject({ url: API, headers }), await f.app.inject({ url: API, headers }), await f.app.inject({ url: API, headers })].map((r) => r.statusCode),
    [200, 200, 429],
  );
  await f.app.close();
});

async function waitFor(check: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 10))) {
    if (await check()) return;
  }
  throw new Error('condition not reached within 30 s');
}

test('body pieces: a second of them at once per client, then waits that grow with the excess; clients apart', () => {
  let now = 0;
  const buckets = new ChunkBuckets(1000, () => now);
  for (let i = 0; i < 1000; i++) assert.equal(buckets.take('a:1'), 0, `piece ${i} of the first second`);
  const waits = Array.from({ length: 200 }, () => buckets.take('a:1'));
  assert.ok(waits.every((w) => w >= 10), 'over the budget, every piece waits');
  assert.ok(waits[199]! >= 199, `the 200th piece over waits ${waits[199]} ms, at least the 200 ms the budget needs`);
  assert.equal(buckets.take('a:2'), 0, 'another client has its own budget');
  // Time refills the bucket, up to one second's worth.
  now += 10_000;
  for (let i = 0; i < 1000; i++) assert.equal(buckets.take('a:1'), 0);
  assert.ok(buckets.take('a:1') > 0);
  // Idle buckets are forgotten.
  now += 20_000;
  buckets.take('a:3');
  assert.equal(buckets.size, 1);
});

test('a client that keeps sending at over twice its budget gets its refusals a moment later, still 429', async () => {
  const f = await fixture({ requests: { git: 2, lfs: 1000, api: 1000 } });
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) statuses.push((await f.app.inject({ url: GIT, headers: from('198.51.100.9') })).statusCode);
  assert.deepEqual(statuses, [200, 200, 429, 429, 429, 429]);
  // The 5th and 6th were past twice the budget (4): held back before their answer.
  assert.equal(await f.metric('git', 'gitstratum_rate_limit_slowed_total'), 2);
  // A client within twice its budget is answered at once.
  assert.equal((await f.app.inject({ url: GIT, headers: from('198.51.100.10') })).statusCode, 200);
  await f.app.close();
});
