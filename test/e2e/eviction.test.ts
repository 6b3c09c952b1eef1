/**
 * Eviction and lazy restore end to end (docs/design/snapshots.md, "Eviction"), with the real git
 * client and server and the filesystem object store: a persisted repository evicted by
 * `gitstratum repo evict` is gone from disk and serves a clone identical to what was pushed;
 * concurrent clones of an evicted repository share one restore; a push to an evicted repository
 * lands and is persisted; a directory missing without eviction is refused, naming
 * `gitstratum restore`; with an idle time, idle persisted repositories leave the disk by
 * themselves and dirty ones never do.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, Git, seedAlice, Server, tempDir } from './harness.js';

const present = (p: string) => stat(p).then(() => true, () => false);

async function metric(server: Server, name: string): Promise<number> {
  const text = await (await fetch(new URL('/metrics', server.url))).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.split(' ').pop()) : 0;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function refsOf(git: Git, repoPath: string): Promise<string> {
  return git.ok(['--git-dir', repoPath, 'for-each-ref', '--format=%(objectname) %(refname)']);
}

describe('eviction by command, lazy restore on request', () => {
  let server: Server;
  let git: Git;
  let token: string;

  before(async () => {
    server = await Server.start({ args: ['--snapshot-debounce-seconds', '0', '--maintenance-enabled', 'false'] });
    token = await seedAlice(server);
    git = await Git.create();
  });
  after(() => server?.cleanup());

  /** A repository with two branches and a tag, pushed and persisted. */
  async function persistedRepo(name: string, seed: number) {
    const created = await server.createRepo(name);
    const url = server.repoUrl(`${name}.git`, token);
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 3, seed });
    await git.ok(['tag', '-a', '-m', 'v1', 'v1'], { cwd: work });
    await git.ok(['push', '-q', url, 'main', 'main:refs/heads/feature', 'v1'], { cwd: work });
    await waitFor(`${name} persisted`, async () => {
      const snaps = JSON.parse(await server.cliOk(['snapshot', 'list', name, '--json'])) as unknown[];
      return snaps.length >= 1 && (await metric(server, 'gitstratum_snapshot_dirty_repositories')) === 0;
    });
    return { dir: created.path, url, work, refs: await refsOf(git, created.path) };
  }

  test('an evicted repository is gone from disk, and a clone restores it exactly', async () => {
    const repo = await persistedRepo('alice/main/cold', 11);
    const out = await server.cliOk(['repo', 'evict', 'alice/main/cold']);
    assert.match(out, /evicted alice\/main\/cold from local disk/);
    assert.equal(await present(repo.dir), false);
    assert.equal(await metric(server, 'gitstratum_repositories_evicted'), 1);

    const mirror = path.join(await tempDir(), 'mirror.git');
    await git.ok(['clone', '-q', '--mirror', repo.url, mirror]);
    assert.equal(await refsOf(git, mirror), repo.refs);
    assert.equal(await present(repo.dir), true);
    assert.equal(await refsOf(git, repo.dir), repo.refs);
    assert.equal(await metric(server, 'gitstratum_repositories_evicted'), 0);
    const fsck = await git.run(['--git-dir', mirror, 'fsck', '--strict', '--no-progress']);
    assert.equal(fsck.code, 0, fsck.stderr);

    const again = await server.cli(['repo', 'evict', 'alice/main/cold']);
    assert.equal(again.code, 0, again.stderr);
    const twice = await server.cli(['repo', 'evict', 'alice/main/cold']);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /already evicted/);
  });

  test('concurrent clones of an evicted repository wait for one restore', async () => {
    const repo = await persistedRepo('alice/main/crowd', 12);
    await server.cliOk(['repo', 'evict', 'alice/main/crowd']);
    const restoresBefore = await metric(server, 'gitstratum_repository_lazy_restores_total{result="ok"}');
    const root = await tempDir();
    const clones = Array.from({ length: 6 }, (_, i) => path.join(root, `clone-${i}`));
    await Promise.all(clones.map((dir) => git.ok(['clone', '-q', '--bare', repo.url, dir])));
    assert.equal(await metric(server, 'gitstratum_repository_lazy_restores_total{result="ok"}'), restoresBefore + 1);
    const tip = await git.revParse(repo.work, 'HEAD');
    for (const dir of clones) assert.equal((await git.ok(['--git-dir', dir, 'rev-parse', 'main'])).trim(), tip);
  });

  test('a push to an evicted repository lands and is persisted', async () => {
    const repo = await persistedRepo('alice/main/revived', 13);
    await server.cliOk(['repo', 'evict', 'alice/main/revived']);
    await git.commits(repo.work, 1, { seed: 14 });
    await git.ok(['push', '-q', repo.url, 'main'], { cwd: repo.work });
    const tip = await git.revParse(repo.work, 'HEAD');
    assert.equal((await git.ok(['--git-dir', repo.dir, 'rev-parse', 'refs/heads/main'])).trim(), tip);
    // Persisted: once snapshotted it can be evicted again, and comes back with the push.
    await waitFor('the push persisted', async () => (await server.cli(['repo', 'evict', 'alice/main/revived'])).code === 0);
    assert.equal(await present(repo.dir), false);
    const clone = path.join(await tempDir(), 'clone');
    await git.ok(['clone', '-q', repo.url, clone]);
    assert.equal(await git.revParse(clone, 'HEAD'), tip);
  });

  test('a directory missing without eviction is refused with the restore command, not silently restored', async () => {
    const repo = await persistedRepo('alice/main/lost', 15);
    await rm(repo.dir, { recursive: true, force: true });
    const res = await fetch(new URL('/alice/main/lost.git/info/refs?service=git-upload-pack', server.url), {
      headers: { authorization: `Basic ${Buffer.from(`git:${token}`).toString('base64')}` },
    });
    assert.equal(res.status, 503);
    assert.match(await res.text(), /alice\/main\/lost is missing from local disk and was not evicted; an operator must run: gitstratum restore alice\/main\/lost/);
    const clone = await git.run(['clone', '-q', repo.url, path.join(await tempDir(), 'clone')]);
    assert.notEqual(clone.code, 0);
    assert.match(clone.stderr, /gitstratum restore alice\/main\/lost/);
    assert.equal(await present(repo.dir), false);

    const evict = await server.cli(['repo', 'evict', 'alice/main/lost']);
    assert.equal(evict.code, 1);
    assert.match(evict.stderr, /missing from local disk/);
  });
});

