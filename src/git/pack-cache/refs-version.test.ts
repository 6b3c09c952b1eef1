import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { runGit } from '../command.js';
import { RefsVersions } from './refs-version.js';
import { INLINE_MAX_REFS } from './refs-walk.js';

async function repoWithCommit(): Promise<{ dir: string; commit: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-refs-'));
  await runGit(['init', '--bare', '--quiet', '--initial-branch=main', '--', dir]);
  const env = { GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@example.com', GIT_COMMITTER_NAME: 'a', GIT_COMMITTER_EMAIL: 'a@example.com' };
  const tree = (await runGit(['--git-dir', dir, 'mktree'], { input: '' })).stdout.trim();
  const commit = (await runGit(['--git-dir', dir, 'commit-tree', tree, '-m', 'one'], { env })).stdout.trim();
  await runGit(['--git-dir', dir, 'update-ref', 'refs/heads/main', commit]);
  return { dir, commit };
}

for (const [walk, inline] of [['inline', true], ['in the worker', false]] as const) {
  test(`every kind of ref change gives a new version; nothing else does (walked ${walk})`, async () => {
    const { dir, commit } = await repoWithCommit();
    try {
      const versions = new RefsVersions({ inline });
      const refsVersion = (p: string) => versions.read(p);
      const seen = new Set<string>();
      const expectNew = async (what: string) => {
        const v = await refsVersion(dir);
        assert.ok(!seen.has(v), `${what} changed the version`);
        seen.add(v);
        return v;
      };
      const v0 = await expectNew('start');
      assert.match(v0, /^[0-9a-f]{16}$/);
      assert.equal(await refsVersion(dir), v0, 'stable while nothing changes');

      await runGit(['--git-dir', dir, 'update-ref', 'refs/heads/feature', commit]);
      await expectNew('a new branch');
      await runGit(['--git-dir', dir, 'tag', 'v1', commit]);
      await expectNew('a new tag');
      await runGit(['--git-dir', dir, 'pack-refs', '--all']);
      await expectNew('pack-refs');
      await runGit(['--git-dir', dir, 'update-ref', '-d', 'refs/heads/feature']);
      await expectNew('deleting a packed ref');
      await runGit(['--git-dir', dir, 'symbolic-ref', 'HEAD', 'refs/heads/other']);
      await expectNew('HEAD moving');
      await runGit(['--git-dir', dir, 'config', 'uploadpack.hideRefs', 'refs/tags']);
      await expectNew('a config change');

      // A lock file alone (a ref update in progress) is not a change yet.
      const before = await refsVersion(dir);
      await writeFile(path.join(dir, 'refs', 'heads', 'main.lock'), `${commit}\n`);
      assert.equal(await refsVersion(dir), before);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test('a ref rewritten in place with its old mtime put back is a change', async () => {
  const { dir, commit } = await repoWithCommit();
  try {
    const versions = new RefsVersions();
    const ref = path.join(dir, 'refs', 'heads', 'main');
    const a = await versions.read(dir);
    // Same inode and length; put the old times back, as a write within one clock tick would.
    const before = await stat(ref);
    await writeFile(ref, `${'f'.repeat(commit.length)}\n`);
    await utimes(ref, before.atime, before.mtime);
    assert.notEqual(await versions.read(dir), a);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the version of an unchanged repository does not change as its files age', async () => {
  const { dir } = await repoWithCommit();
  try {
    const versions = new RefsVersions();
    const now = Date.now();
    const fresh = await versions.read(dir, now);
    assert.equal(await versions.read(dir, now + 60_000), fresh, 'the same once the files are no longer recent');
    assert.equal(await new RefsVersions().read(dir, now + 60_000), fresh, 'and the same in another process');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the config version (what a v2 advertisement depends on) ignores ref changes and follows config changes', async () => {
  const { dir, commit } = await repoWithCommit();
  try {
    const versions = new RefsVersions();
    const config = await versions.readConfig(dir);
    const refs = await versions.read(dir);
    await runGit(['--git-dir', dir, 'update-ref', 'refs/heads/feature', commit]);
    await runGit(['--git-dir', dir, 'tag', 'v1', commit]);
    assert.notEqual(await versions.read(dir), refs, 'the refs version moved');
    assert.equal(await versions.readConfig(dir), config, 'the config version did not');
    await runGit(['--git-dir', dir, 'config', 'uploadpack.allowFilter', 'false']);
    assert.notEqual(await versions.readConfig(dir), config, 'a config change is a new config version');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a read that starts while another runs sees a ref update made before it started', async () => {
  const { dir, commit } = await repoWithCommit();
  try {
    const versions = new RefsVersions();
    const v0 = await versions.read(dir);
    const first = versions.read(dir);
    await runGit(['--git-dir', dir, 'update-ref', 'refs/heads/later', commit]);
    const second = versions.read(dir);
    const third = versions.read(dir);
    await first;
    assert.notEqual(await second, v0, 'the update is seen');
    assert.equal(await third, await second, 'callers arriving during one walk share the next');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// Issue 9: 100,000 loose refs blocked the event loop for 2.1–2.5 s per fetch.
test('many loose refs: the fingerprint lets the event loop turn while it reads them', async () => {
  const { dir, commit } = await repoWithCommit();
  try {
    const lines: string[] = [];
    for (let i = 0; i < 20_000; i++) lines.push(`create refs/heads/many/b${i} ${commit}`);
    await runGit(['--git-dir', dir, 'update-ref', '--stdin'], { input: lines.join('\n') + '\n' });
    const versions = new RefsVersions();
    let turns = 0;
    let reading = true;
    const tick = () => {
      turns++;
      if (reading) setImmediate(tick);
    };
    setImmediate(tick);
    const v = await versions.read(dir);
    reading = false;
    assert.match(v, /^[0-9a-f]{16}$/);
    // A synchronous read of 20,000 files gives the loop no turn at all.
    assert.ok(turns >= 20, `the event loop turned ${turns} times during the read`);
    await versions.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// Issue 9 (bench:abuse many-refs): sliced, the walk let the loop turn but still kept it busy
// for all of its 0.7-2 s of CPU per ls-refs request, and /healthz waited up to 2 s. Measured
// as a share of the read's duration (event-loop utilization), not as a time.
test('many loose refs: the walk runs off the main thread, whose event loop stays idle while it reads them', async () => {
  const { dir, commit } = await repoWithCommit();
  const versions = new RefsVersions();
  try {
    const lines: string[] = [];
    for (let i = 0; i < 20_000; i++) lines.push(`create refs/heads/many/b${i} ${commit}`);
    await runGit(['--git-dir', dir, 'update-ref', '--stdin'], { input: lines.join('\n') + '\n' });
    // The worker started, by a repository just over the inline walk's bound.
    const other = await repoWithCommit();
    const few = Array.from({ length: INLINE_MAX_REFS + 1 }, (_, i) => `create refs/heads/few/b${i} ${other.commit}`);
    await runGit(['--git-dir', other.dir, 'update-ref', '--stdin'], { input: few.join('\n') + '\n' });
    await versions.read(other.dir);
    await rm(other.dir, { recursive: true, force: true });
    for (const round of ['first read (every file read)', 'second read (digests remembered)']) {
      const before = performance.eventLoopUtilization();
      const v = await versions.read(dir);
      const elu = performance.eventLoopUtilization(before);
      assert.match(v, /^[0-9a-f]{16}$/);
      assert.ok(elu.utilization < 0.5, `${round}: the main thread's event loop was busy ${(elu.utilization * 100).toFixed(0)}% of the read`);
    }
  } finally {
    await versions.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a repository gives the same version walked inline or in the worker, and moves to the worker as its refs grow', async () => {
  const { dir, commit } = await repoWithCommit();
  const inline = new RefsVersions();
  const worker = new RefsVersions({ inline: false });
  try {
    const now = Date.now() + 60_000;
    assert.equal(await inline.read(dir, now), await worker.read(dir, now), 'refs');
    assert.equal(await inline.readConfig(dir, now), await worker.readConfig(dir, now), 'config');
    const before = await inline.read(dir);
    const lines = Array.from({ length: INLINE_MAX_REFS + 1 }, (_, i) => `create refs/heads/grown/b${i} ${commit}`);
    await runGit(['--git-dir', dir, 'update-ref', '--stdin'], { input: lines.join('\n') + '\n' });
    const grown = await inline.read(dir);
    assert.notEqual(grown, before, 'refs beyond the inline bound are a change');
    assert.equal(await worker.read(dir), grown, 'the worker walk agrees');
    await runGit(['--git-dir', dir, 'update-ref', '-d', 'refs/heads/grown/b0']);
    assert.notEqual(await inline.read(dir), grown, 'and a later change is seen');
  } finally {
    await inline.close();
    await worker.close();
    await rm(dir, { recursive: true, force: true });
  }
});
