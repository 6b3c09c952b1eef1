/**
 * Push events read from a real repository (events/payloads.ts): the commits a push brought,
 * with the files each added, modified and removed; forced updates; branch and tag events.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFile, rm, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { tempDir, gitEnv } from '../../test/e2e/harness.js';
import type { RepoRow } from '../meta/repositories.js';
import { MAX_COMMITS, pushEvents } from './payloads.js';

const ZERO = '0'.repeat(40);

test('push events: commits oldest first with their files, totals beyond the first 20, forced updates, branch and tag events', async () => {
  const dir = await tempDir('gitstratum-payloads-');
  const env = gitEnv(dir);
  const git = (...args: string[]) => execFileSync('git', ['-C', dir, ...args], { env, encoding: 'utf8' }).trim();
  git('init', '-q', '-b', 'main');
  await writeFile(path.join(dir, 'a.txt'), 'a\n');
  await writeFile(path.join(dir, 'b.txt'), 'b\n');
  git('add', '-A');
  git('commit', '-q', '-m', 'first\n\nwith a body');
  const first = git('rev-parse', 'HEAD');
  await writeFile(path.join(dir, 'a.txt'), 'a2\n');
  await rm(path.join(dir, 'b.txt'));
  await mkdir(path.join(dir, 'sub dir'));
  await writeFile(path.join(dir, 'sub dir', 'c é.txt'), 'c\n');
  git('add', '-A');
  git('commit', '-q', '-m', 'second');
  const second = git('rev-parse', 'HEAD');
  const repo: RepoRow = {
    id: 'R1', spaceId: 'S1', spaceName: 'main', ownerId: 'O1', ownerName: 'alice', ownerKind: 'user', name: 'app', visibility: 'private',
    defaultBranch: 'main', shard: 'local', enforceLocks: true, lfsLayout: 'content', lfsPublishRefs: null, lfsPublicUrl: null, forkOf: null, forkNetwork: 'R1', createdAt: '', updatedAt: '',
  };
  const gitDir = path.join(dir, '.git');
  const ctx = { origin: 'https://git.example.com', requestId: 'req-1' };
  const pusher = { id: 'U1', name: 'alice' };

  const created = await pushEvents(repo, gitDir, [{ oldOid: ZERO, newOid: second, ref: 'refs/heads/main' }], pusher, ctx);
  assert.deepEqual(created.map((e) => e.kind), ['push', 'branch']);
  const push = created[0]!.payload as Record<string, any>;
  assert.deepEqual(push['commits'].map((c: { id: string }) => c.id), [first, second]);
  assert.equal(push['commits'][0].message, 'first\n\nwith a body');
  assert.deepEqual(push['commits'][0].added.sort(), ['a.txt', 'b.txt']);
  assert.deepEqual([push['commits'][1].added, push['commits'][1].modified, push['commits'][1].removed], [['sub dir/c é.txt'], ['a.txt'], ['b.txt']]);
  assert.equal(push['total_commits'], 2);
  assert.equal(push['head_commit'].id, second);
  assert.equal(push['repository'].clone_url, 'https://git.example.com/alice/main/app.git');
  assert.deepEqual([created[1]!.payload['action'], created[1]!.payload['branch']], ['created', 'main']);

  // 25 more commits: 20 listed (the newest), 25 counted; not forced.
  for (let i = 0; i < 25; i++) git('commit', '-q', '--allow-empty', '-m', `empty ${i}`);
  const tip = git('rev-parse', 'HEAD');
  const update = (await pushEvents(repo, gitDir, [{ oldOid: second, newOid: tip, ref: 'refs/heads/main' }], pusher, ctx))[0]!.payload as Record<string, any>;
  assert.equal(update['commits'].length, MAX_COMMITS);
  assert.equal(update['commits'].at(-1).id, tip);
  assert.equal(update['total_commits'], 25);
  assert.equal(update['forced'], false);

  // Back to the first commit: forced, no new commits; a tag created, a branch deleted.
  const events = await pushEvents(
    repo,
    gitDir,
    [
      { oldOid: tip, newOid: first, ref: 'refs/heads/main' },
      { oldOid: ZERO, newOid: first, ref: 'refs/tags/v1' },
      { oldOid: second, newOid: ZERO, ref: 'refs/heads/old' },
      { oldOid: ZERO, newOid: first, ref: 'refs/notes/commits' },
    ],
    pusher,
    ctx,
  );
  assert.deepEqual(events.map((e) => `${e.kind}:${e.payload['ref']}`), ['push:refs/heads/main', 'push:refs/tags/v1', 'tag:refs/tags/v1', 'push:refs/heads/old', 'branch:refs/heads/old']);
  assert.deepEqual([events[0]!.payload['forced'], events[0]!.payload['total_commits']], [true, 0]);
  assert.deepEqual([events[3]!.payload['deleted'], events[3]!.payload['commits']], [true, []]);
  assert.deepEqual([events[4]!.payload['action'], events[4]!.payload['sha']], ['deleted', second]);
});
