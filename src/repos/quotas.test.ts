import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { coreWithAlice, onDisk } from '../../test/support/core.js';
import { systemActor, type Actor } from '../access/policy.js';
import { runGit } from '../git/command.js';
import { now } from '../meta/db.js';
import { linkObject } from '../meta/lfs.js';
import { isDomainError } from '../shared/errors.js';
import { createQuotas, directoryBytes, parseQuotaValue, type QuotaSettings } from './quotas.js';

const oid = (c: string) => c.repeat(64);

async function setup(backend: 'sqlite' | 'postgres', settings: Partial<QuotaSettings> = {}) {
  const dir = await tempDir('gitstratum-quotas-');
  const core = await coreWithAlice(dir, backend === 'postgres' ? await freshDatabaseUrl() : undefined);
  const quotas = createQuotas(core.meta, { repoQuotaBytes: 0, ownerQuotaBytes: 0, maxRefs: 100, ...settings });
  const repo = async (name: string) => onDisk(core, await core.repos.createRepo(systemActor, `alice/main/${name}`, { visibility: 'private' }));
  const link = (repositoryId: string, o: string, size: number) => linkObject(core.meta.db, { repositoryId, oid: o, size, createdAt: now() });
  return { core, quotas, repo, link, dispose: async () => (await core.close(), await rm(dir, { recursive: true, force: true })) };
}

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(isDomainError(err), `expected a refusal, got ${String(err)}`);
  return { code: err.code, message: err.message };
}

test('quota values: sizes with units, none (no limit), default; anything else is invalid_quota', () => {
  assert.equal(parseQuotaValue('10GiB'), 10 * 1024 ** 3);
  assert.equal(parseQuotaValue('500 MB'), 500e6);
  assert.equal(parseQuotaValue('2048'), 2048);
  assert.equal(parseQuotaValue('none'), 0);
  assert.equal(parseQuotaValue('DEFAULT'), 'default');
  for (const bad of ['10XB', '-1', 'lots', '']) assert.throws(() => parseQuotaValue(bad), (e: unknown) => isDomainError(e) && e.code === 'invalid_quota');
});

