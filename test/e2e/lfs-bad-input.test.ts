/**
 * The LFS API at the protocol level, with fetch() and node:http: every kind of bad input gets
 * the status and error shape the batch API names (docs/api/batch.md), and changes nothing: no
 * object under its final key in the store, no object linked to the repository.
 *
 * The protocol checks that do not depend on the store run once (filesystem+proxy); the
 * transfer checks run against the filesystem and S3 stores (proxy), and the checks of
 * pre-signed transfers against S3 in direct mode. S3 is s3rver, which checks neither V4
 * signatures nor the signed SHA-256, so direct-mode content checks belong to real S3.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SignJWT, decodeJwt } from 'jose';
import type { Server } from './harness.js';
import {
  LFS_CONFIGS,
  LFS_MEDIA_TYPE,
  api,
  basic,
  batch,
  batchOne,
  createRepo,
  filesUnder,
  randomBytesSeeded,
  runAction,
  seedFast,
  sha256,
  startLfsServer,
  type BatchObject,
  type LfsAction,
  type LfsConfig,
  type LfsServer,
  type Tokens,
} from './lfs-fixture.js';

const MAX_OBJECT_BYTES = 16 * 1024 * 1024;
const MAX_BATCH_OBJECTS = 1000;
const REPO = 'alice/main/things';
/** Alice's private repository, and bob's own, for proof of possession. */
const SECRET = 'alice/main/secret';
const BOBS = 'bob/main/mine';

interface Ctx {
  lfs: LfsServer;
  server: Server;
  tokens: Tokens;
}

function configNamed(name: string): LfsConfig {
  return LFS_CONFIGS.find((c) => c.name === name)!;
}

async function setUp(config: LfsConfig): Promise<Ctx> {
  const lfs = await startLfsServer(config, {
    GITSTRATUM_LFS_MAX_OBJECT_BYTES: String(MAX_OBJECT_BYTES),
    GITSTRATUM_LFS_MAX_BATCH_OBJECTS: String(MAX_BATCH_OBJECTS),
  });
  const { server } = lfs;
  try {
    const tokens = await seedFast(server);
    await api(server, tokens.root.admin, 'POST', '/spaces', { owner: 'bob', name: 'main' });
    for (const repo of [REPO, SECRET, BOBS]) await createRepo(server, tokens.root.admin, repo);
    return { lfs, server, tokens };
  } catch (err) {
    // No context, so no `after` will stop this server: do it here, or the run never ends.
    await lfs.stop();
    throw err;
  }
}

function lfsBase(server: Server, repo: string): string {
  return `${server.url}/${repo}.git/info/lfs`;
}

function bearerOf(action: LfsAction): string {
  const auth = action.header?.['Authorization'] ?? '';
  assert.match(auth, /^Bearer /, `action carries a signed authorization: ${JSON.stringify(action)}`);
  return auth.slice('Bearer '.length);
}

/** The object's oid is not linked to `repo`: a download batch answers it with a 404. */
async function assertNotLinked(ctx: Ctx, repo: string, token: string, oid: string, size: number): Promise<void> {
  const obj = await batchOne(ctx.server, repo, token, 'download', oid, size);
  assert.equal(obj.error?.code, 404, `${oid} must not be downloadable from ${repo}: ${JSON.stringify(obj)}`);
  assert.equal(obj.actions, undefined);
}

