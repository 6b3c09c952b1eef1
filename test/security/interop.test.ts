/**
 * Interop and media types (issue 9): git-lfs sends `"ref": {}` when it knows no ref, and the
 * batch and locking specs ask servers to cope with a missing or null `ref` too; and LFS and
 * API bodies are accepted only as their JSON media types, so a cross-site form (text/plain,
 * form-urlencoded) cannot take a lock or change anything. In process, through inject().
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { tempDir } from '../e2e/harness.js';
import { appWithAlice, type AppFixture } from '../support/app.js';

const LFS = 'application/vnd.git-lfs+json';
const OID = 'a'.repeat(64);
const REFS: [string, Record<string, unknown>][] = [
  ['missing', {}],
  ['null', { ref: null }],
  ['{}', { ref: {} }],
  ['{name}', { ref: { name: 'refs/heads/main' } }],
];

let dir: string;
let f: AppFixture;

before(async () => {
  dir = await tempDir();
  f = await appWithAlice(dir);
});
after(async () => {
  await f.app.close();
  await rm(dir, { recursive: true, force: true });
});

function lfs(method: string, route: string, body: unknown, contentType = LFS) {
  return f.app.http.inject({
    method,
    url: `/${f.privateRepo}.git/info/lfs${route}`,
    headers: { authorization: `Bearer ${f.tokens.write}`, 'content-type': contentType, accept: LFS },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

describe('ref missing, null or {} is served', () => {
  for (const [name, ref] of REFS) {
    test(`batch with ref ${name}`, async () => {
      for (const operation of ['download', 'upload']) {
        const res = await lfs('POST', '/objects/batch', { operation, objects: [{ oid: OID, size: 1 }], ...ref });
        assert.equal(res.statusCode, 200, res.body);
        assert.equal(res.json().objects.length, 1);
      }
    });

    test(`lock, verify and unlock with ref ${name}`, async () => {
      const path = `ref-${name}.bin`;
      const created = await lfs('POST', '/locks', { path, ...ref });
      assert.equal(created.statusCode, 201, created.body);
      const verified = await lfs('POST', '/locks/verify', { ...ref });
      assert.equal(verified.statusCode, 200, verified.body);
      assert.ok(verified.json().ours.some((l: { path: string }) => l.path === path));
      const unlocked = await lfs('POST', `/locks/${created.json().lock.id}/unlock`, { ...ref });
      assert.equal(unlocked.statusCode, 200, unlocked.body);
    });
  }

  test('a ref that is not an object is still refused (422)', async () => {
    const res = await lfs('POST', '/objects/batch', { operation: 'download', objects: [], ref: 'main' });
    assert.equal(res.statusCode, 422, res.body);
  });
});

describe('LFS routes accept only their JSON media types', () => {
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    test(`a lock request as ${type} is 415 and takes no lock`, async () => {
      const path = `form-${type.split(';')[0]!.replace('/', '-')}.bin`;
      const res = await lfs('POST', '/locks', { path }, type);
      assert.equal(res.statusCode, 415, res.body);
      assert.match(res.headers['content-type'] as string, /^application\/vnd\.git-lfs\+json/);
      assert.equal(typeof res.json().message, 'string');
      const list = await f.app.http.inject({ method: 'GET', url: `/${f.privateRepo}.git/info/lfs/locks?path=${path}`, headers: { authorization: `Bearer ${f.tokens.read}` } });
      assert.deepEqual(list.json().locks, []);
    });
  }

  test('batch, lock verify and unlock as text/plain are 415', async () => {
    for (const route of ['/objects/batch', '/locks/verify', '/locks/x/unlock', '/verify']) {
      const res = await lfs('POST', route, { operation: 'download', objects: [] }, 'text/plain');
      assert.equal(res.statusCode, 415, `${route}: ${res.body}`);
    }
  });

  test('application/json is accepted as well as the LFS type', async () => {
    const res = await lfs('POST', '/objects/batch', { operation: 'download', objects: [] }, 'application/json');
    assert.equal(res.statusCode, 200, res.body);
  });
});

describe('API routes accept only application/json', () => {
  for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
    test(`a create request as ${type} is 415 and creates nothing`, async () => {
      const name = `org-${type.length}`;
      const res = await f.app.http.inject({
        method: 'POST',
        url: '/api/v1/orgs',
        headers: { authorization: `Bearer ${f.tokens.admin}`, 'content-type': type },
        payload: JSON.stringify({ name }),
      });
      assert.equal(res.statusCode, 415, res.body);
      assert.equal(res.json().error.code, 'unsupported_media_type');
      const again = await f.app.http.inject({
        method: 'POST',
        url: '/api/v1/orgs',
        headers: { authorization: `Bearer ${f.tokens.admin}`, 'content-type': 'application/json' },
        payload: JSON.stringify({ name }),
      });
      assert.equal(again.statusCode, 201, 'the name is still free');
    });
  }
});
