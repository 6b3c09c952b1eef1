/**
 * The upload-pack response cache with the real git client: never stale (pushes, refs changed
 * on disk behind the server's back, new tags, a push during a storm), single flight (twenty
 * concurrent clones, one pack generation), incremental fetches of runners at one commit, damaged entries never served, a full disk falling
 * back to plain git, clones of different shapes never mixed up, and a server killed while git
 * writes a pack into its cache file leaving nothing to serve.
 * One server for the file (the full-disk and kill -9 scenarios start their own);
 * every scenario creates and pushes its own repository.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, packCacheSettled, Server, seedAlice, tempDir } from './harness.js';

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
  name: string;
  work: string;
  url: string;
  pushUrl: string;
}

async function fixture(s: Server, name: string, opts: { commits?: number; files?: number; seed: number }, token = writeToken): Promise<Fixture> {
  await s.createRepo(`alice/main/${name}`);
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: opts.commits ?? 3, files: opts.files ?? 3, seed: opts.seed });
  const pushUrl = s.repoUrl(`alice/main/${name}.git`, token);
  await git.ok(['push', '-q', pushUrl, 'main'], { cwd: work });
  return { name, work, url: s.repoUrl(`alice/main/${name}.git`), pushUrl };
}

async function repoRecord(s: Server, name: string): Promise<{ id: string; path: string }> {
  const list = JSON.parse(await s.cliOk(['repo', 'list', 'alice/main', '--json'])) as { id: string; name: string; path: string }[];
  const repo = list.find((r) => r.name === name);
  assert.ok(repo, `repository ${name} is listed`);
  return repo;
}

async function clone(url: string, opts: { version?: 0 | 2; args?: string[] } = {}): Promise<string> {
  const dest = path.join(await tempDir(), 'clone');
  await git.ok(['-c', `protocol.version=${opts.version ?? 2}`, 'clone', '-q', ...(opts.args ?? []), url, dest]);
  await packCacheSettled(new URL(url).origin);
  return dest;
}

async function lines(dir: string, args: string[]): Promise<string[]> {
  return (await git.ok(args, { cwd: dir })).split('\n').filter(Boolean);
}

type Sample = (name: string, labels?: Record<string, string>) => number;

/** The server's metrics now: a function summing the samples of a name that match the labels. */
async function metrics(s: Server = server): Promise<Sample> {
  const text = await (await fetch(new URL('/metrics', s.url))).text();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) labels[k!] = v!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return (name, labels = {}) =>
    samples
      .filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))
      .reduce((n, x) => n + x.value, 0);
}

function delta(before: Sample, after: Sample): Sample {
  return (name, labels) => after(name, labels) - before(name, labels);
}

const fetchResult = (result: string) => ['gitstratum_pack_cache_requests_total', { endpoint: 'fetch', result }] as const;

test('after a push, the next clone sees the new commit, over v0 and v2', async () => {
  const f = await fixture(server, 'after-push', { seed: 1 });
  const m0 = await metrics();
  for (const version of [0, 2] as const) {
    for (let i = 0; i < 2; i++) assert.equal(await git.revParse(await clone(f.url, { version }), 'HEAD'), await git.revParse(f.work, 'main'));
  }
  const d = delta(m0, await metrics());
  assert.equal(d(...fetchResult('miss')), 2, 'one generation per protocol version');
  assert.equal(d(...fetchResult('hit')), 2, 'the second clone of each was served from the cache');

  await git.commits(f.work, 1, { seed: 2 });
  await git.ok(['push', '-q', f.pushUrl, 'main'], { cwd: f.work });
  const m1 = await metrics();
  for (const version of [0, 2] as const) {
    assert.equal(await git.revParse(await clone(f.url, { version }), 'HEAD'), await git.revParse(f.work, 'main'));
  }
  const after = delta(m1, await metrics());
  assert.equal(after(...fetchResult('miss')), 2, 'the push made both fetches misses');
  // v0's advertisement lists the refs, v2's only capabilities: the push changed the first only.
  assert.equal(after('gitstratum_pack_cache_requests_total', { endpoint: 'advertisement', result: 'miss' }), 1);
  assert.equal(after('gitstratum_pack_cache_requests_total', { endpoint: 'advertisement', result: 'hit' }), 1);
});

