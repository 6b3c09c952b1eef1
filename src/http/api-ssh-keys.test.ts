/**
 * The SSH key routes of the REST API (issue 14), in process with `inject()`: a user manages
 * their own keys, a site administrator anyone's; refusals come with their codes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { systemActor } from '../access/policy.js';
import { apiApp, injectApi } from '../../test/support/inject-api.js';


async function keygen(dir: string, name: string, args: string[] = ['-t', 'ed25519']): Promise<string> {
  execFileSync('ssh-keygen', ['-q', '-N', '', '-C', `${name}@host`, '-f', path.join(dir, name), ...args]);
  return readFile(path.join(dir, `${name}.pub`), 'utf8');
}

test('SSH key routes: yours, or anyone’s as administrator; duplicates, weak keys and strangers refused', async (t) => {
  const { app, core, data } = await apiApp(t, { ssh: { publicUrl: 'ssh://git@git.example.com:2222', port: 2222 } });
  const api = injectApi(app);
  const { accounts } = core;
  for (const [name, admin] of [['root', true], ['bob', false], ['eve', false]] as const) await accounts.createUser(systemActor, name, { admin });
  const root = (await accounts.createToken(systemActor, 'root', 'admin')).token;
  const bob = (await accounts.createToken(systemActor, 'bob', 'write')).token;
  const bobRead = (await accounts.createToken(systemActor, 'bob', 'read')).token;
  const eve = (await accounts.createToken(systemActor, 'eve', 'write')).token;
  const laptop = await keygen(data, 'laptop');

  const added = await api('POST', '/users/bob/keys', bob, { key: laptop });
  assert.equal(added.status, 201, JSON.stringify(added.body));
  assert.equal(added.body.name, 'laptop@host');
  assert.equal(added.body.scope, 'write');
  assert.match(added.body.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);

  // One key, one user: nobody else can register it, and the answer does not say whose it is.
  const again = await api('POST', '/users/eve/keys', eve, { key: laptop });
  assert.equal(again.status, 409);
  assert.equal(again.body.error.code, 'ssh_key_exists');
  assert.doesNotMatch(again.body.error.message, /bob/);

  // A read token adds read keys only; a weak key is refused with its reason.
  assert.equal((await api('POST', '/users/bob/keys', bobRead, { key: await keygen(data, 'ci') })).body.error.code, 'scope_exceeds_token');
  assert.equal((await api('POST', '/users/bob/keys', bobRead, { key: await keygen(data, 'ci2'), scope: 'read' })).status, 201);
  const weak = await api('POST', '/users/bob/keys', bob, { key: await keygen(data, 'old', ['-t', 'rsa', '-b', '1024']) });
  assert.equal(weak.body.error.code, 'weak_ssh_key');

  // Strangers neither see nor remove bob's keys; the administrator does both.
  assert.equal((await api('GET', '/users/bob/keys', eve)).status, 403);
  assert.equal((await api('DELETE', `/users/bob/keys/${added.body.id}`, eve)).status, 403);
  assert.equal((await api('DELETE', `/users/eve/keys/${added.body.id}`, eve)).body.error.code, 'ssh_key_not_found');
  const listed = await api('GET', '/users/bob/keys', root);
  assert.deepEqual(listed.body.map((k: { scope: string }) => k.scope).sort(), ['read', 'write']);
  const removed = await api('DELETE', `/users/bob/keys/${added.body.id}`, root);
  assert.equal(removed.status, 200);
  assert.equal((await api('GET', '/users/bob/keys', bob)).body.length, 1);
  assert.equal((await api('GET', '/users/bob/keys')).status, 401);

  // With SSH on, repositories show their SSH clone URL beside the HTTP one.
  await core.repos.createSpace(systemActor, 'bob/main');
  const repo = await api('POST', '/repos', bob, { owner: 'bob', space: 'main', name: 'app' });
  assert.equal(repo.body.sshUrl, 'ssh://git@git.example.com:2222/bob/main/app.git');
});
