/**
 * Protected branches (issue 13) with real git over HTTP and SSH: each rule refuses the push it
 * should, with a `remote:` message naming the rule, changes nothing, and is audited; pushes
 * the rules allow go through. Rules are managed with the CLI and the API.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { systemActor } from '../../src/access/policy.js';
import { listAudit } from '../../src/meta/audit.js';
import { Git, Server, tempDir } from './harness.js';
import { keygen, sshAs, sshPortOf } from '../support/ssh.js';

test('protected branches: force pushes, deletions, admin-only pushes and linear history', async (t) => {
  const server = await Server.start({ args: ['--ssh-port', '0'] });
  t.after(() => server.cleanup());
  const dir = await tempDir('gitstratum-protect-');
  const bobKey = await keygen(dir, 'bob');
  // acme/main/app: alice administers the organization, bob may write.
  await server.admin(async (core) => {
    await core.accounts.createUser(systemActor, 'alice');
    await core.accounts.createUser(systemActor, 'bob');
    await core.accounts.createOrg(systemActor, 'acme');
    await core.accounts.addMember(systemActor, 'acme', 'alice', 'admin');
    await core.accounts.addMember(systemActor, 'acme', 'bob', 'write');
    await core.repos.createSpace(systemActor, 'acme/main');
    await core.repos.createRepo(systemActor, 'acme/main/app', { visibility: 'private' });
    await core.sshKeys.add(systemActor, 'bob', bobKey.pub);
  });
  const [alice, bob] = [await server.token('alice', 'write'), await server.token('bob', 'write')];
  // Changing rules takes an admin-scope token; pushing as an administrator does not.
  const aliceAdmin = await server.token('alice', 'admin');
  const git = await Git.create();
  const as = (token: string) => server.repoUrl('acme/main/app.git', token);
  const work = await git.workTree(path.join(dir, 'work'), { commits: 3 });
  const push = (token: string, args: string[]) => git.run(['push', as(token), ...args], { cwd: work });
  const remoteRef = async (ref: string) => (await git.ok(['ls-remote', as(alice), ref])).split('\t')[0] ?? '';
  await git.ok(['push', '-q', as(alice), 'main', 'main:release/1', 'main:sandbox/x', 'main:topic'], { cwd: work });

  // Rules: main and release/* by the CLI, sandbox/* through the API.
  await server.cliOk(['repo', 'protect', 'acme/main/app', 'main']);
  await server.cliOk(['repo', 'protect', 'acme/main/app', 'release/*']);
  const api = (token: string, method: string, body?: unknown, query = '') =>
    fetch(`${server.url}/api/v1/repos/acme/main/app/protections${query}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
  const byBob = await api(bob, 'PUT', { pattern: 'sandbox/*', allowForcePush: true, allowDeletion: true });
  assert.equal(byBob.status, 403, 'a writer cannot change the rules');
  assert.equal((await api(alice, 'PUT', { pattern: 'sandbox/*' })).status, 403, "nor can an administrator's write token");
  const put = await api(aliceAdmin, 'PUT', { pattern: 'sandbox/*', allowForcePush: true, allowDeletion: true });
  assert.equal(put.status, 200);
  assert.deepEqual(
    ((await (await api(bob, 'GET')).json()) as { pattern: string }[]).map((r) => r.pattern),
    ['main', 'release/*', 'sandbox/*'],
    'anyone who reads the repository sees its rules',
  );

  await t.test('a force push to a protected branch is refused, naming the rule; elsewhere it goes through', async () => {
    const before = await remoteRef('refs/heads/main');
    await git.ok(['commit', '-q', '--amend', '-m', 'rewritten'], { cwd: work });
    const refused = await push(bob, ['--force', 'main']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /remote: gitstratum: push refused by the protection rule for 'main': main may not be force-pushed/);
    assert.equal(await remoteRef('refs/heads/main'), before, 'the branch did not move');
    // Over SSH, the same rule in the same words.
    const overSsh = await git.run(['push', '--force', `ssh://git@127.0.0.1:${sshPortOf(server)}/acme/main/app.git`, 'main'], { cwd: work, env: sshAs(bobKey, sshPortOf(server)) });
    assert.notEqual(overSsh.code, 0);
    assert.match(overSsh.stderr, /remote: gitstratum: push refused by the protection rule for 'main'/);
    assert.equal((await push(bob, ['--force', 'main:sandbox/x'])).code, 0, 'sandbox/* allows force pushes');
    assert.equal((await push(bob, ['--force', 'main:topic'])).code, 0, 'an unprotected branch takes force pushes');
    await git.ok(['reset', '-q', '--hard', before], { cwd: work });
  });

  await t.test('deleting a protected branch is refused; a rule that allows it, or none, lets it go', async () => {
    const refused = await push(bob, ['--delete', 'release/1']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /protection rule for 'release\/\*': release\/1 may not be deleted/);
    assert.notEqual(await remoteRef('refs/heads/release/1'), '');
    assert.equal((await push(bob, ['--delete', 'sandbox/x'])).code, 0);
    assert.equal((await push(bob, ['--delete', 'topic'])).code, 0);
  });

  await t.test('pushes by administrators only: a writer is refused, an administrator goes through', async () => {
    await server.cliOk(['repo', 'protect', 'acme/main/app', 'main', '--push-role', 'admin']);
    await git.commits(work, 1, { seed: 7 });
    const refused = await push(bob, ['main']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /only the repository's administrators may push to main/);
    assert.equal((await push(alice, ['main'])).code, 0);
    assert.equal(await remoteRef('refs/heads/main'), await git.revParse(work, 'HEAD'));
  });

  await t.test('linear history: a merge commit is refused, the same work rebased goes through', async () => {
    await server.cliOk(['repo', 'protect', 'acme/main/app', 'main', '--linear-history']);
    await git.ok(['checkout', '-q', '-b', 'feature', 'HEAD~1'], { cwd: work });
    await writeFile(path.join(work, 'feature.txt'), 'a file of its own, so the merge is clean\n');
    await git.ok(['add', 'feature.txt'], { cwd: work });
    await git.ok(['commit', '-q', '-m', 'feature'], { cwd: work });
    await git.ok(['checkout', '-q', 'main'], { cwd: work });
    await git.ok(['merge', '-q', '--no-ff', '-m', 'merge feature', 'feature'], { cwd: work });
    const refused = await push(bob, ['main']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /main requires a linear history, and [0-9a-f]{10} is a merge commit/);
    await git.ok(['reset', '-q', '--hard', 'HEAD~1'], { cwd: work });
    await git.ok(['cherry-pick', 'feature'], { cwd: work });
    assert.equal((await push(bob, ['main'])).code, 0);
  });

  await t.test('refused pushes are audited; rules are listed and removed', async () => {
    const refusals = await server.admin((core) => listAudit(core.meta.db, { action: 'push.refused' }));
    assert.equal(refusals.length >= 5, true, `${refusals.length} refusals audited`);
    assert.ok(refusals.every((r) => r.actorName === 'bob'));
    assert.match(await server.cliOk(['repo', 'protections', 'acme/main/app']), /^main\tno force pushes, no deletion, pushes by writers, linear history$/m);
    assert.equal((await api(aliceAdmin, 'DELETE', undefined, '?pattern=release%2F*')).status, 204);
    assert.equal((await push(bob, ['--delete', 'release/1'])).code, 0, 'with its rule gone, the branch may be deleted');
    await server.cliOk(['repo', 'unprotect', 'acme/main/app', 'main']);
    assert.doesNotMatch(await server.cliOk(['repo', 'protections', 'acme/main/app']), /^main\t/m);
  });
});
