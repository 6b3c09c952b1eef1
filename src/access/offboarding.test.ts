/**
 * Offboarding as a service, on both database backends: what disable, enable, delete, lock
 * release and member removal change, what they refuse, and that each leaves an audit entry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { ulid } from 'ulid';
import { configSchema } from '../config/schema.js';
import { openCore, type Core } from '../core.js';
import { listAudit } from '../meta/audit.js';
import { insertLock } from '../meta/lfs.js';
import { listTokens } from '../meta/tokens.js';
import { isDomainError } from '../shared/errors.js';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { systemActor } from './policy.js';

async function open(backend: 'sqlite' | 'postgres'): Promise<{ core: Core; dispose: () => Promise<void> }> {
  const data = await tempDir('gitstratum-offboarding-');
  const databaseUrl = backend === 'postgres' ? await freshDatabaseUrl() : undefined;
  const core = await openCore(configSchema.parse({ data, ...(databaseUrl && { databaseUrl }) }));
  return { core, dispose: async () => (await core.close(), await rm(data, { recursive: true, force: true })) };
}

/** Resolves to the domain error's code, failing when the promise does not reject with one. */
async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => assert.fail('expected a refusal'),
    (e: unknown) => e,
  );
  assert.ok(isDomainError(err), String(err));
  return err.code;
}

async function lockFor(core: Core, repoPath: string, user: string, path: string): Promise<void> {
  const repo = (await core.repos.listRepos(systemActor, {})).find((r) => `${r.ownerName}/${r.spaceName}/${r.name}` === repoPath)!;
  const owner = (await core.accounts.listUsers(systemActor)).find((u) => u.name === user)!;
  await insertLock(core.meta.db, { id: ulid(), repositoryId: repo.id, path, ownerId: owner.id, ref: null, lockedAt: new Date().toISOString() });
}