test('CI runners that keep a workspace fetch after a push: the same fetch twice is stored, a third runs no git (v0 and v2)', async () => {
  for (const version of [0, 2] as const) {
    const f = await fixture(server, `runners-v${version}`, { seed: 20 + version, commits: 4 });
    // Three runners' workspaces at the same commit.
    const runners = [await clone(f.url, { version }), await clone(f.url, { version }), await clone(f.url, { version })];
    await git.commits(f.work, 2, { seed: 30 + version });
    await git.ok(['push', '-q', f.pushUrl, 'main'], { cwd: f.work });
    const pushed = await git.revParse(f.work, 'main');
    const fetchIn = async (dir: string) => {
      const m = await metrics();
      await git.ok(['-c', `protocol.version=${version}`, 'fetch', '-q', 'origin'], { cwd: dir });
      await packCacheSettled(server.url);
      assert.equal(await git.revParse(dir, 'origin/main'), pushed);
      await git.ok(['fsck', '--no-progress'], { cwd: dir });
      return delta(m, await metrics());
    };
    const first = await fetchIn(runners[0]!);
    assert.ok(first('gitstratum_pack_cache_uncacheable_total', { reason: 'have' }) >= 1, 'the first negotiation went to git uncached');
    assert.equal(first(...fetchResult('hit')), 0);
    const second = await fetchIn(runners[1]!);
    assert.ok(second(...fetchResult('miss')) >= 1, 'the second was generated through the cache');
    const third = await fetchIn(runners[2]!);
    assert.equal(third(...fetchResult('miss')) + third('gitstratum_pack_cache_uncacheable_total', { reason: 'have' }), 0, 'the third ran no git');
    assert.ok(third(...fetchResult('hit')) >= 1);
  }
});

test('a ref changed on disk behind the server\'s back is seen by the next clone', async () => {
  const f = await fixture(server, 'behind-back', { seed: 3, commits: 4 });
  const { path: repoPath } = await repoRecord(server, f.name);
  await clone(f.url);
  await clone(f.url);
  const older = await git.revParse(f.work, 'main~2');
  await git.ok(['--git-dir', repoPath, 'update-ref', 'refs/heads/main', older]);
  await git.ok(['--git-dir', repoPath, 'branch', 'side', await git.revParse(f.work, 'main~1')]);
  for (const version of [0, 2] as const) {
    const dest = await clone(f.url, { version });
    assert.equal(await git.revParse(dest, 'HEAD'), older);
    assert.equal(await git.revParse(dest, 'origin/side'), await git.revParse(f.work, 'main~1'));
  }
});

test('a tag created after a clone was cached appears in the next clone', async () => {
  const f = await fixture(server, 'late-tag', { seed: 4 });
  for (const version of [0, 2] as const) {
    await clone(f.url, { version });
    await clone(f.url, { version });
    await git.ok(['tag', '-a', `v${version}`, '-m', 'release', 'main~1'], { cwd: f.work });
    await git.ok(['push', '-q', f.pushUrl, `v${version}`], { cwd: f.work });
    const dest = await clone(f.url, { version });
    assert.ok((await lines(dest, ['tag', '--list'])).includes(`v${version}`));
    assert.equal(await git.revParse(dest, `v${version}^{commit}`), await git.revParse(f.work, 'main~1'));
  }
});