/** Nothing under the object's final key, and (filesystem) no temporary file left behind. */
async function assertNothingStored(ctx: Ctx, oid: string): Promise<void> {
  // A failed upload is cleaned up after the response went out; give it a moment.
  for (let i = 0; i < 20 && (await ctx.lfs.stored(oid)); i++) await delay(50);
  assert.equal(await ctx.lfs.stored(oid), false, `${oid} must not be in the object store`);
  if (ctx.lfs.config.store === 'filesystem') {
    const tmp = path.join(ctx.server.dataDir, 'objects', '.tmp');
    let left = await filesUnder(tmp);
    for (let i = 0; i < 20 && left.length > 0; i++) {
      await delay(50);
      left = await filesUnder(tmp);
    }
    assert.deepEqual(left, [], 'no temporary upload file left behind');
  }
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Uploads `content` the way git-lfs does: batch, then the upload and verify actions given. */
async function uploadObject(ctx: Ctx, repo: string, token: string, content: Buffer): Promise<string> {
  const oid = sha256(content);
  const obj = await batchOne(ctx.server, repo, token, 'upload', oid, content.length);
  if (obj.actions?.upload) {
    const put = await runAction(obj.actions.upload, { method: 'PUT', body: content });
    assert.equal(put.status, 200, `upload: ${await put.text()}`);
  }
  if (obj.actions?.verify) {
    const v = await runAction(obj.actions.verify, {
      method: 'POST',
      body: JSON.stringify({ oid, size: content.length }),
      headers: { 'content-type': LFS_MEDIA_TYPE, accept: LFS_MEDIA_TYPE },
    });
    assert.equal(v.status, 200, `verify: ${await v.text()}`);
  }
  return oid;
}

/** `PUT` that declares `declared` bytes, sends `sent`, then drops the connection. */
async function truncatedPut(url: string, headers: Record<string, string>, declared: number, sent: Buffer): Promise<void> {
  const req = http.request(url, { method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': declared } });
  req.on('error', () => {});
  req.on('response', (res) => res.resume());
  await new Promise<void>((resolve) => req.write(sent, () => resolve()));
  // Let the server read what was sent (and, for S3, start a multipart upload) before the cut.
  await delay(300);
  req.destroy();
}

/** GET through `agent` (node:http, to control the connection); the whole answer. */
function getOn(agent: http.Agent, action: LfsAction, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get(action.href, { agent, headers: { ...action.header, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
  });
}

/** `PUT` with a body in chunked encoding (no Content-Length); status and body of the answer. */
async function chunkedPut(url: string, headers: Record<string, string>, chunks: Buffer[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream' } });
    req.on('error', reject);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    for (const c of chunks) req.write(c);
    req.end();
  });
}

/** A transfer authorization like the server's, signed with its key, but with any claims. */
async function forgeToken(ctx: Ctx, from: string, change: { expiresAt?: number; oid?: string; key?: Uint8Array }): Promise<string> {
  const claims = decodeJwt(from);
  const key = change.key ?? Buffer.from((await readFile(path.join(ctx.server.dataDir, 'signing.key'), 'utf8')).trim(), 'base64');
  const nowSec = Math.floor(Date.now() / 1000);
  return new SignJWT({ repo: claims['repo'], op: claims['op'], oid: change.oid ?? claims['oid'], size: claims['size'] })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(String(claims.sub))
    .setIssuedAt(nowSec - 7200)
    .setExpirationTime(change.expiresAt ?? nowSec + 600)
    .sign(key);
}

function assertLfsError(r: { status: number; headers: Headers; body: Record<string, unknown> }, status: number, message?: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.match(r.headers.get('content-type') ?? '', /^application\/vnd\.git-lfs\+json/);
  assert.equal(typeof r.body['message'], 'string');
  assert.equal(typeof r.body['request_id'], 'string');
  assert.equal(r.body['objects'], undefined, 'an error body carries no objects');
  if (message) assert.match(String(r.body['message']), message);
}

async function jsonOf(res: Response): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

describe('LFS batch API bad input (store-independent)', () => {
  let ctx: Ctx;
  before(async () => {
    ctx = await setUp(configNamed('filesystem+proxy'));
  });
  after(async () => {
    await ctx?.lfs.stop();
  });

  const valid = sha256('a valid object');
  const up = (objects: unknown[], extra: Record<string, unknown> = {}) => ({ operation: 'upload', transfers: ['basic'], objects, ...extra });

  test('invalid oids get a per-object 422; valid ones, a zero-size one included, get upload actions', async () => {
    const bad = ['abc', valid + '0', valid.slice(1), valid.toUpperCase(), 'g'.repeat(64), `../${valid.slice(3)}`, 42, null];
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, up([{ oid: valid, size: 14 }, ...bad.map((oid) => ({ oid, size: 1 })), { oid: sha256(''), size: 0 }]));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const objects = r.body.objects!;
    assert.equal(objects.length, bad.length + 2);
    assert.ok(objects[0]!.actions?.upload, 'the valid object gets an upload action');
    for (const o of objects.slice(1, -1)) {
      assert.equal(o.error?.code, 422, JSON.stringify(o));
      assert.equal(o.actions, undefined);
    }
    const empty = objects[objects.length - 1]!;
    assert.equal(empty.error, undefined, JSON.stringify(empty));
    assert.ok(empty.actions?.upload, 'a zero-size object still gets an upload action');
  });

  test('negative, fractional and non-numeric sizes get a per-object 422', async () => {
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, up([-1, 1.5, '10', null, Number.MAX_SAFE_INTEGER + 2].map((size) => ({ oid: valid, size }))));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    for (const o of r.body.objects!) {
      assert.equal(o.error?.code, 422, JSON.stringify(o));
      assert.match(o.error!.message, /size/);
    }
  });

  test('an unknown operation is 422 in the LFS error shape', async () => {
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, { operation: 'delete', objects: [{ oid: valid, size: 1 }] });
    assertLfsError(r, 422, /operation/);
  });

  test('a hash algorithm other than sha256 is 409', async () => {
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, up([{ oid: valid, size: 1 }], { hash_algo: 'sha512' }));
    assertLfsError(r, 409, /sha512/);
  });

  test('malformed JSON is 400 with {message, request_id}', async () => {
    for (const body of ['{"operation": "upload", "objects": [', 'not json at all']) {
      const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, body);
      assertLfsError(r, 400, /JSON/);
    }
  });

  test('a body of the wrong shape is 422', async () => {
    for (const body of [[], { operation: 'upload' }, { operation: 'upload', objects: 'x' }]) {
      const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, body);
      assertLfsError(r, 422);
    }
  });

  test(`a batch of more than ${MAX_BATCH_OBJECTS} objects is 413`, async () => {
    const objects = Array.from({ length: MAX_BATCH_OBJECTS + 1 }, (_, i) => ({ oid: sha256(`o${i}`), size: i }));
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, up(objects));
    assertLfsError(r, 413, new RegExp(String(MAX_BATCH_OBJECTS)));
  });

  test(`a batch of ${MAX_BATCH_OBJECTS} objects answers every one`, async (t) => {
    const objects = Array.from({ length: MAX_BATCH_OBJECTS }, (_, i) => ({ oid: sha256(`many ${i}`), size: i + 1 }));
    const started = performance.now();
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, up(objects));
    const ms = performance.now() - started;
    assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
    assert.equal(r.body.objects!.length, MAX_BATCH_OBJECTS);
    assert.ok(r.body.objects!.every((o, i) => o.oid === objects[i]!.oid && o.actions?.upload && o.actions.verify));
    t.diagnostic(`upload batch of ${MAX_BATCH_OBJECTS} objects: ${ms.toFixed(0)} ms`);
  });

  test('an anonymous batch on a private repository is 401 with LFS-Authenticate', async () => {
    for (const operation of ['download', 'upload']) {
      const r = await batch(ctx.server, REPO, undefined, { operation, objects: [{ oid: valid, size: 1 }] });
      assertLfsError(r, 401);
      assert.match(r.headers.get('lfs-authenticate') ?? '', /^Basic realm="gitstratum"/);
    }
  });

  test('a read token may download but not upload (403)', async () => {
    const down = await batch(ctx.server, REPO, ctx.tokens.alice.read, { operation: 'download', objects: [{ oid: valid, size: 1 }] });
    assert.equal(down.status, 200, JSON.stringify(down.body));
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.read, up([{ oid: valid, size: 1 }]));
    assertLfsError(r, 403);
  });

  test('an object larger than the limit gets a per-object 413 in the batch and 413 on PUT', async () => {
    const r = await batch(ctx.server, REPO, ctx.tokens.alice.write, up([{ oid: valid, size: MAX_OBJECT_BYTES + 1 }]));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.objects![0]!.error?.code, 413);
    assert.equal(r.body.objects![0]!.actions, undefined);

    // A PUT with ordinary credentials: refused on its Content-Length before any byte is read.
    const url = `${lfsBase(ctx.server, REPO)}/objects/${valid}`;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(url, {
        method: 'PUT',
        headers: { authorization: basic(ctx.tokens.alice.write), 'content-type': 'application/octet-stream', 'content-length': MAX_OBJECT_BYTES + 1 },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        req.destroy();
      });
      req.write(Buffer.alloc(1024));
    });
    assert.equal(status, 413);

    // Chunked, so the size shows only while streaming.
    const big = randomBytesSeeded(MAX_OBJECT_BYTES + 1, 5);
    const oid = sha256(big);
    const chunks = Array.from({ length: Math.ceil(big.length / (1 << 20)) }, (_, i) => big.subarray(i << 20, (i + 1) << 20));
    const res = await chunkedPut(`${lfsBase(ctx.server, REPO)}/objects/${oid}`, { authorization: basic(ctx.tokens.alice.write) }, chunks);
    assert.equal(res.status, 413, res.body);
    await assertNothingStored(ctx, oid);
    await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, oid, big.length);
  });

  test('lock paths that escape the repository are 422', async () => {
    for (const p of ['../outside.bin', '/etc/passwd', 'a//b', 'a/./../b']) {
      const res = await fetch(`${lfsBase(ctx.server, REPO)}/locks`, {
        method: 'POST',
        headers: { authorization: basic(ctx.tokens.alice.write), 'content-type': LFS_MEDIA_TYPE, accept: LFS_MEDIA_TYPE },
        body: JSON.stringify({ path: p }),
      });
      assertLfsError(await jsonOf(res), 422);
    }
  });
});

