/**
 * Property-based fuzzing of the JSON bodies (issue 9): the LFS batch, verify and lock routes
 * and the REST API's body routes, through inject() on one in-process app. Each target gets
 * 10,000 generated requests: shaped bodies built from plausible and hostile values, arbitrary
 * JSON, non-JSON text and odd content types, with no, bad, read and admin credentials. Every
 * answer must be a 4xx or 2xx in the route's own error shape: no 5xx, no crash, and no hang
 * (each request settles, and /healthz still answers at the end).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import fc from 'fast-check';
import { tempDir } from '../e2e/harness.js';
import { appWithAlice, type AppFixture } from '../support/app.js';

const RUNS = 10_000;

let dir: string;
let f: AppFixture;

before(async () => {
  dir = await tempDir();
  // A small batch limit so that over-limit batches are generated often.
  f = await appWithAlice(dir, { lfsMaxBatchObjects: 20, maxJsonBodyBytes: 64 * 1024 });
});
after(async () => {
  await f.app.close();
  await rm(dir, { recursive: true, force: true });
});

/** Values that have broken parsers before: wrong types, huge numbers, prototype keys, deep nesting. */
const hostile = fc.oneof(
  fc.constantFrom(null, true, 0, -1, 1.5, 2 ** 53 + 2, 1e308, '', 'a'.repeat(5000), '\u0000', '../../etc/passwd', '__proto__', {}, []),
  fc.jsonValue({ maxDepth: 3 }),
  fc.integer({ min: 1, max: 200 }).map((d) => JSON.parse('['.repeat(d) + ']'.repeat(d)) as unknown),
);

const oid = fc.oneof(fc.constantFrom('a'.repeat(64), 'A'.repeat(64), 'a'.repeat(63), 'g'.repeat(64)), fc.stringMatching(/^[0-9a-f]{64}$/), hostile);
const ref = fc.option(fc.oneof(fc.constant({}), fc.record({ name: fc.oneof(fc.constant('refs/heads/main'), hostile) }), hostile), { nil: undefined });

/** An object whose listed fields are each present (with a generated value) or absent. */
function shaped(fields: Record<string, fc.Arbitrary<unknown>>) {
  return fc.record(fields, { requiredKeys: [] });
}

const lfsBodies = {
  '/objects/batch': shaped({
    operation: fc.oneof(fc.constantFrom('download', 'upload'), hostile),
    transfers: fc.oneof(fc.constant(['basic']), hostile),
    ref,
    objects: fc.oneof(fc.array(shaped({ oid, size: fc.oneof(fc.nat(), hostile) }), { maxLength: 30 }), hostile),
    hash_algo: fc.oneof(fc.constantFrom('sha256', 'sha512'), hostile),
  }),
  '/verify': shaped({ oid, size: fc.oneof(fc.nat(), hostile) }),
  '/locks': shaped({ path: fc.oneof(fc.stringMatching(/^[a-z./]{1,20}$/), hostile), ref }),
  '/locks/verify': shaped({ ref, cursor: fc.oneof(fc.string({ maxLength: 30 }), hostile), limit: fc.oneof(fc.integer({ min: -5, max: 200 }), hostile) }),
  '/locks/00000000000000000000000000/unlock': shaped({ force: fc.oneof(fc.boolean(), hostile), ref }),
};

const apiBodies = {
  'POST /users': shaped({ name: fc.oneof(fc.stringMatching(/^[a-z]{1,8}$/), hostile), admin: fc.oneof(fc.boolean(), hostile) }),
  'POST /orgs': shaped({ name: fc.oneof(fc.stringMatching(/^[a-z]{1,8}$/), hostile) }),
  'PUT /orgs/acme/members/alice': shaped({ role: fc.oneof(fc.constantFrom('read', 'write', 'admin'), hostile) }),
  'POST /spaces': shaped({ owner: fc.oneof(fc.constant('alice'), hostile), name: fc.oneof(fc.stringMatching(/^[a-z]{1,8}$/), hostile) }),
  'POST /repos': shaped({
    owner: fc.oneof(fc.constant('alice'), hostile),
    space: fc.oneof(fc.constant('main'), hostile),
    name: fc.oneof(fc.stringMatching(/^[a-z]{1,8}$/), hostile),
    visibility: fc.oneof(fc.constantFrom('public', 'private'), hostile),
  }),
  'POST /repos/alice/main/open/forks': shaped({ owner: fc.oneof(fc.constant('alice'), hostile), space: fc.oneof(fc.constant('main'), hostile), name: hostile }),
  'PATCH /repos/alice/main/secret': shaped({ tags: fc.oneof(fc.array(fc.stringMatching(/^[a-z]{1,8}$/), { maxLength: 3 }), hostile), enforceLocks: fc.oneof(fc.boolean(), hostile), visibility: hostile }),
  // Plausible durations, huge ones (`99999999999d`, 2^53 and past: 400 duration_too_long) and anything else.
  'POST /users/alice/tokens': shaped({
    scope: fc.oneof(fc.constantFrom('read', 'write', 'admin'), hostile),
    expires: fc.oneof(fc.constantFrom('1d', '30m', '0d', '90', 'soon', '', '99999999999d', '3000000d', '9007199254740993'), fc.nat().map((n) => `${n}d`), hostile),
  }),
};