test('twenty concurrent shallow clones of one commit: identical checkouts, one pack generation', async (t) => {
  const f = await fixture(server, 'storm', { seed: 5, commits: 12, files: 40 });
  const head = await git.revParse(f.work, 'main');
  const m0 = await metrics();
  const dests = await Promise.all(Array.from({ length: 20 }, () => clone(f.url, { args: ['--depth', '1', '--single-branch'] })));
  const d = delta(m0, await metrics());
  const tree = await lines(f.work, ['ls-tree', '-r', 'main']);
  for (const dest of dests) {
    assert.equal(await git.revParse(dest, 'HEAD'), head);
    assert.deepEqual(await lines(dest, ['ls-tree', '-r', 'HEAD']), tree);
    assert.deepEqual(await lines(dest, ['rev-list', 'HEAD']), [head]);
  }
  t.diagnostic(`fetch: ${d(...fetchResult('coalesced'))} coalesced, ${d(...fetchResult('hit'))} hits`);
  assert.equal(d(...fetchResult('miss')), 1, 'one generation for the pack');
  assert.equal(d(...fetchResult('coalesced')) + d(...fetchResult('hit')), 19);
  // One git process per kind of request (advertisement, ls-refs, fetch), whatever the timing.
  assert.equal(d('gitstratum_git_processes_total', { service: 'upload-pack' }), 3);
});