for (const backend of databaseBackends()) {
  test(`offboarding on ${backend}`, async (t) => {
    const { core, dispose } = await open(backend);
    t.after(dispose);
    const { accounts, offboarding } = core;
    await accounts.createUser(systemActor, 'root', { admin: true });
    await accounts.createUser(systemActor, 'bob');
    await accounts.createOrg(systemActor, 'acme');
    await accounts.addMember(systemActor, 'acme', 'bob', 'write');
    await core.repos.createSpace(systemActor, 'acme/tools');
    await core.repos.createRepo(systemActor, 'acme/tools/one', { visibility: 'private' });
    await core.repos.createRepo(systemActor, 'acme/tools/two', { visibility: 'private' });
    const rootToken = await accounts.createToken(systemActor, 'root', 'admin');
    const root = await accounts.authenticate(rootToken.token);
    const bobToken = await accounts.createToken(systemActor, 'bob', 'write', { name: 'ci-deploy' });
    const actions = async () => (await listAudit(core.meta.db, {})).map((e) => `${e.action} ${e.target}`);

    await t.test('a disabled user’s tokens are refused, and enabling restores them', async () => {
      const r = await offboarding.disable(root, 'bob');
      assert.ok(r.user.disabledAt);
      assert.equal(await refusal(accounts.authenticate(bobToken.token)), 'user_disabled');
      assert.ok((await accounts.listUsers(systemActor)).find((u) => u.name === 'bob')?.disabledAt);
      await offboarding.enable(root, 'bob');
      const again = await accounts.authenticate(bobToken.token);
      assert.equal(again.kind === 'user' && again.name, 'bob');
      assert.deepEqual((await actions()).slice(0, 2), ['user.enable bob', 'user.disable bob']);
    });

    await t.test('disable --release-locks deletes every lock of the user, and only theirs', async () => {
      await lockFor(core, 'acme/tools/one', 'bob', 'a.bin');
      await lockFor(core, 'acme/tools/two', 'bob', 'b.bin');
      await lockFor(core, 'acme/tools/two', 'root', 'c.bin');
      const r = await offboarding.disable(systemActor, 'bob', { releaseLocks: true });
      assert.deepEqual(r.releasedLocks.map((l) => `${l.repository}:${l.path}`).sort(), ['acme/tools/one:a.bin', 'acme/tools/two:b.bin']);
      const left = await core.meta.db.selectFrom('lfs_locks').select('path').execute();
      assert.deepEqual(left.map((l) => l.path), ['c.bin']);
      await offboarding.enable(systemActor, 'bob');
    });

    await t.test('lock release-all --repo releases the locks in that repository only', async () => {
      await lockFor(core, 'acme/tools/one', 'bob', 'x.bin');
      await lockFor(core, 'acme/tools/two', 'bob', 'y.bin');
      const r = await offboarding.releaseLocks(root, 'bob', { repo: 'acme/tools/one' });
      assert.deepEqual(r.released.map((l) => l.path), ['x.bin']);
      const [last] = await listAudit(core.meta.db, { limit: 1 });
      assert.equal(last?.action, 'lock.release_all');
      assert.deepEqual(last?.details, { user: 'bob', count: 1, repository: 'acme/tools/one' });
      assert.equal((await offboarding.releaseLocks(root, 'bob')).released.length, 1);
    });

    await t.test('only site administrators offboard, and not themselves', async () => {
      const bob = await accounts.authenticate(bobToken.token);
      assert.equal(await refusal(offboarding.disable(bob, 'root')), 'admin_required');
      assert.equal(await refusal(offboarding.delete(bob, 'root')), 'admin_required');
      assert.equal(await refusal(offboarding.releaseLocks(bob, 'root')), 'admin_required');
      assert.equal(await refusal(offboarding.disable(root, 'root')), 'self_offboarding');
      assert.equal(await refusal(offboarding.delete(root, 'root')), 'self_offboarding');
      assert.equal(await refusal(offboarding.disable(root, 'nobody')), 'user_not_found');
    });

    await t.test('removing a member ends their access to the organization’s private repositories', async () => {
      const bob = await accounts.authenticate(bobToken.token);
      await core.repos.resolve(bob, { owner: 'acme', space: 'tools', repo: 'one' }, 'write');
      assert.equal(await refusal(accounts.removeMember(bob, 'acme', 'bob')), 'org_admin_required');
      assert.deepEqual(await accounts.removeMember(root, 'acme', 'bob'), { org: 'acme', user: 'bob' });
      assert.equal(await refusal(core.repos.resolve(bob, { owner: 'acme', space: 'tools', repo: 'one' }, 'read')), 'repo_not_found');
      assert.equal(await refusal(accounts.removeMember(root, 'acme', 'bob')), 'member_not_found');
      assert.deepEqual((await actions())[0], 'org.member.remove acme');
      assert.deepEqual(await accounts.listOrgs(bob).then((l) => l.map((o) => [o.name, o.members])), [['acme', 0]]);
    });

    await t.test('delete is refused while the user owns repositories, naming them; then removes the user and what was theirs', async () => {
      await accounts.createUser(systemActor, 'carol');
      await accounts.addMember(systemActor, 'acme', 'carol', 'read');
      await core.repos.createSpace(systemActor, 'carol/main');
      await core.repos.createSpace(systemActor, 'carol/empty');
      await core.repos.createRepo(systemActor, 'carol/main/app', { visibility: 'public' });
      await accounts.createToken(systemActor, 'carol', 'read');
      await lockFor(core, 'acme/tools/one', 'carol', 'z.bin');
      const err = await offboarding.delete(root, 'carol').catch((e: unknown) => e);
      assert.ok(isDomainError(err) && err.code === 'user_owns_repositories', String(err));
      assert.match(err.message, /carol\/main\/app/);

      await core.repos.renameRepo(systemActor, 'carol/main/app', 'acme/tools/app');
      const carolId = (await accounts.listUsers(systemActor)).find((u) => u.name === 'carol')!.id;
      await offboarding.delete(root, 'carol');
      assert.equal(await refusal(accounts.listTokens(systemActor, 'carol')), 'user_not_found');
      assert.deepEqual(await listTokens(core.meta.db, carolId), []);
      assert.deepEqual((await accounts.listMembers(systemActor, 'acme')).map((m) => m.user), []);
      assert.deepEqual(await core.repos.listSpaces(systemActor).then((l) => l.map((s) => `${s.ownerName}/${s.name}`)), ['acme/tools']);
      assert.equal((await core.meta.db.selectFrom('lfs_locks').select('id').where('owner_id', '=', carolId).execute()).length, 0);
      // The audit log keeps the name: both the deletion and carol's earlier entries.
      const log = await listAudit(core.meta.db, {});
      assert.equal(log[0]?.action, 'user.delete');
      assert.equal(log[0]?.target, 'carol');
      assert.ok(log.some((e) => e.action === 'user.create' && e.target === 'carol'));
      // The name is free again.
      await accounts.createUser(systemActor, 'carol');
    });
  });
}