test('directoryBytes sums the files of a tree (a quarantine) and is 0 for a missing one', async () => {
  const dir = await tempDir('gitstratum-quarantine-');
  try {
    await mkdir(path.join(dir, 'pack'));
    await writeFile(path.join(dir, 'pack', 'a.pack'), Buffer.alloc(1000));
    await writeFile(path.join(dir, 'b'), Buffer.alloc(24));
    assert.equal(await directoryBytes(dir), 1024);
    assert.equal(await directoryBytes(path.join(dir, 'missing')), 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

for (const backend of databaseBackends()) {
  test(`the quota in force: the configured default, a repository's own, none, and back (${backend})`, async () => {
    const { quotas, repo, dispose } = await setup(backend, { repoQuotaBytes: 1000 });
    try {
      const r = await repo('q');
      const usage = async () => (await quotas.repoUsages([r.id])).get(r.id)!;
      assert.deepEqual([(await usage()).quotaBytes, (await usage()).quotaSource], [1000, 'default']);
      await quotas.setRepoQuota(systemActor, 'alice/main/q', 5000);
      assert.deepEqual([(await usage()).quotaBytes, (await usage()).quotaSource], [5000, 'set']);
      await quotas.setRepoQuota(systemActor, 'alice/main/q', 0);
      assert.deepEqual([(await usage()).quotaBytes, (await usage()).quotaSource], [null, 'set']);
      await quotas.setRepoQuota(systemActor, 'alice/main/q', 'default');
      assert.deepEqual([(await usage()).quotaBytes, (await usage()).quotaSource], [1000, 'default']);

      const alice: Actor = { kind: 'user', userId: r.ownerId, name: 'alice', isAdmin: false, scope: 'admin', tokenId: null };
      assert.equal((await refusal(quotas.setRepoQuota(alice, 'alice/main/q', 0))).code, 'admin_required');
      assert.equal((await refusal(quotas.setOwnerQuota(alice, 'alice', 0))).code, 'admin_required');
      assert.equal((await refusal(quotas.setOwnerQuota(systemActor, 'nobody', 0))).code, 'owner_not_found');
    } finally {
      await dispose();
    }
  });

  test(`LFS usage: per repository, and once per owner for an object two repositories share (${backend})`, async () => {
    const { quotas, repo, link, dispose } = await setup(backend);
    try {
      const a = await repo('a');
      const b = await repo('b');
      await link(a.id, oid('1'), 1000);
      await link(b.id, oid('1'), 1000);
      await link(b.id, oid('2'), 300);
      const usages = await quotas.repoUsages([a.id, b.id]);
      assert.equal(usages.get(a.id)!.lfsBytes, 1000);
      assert.equal(usages.get(b.id)!.lfsBytes, 1300);
      const owner = await quotas.ownerUsage(systemActor, 'alice');
      assert.equal(owner.lfsBytes, 1300);
      assert.equal(owner.usedBytes, 1300);
      assert.equal(owner.quotaBytes, null);
    } finally {
      await dispose();
    }
  });

  test(`LFS uploads are refused past a repository's or owner's quota, counting only what is new to each (${backend})`, async () => {
    const { quotas, repo, link, dispose } = await setup(backend);
    try {
      const a = await repo('a');
      const b = await repo('b');
      await link(a.id, oid('1'), 1000);
      await quotas.setRepoQuota(systemActor, 'alice/main/a', 1500);
      // Already linked to the repository: adds nothing.
      await quotas.assertLfsRoom(a.id, [{ oid: oid('1'), size: 1000 }], 'this upload');
      await quotas.assertLfsRoom(a.id, [{ oid: oid('2'), size: 500 }], 'this upload');
      const over = await refusal(quotas.assertLfsRoom(a.id, [{ oid: oid('3'), size: 501 }], 'this upload'));
      assert.equal(over.code, 'quota_exceeded');
      assert.match(over.message, /^repository quota exceeded: alice\/main\/a uses 1000 B of its 1\.5 KiB quota .*; this upload adds 501 B$/);

      await quotas.setOwnerQuota(systemActor, 'alice', 1200);
      // New to b, but the owner already stores it: fits the owner's quota.
      await quotas.assertLfsRoom(b.id, [{ oid: oid('1'), size: 1000 }], 'this upload');
      const owner = await refusal(quotas.assertLfsRoom(b.id, [{ oid: oid('4'), size: 201 }], 'this upload'));
      assert.match(owner.message, /^owner quota exceeded: the repositories of alice use 1000 B of its 1\.2 KiB quota; this upload adds 201 B$/);
    } finally {
      await dispose();
    }
  });

  test(`pushRefusal: more refs than maxRefs, and quarantined objects over a quota; a push bringing nothing passes (${backend})`, async () => {
    const { quotas, repo, dispose } = await setup(backend, { maxRefs: 3 });
    try {
      const r = await repo('p');
      const tree = (await runGit(['--git-dir', r.path, 'mktree'], { input: '' })).stdout.trim();
      const env = { GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@example.com', GIT_COMMITTER_NAME: 'a', GIT_COMMITTER_EMAIL: 'a@example.com' };
      const commit = (await runGit(['--git-dir', r.path, 'commit-tree', tree, '-m', 'one'], { env })).stdout.trim();
      await runGit(['--git-dir', r.path, 'update-ref', 'refs/heads/main', commit]);
      await runGit(['--git-dir', r.path, 'update-ref', 'refs/heads/two', commit]);
      const zero = '0'.repeat(40);
      const create = (ref: string) => ({ oldOid: zero, newOid: commit, ref });
      const where = { id: r.id, path: r.path };

      assert.equal(await quotas.pushRefusal(where, [create('refs/heads/three')], undefined), undefined);
      assert.equal(
        await quotas.pushRefusal(where, [create('refs/heads/three'), create('refs/heads/four')], undefined),
        'gitstratum: push refused: the repository would have 4 refs; at most 3 are allowed (maxRefs)',
      );
      // A deletion in the same push makes room.
      assert.equal(await quotas.pushRefusal(where, [create('refs/heads/three'), create('refs/heads/four'), { oldOid: commit, newOid: zero, ref: 'refs/heads/two' }], undefined), undefined);

      await quotas.setRepoQuota(systemActor, 'alice/main/p', 10_000);
      const quarantine = await tempDir('gitstratum-quarantine-');
      try {
        assert.equal(await quotas.pushRefusal(where, [create('refs/heads/x')], quarantine), undefined, 'an empty quarantine brings nothing');
        await writeFile(path.join(quarantine, 'pack.pack'), Buffer.alloc(20_000));
        const message = await quotas.pushRefusal(where, [create('refs/heads/x')], quarantine);
        assert.match(message ?? '', /^gitstratum: push refused: repository quota exceeded: alice\/main\/p uses .* of its 9\.8 KiB quota .*; this push adds 19\.5 KiB$/);
      } finally {
        await rm(quarantine, { recursive: true, force: true });
      }
    } finally {
      await dispose();
    }
  });
}