test('a push that lands during a storm is seen by every clone started after it was acknowledged', async () => {
  const f = await fixture(server, 'push-in-storm', { seed: 6, commits: 6, files: 30 });
  await git.commits(f.work, 1, { seed: 7 });
  const m0 = await metrics();
  const early = Array.from({ length: 8 }, () => clone(f.url, { args: ['--depth', '1'] }));
  // Push once the storm's pack requests are reaching the server.
  for (let i = 0; i < 200 && delta(m0, await metrics())('gitstratum_pack_cache_requests_total', { endpoint: 'fetch' }) === 0; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await git.ok(['push', '-q', f.pushUrl, 'main'], { cwd: f.work });
  const pushed = await git.revParse(f.work, 'main');
  const late = await Promise.all(Array.from({ length: 8 }, () => clone(f.url, { args: ['--depth', '1'] })));
  for (const dest of late) assert.equal(await git.revParse(dest, 'HEAD'), pushed);
  const previous = await git.revParse(f.work, 'main~1');
  for (const dest of await Promise.all(early)) assert.ok([previous, pushed].includes(await git.revParse(dest, 'HEAD')));
});

/** This repository's cache entries' data files, found by the repository id in their header files. */
async function entriesOf(repoId: string, s: Server = server): Promise<string[]> {
  const root = path.join(s.dataDir, 'cache', 'entries');
  const found: string[] = [];
  for (const fan of await readdir(root)) {
    for (const name of await readdir(path.join(root, fan))) {
      if (!name.endsWith('.meta')) continue;
      const file = path.join(root, fan, name);
      // `<id>` or `<id>#config` (the v2 advertisement, versioned by the config alone).
      if ((await readFile(file)).includes(`"repoId":"${repoId}`)) found.push(file.slice(0, -'.meta'.length));
    }
  }
  return found;
}

test('a corrupted or truncated cache file is never served: it is dropped and git answers', async () => {
  const f = await fixture(server, 'damaged', { seed: 8, commits: 3 });
  const { id } = await repoRecord(server, f.name);
  const head = await git.revParse(f.work, 'main');
  await clone(f.url);
  const files = await entriesOf(id);
  assert.equal(files.length, 3, 'advertisement, ls-refs and fetch were stored');

  for (const file of files) {
    const h = await open(file, 'r+');
    const size = (await h.stat()).size;
    await h.write(Buffer.from('XX'), 0, 2, Math.floor((size - 2) / 2));
    await h.close();
  }
  let m0 = await metrics();
  let dest = await clone(f.url);
  assert.equal(await git.revParse(dest, 'HEAD'), head);
  assert.deepEqual(await lines(dest, ['fsck', '--no-progress']), []);
  let d = delta(m0, await metrics());
  assert.equal(d('gitstratum_pack_cache_damaged_total', { reason: 'checksum' }), 3);
  assert.equal(d(...fetchResult('miss')), 1);

  // Stored again by that clone; now cut the pack short.
  const sizes = await Promise.all((await entriesOf(id)).map(async (file) => ({ file, size: (await readFile(file)).length })));
  const largest = sizes.sort((a, b) => b.size - a.size)[0]!;
  await truncate(largest.file, largest.size - 100);
  m0 = await metrics();
  dest = await clone(f.url);
  assert.equal(await git.revParse(dest, 'HEAD'), head);
  d = delta(m0, await metrics());
  assert.equal(d('gitstratum_pack_cache_damaged_total', { reason: 'length' }), 1);
});

test('shallow, partial and full clones never receive each other\'s responses', async () => {
  const f = await fixture(server, 'shapes', { seed: 9, commits: 4 });
  const all = await lines(f.work, ['rev-list', 'main']);
  const oldBlob = (await git.ok(['rev-parse', 'main~3:file-1.txt'], { cwd: f.work })).trim();
  const shapes = {
    full: [] as string[],
    shallow: ['--depth', '1'],
    partial: ['--filter=blob:none', '--no-checkout'],
  };
  for (const version of [2, 0] as const) {
    for (let round = 0; round < 2; round++) {
      const [full, shallow, partial] = await Promise.all(Object.values(shapes).map((args) => clone(f.url, { version, args })));
      assert.deepEqual(await lines(full!, ['rev-list', 'HEAD']), all);
      assert.equal((await git.ok(['rev-parse', '--is-shallow-repository'], { cwd: full! })).trim(), 'false');
      assert.equal((await git.ok(['cat-file', '-t', oldBlob], { cwd: full! })).trim(), 'blob');

      assert.deepEqual(await lines(shallow!, ['rev-list', 'HEAD']), [all[0]]);
      assert.equal((await git.ok(['rev-parse', '--is-shallow-repository'], { cwd: shallow! })).trim(), 'true');

      assert.deepEqual(await lines(partial!, ['rev-list', 'HEAD']), all);
      const missing = await lines(partial!, ['rev-list', '--objects', '--missing=print', 'HEAD']);
      assert.ok(missing.includes(`?${oldBlob}`), 'the partial clone left out the old blob');
    }
  }
});

test('with the disk under the free-space threshold, clones are served by git uncached', async () => {
  const full = await Server.start({ env: { GITSTRATUM_PACK_CACHE_MIN_FREE_BYTES: String(Number.MAX_SAFE_INTEGER) } });
  try {
    await full.createUser('alice');
    await full.createSpace('alice/main');
    const token = await full.token('alice', 'write');
    const f = await fixture(full, 'full-disk', { seed: 10 }, token);
    const m0 = await metrics(full);
    for (let i = 0; i < 2; i++) assert.equal(await git.revParse(await clone(f.url), 'HEAD'), await git.revParse(f.work, 'main'));
    const d = delta(m0, await metrics(full));
    assert.equal(d('gitstratum_pack_cache_uncacheable_total', { reason: 'no_space' }), 6, 'three requests per clone');
    assert.equal(d('gitstratum_pack_cache_requests_total', { result: 'hit' }), 0);
    assert.equal(d('gitstratum_git_processes_total', { service: 'upload-pack' }), 6);
    assert.deepEqual(await readdir(path.join(full.dataDir, 'cache', 'entries')), []);
  } finally {
    await full.cleanup();
  }
});

test('git writes a pack into its cache file itself: a kill -9 mid-generation never leaves an entry to be served cut short', async () => {
  // git is held mid-pack, whatever the machine's speed: a pack-objects hook (honoured from the
  // global config only, which this server alone is given) passes the pack's first 64 KiB, then
  // waits until the test releases it (at most 60 s).
  const hold = await tempDir();
  const release = path.join(hold, 'release');
  const held = path.join(hold, 'held');
  const hook = path.join(hold, 'hold-pack.sh');
  await writeFile(
    hook,
    `#!/bin/sh\n"$@" | { dd bs=65536 count=1 iflag=fullblock 2>/dev/null; : >> '${held}'; i=0; while [ ! -e '${release}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; cat; }\n`,
    { mode: 0o755 },
  );
  await writeFile(path.join(hold, 'gitconfig'), `[uploadpack]\n\tpackObjectsHook = ${hook}\n`);
  // A server of its own, killed and started again on its data directory (without the hook).
  let s = await Server.start({ env: { GIT_CONFIG_GLOBAL: path.join(hold, 'gitconfig') } });
  try {
    const token = await seedAlice(s);
    await s.createRepo('alice/main/killed');
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, seed: 11 });
    // 16 MiB that git cannot compress: far more than the hook lets through.
    await writeFile(path.join(work, 'noise.bin'), randomBytes(16 << 20));
    await git.ok(['add', '-A'], { cwd: work });
    await git.ok(['commit', '-q', '-m', 'noise'], { cwd: work });
    await git.ok(['push', '-q', s.repoUrl('alice/main/killed.git', token), 'main'], { cwd: work });
    const head = await git.revParse(work, 'main');
    const { id } = await repoRecord(s, 'killed');

    // The same v2 fetch of everything twice at once (the second sighting makes the response
    // one to store), read until their first bytes arrive; then the server is killed.
    const pkt = (line: string) => `${(line.length + 4).toString(16).padStart(4, '0')}${line}`;
    const body = [pkt('command=fetch\n'), '0001', pkt('ofs-delta\n'), pkt(`want ${head}\n`), pkt('done\n'), '0000'].join('');
    const readers = await Promise.all(
      [1, 2].map(async () => {
        const res = await fetch(new URL('/alice/main/killed.git/git-upload-pack', s.url), {
          method: 'POST',
          headers: { 'content-type': 'application/x-git-upload-pack-request', 'git-protocol': 'version=2' },
          body,
        });
        assert.equal(res.status, 200);
        const reader = res.body!.getReader();
        assert.ok(!(await reader.read()).done, 'git started sending');
        return reader;
      }),
    );
    // git's progress lines may come before the pack: wait (bounded) until the hook holds it.
    for (let i = 0; i < 300 && !(await readdir(hold)).includes('held'); i++) await sleep(100);
    assert.equal((await readdir(hold)).includes('held'), true, 'git is held mid-pack when the server is killed');
    await s.stop('SIGKILL');
    await Promise.all(readers.map((r) => r.cancel().catch(() => {})));
    assert.deepEqual(await entriesOf(id, s), [], 'nothing was stored before the kill');
    // The killed server's git finishes into a file nobody will commit.
    await writeFile(release, '');

    s = await Server.start({ dataDir: s.dataDir });
    const m0 = await metrics(s);
    const dest = path.join(await tempDir(), 'clone');
    await git.ok(['clone', '-q', s.repoUrl('alice/main/killed.git'), dest]);
    assert.equal(await git.revParse(dest, 'HEAD'), head);
    assert.deepEqual(await lines(dest, ['fsck', '--no-progress']), []);
    const d = delta(m0, await metrics(s));
    assert.equal(d(...fetchResult('miss')), 1, 'the first fetch after the restart ran git');
    assert.equal(d('gitstratum_pack_cache_damaged_total'), 0);
    // A second clone stores its responses, git writing the pack file.
    await git.ok(['clone', '-q', s.repoUrl('alice/main/killed.git'), path.join(await tempDir(), 'clone')]);
    await packCacheSettled(s.url);
    assert.ok((await entriesOf(id, s)).length > 0, 'the second clone was stored');
    for (const file of await entriesOf(id, s)) {
      const header = await readFile(`${file}.meta`);
      assert.equal((await readFile(file)).length, Number(header.readBigUInt64BE(8)), 'every entry is as long as its header says');
    }
  } finally {
    await writeFile(release, '').catch(() => {});
    await s.cleanup();
  }
});
