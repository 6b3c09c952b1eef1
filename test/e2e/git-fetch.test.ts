/**
 * Fetching with the real git client: clones over protocol v0 and v2, shallow and partial
 * clones (with the lazy fetch a partial clone does later), incremental fetches and tags.
 * One server for the file; every scenario creates and pushes its own repository.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Git, Server, seedAlice, tempDir } from './harness.js';

let server: Server;
let git: Git;
let writeToken: string;

before(async () => {
  server = await Server.start();
  writeToken = await seedAlice(server);
  git = await Git.create();
});

after(() => server.cleanup());

interface Fixture {
  /** A work tree whose history was pushed. */
  work: string;
  /** Anonymous read URL (repositories are public by default). */
  url: string;
  /** URL with a write token. */
  pushUrl: string;
}

/** A repository on the server holding `commits` generated commits on main. */
async function fixture(name: string, opts: { commits?: number; seed: number }): Promise<Fixture> {
  await server.createRepo(`alice/main/${name}`);
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: opts.commits ?? 3, seed: opts.seed });
  const pushUrl = server.repoUrl(`alice/main/${name}.git`, writeToken);
  await git.ok(['push', '-q', pushUrl, 'main'], { cwd: work });
  return { work, url: server.repoUrl(`alice/main/${name}.git`), pushUrl };
}

async function lines(dir: string, args: string[]): Promise<string[]> {
  return (await git.ok(args, { cwd: dir })).split('\n').filter(Boolean);
}

/** Objects the repository knows it lacks (`?<oid>` lines of rev-list --missing=print). */
async function missingObjects(dir: string, rev: string): Promise<Set<string>> {
  const out = await lines(dir, ['rev-list', '--objects', '--missing=print', rev]);
  return new Set(out.filter((l) => l.startsWith('?')).map((l) => l.slice(1)));
}

test('clone over protocol v0, v1 and v2 gets every branch and the same files', async () => {
  const f = await fixture('clone-versions', { seed: 11 });
  await git.commits(f.work, 2, { seed: 12, prefix: 'feature' });
  await git.ok(['push', '-q', f.pushUrl, 'HEAD:refs/heads/feature'], { cwd: f.work });
  await git.ok(['reset', '-q', '--hard', 'HEAD~2'], { cwd: f.work });
  const main = await git.revParse(f.work, 'main');
  const feature = await git.revParse(f.work, 'HEAD@{1}');

  for (const version of ['0', '1', '2']) {
    const dest = path.join(await tempDir(), `clone-v${version}`);
    const r = await git.run(['-c', `protocol.version=${version}`, 'clone', f.url, dest], { env: { GIT_TRACE_PACKET: '1' } });
    assert.equal(r.code, 0, r.stderr);
    // The server answered in the version asked for (v1 and v2 start with `version N`).
    assert.equal(/git< version 1/.test(r.stderr), version === '1', `protocol v${version} expected`);
    assert.equal(/git< version 2/.test(r.stderr), version === '2', `protocol v${version} expected`);
    assert.equal(await git.revParse(dest, 'HEAD'), main);
    assert.equal(await git.revParse(dest, 'origin/feature'), feature);
    assert.equal(
      await readFile(path.join(dest, 'file-0.txt'), 'utf8'),
      await git.ok(['show', 'main:file-0.txt'], { cwd: f.work }),
    );
    assert.deepEqual(await lines(dest, ['fsck', '--no-progress']), []);
  }
});