/** The body as sent: JSON of the shaped value, JSON of anything, or text that is not JSON. */
function payloadOf(shapedBody: fc.Arbitrary<unknown>) {
  return fc.oneof(
    { weight: 6, arbitrary: shapedBody.map((b) => JSON.stringify(b)) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((b) => JSON.stringify(b)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
    { weight: 1, arbitrary: fc.constantFrom('', '{', '{"objects":' + '['.repeat(5000), '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}') },
  );
}

const contentType = (json: string) => fc.oneof({ weight: 8, arbitrary: fc.constant(json) }, { weight: 2, arbitrary: fc.constantFrom('application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', '', 'application/vnd.git-lfs+json; charset=latin1') });

function credentials(): fc.Arbitrary<Record<string, string>> {
  return fc
    .constantFrom<'none' | 'bad' | 'read' | 'write' | 'admin'>('none', 'bad', 'read', 'write', 'admin')
    .map((who): Record<string, string> => (who === 'none' ? {} : { authorization: `Bearer ${who === 'bad' ? 'gst_not_a_token' : f.tokens[who]}` }));
}

async function assertServed(res: { statusCode: number; body: string; headers: Record<string, unknown> }, what: string): Promise<void> {
  assert.ok(res.statusCode < 500, `${what}: ${res.statusCode} ${res.body.slice(0, 300)}`);
  assert.ok(res.statusCode >= 200, `${what}: ${res.statusCode}`);
}

test('fuzz: LFS JSON bodies never get a 5xx', async () => {
  const route = fc.constantFrom(...(Object.keys(lfsBodies) as (keyof typeof lfsBodies)[]));
  const repo = fc.constantFrom(f.publicRepo, f.privateRepo);
  const request = route.chain((r) => fc.record({ route: fc.constant(r), repo, payload: payloadOf(lfsBodies[r]), type: contentType('application/vnd.git-lfs+json'), auth: credentials() }));
  await fc.assert(
    fc.asyncProperty(request, async (q) => {
      const headers: Record<string, string> = { ...q.auth, accept: 'application/vnd.git-lfs+json' };
      if (q.type) headers['content-type'] = q.type;
      const res = await f.app.http.inject({ method: 'POST', url: `/${q.repo}.git/info/lfs${q.route}`, headers, payload: q.payload });
      await assertServed(res, `POST ${q.route} ${q.payload.slice(0, 200)}`);
      if (res.statusCode >= 400) assert.equal(typeof res.json().message, 'string', res.body);
    }),
    { numRuns: RUNS },
  );
  assert.equal((await f.app.http.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
});

test('fuzz: REST API JSON bodies never get a 5xx', async () => {
  const route = fc.constantFrom(...(Object.keys(apiBodies) as (keyof typeof apiBodies)[]));
  const request = route.chain((r) => fc.record({ route: fc.constant(r), payload: payloadOf(apiBodies[r]), type: contentType('application/json'), auth: credentials() }));
  await fc.assert(
    fc.asyncProperty(request, async (q) => {
      const [method, url] = q.route.split(' ') as [string, string];
      const headers: Record<string, string> = { ...q.auth };
      if (q.type) headers['content-type'] = q.type;
      const res = await f.app.http.inject({ method: method as 'POST', url: `/api/v1${url}`, headers, payload: q.payload });
      await assertServed(res, `${q.route} ${q.payload.slice(0, 200)}`);
      if (res.statusCode >= 400) assert.equal(typeof res.json().error?.code, 'string', res.body);
    }),
    { numRuns: RUNS },
  );
  assert.equal((await f.app.http.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
});
