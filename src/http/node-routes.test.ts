/**
 * Nothing on a storage node's routes works without the cluster signature (issue 10): unsigned,
 * wrongly signed, stale or replayed-elsewhere requests are 401 and change nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import Fastify from 'fastify';
import { ulid } from 'ulid';
import { replicaToken, signRequest } from '../shared/cluster-signature.js';
import { isDomainError } from '../shared/errors.js';
import { RemoteRepoHost } from '../repos/remote-host.js';
import { scratchLocalHost } from '../../test/support/local-host.js';
import { NODE_PREFIX, REPLICA_PREFIX, registerNodeRoutes } from './node-routes.js';

const SECRET = 'node-routes-secret-0123456789abcdef0123';

async function node() {
  const local = await scratchLocalHost();
  const app = Fastify();
  registerNodeRoutes(app, { host: local.host, secret: SECRET });
  await app.ready();
  return { app, local };
}

test('a storage node refuses every request without a valid cluster signature, and creates nothing', async (t) => {
  const { app, local } = await node();
  t.after(async () => {
    await app.close();
    await local.close();
  });
  const id = ulid();
  const url = `${NODE_PREFIX}/repos/${id}`;
  const call = JSON.stringify({ defaultBranch: 'main' });
  const attempts: [string, Record<string, string>][] = [
    ['unsigned', { 'x-gitstratum-call': call }],
    ['another secret', signRequest('not-the-cluster-secret', 'POST', url, call)],
    ['signed for another path', signRequest(SECRET, 'POST', `${NODE_PREFIX}/repos/${ulid()}`, call)],
    ['signed for another method', signRequest(SECRET, 'DELETE', url, call)],
    ['call changed after signing', { ...signRequest(SECRET, 'POST', url, call), 'x-gitstratum-call': JSON.stringify({ defaultBranch: 'x' }) }],
    ['signed ten minutes ago', signRequest(SECRET, 'POST', url, call, Date.now() - 600_000)],
  ];
  for (const [what, headers] of attempts) {
    const res = await app.inject({ method: 'POST', url, headers });
    assert.equal(res.statusCode, 401, what);
    assert.equal(res.json().error.code, 'cluster_signature_required', what);
  }
  assert.equal(await stat(local.host.repoPath(id)).catch(() => undefined), undefined, 'nothing was created');

  const ok = await app.inject({ method: 'POST', url, headers: signRequest(SECRET, 'POST', url, call) });
  assert.equal(ok.statusCode, 204);
  assert.ok((await stat(local.host.repoPath(id))).isDirectory());

  const bad = JSON.stringify({ defaultBranch: '' });
  const refused = await app.inject({ method: 'POST', url: `${NODE_PREFIX}/repos/${ulid()}`, headers: signRequest(SECRET, 'POST', `${NODE_PREFIX}/repos/${ulid()}`, bad) });
  assert.equal(refused.statusCode, 401, 'the path is part of what is signed');
  const other = ulid();
  const invalidCall = await app.inject({ method: 'POST', url: `${NODE_PREFIX}/repos/${other}`, headers: signRequest(SECRET, 'POST', `${NODE_PREFIX}/repos/${other}`, bad) });
  assert.equal(invalidCall.statusCode, 400);
  assert.equal(invalidCall.json().error.code, 'bad_node_call');
});

test('a frontend with another cluster secret gets "unavailable", never a credentials prompt for its client', async (t) => {
  const { app, local } = await node();
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const remote = new RemoteRepoHost({ url, secret: 'a-different-secret-0123456789abcdef' });
  t.after(async () => {
    await remote.close();
    await app.close();
    await local.close();
  });
  const err = await remote.create({ id: ulid(), defaultBranch: 'main' }).catch((e: unknown) => e);
  assert.ok(isDomainError(err));
  assert.equal(err.kind, 'unavailable');
  assert.equal(err.code, 'storage_node_refused');
});

test('a storage node that cannot be reached is "unavailable"', async () => {
  const remote = new RemoteRepoHost({ url: 'http://127.0.0.1:9', secret: SECRET, connectTimeoutMs: 2000 });
  try {
    const err = await remote.remove(ulid()).catch((e: unknown) => e);
    assert.ok(isDomainError(err));
    assert.equal(err.code, 'storage_node_unreachable');
  } finally {
    await remote.close();
  }
});

test("a replica's fetch needs a token for that repository, unexpired; with one, it gets git's advertisement", async (t) => {
  const local = await scratchLocalHost();
  const id = ulid();
  await local.host.create({ id, defaultBranch: 'main' });
  const app = Fastify();
  registerNodeRoutes(app, { host: local.host, secret: SECRET, hostedRepo: async (repo) => (repo === id ? { id, defaultBranch: 'main', label: 'a/b/c' } : undefined) });
  await app.ready();
  t.after(async () => {
    await app.close();
    await local.close();
  });
  const url = `${REPLICA_PREFIX}/${id}/info/refs?service=git-upload-pack`;
  const hour = Date.now() + 3_600_000;
  const attempts: [string, string | undefined][] = [
    ['no token', undefined],
    ['a cluster signature is not a token', signRequest(SECRET, 'GET', url, '')['x-gitstratum-signature']],
    ['another secret', `Bearer ${replicaToken('not-the-cluster-secret', id, hour)}`],
    ['another repository', `Bearer ${replicaToken(SECRET, ulid(), hour)}`],
    ['expired', `Bearer ${replicaToken(SECRET, id, Date.now() - 1000)}`],
  ];
  for (const [what, authorization] of attempts) {
    const res = await app.inject({ method: 'GET', url, headers: authorization ? { authorization } : {} });
    assert.equal(res.statusCode, 401, what);
    assert.equal(res.json().error.code, 'replica_token_required', what);
  }
  const push = await app.inject({ method: 'GET', url: `${REPLICA_PREFIX}/${id}/info/refs?service=git-receive-pack`, headers: { authorization: `Bearer ${replicaToken(SECRET, id, hour)}` } });
  assert.equal(push.statusCode, 400, 'upload-pack only');
  const other = ulid();
  const elsewhere = await app.inject({ method: 'GET', url: `${REPLICA_PREFIX}/${other}/info/refs?service=git-upload-pack`, headers: { authorization: `Bearer ${replicaToken(SECRET, other, hour)}` } });
  assert.equal(elsewhere.statusCode, 404, "not this shard's repository");

  const ok = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${replicaToken(SECRET, id, hour)}`, 'git-protocol': 'version=2' } });
  assert.equal(ok.statusCode, 200);
  assert.equal(ok.headers['content-type'], 'application/x-git-upload-pack-advertisement');
  assert.match(ok.body, /version 2/);
});