/** Transfer checks that every proxying store must pass. */
for (const name of ['filesystem+proxy', 's3+proxy']) {
  describe(`LFS transfers with bad input, ${name}`, () => {
    let ctx: Ctx;
    before(async () => {
      ctx = await setUp(configNamed(name));
    });
    after(async () => {
      await ctx?.lfs.stop();
    });

    /** Upload and verify actions for `content` declared with `size`. */
    async function actionsFor(content: Buffer, size = content.length, repo = REPO): Promise<{ oid: string; obj: BatchObject }> {
      const oid = sha256(content);
      const obj = await batchOne(ctx.server, repo, ctx.tokens.alice.write, 'upload', oid, size);
      assert.ok(obj.actions?.upload, JSON.stringify(obj));
      return { oid, obj };
    }

    test('a PUT whose size differs from the size in the batch is refused, and nothing is stored', async () => {
      const content = randomBytesSeeded(1000, 101);
      // Fewer bytes than declared.
      const short = await actionsFor(content);
      const res1 = await jsonOf(await runAction(short.obj.actions!.upload!, { method: 'PUT', body: content.subarray(0, 999) }));
      assert.ok(res1.status >= 400 && res1.status < 500, `status ${res1.status}`);
      // The right bytes, but the batch declared another size: the signed size is what counts.
      const lie = await actionsFor(content, 999);
      const res2 = await jsonOf(await runAction(lie.obj.actions!.upload!, { method: 'PUT', body: content }));
      assert.ok(res2.status >= 400 && res2.status < 500, `status ${res2.status}: ${JSON.stringify(res2.body)}`);
      assertLfsError(res2, 422, /size/);
      await assertNothingStored(ctx, short.oid);
      await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, short.oid, content.length);
    });

    for (const size of [1000, 9 * 1024 * 1024]) {
      test(`content that does not hash to the oid is 422 (${size} bytes), and nothing is stored`, async () => {
        const content = randomBytesSeeded(size, 200 + size);
        const { oid, obj } = await actionsFor(content);
        const wrong = randomBytesSeeded(size, 300 + size);
        const res = await jsonOf(await runAction(obj.actions!.upload!, { method: 'PUT', body: wrong }));
        assertLfsError(res, 422, /SHA-256|hash/i);
        await assertNothingStored(ctx, oid);
        await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, oid, size);
        // The verify action does not make it present either.
        const v = await runAction(obj.actions!.verify!, { method: 'POST', body: JSON.stringify({ oid, size }), headers: { 'content-type': LFS_MEDIA_TYPE } });
        assert.equal(v.status, 404, await v.text());
      });
    }

    for (const [declared, sent] of [
      [100_000, 40_000],
      [12 * 1024 * 1024, 10 * 1024 * 1024],
    ] as const) {
      test(`a truncated upload (${sent} of ${declared} bytes, then the connection drops) stores nothing; a retry works`, async () => {
        const content = randomBytesSeeded(declared, 400 + declared);
        const { oid, obj } = await actionsFor(content);
        const action = obj.actions!.upload!;
        await truncatedPut(action.href, action.header ?? {}, declared, content.subarray(0, sent));
        await assertNothingStored(ctx, oid);
        await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, oid, declared);
        // The server is fine and the client's retry succeeds.
        await uploadObject(ctx, REPO, ctx.tokens.alice.write, content);
        assert.ok(await ctx.lfs.stored(oid));
        const down = await batchOne(ctx.server, REPO, ctx.tokens.alice.read, 'download', oid, declared);
        const got = Buffer.from(await (await runAction(down.actions!.download!, { method: 'GET' })).arrayBuffer());
        assert.ok(got.equals(content), 'downloaded bytes equal the upload');
      });
    }

    test('an expired, forged or mis-scoped transfer authorization is refused, and nothing is stored', async () => {
      const content = randomBytesSeeded(2048, 501);
      const { oid, obj } = await actionsFor(content);
      const upload = obj.actions!.upload!;
      const real = bearerOf(upload);
      const put = async (token: string) =>
        jsonOf(await fetch(upload.href, { method: 'PUT', body: new Uint8Array(content), headers: { authorization: `Bearer ${token}` } }));

      const expired = await put(await forgeToken(ctx, real, { expiresAt: Math.floor(Date.now() / 1000) - 60 }));
      assertLfsError(expired, 401, /expired/);
      assert.match(expired.headers.get('lfs-authenticate') ?? '', /^Basic/);
      const wrongKey = await put(await forgeToken(ctx, real, { key: new Uint8Array(32).fill(7) }));
      assertLfsError(wrongKey, 401);
      const otherOid = await put(await forgeToken(ctx, real, { oid: sha256('another object') }));
      assertLfsError(otherOid, 403);
      // An upload authorization does not download, nor verify.
      const asDownload = await jsonOf(await fetch(upload.href, { headers: { authorization: `Bearer ${real}` } }));
      assert.equal(asDownload.status, 403, JSON.stringify(asDownload.body));
      const asVerify = await jsonOf(
        await fetch(`${lfsBase(ctx.server, REPO)}/verify`, {
          method: 'POST',
          headers: { authorization: `Bearer ${real}`, 'content-type': LFS_MEDIA_TYPE },
          body: JSON.stringify({ oid, size: content.length }),
        }),
      );
      assert.equal(asVerify.status, 403, JSON.stringify(asVerify.body));
      // Nor does it work on another repository.
      const elsewhere = await jsonOf(
        await fetch(upload.href.replace(`/${REPO}.git/`, `/${SECRET}.git/`), { method: 'PUT', body: new Uint8Array(content), headers: { authorization: `Bearer ${real}` } }),
      );
      assert.equal(elsewhere.status, 403, JSON.stringify(elsewhere.body));
      await assertNothingStored(ctx, oid);
      await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, oid, content.length);

      // An expired download authorization too.
      const stored = await uploadObject(ctx, REPO, ctx.tokens.alice.write, content);
      const down = await batchOne(ctx.server, REPO, ctx.tokens.alice.read, 'download', stored, content.length);
      const expiredDown = await forgeToken(ctx, bearerOf(down.actions!.download!), { expiresAt: Math.floor(Date.now() / 1000) - 1 });
      assertLfsError(await jsonOf(await fetch(down.actions!.download!.href, { headers: { authorization: `Bearer ${expiredDown}` } })), 401, /expired/);
    });

    test('an object stored for another private repository needs proof of possession', async () => {
      const content = randomBytesSeeded(5000, 601);
      const oid = await uploadObject(ctx, SECRET, ctx.tokens.alice.write, content);
      assert.ok(await ctx.lfs.stored(oid));
      const bob = ctx.tokens.bob.write;
      // Knowing the oid is not enough to read it through bob's repository.
      await assertNotLinked(ctx, BOBS, bob, oid, content.length);
      const get = await fetch(`${lfsBase(ctx.server, BOBS)}/objects/${oid}`, { headers: { authorization: basic(bob) } });
      assert.equal(get.status, 404, await get.text());
      // Nor through alice's, which bob cannot see.
      const getSecret = await fetch(`${lfsBase(ctx.server, SECRET)}/objects/${oid}`, { headers: { authorization: basic(bob) } });
      assert.equal(getSecret.status, 404, await getSecret.text());
      // An upload batch still asks for the bytes, and verifying without sending them fails.
      const obj = await batchOne(ctx.server, BOBS, bob, 'upload', oid, content.length);
      assert.ok(obj.actions?.upload, `an upload action, not "already present": ${JSON.stringify(obj)}`);
      const v = await runAction(obj.actions!.verify!, { method: 'POST', body: JSON.stringify({ oid, size: content.length }), headers: { 'content-type': LFS_MEDIA_TYPE } });
      assert.equal(v.status, 404, await v.text());
      await assertNotLinked(ctx, BOBS, bob, oid, content.length);
      // Sending the bytes proves possession; the store still holds one copy.
      const keys = (await ctx.lfs.storedKeys()).length;
      await uploadObject(ctx, BOBS, bob, content);
      const down = await batchOne(ctx.server, BOBS, bob, 'download', oid, content.length);
      assert.ok(down.actions?.download, JSON.stringify(down));
      assert.equal((await ctx.lfs.storedKeys()).length, keys);
    });

    test('a zero-size object uploads, verifies and downloads', async () => {
      const oid = await uploadObject(ctx, REPO, ctx.tokens.alice.write, Buffer.alloc(0));
      const down = await batchOne(ctx.server, REPO, ctx.tokens.alice.read, 'download', oid, 0);
      const res = await runAction(down.actions!.download!, { method: 'GET' });
      assert.equal(res.status, 200);
      assert.equal((await res.arrayBuffer()).byteLength, 0);
    });

    test('Range downloads answer 206 with Content-Range; an unsatisfiable range is 416', async () => {
      const size = 100 * 1024;
      const content = randomBytesSeeded(size, 701);
      const oid = await uploadObject(ctx, REPO, ctx.tokens.alice.write, content);
      const download = (await batchOne(ctx.server, REPO, ctx.tokens.alice.read, 'download', oid, size)).actions!.download!;
      // One kept-alive connection for every request: a response that sends more bytes than
      // its Content-Length says corrupts the next one.
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const cases: [string, number, number][] = [
          ['bytes=100-199', 100, 199],
          ['bytes=0-0', 0, 0],
          ['bytes=-10', size - 10, size - 1],
          ['bytes=102000-', 102000, size - 1],
          ['bytes=102000-999999', 102000, size - 1],
          ['bytes=0-99', 0, 99],
        ];
        for (const [range, start, end] of cases) {
          const res = await getOn(agent, download, { range });
          assert.equal(res.status, 206, range);
          assert.equal(res.headers['content-range'], `bytes ${start}-${end}/${size}`, range);
          assert.equal(Number(res.headers['content-length']), end - start + 1, range);
          assert.ok(res.body.equals(content.subarray(start, end + 1)), `${range}: ${res.body.length} bytes`);
        }
        for (const range of [`bytes=${size}-`, `bytes=${size + 10}-${size + 20}`, 'bytes=-0']) {
          const res = await getOn(agent, download, { range });
          assert.equal(res.status, 416, range);
          assert.equal(res.headers['content-range'], `bytes */${size}`, range);
        }
        const whole = await getOn(agent, download, {});
        assert.equal(whole.status, 200);
        assert.ok(whole.body.equals(content));
      } finally {
        agent.destroy();
      }
    });

    test('an unavailable store answers 503 with Retry-After, quickly', async (t) => {
      const content = randomBytesSeeded(3000, 801);
      const oid = await uploadObject(ctx, REPO, ctx.tokens.alice.write, content);
      const download = (await batchOne(ctx.server, REPO, ctx.tokens.alice.read, 'download', oid, content.length)).actions!.download!;
      const fresh = randomBytesSeeded(3000, 802);
      const upload = (await batchOne(ctx.server, REPO, ctx.tokens.alice.write, 'upload', sha256(fresh), fresh.length)).actions!.upload!;

      const objects = path.join(ctx.server.dataDir, 'objects');
      if (ctx.lfs.config.store === 's3') {
        await ctx.lfs.stopS3();
      } else {
        // A file where the store's directory was: every filesystem call fails (ENOTDIR).
        await rename(objects, `${objects}.away`);
        await writeFile(objects, 'not a directory');
      }
      try {
        for (const [what, run] of [
          ['download', () => runAction(download, { method: 'GET', signal: AbortSignal.timeout(30_000) })],
          ['upload', () => runAction(upload, { method: 'PUT', body: fresh, signal: AbortSignal.timeout(30_000) })],
        ] as const) {
          const started = performance.now();
          const res = await jsonOf(await run());
          const ms = performance.now() - started;
          t.diagnostic(`${what} with the store down: ${res.status} after ${ms.toFixed(0)} ms`);
          assertLfsError(res, 503);
          assert.match(res.headers.get('retry-after') ?? '', /^\d+$/);
        }
        // Metadata still answers batches.
        const b = await batch(ctx.server, REPO, ctx.tokens.alice.read, { operation: 'download', objects: [{ oid, size: content.length }] });
        assert.equal(b.status, 200);
      } finally {
        if (ctx.lfs.config.store === 'filesystem') {
          await rm(objects);
          await rename(`${objects}.away`, objects);
        }
      }
      assert.equal((await fetch(`${ctx.server.url}/healthz`)).status, 200);
    });
  });
}