test('a clone with many refs sends a gzip-compressed request that the server decodes', async () => {
  const f = await fixture('gzip-request', { seed: 13, commits: 1 });
  // 60 branches on distinct commits: the want list exceeds 1 KiB, so git gzips the request.
  for (let i = 0; i < 60; i++) {
    await git.ok(['commit', '-q', '--allow-empty', '-m', `branch ${i}`], { cwd: f.work });
    await git.ok(['branch', `b${i}`], { cwd: f.work });
  }
  await git.ok(['push', '-q', f.pushUrl, '--all'], { cwd: f.work });

  const dest = path.join(await tempDir(), 'clone');
  const r = await git.run(['-c', 'protocol.version=0', 'clone', '--no-checkout', f.url, dest], { env: { GIT_TRACE_CURL: '1', GIT_TRACE_CURL_NO_DATA: '1' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /Send header: Content-Encoding: gzip/);
  assert.equal((await lines(dest, ['branch', '-r'])).length, 62); // 60 + main + origin/HEAD
  assert.equal(await git.revParse(dest, 'origin/b59'), await git.revParse(f.work, 'b59'));
});

test('shallow clone --depth 1, then fetch --deepen', async () => {
  const f = await fixture('shallow-depth', { seed: 21, commits: 5 });
  const dest = path.join(await tempDir(), 'shallow');
  await git.ok(['clone', '-q', '--depth', '1', f.url, dest]);
  assert.deepEqual(await lines(dest, ['rev-list', 'HEAD']), [await git.revParse(f.work, 'main')]);
  assert.equal((await readFile(path.join(dest, '.git', 'shallow'), 'utf8')).trim(), await git.revParse(f.work, 'main'));

  await git.ok(['fetch', '-q', '--deepen', '2'], { cwd: dest });
  assert.deepEqual(await lines(dest, ['rev-list', 'HEAD']), await lines(f.work, ['rev-list', 'main~0', '--max-count', '3']));

  await git.ok(['fetch', '-q', '--unshallow'], { cwd: dest });
  assert.equal((await lines(dest, ['rev-list', 'HEAD'])).length, 5);
  assert.equal((await git.ok(['rev-parse', '--is-shallow-repository'], { cwd: dest })).trim(), 'false');
});

test('shallow clone --shallow-since keeps the commits after the date', async () => {
  await server.createRepo('alice/main/shallow-since');
  const work = path.join(await tempDir(), 'work');
  await git.ok(['init', '-q', '-b', 'main', work]);
  // Five commits a day apart, in 2020.
  for (let day = 1; day <= 5; day++) {
    await writeFile(path.join(work, 'day.txt'), `day ${day}\n`);
    const date = `2020-01-0${day}T12:00:00Z`;
    await git.ok(['add', 'day.txt'], { cwd: work });
    await git.ok(['commit', '-q', '-m', `day ${day}`], { cwd: work, env: { GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date } });
  }
  await git.ok(['push', '-q', server.repoUrl('alice/main/shallow-since.git', writeToken), 'main'], { cwd: work });

  const dest = path.join(await tempDir(), 'since');
  await git.ok(['clone', '-q', '--shallow-since=2020-01-03T00:00:00Z', server.repoUrl('alice/main/shallow-since.git'), dest]);
  assert.deepEqual(await lines(dest, ['log', '--format=%s']), ['day 5', 'day 4', 'day 3']);

  await git.ok(['fetch', '-q', '--deepen', '1'], { cwd: dest });
  assert.deepEqual(await lines(dest, ['log', '--format=%s']), ['day 5', 'day 4', 'day 3', 'day 2']);
  assert.equal(await readFile(path.join(dest, 'day.txt'), 'utf8'), 'day 5\n');
});

for (const [filter, version] of [['blob:none', '2'], ['tree:0', '2'], ['blob:none', '0']] as const) {
  test(`partial clone --filter=${filter} over v${version}, then a checkout fetches the missing objects`, async () => {
    const f = await fixture(`partial-${filter.replace(':', '-')}-v${version}`, { seed: 31, commits: 4 });
    const dest = path.join(await tempDir(), 'partial');
    await git.ok(['-c', `protocol.version=${version}`, 'clone', '-q', `--filter=${filter}`, f.url, dest]);
    // The lazy fetch later uses the same protocol version.
    await git.ok(['config', 'protocol.version', version], { cwd: dest });
    assert.equal((await git.ok(['config', 'remote.origin.promisor'], { cwd: dest })).trim(), 'true');

    const old = await git.revParse(f.work, 'main~3');
    const oldFile = (await git.ok(['rev-parse', `${old}:file-1.txt`], { cwd: f.work })).trim();
    // blob:none leaves out the old commit's blobs; tree:0 its trees (so its blobs are not even named).
    const absent = filter === 'blob:none' ? oldFile : (await git.revParse(f.work, `${old}^{tree}`));
    assert.ok((await missingObjects(dest, old)).has(absent), `object ${absent} is missing before checkout`);

    const r = await git.run(['checkout', '-q', old], { cwd: dest });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      await readFile(path.join(dest, 'file-1.txt'), 'utf8'),
      await git.ok(['show', `${old}:file-1.txt`], { cwd: f.work }),
    );
    // The checkout brought in what it needed, lazily, from the server.
    assert.deepEqual(await missingObjects(dest, old), new Set());
    assert.equal((await git.ok(['cat-file', '-t', oldFile], { cwd: dest })).trim(), 'blob');
  });
}

test('fetch after a new push brings new commits, branches and tags only', async () => {
  const f = await fixture('incremental', { seed: 41 });
  const dest = path.join(await tempDir(), 'clone');
  await git.ok(['clone', '-q', f.url, dest]);

  await git.commits(f.work, 2, { seed: 42 });
  await git.ok(['tag', '-a', 'v2', '-m', 'release 2'], { cwd: f.work });
  await git.ok(['push', '-q', f.pushUrl, 'main', 'main:refs/heads/next', 'v2'], { cwd: f.work });

  const r = await git.run(['fetch', 'origin'], { cwd: dest });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /main\s+-> origin\/main/);
  assert.match(r.stderr, /\[new branch\]\s+next\s+-> origin\/next/);
  assert.match(r.stderr, /\[new tag\]\s+v2\s+-> v2/);
  assert.equal(await git.revParse(dest, 'origin/main'), await git.revParse(f.work, 'main'));
  await git.ok(['merge', '-q', '--ff-only', 'origin/main'], { cwd: dest });
  assert.equal(await readFile(path.join(dest, 'file-2.txt'), 'utf8'), await readFile(path.join(f.work, 'file-2.txt'), 'utf8'));

  // Nothing new: a second fetch transfers nothing and says nothing.
  const again = await git.run(['fetch', 'origin'], { cwd: dest });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stderr.trim(), '');
});

