/**
 * Forks end to end, with the real git and git-lfs clients and the server's snapshot worker, on
 * the filesystem store, for each metadata database: a fork made through the REST API (access
 * checked) has the source's refs and nothing more; pushes to it leave the source alone; its
 * first snapshot is an incremental whose parent is the source's snapshot; its directory lost,
 * `gitstratum restore` rebuilds it through the source's snapshots, also after the source was
 * deleted; the source deleted, the fork still clones. An LFS object pushed to the source is
 * downloadable from a fork made with the CLI (no re-upload), still after the source is
 * deleted, and not from an unrelated repository.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, Git, seed, Server, tempDir } from './harness.js';
import { basic, batchOne, lfsGit, randomBytesSeeded, sha256 } from './lfs-fixture.js';

interface SnapshotJson {
  id: string;
  kind: 'full' | 'incremental';
  parents: string[];
  objectCount: number;
}

for (const database of databaseBackends()) {
  describe(`forks on ${database}`, () => {
    let server: Server;
    let git: Git;
    let tokens: Awaited<ReturnType<typeof seed>>;

    before(async () => {
      server = await Server.start({ database, args: ['--snapshot-debounce-seconds', '0', '--maintenance-enabled', 'false'] });
      tokens = await seed(server);
      await server.createSpace('bob/forks');
      git = await lfsGit();
    });
    after(() => server?.cleanup());

    const list = async (repo: string) => JSON.parse(await server.cliOk(['snapshot', 'list', repo, '--json'])) as SnapshotJson[];

    async function dirty(): Promise<number> {
      const text = await (await fetch(new URL('/metrics', server.url))).text();
      return Number(/^gitstratum_snapshot_dirty_repositories (\S+)$/m.exec(text)?.[1]);
    }

    /** Waits until the repository has `count` snapshots and nothing is dirty. */
    async function persisted(repo: string, count: number): Promise<SnapshotJson[]> {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const snaps = await list(repo);
        if (snaps.length >= count && (await dirty()) === 0) return snaps;
        assert.ok(Date.now() < deadline, `${repo}: ${snaps.length} snapshots, expected ${count}`);
        await sleep(100);
      }
    }

    async function forkApi(token: string, source: string, body: Record<string, unknown>) {
      const res = await fetch(`${server.url}/api/v1/repos/${source}/forks`, {
        method: 'POST',
        headers: { authorization: basic(token), 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> & { error?: { code: string } } };
    }

    const lsRemote = (url: string) => git.ok(['ls-remote', url]);

    async function refsOnDisk(repoPath: string): Promise<string> {
      const refs = await git.ok(['--git-dir', repoPath, 'for-each-ref', '--format=%(objectname) %(refname)']);
      return `${refs}HEAD -> ${await git.ok(['--git-dir', repoPath, 'symbolic-ref', 'HEAD'])}`;
    }

    async function fsckClean(repoPath: string): Promise<void> {
      const r = await git.run(['--git-dir', repoPath, 'fsck', '--strict', '--no-progress']);
      assert.equal(r.code, 0, r.stderr);
    }

    test('fork through the API → same refs, own pushes, snapshot on the source’s, restored also after the source is deleted', async () => {
      const source = 'alice/main/upstream';
      await server.createRepo(source);
      const sourceUrl = server.repoUrl(`${source}.git`, tokens.alice.write);
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 3, seed: 11 });
      await git.ok(['tag', '-a', '-m', 'first', 'v1'], { cwd: work });
      await git.ok(['push', '-q', sourceUrl, 'main', 'main:refs/heads/dev', 'v1'], { cwd: work });
      const [sourceSnap] = await persisted(source, 1);

      // Bob may read alice's public repository but not create in her space; a private one he
      // cannot read is not found.
      const denied = await forkApi(tokens.bob.write, source, { owner: 'alice', space: 'main', name: 'mine' });
      assert.equal(denied.status, 403);
      assert.equal(denied.body.error?.code, 'owner_access_denied');
      await server.createRepo('alice/main/secret', { private: true });
      const hidden = await forkApi(tokens.bob.write, 'alice/main/secret', { owner: 'bob', space: 'forks' });
      assert.equal(hidden.status, 404);
      assert.equal(hidden.body.error?.code, 'repo_not_found');

      const made = await forkApi(tokens.bob.write, `${source}.git`, { owner: 'bob', space: 'forks' });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      assert.equal(made.body.fullName, 'bob/forks/upstream');
      assert.equal(made.body.visibility, 'public');
      const fork = 'bob/forks/upstream';
      const forkUrl = server.repoUrl(`${fork}.git`, tokens.bob.write);
      assert.equal(await lsRemote(forkUrl), await lsRemote(sourceUrl));
      const clone = path.join(await tempDir(), 'fork-clone');
      await git.ok(['clone', '-q', forkUrl, clone]);
      assert.equal(await git.revParse(clone, 'HEAD'), await git.revParse(work, 'HEAD'));

      // The fork starts dirty; its first snapshot stands on the source's and adds nothing.
      const [first] = await persisted(fork, 1);
      assert.equal(first!.kind, 'incremental');
      assert.deepEqual(first!.parents, [sourceSnap!.id]);
      assert.equal(first!.objectCount, 0);

      const sourceRefs = await lsRemote(sourceUrl);
      await git.commits(clone, 2, { seed: 12, prefix: 'bob' });
      await git.ok(['push', '-q', 'origin', 'main', 'main:refs/heads/bob-topic'], { cwd: clone });
      assert.equal(await lsRemote(sourceUrl), sourceRefs, 'the source did not change');
      const forkSnaps = await persisted(fork, 2);
      assert.deepEqual(forkSnaps[1]!.parents, [first!.id]);

      const forkDir = JSON.parse(await server.cliOk(['repo', 'list', 'bob/forks', '--json'])).find((r: { name: string }) => r.name === 'upstream').path as string;
      const forkRefs = await refsOnDisk(forkDir);
      await rm(forkDir, { recursive: true, force: true });
      const out = await server.cliOk(['restore', fork]);
      assert.match(out, new RegExp(`restored ${fork} from snapshot ${forkSnaps[1]!.id} .*\\(chain of 3\\)`));
      assert.equal(await refsOnDisk(forkDir), forkRefs);
      await fsckClean(forkDir);

      // The source deleted: the fork still clones, and still restores from the snapshots.
      await server.cliOk(['repo', 'delete', source]);
      const again = path.join(await tempDir(), 'after-delete');
      await git.ok(['clone', '-q', forkUrl, again]);
      assert.equal(await git.revParse(again, 'refs/remotes/origin/bob-topic'), await git.revParse(clone, 'HEAD'));
      await git.ok(['fsck', '--strict', '--no-progress'], { cwd: again });
      await rm(forkDir, { recursive: true, force: true });
      await server.cliOk(['restore', fork]);
      assert.equal(await refsOnDisk(forkDir), forkRefs);
      await fsckClean(forkDir);
    });

    test('an LFS object pushed to the source downloads from a fork made with the CLI, and not from an unrelated repository', async () => {
      const source = 'alice/main/assets';
      await server.createRepo(source);
      const work = path.join(await tempDir(), 'lfs-work');
      await git.ok(['init', '-q', '-b', 'main', work]);
      await git.ok(['lfs', 'track', '*.bin'], { cwd: work });
      const content = randomBytesSeeded(300 * 1024, 99);
      const oid = sha256(content);
      await writeFile(path.join(work, 'model.bin'), content);
      await git.ok(['add', '-A'], { cwd: work });
      await git.ok(['commit', '-q', '-m', 'model'], { cwd: work });
      await git.ok(['push', '-q', server.repoUrl(`${source}.git`, tokens.alice.write), 'main'], { cwd: work });

      const out = await server.cliOk(['repo', 'fork', source, 'bob/forks/assets']);
      assert.match(out, /^forked alice\/main\/assets to public repository bob\/forks\/assets/);
      const forkUrl = server.repoUrl('bob/forks/assets.git', tokens.bob.write);
      const clone = path.join(await tempDir(), 'lfs-fork-clone');
      await git.ok(['clone', '-q', forkUrl, clone]);
      assert.equal(sha256(await readFile(path.join(clone, 'model.bin'))), oid);

      // Outside the network the oid still needs proof of possession.
      await server.createRepo('bob/forks/unrelated');
      const elsewhere = await batchOne(server, 'bob/forks/unrelated', tokens.bob.write, 'download', oid, content.length);
      assert.equal(elsewhere.error?.code, 404);

      // The source deleted, the fork keeps what it could download through it.
      await server.cliOk(['repo', 'delete', source]);
      const later = path.join(await tempDir(), 'lfs-after-delete');
      await git.ok(['clone', '-q', forkUrl, later], { env: { GIT_LFS_SKIP_SMUDGE: '1' } });
      await git.ok(['lfs', 'pull'], { cwd: later });
      assert.equal(sha256(await readFile(path.join(later, 'model.bin'))), oid);
    });
  });
}