describe('eviction of idle repositories', () => {
  let server: Server;
  let git: Git;
  let token: string;
  const database = databaseBackends().includes('postgres') ? 'postgres' : 'sqlite';

  before(async () => {
    // Snapshots only by hand, so a repository stays dirty as long as the test wants.
    server = await Server.start({
      database,
      args: [
        '--snapshot-evict-idle-seconds', '1',
        '--snapshot-debounce-seconds', '3600',
        '--snapshot-max-delay-seconds', '3600',
        '--maintenance-enabled', 'false',
      ],
    });
    token = await seedAlice(server);
    git = await Git.create();
  });
  after(() => server?.cleanup());

  test(`a persisted idle repository leaves the disk by itself; a dirty one never does (${database})`, async () => {
    const clean = await server.createRepo('alice/main/idle');
    const dirty = await server.createRepo('alice/main/busy');
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 21 });
    await git.ok(['push', '-q', server.repoUrl('alice/main/busy.git', token), 'main'], { cwd: work });
    await server.cliOk(['snapshot', 'create', 'alice/main/busy']);
    await git.commits(work, 1, { seed: 22 });
    // Whether or not it was evicted in between, this push lands and leaves it dirty.
    await git.ok(['push', '-q', server.repoUrl('alice/main/busy.git', token), 'main'], { cwd: work });
    const dirtyTip = await git.revParse(work, 'HEAD');

    await git.ok(['push', '-q', server.repoUrl('alice/main/idle.git', token), 'main'], { cwd: work });
    await server.cliOk(['snapshot', 'create', 'alice/main/idle']);
    await waitFor('the idle repository evicted', async () => !(await present(clean.path)));

    // Several more sweeps: the dirty one stays, and the command refuses it too.
    await sleep(3000);
    assert.equal(await present(dirty.path), true);
    assert.equal((await git.ok(['--git-dir', dirty.path, 'rev-parse', 'refs/heads/main'])).trim(), dirtyTip);
    const refused = await server.cli(['repo', 'evict', 'alice/main/busy']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /has pushes not yet in a snapshot/);
    assert.ok((await metric(server, 'gitstratum_repository_evictions_total{reason="idle"}')) >= 1);

    const clone = path.join(await tempDir(), 'clone');
    await git.ok(['clone', '-q', server.repoUrl('alice/main/idle.git', token), clone]);
    assert.equal(await git.revParse(clone, 'HEAD'), dirtyTip);
  });
});