test('tags are fetched: annotated and lightweight, by clone and by fetch --tags', async () => {
  const f = await fixture('tags', { seed: 51 });
  await git.ok(['tag', '-a', 'v1', '-m', 'release 1', 'main~1'], { cwd: f.work });
  await git.ok(['tag', 'light', 'main~2'], { cwd: f.work });
  await git.ok(['push', '-q', f.pushUrl, '--tags'], { cwd: f.work });

  for (const version of ['0', '2']) {
    const dest = path.join(await tempDir(), `clone-v${version}`);
    await git.ok(['-c', `protocol.version=${version}`, 'clone', '-q', f.url, dest]);
    assert.deepEqual(await lines(dest, ['tag', '--list']), await lines(f.work, ['tag', '--list']));
    assert.ok((await lines(dest, ['tag', '--list'])).includes('light'));
    assert.equal((await git.ok(['cat-file', '-t', 'v1'], { cwd: dest })).trim(), 'tag');
    assert.equal(await git.revParse(dest, 'v1'), await git.revParse(f.work, 'v1'));
    assert.equal(await git.revParse(dest, 'v1^{commit}'), await git.revParse(f.work, 'main~1'));
    assert.equal(await git.revParse(dest, 'light'), await git.revParse(f.work, 'main~2'));

    // A tag on a commit the clone already has arrives with fetch --tags.
    await git.ok(['tag', '-a', `late-v${version}`, '-m', 'late', 'main~2'], { cwd: f.work });
    await git.ok(['push', '-q', f.pushUrl, `late-v${version}`], { cwd: f.work });
    await git.ok(['-c', `protocol.version=${version}`, 'fetch', '-q', '--tags', 'origin'], { cwd: dest });
    assert.equal(await git.revParse(dest, `late-v${version}`), await git.revParse(f.work, `late-v${version}`));
  }
});

test('clone of an empty repository, then the first push sets up main', async () => {
  await server.createRepo('alice/main/empty');
  for (const version of ['0', '2']) {
    const dest = path.join(await tempDir(), `empty-v${version}`);
    const r = await git.run(['-c', `protocol.version=${version}`, 'clone', server.repoUrl('alice/main/empty.git'), dest]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /You appear to have cloned an empty repository/);
  }
  const dest = path.join(await tempDir(), 'first');
  await git.ok(['clone', '-q', server.repoUrl('alice/main/empty.git', writeToken), dest]);
  await git.commits(dest, 1, { seed: 61 });
  await git.ok(['push', '-q', 'origin', 'main'], { cwd: dest });
  const clone = path.join(await tempDir(), 'second');
  await git.ok(['clone', '-q', server.repoUrl('alice/main/empty.git'), clone]);
  assert.equal((await git.ok(['symbolic-ref', 'HEAD'], { cwd: clone })).trim(), 'refs/heads/main');
  assert.equal(await git.revParse(clone, 'HEAD'), await git.revParse(dest, 'HEAD'));
});

test('fetch of a commit by id that no ref points at, over v0 and v2', async () => {
  const f = await fixture('by-id', { seed: 71, commits: 4 });
  const inner = await git.revParse(f.work, 'main~2');
  for (const version of ['0', '2']) {
    const dest = path.join(await tempDir(), `by-id-v${version}`);
    await git.ok(['init', '-q', dest]);
    // Allowed because it is reachable from a ref (uploadpack.allowReachableSHA1InWant).
    const r = await git.run(['-c', `protocol.version=${version}`, 'fetch', '-q', '--depth', '1', f.url, inner], { cwd: dest });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await git.revParse(dest, 'FETCH_HEAD'), inner);
    assert.equal((await git.ok(['cat-file', '-t', inner], { cwd: dest })).trim(), 'commit');
  }
});
