/**
 * The offboarding and audit routes of the REST API, in process with `inject()` (no sockets):
 * who may call them, what they answer, and the error codes of their refusals.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { systemActor } from '../access/policy.js';
import { apiApp, injectApi } from '../../test/support/inject-api.js';

test('offboarding and audit routes', async (t) => {
  const { app, core } = await apiApp(t);
  const api = injectApi(app);
  const { accounts } = core;
  await accounts.createUser(systemActor, 'root', { admin: true });
  await accounts.createUser(systemActor, 'bob');
  await accounts.createUser(systemActor, 'alice');
  await accounts.createOrg(systemActor, 'acme');
  await accounts.addMember(systemActor, 'acme', 'alice', 'admin');
  await accounts.addMember(systemActor, 'acme', 'bob', 'write');
  const root = (await accounts.createToken(systemActor, 'root', 'admin')).token;
  const alice = (await accounts.createToken(systemActor, 'alice', 'admin')).token;
  const bob = (await accounts.createToken(systemActor, 'bob', 'write')).token;

  await t.test('tokens have names, and the listing marks expired ones', async () => {
    const made = await api('POST', '/users/bob/tokens', root, { scope: 'read', name: 'ci-deploy', expires: '1s' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.equal(made.body.name, 'ci-deploy');
    assert.equal(made.body.expired, false);
    assert.equal((await api('POST', '/users/bob/tokens', root, { scope: 'read', name: 'no spaces' })).body.error.code, 'invalid_token_name');
    // Wait for the expiry to pass (a condition, not a duration).
    while (Date.now() <= Date.parse(made.body.expiresAt)) await new Promise((r) => setTimeout(r, 50));
    const list = await api('GET', '/users/bob/tokens', root);
    const listed = list.body.find((x: { id: string }) => x.id === made.body.id);
    assert.deepEqual([listed.name, listed.expired], ['ci-deploy', true]);
    assert.equal(list.body.find((x: { name: string | null }) => x.name === null).expired, false);
  });

  await t.test('GET /orgs and /orgs/{org}/members', async () => {
    const orgs = await api('GET', '/orgs', bob);
    assert.equal(orgs.status, 200);
    assert.deepEqual(orgs.body.map((o: { name: string; members: number }) => [o.name, o.members]), [['acme', 2]]);
    assert.equal((await api('GET', '/orgs')).status, 401);
  });

  await t.test('DELETE /orgs/{org}/members/{user}: org admins may, members may not', async () => {
    assert.equal((await api('DELETE', '/orgs/acme/members/alice', bob)).body.error.code, 'org_admin_required');
    assert.equal((await api('DELETE', '/orgs/acme/members/bob', alice)).status, 204);
    assert.deepEqual((await api('GET', '/orgs/acme/members', alice)).body, [{ user: 'alice', role: 'admin' }]);
    const again = await api('DELETE', '/orgs/acme/members/bob', alice);
    assert.deepEqual([again.status, again.body.error.code], [404, 'member_not_found']);
  });

  await t.test('disable and enable: a site admin’s calls; the disabled user’s token gets 401 user_disabled', async () => {
    assert.equal((await api('POST', '/users/bob/disable', alice)).body.error.code, 'admin_required');
    const off = await api('POST', '/users/bob/disable', root, { releaseLocks: true });
    assert.equal(off.status, 200, JSON.stringify(off.body));
    assert.equal(off.body.user.name, 'bob');
    assert.ok(off.body.user.disabledAt);
    assert.deepEqual(off.body.releasedLocks, []);
    const refused = await api('GET', '/user', bob);
    assert.deepEqual([refused.status, refused.body.error.code], [401, 'user_disabled']);
    // Without a body, too.
    assert.equal((await api('POST', '/users/bob/disable', root)).status, 200);
    assert.equal((await api('POST', '/users/root/disable', root)).body.error.code, 'self_offboarding');
    const on = await api('POST', '/users/bob/enable', root);
    assert.deepEqual([on.status, on.body.disabledAt], [200, null]);
    assert.equal((await api('GET', '/user', bob)).status, 200);
  });

  await t.test('DELETE /users/{user}/locks and DELETE /users/{user}', async () => {
    const released = await api('DELETE', '/users/bob/locks', root);
    assert.deepEqual(released.body, { user: 'bob', released: [] });
    assert.equal((await api('DELETE', '/users/bob/locks?repo=nope', root)).status, 400);
    await core.repos.createSpace(systemActor, 'bob/main');
    await core.repos.createRepo(systemActor, 'bob/main/app', { visibility: 'private' });
    const refused = await api('DELETE', '/users/bob', root);
    assert.deepEqual([refused.status, refused.body.error.code], [409, 'user_owns_repositories']);
    assert.match(refused.body.error.message, /bob\/main\/app/);
    await core.repos.deleteRepo(systemActor, 'bob/main/app');
    assert.equal((await api('DELETE', '/users/bob', root)).status, 204);
    assert.equal((await api('GET', '/user', bob)).body.error.code, 'invalid_token');
    assert.equal((await api('DELETE', '/users/bob', root)).body.error.code, 'user_not_found');
  });

  await t.test('GET /audit: site administrators only, filtered, paginated', async () => {
    assert.equal((await api('GET', '/audit', alice)).body.error.code, 'admin_required');
    const page = await api('GET', '/audit?actor=root&limit=2', root);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    assert.deepEqual(page.body.entries.map((e: { action: string; target: string }) => `${e.action} ${e.target}`), ['user.delete bob', 'lock.release_all bob']);
    assert.equal(typeof page.body.entries[0].requestId, 'string');
    const next = await api('GET', `/audit?actor=root&limit=2&before=${page.body.nextCursor}`, root);
    assert.deepEqual(next.body.entries.map((e: { action: string }) => e.action), ['user.enable', 'user.disable']);
    const removal = await api('GET', '/audit?actor=alice', root);
    assert.deepEqual(removal.body.entries.map((e: { action: string; details: unknown }) => [e.action, e.details]), [['org.member.remove', { user: 'bob', role: 'write' }]]);
    assert.equal((await api('GET', '/audit?since=tomorrow', root)).body.error.code, 'invalid_time');
    assert.equal((await api('GET', '/audit?limit=0', root)).status, 400);
  });

  await t.test('the OpenAPI document lists the new routes', async () => {
    const doc = (await api('GET', '/openapi.json')).body;
    for (const p of ['/api/v1/audit', '/api/v1/orgs', '/api/v1/users/{user}/disable', '/api/v1/users/{user}/enable', '/api/v1/users/{user}/locks', '/api/v1/users/{user}']) {
      assert.ok(doc.paths[p], `${p} missing from ${Object.keys(doc.paths).join(', ')}`);
    }
    assert.ok(doc.paths['/api/v1/orgs/{org}/members/{user}'].delete);
  });
});