describe('LFS pre-signed transfers, s3+direct', () => {
  let ctx: Ctx;
  before(async () => {
    ctx = await setUp(configNamed('s3+direct'));
  });
  after(async () => {
    await ctx?.lfs.stop();
  });

  test('upload and download actions point at the bucket, with no Authorization header; verify at the server', async () => {
    const content = randomBytesSeeded(4096, 901);
    const oid = sha256(content);
    const obj = await batchOne(ctx.server, REPO, ctx.tokens.alice.write, 'upload', oid, content.length);
    const { upload, verify } = obj.actions ?? {};
    assert.ok(upload && verify, JSON.stringify(obj));
    assert.ok(upload.href.startsWith(`${ctx.lfs.s3!.endpoint}/`), upload.href);
    assert.equal(upload.header?.['Authorization'], undefined);
    assert.ok(verify.href.startsWith(lfsBase(ctx.server, REPO)), verify.href);
    await uploadObject(ctx, REPO, ctx.tokens.alice.write, content);
    const down = await batchOne(ctx.server, REPO, ctx.tokens.alice.read, 'download', oid, content.length);
    assert.ok(down.actions?.download?.href.startsWith(`${ctx.lfs.s3!.endpoint}/`), JSON.stringify(down));
    assert.equal(down.actions!.download!.header?.['Authorization'], undefined);
    const got = Buffer.from(await (await runAction(down.actions!.download!, { method: 'GET' })).arrayBuffer());
    assert.ok(got.equals(content));
  });

  test('verify before any upload is 404, and a verify of the wrong size is 422; neither links', async () => {
    const content = randomBytesSeeded(4096, 902);
    const oid = sha256(content);
    const obj = await batchOne(ctx.server, REPO, ctx.tokens.alice.write, 'upload', oid, content.length);
    const verify = (size: number) =>
      runAction(obj.actions!.verify!, { method: 'POST', body: JSON.stringify({ oid, size }), headers: { 'content-type': LFS_MEDIA_TYPE } }).then(jsonOf);
    assertLfsError(await verify(content.length), 404);
    await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, oid, content.length);
    const put = await runAction(obj.actions!.upload!, { method: 'PUT', body: content });
    assert.equal(put.status, 200, await put.text());
    assertLfsError(await verify(content.length + 1), 422, /size|bytes/);
    await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, oid, content.length);
    assert.equal((await verify(content.length)).status, 200);
  });

  test('an expired verify authorization is 401, and does not link', async () => {
    const content = randomBytesSeeded(4096, 903);
    const oid = sha256(content);
    const obj = await batchOne(ctx.server, REPO, ctx.tokens.alice.write, 'upload', oid, content.length);
    const put = await runAction(obj.actions!.upload!, { method: 'PUT', body: content });
    assert.equal(put.status, 200);
    const expired = await forgeToken(ctx, bearerOf(obj.actions!.verify!), { expiresAt: Math.floor(Date.now() / 1000) - 60 });
    const res = await jsonOf(
      await fetch(obj.actions!.verify!.href, {
        method: 'POST',
        headers: { authorization: `Bearer ${expired}`, 'content-type': LFS_MEDIA_TYPE },
        body: JSON.stringify({ oid, size: content.length }),
      }),
    );
    assertLfsError(res, 401, /expired/);
    await assertNotLinked(ctx, REPO, ctx.tokens.alice.read, oid, content.length);
  });

  test('an object stored for another private repository is not linked by a verify without the bytes', async () => {
    const content = randomBytesSeeded(5000, 904);
    const oid = await uploadObject(ctx, SECRET, ctx.tokens.alice.write, content);
    const bob = ctx.tokens.bob.write;
    await assertNotLinked(ctx, BOBS, bob, oid, content.length);
    const obj = await batchOne(ctx.server, BOBS, bob, 'upload', oid, content.length);
    assert.ok(obj.actions?.upload && obj.actions.verify, `an upload action, not "already present": ${JSON.stringify(obj)}`);
    // Bob skips the upload and claims he has it.
    const v = await runAction(obj.actions.verify, { method: 'POST', body: JSON.stringify({ oid, size: content.length }), headers: { 'content-type': LFS_MEDIA_TYPE } });
    assert.equal(v.status, 404, await v.text());
    await assertNotLinked(ctx, BOBS, bob, oid, content.length);
    // With the bytes, he gets it.
    await uploadObject(ctx, BOBS, bob, content);
    const down = await batchOne(ctx.server, BOBS, bob, 'download', oid, content.length);
    assert.ok(down.actions?.download, JSON.stringify(down));
  });

  test('with the store down, transfers through it fail but batches answer', async (t) => {
    const content = randomBytesSeeded(3000, 905);
    const oid = await uploadObject(ctx, REPO, ctx.tokens.alice.write, content);
    await ctx.lfs.stopS3();
    const started = performance.now();
    const b = await batch(ctx.server, REPO, ctx.tokens.alice.read, { operation: 'download', objects: [{ oid, size: content.length }] });
    t.diagnostic(`download batch with the store down: ${b.status} after ${(performance.now() - started).toFixed(0)} ms`);
    assert.equal(b.status, 200);
    // The client's own request to the bucket fails; verify, which asks the store, is 503.
    const fresh = randomBytesSeeded(3000, 906);
    const obj = await batchOne(ctx.server, REPO, ctx.tokens.alice.write, 'upload', sha256(fresh), fresh.length);
    const vStarted = performance.now();
    const v = await jsonOf(
      await runAction(obj.actions!.verify!, {
        method: 'POST',
        body: JSON.stringify({ oid: sha256(fresh), size: fresh.length }),
        headers: { 'content-type': LFS_MEDIA_TYPE },
      }),
    );
    t.diagnostic(`verify with the store down: ${v.status} after ${(performance.now() - vStarted).toFixed(0)} ms`);
    assertLfsError(v, 503);
    assert.match(v.headers.get('retry-after') ?? '', /^\d+$/);
  });
});
