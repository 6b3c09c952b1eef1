/**
 * Snapshots end to end, with the real git client, the real server and its snapshot worker, for
 * the filesystem and the S3 (s3rver) object stores: pushes become a full then incremental
 * snapshots; a branch deleted and another force-pushed backwards are persisted as such; after
 * the repository directory (then all of repos/) is deleted, `gitstratum restore` brings back
 * exactly the refs, fsck-clean and servable; `--at` restores an older snapshot's refs;
 * `snapshot compact` leaves one full snapshot that restores the same refs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, tempDir } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';

interface SnapshotJson {
  id: string;
  kind: 'full' | 'incremental';
  objectCount: number;
}

for (const backend of ['filesystem', 's3'] as const) {
  describe(`snapshots on ${backend}`, () => {
    let s3: TestS3 | undefined;
    let server: Server;
    let git: Git;
    let token: string;
    let storeArgs: string[] = [];

    before(async () => {
      if (backend === 's3') {
        s3 = await startS3();
        storeArgs = s3.storeArgs();
      }
      server = await Server.start({ args: ['--snapshot-debounce-seconds', '0', '--maintenance-enabled', 'false', ...storeArgs] });
      await server.createUser('alice');
      await server.createSpace('alice/main');
      token = await server.token('alice', 'write');
      git = await Git.create();
    });
    after(async () => {
      await server?.cleanup();
      await s3?.stop();
    });

    const cli = (args: string[]) => server.cliOk([...args, ...storeArgs]);
    const list = async (repo: string) => JSON.parse(await cli(['snapshot', 'list', repo, '--json'])) as SnapshotJson[];

    async function metric(name: string): Promise<number> {
      const text = await (await fetch(new URL('/metrics', server.url))).text();
      const line = text.split('\n').find((l) => l.startsWith(name + ' '));
      return Number(line?.split(' ').pop());
    }

    /** Waits until the repository has `count` snapshots and nothing is dirty. */
    async function persisted(repo: string, count: number): Promise<SnapshotJson[]> {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const snaps = await list(repo);
        if (snaps.length >= count && (await metric('gitstratum_snapshot_dirty_repositories')) === 0) return snaps;
        assert.ok(Date.now() < deadline, `${repo}: ${snaps.length} snapshots, expected ${count}`);
        await sleep(100);
      }
    }

    async function refsOnDisk(repoPath: string): Promise<string> {
      const refs = await git.ok(['--git-dir', repoPath, 'for-each-ref', '--format=%(objectname) %(refname)']);
      const head = await git.ok(['--git-dir', repoPath, 'symbolic-ref', 'HEAD']);
      return `${refs}HEAD -> ${head}`;
    }

    async function fsckClean(repoPath: string): Promise<void> {
      const r = await git.run(['--git-dir', repoPath, 'fsck', '--strict', '--no-progress']);
      assert.equal(r.code, 0, r.stderr);
    }

    test('pushes → full then incremental snapshots → repository lost → restored exactly, latest and older', async () => {
      const name = 'alice/main/proj';
      const created = await server.createRepo(name);
      const url = server.repoUrl(`${name}.git`, token);
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 3, seed: 5 });
      await git.ok(['push', '-q', url, 'main', 'main:refs/heads/doomed', 'main:refs/heads/feature'], { cwd: work });
      const [first] = await persisted(name, 1);
      assert.equal(first!.kind, 'full');
      const firstRefs = await refsOnDisk(created.path);

      await git.commits(work, 2, { seed: 6 });
      await git.ok(['tag', '-a', '-m', 'release', 'v1'], { cwd: work });
      await git.ok(['push', '-q', url, 'main', 'v1', 'main:refs/heads/feature'], { cwd: work });
      await persisted(name, 2);

      // A deleted branch and a force-push backwards: no new objects, new refs.
      await git.ok(['push', '-q', '--force', url, ':refs/heads/doomed', 'main~4:refs/heads/feature'], { cwd: work });
      const snaps = await persisted(name, 3);
      assert.deepEqual(snaps.map((s) => s.kind), ['full', 'incremental', 'incremental']);
      assert.equal(snaps[2]!.objectCount, 0);
      const latestRefs = await refsOnDisk(created.path);
      assert.doesNotMatch(latestRefs, /doomed/);

      await rm(created.path, { recursive: true, force: true });
      const out = await cli(['restore', name]);
      assert.match(out, new RegExp(`restored ${name} from snapshot ${snaps[2]!.id}`));
      assert.doesNotMatch(out, /warning/);
      assert.equal(await refsOnDisk(created.path), latestRefs);
      await fsckClean(created.path);
      // And the server serves it.
      const clone = path.join(await tempDir(), 'clone');
      await git.ok(['clone', '-q', url, clone]);
      assert.equal(await git.revParse(clone, 'HEAD'), await git.revParse(work, 'HEAD'));

      const older = path.join(await tempDir(), 'older.git');
      await cli(['restore', name, '--at', first!.id, '--to', older]);
      assert.equal(await refsOnDisk(older), firstRefs);
      await fsckClean(older);
    });

    test('snapshot compact → one full snapshot; restore gives the same refs from it, fsck clean', async () => {
      const name = 'alice/main/compacted';
      const created = await server.createRepo(name);
      const url = server.repoUrl(`${name}.git`, token);
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 21 });
      for (let i = 0; i < 3; i++) {
        if (i > 0) await git.commits(work, 1, { seed: 22 + i });
        await git.ok(['push', '-q', url, 'main', `main:refs/heads/b${i}`], { cwd: work });
        await persisted(name, i + 1);
      }
      const chain = await list(name);
      assert.deepEqual(chain.map((s) => s.kind), ['full', 'incremental', 'incremental']);
      const out = await cli(['snapshot', 'compact', name]);
      assert.match(out, new RegExp(`compacted ${name} up to snapshot ${chain[2]!.id} into full snapshot \\S+`));
      assert.match(out, /retired 3 snapshot\(s\); kept 0/);
      const after = await list(name);
      assert.deepEqual(after.map((s) => s.kind), ['full']);

      const refs = await refsOnDisk(created.path);
      await rm(created.path, { recursive: true, force: true });
      const restored = await cli(['restore', name]);
      assert.match(restored, new RegExp(`from snapshot ${after[0]!.id} .*\\(chain of 1\\)`));
      assert.equal(await refsOnDisk(created.path), refs);
      await fsckClean(created.path);
    });

    test('restore --all rebuilds every repository after repos/ is lost', async () => {
      const names = ['alice/main/one', 'alice/main/two'];
      const before = new Map<string, string>();
      for (const [i, name] of names.entries()) {
        const created = await server.createRepo(name);
        const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 40 + i });
        await git.ok(['push', '-q', server.repoUrl(`${name}.git`, token), 'main'], { cwd: work });
        await persisted(name, 1);
        before.set(name, created.path);
      }
      const refs = new Map<string, string>();
      for (const [name, p] of before) refs.set(name, await refsOnDisk(p));
      await rm(path.join(server.dataDir, 'repos'), { recursive: true, force: true });
      const out = await cli(['restore', '--all']);
      assert.match(out, /restored alice\/main\/one/);
      assert.match(out, /restored alice\/main\/two/);
      for (const [name, p] of before) {
        assert.equal(await refsOnDisk(p), refs.get(name), name);
        await fsckClean(p);
      }
    });
  });
}

describe('a repository lost while dirty', () => {
  let server: Server;
  let git: Git;
  let token: string;

  before(async () => {
    // The worker never gets to it: snapshots are taken by hand.
    server = await Server.start({ args: ['--snapshot-debounce-seconds', '3600', '--snapshot-max-delay-seconds', '3600'] });
    await server.createUser('alice');
    await server.createSpace('alice/main');
    token = await server.token('alice', 'write');
    git = await Git.create();
  });
  after(() => server?.cleanup());

  test('is restored to its last snapshot, and restore names the acknowledged pushes it lacks', async () => {
    const name = 'alice/main/late';
    const created = await server.createRepo(name);
    const url = server.repoUrl(`${name}.git`, token);
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 77 });
    await git.ok(['push', '-q', url, 'main'], { cwd: work });
    const snap = JSON.parse(await server.cliOk(['snapshot', 'create', name, '--json'])) as { id: string; createdAt: string };
    const persistedTip = await git.revParse(work, 'HEAD');
    for (let i = 0; i < 2; i++) {
      await git.commits(work, 1, { seed: 80 + i });
      await git.ok(['push', '-q', url, 'main'], { cwd: work });
    }
    const metrics = await (await fetch(new URL('/metrics', server.url))).text();
    assert.match(metrics, /^gitstratum_snapshot_dirty_repositories 1$/m);

    await rm(created.path, { recursive: true, force: true });
    const out = await server.cliOk(['restore', name, '--before', new Date().toISOString()]);
    assert.match(out, new RegExp(`from snapshot ${snap.id}`));
    assert.match(out, /warning: 2 acknowledged push\(es\) after this snapshot are not in it/);
    assert.equal((await git.ok(['--git-dir', created.path, 'rev-parse', 'refs/heads/main'])).trim(), persistedTip);

    const tooEarly = await server.cli(['restore', name, '--before', '2000-01-01T00:00:00Z', '--to', path.join(await tempDir(), 'x.git')]);
    assert.equal(tooEarly.code, 1);
    assert.match(tooEarly.stderr, /no snapshot at or before 2000-01-01/);
  });
});
