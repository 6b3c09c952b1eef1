/**
 * Git LFS end to end with the real git-lfs client, in every store × transfer-mode
 * configuration (filesystem+proxy, s3+proxy, s3+direct), each against its own server: track,
 * push (an empty file, small and multi-megabyte random files, a duplicate), clone with smudge,
 * `git lfs fetch --all`, `git lfs pull` after a clone that skipped smudging, one object stored
 * once for two repositories, and a 200 MB object in one configuration per backend.
 *
 * Then locks, which live in metadata only and so run once: two writers of an organization's
 * repository, the lock API through the client, the server refusing a plain push that bypasses
 * git-lfs's own pre-push check, force-unlock by an administrator, and locks surviving a
 * restart of the server.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { BIN, Git, tempDir, type Server } from './harness.js';
import {
  LFS_CONFIGS,
  batchOne,
  lfsGit,
  randomBytesSeeded,
  seedFast,
  api,
  createRepo,
  sha256,
  sha256File,
  startLfsServer,
  writeRandomFile,
  type LfsConfig,
  type LfsServer,
  type Tokens,
} from './lfs-fixture.js';

/** Files of the standard work tree: name → size. `dup.bin` repeats `small.bin`'s bytes. */
const FILES: Record<string, number> = {
  'empty.bin': 0,
  'small.bin': 1024,
  'dup.bin': 1024,
  'medium.bin': 3 * 1024 * 1024 + 17,
  'assets/deep/other.bin': 256 * 1024,
};
const BIG = 200 * 1024 * 1024;

/** One configuration per backend pushes the 200 MB object, to keep the suite's time down. */
const PUSHES_BIG = new Set(['filesystem+proxy', 's3+direct']);

/** A work tree tracking *.bin with the standard files, committed on main. */
async function lfsWorkTree(git: Git, dir: string, seed: number): Promise<void> {
  await git.ok(['init', '-q', '-b', 'main', dir]);
  await git.ok(['lfs', 'track', '*.bin'], { cwd: dir });
  for (const [name, size] of Object.entries(FILES)) {
    const file = path.join(dir, name);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, randomBytesSeeded(size, name === 'dup.bin' ? seed + hashName('small.bin') : seed + hashName(name)));
  }
  await writeFile(path.join(dir, 'README.txt'), 'not an LFS file\n');
  await git.ok(['add', '-A'], { cwd: dir });
  await git.ok(['commit', '-q', '-m', 'assets'], { cwd: dir });
}

function hashName(name: string): number {
  return parseInt(sha256(name).slice(0, 8), 16);
}

async function digests(dir: string, names: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of names) out[name] = await sha256File(path.join(dir, name));
  return out;
}

/** The oids of the tree's LFS files (what `git lfs ls-files` shows), the empty file excluded. */
async function lfsOids(git: Git, dir: string): Promise<Map<string, string>> {
  const out = await git.ok(['lfs', 'ls-files', '--long'], { cwd: dir });
  const map = new Map<string, string>();
  for (const line of out.trim().split('\n').filter(Boolean)) {
    const m = /^([0-9a-f]{64}) [*-] (.+)$/.exec(line);
    if (m) map.set(m[2]!, m[1]!);
  }
  return map;
}

for (const config of LFS_CONFIGS) {
  describe(`git-lfs client, ${config.name}`, () => {
    let lfs: LfsServer;
    let server: Server;
    let tokens: Tokens;
    let git: Git;
    let work: string;
    const repo = 'alice/main/assets';
    let url: string;
    let source: Record<string, string>;

    before(async () => {
      lfs = await startLfsServer(config);
      server = lfs.server;
      tokens = await seedFast(server);
      await createRepo(server, tokens.root.admin, repo);
      git = await lfsGit();
      work = path.join(await tempDir(), 'work');
      await lfsWorkTree(git, work, 1);
      source = await digests(work, Object.keys(FILES));
      url = server.repoUrl(`${repo}.git`, tokens.alice.write);
      await git.ok(['remote', 'add', 'origin', url], { cwd: work });
      await git.ok(['push', '-q', 'origin', 'main'], { cwd: work });
    });

    after(async () => {
      await lfs?.stop();
    });

    test('push stores every LFS object and links it to the repository', async () => {
      const oids = await lfsOids(git, work);
      // empty.bin stays an ordinary (empty) file: git-lfs never makes a pointer for 0 bytes.
      assert.deepEqual([...oids.keys()].sort(), ['assets/deep/other.bin', 'dup.bin', 'medium.bin', 'small.bin']);
      assert.equal(oids.get('dup.bin'), oids.get('small.bin'));
      for (const [name, oid] of oids) {
        assert.ok(await lfs.stored(oid), `${name} (${oid}) is in the object store`);
        const obj = await batchOne(server, repo, tokens.alice.read, 'download', oid, FILES[name]!);
        assert.ok(obj.actions?.download, `${name} has a download action: ${JSON.stringify(obj)}`);
        assert.equal(obj.size, FILES[name]);
      }
      assert.equal((await lfs.storedKeys()).length, 3, 'three distinct objects stored');
    });

    test('clone smudges every file to the bytes that were pushed', async () => {
      const clone = path.join(await tempDir(), 'clone');
      await git.ok(['clone', '-q', url, clone]);
      assert.deepEqual(await digests(clone, Object.keys(FILES)), source);
      assert.equal(await readFile(path.join(clone, 'README.txt'), 'utf8'), 'not an LFS file\n');
    });

    test('git lfs fetch --all downloads every object of every ref', async () => {
      const clone = path.join(await tempDir(), 'fetch-all');
      await git.ok(['clone', '-q', url, clone], { env: { GIT_LFS_SKIP_SMUDGE: '1' } });
      await git.ok(['lfs', 'fetch', '--all'], { cwd: clone });
      for (const [name, oid] of await lfsOids(git, clone)) {
        const stored = path.join(clone, '.git', 'lfs', 'objects', oid.slice(0, 2), oid.slice(2, 4), oid);
        assert.equal(await sha256File(stored), oid, `${name} fetched into .git/lfs/objects`);
      }
    });

    test('git lfs pull after a clone that skipped smudging restores the files', async () => {
      const clone = path.join(await tempDir(), 'skip-smudge');
      await git.ok(['clone', '-q', url, clone], { env: { GIT_LFS_SKIP_SMUDGE: '1' } });
      const pointer = await readFile(path.join(clone, 'medium.bin'), 'utf8');
      assert.match(pointer, /^version https:\/\/git-lfs\.github\.com\/spec\/v1\noid sha256:[0-9a-f]{64}\nsize \d+\n$/);
      await git.ok(['lfs', 'pull'], { cwd: clone });
      assert.deepEqual(await digests(clone, Object.keys(FILES)), source);
    });

    test('the same file pushed to a second repository is stored once', async () => {
      const second = 'alice/main/assets-copy';
      await createRepo(server, tokens.root.admin, second);
      const before = (await lfs.storedKeys()).sort();
      await git.ok(['push', '-q', server.repoUrl(`${second}.git`, tokens.alice.write), 'main'], { cwd: work });
      assert.deepEqual((await lfs.storedKeys()).sort(), before);
      // And the second repository can serve them: it proved possession by uploading.
      const clone = path.join(await tempDir(), 'copy');
      await git.ok(['clone', '-q', server.repoUrl(`${second}.git`, tokens.alice.read), clone]);
      assert.deepEqual(await digests(clone, Object.keys(FILES)), source);
    });

    test('an anonymous clone of a public repository smudges too', async () => {
      const open = 'alice/main/open-assets';
      await createRepo(server, tokens.root.admin, open, 'public');
      await git.ok(['push', '-q', server.repoUrl(`${open}.git`, tokens.alice.write), 'main'], { cwd: work });
      const anon = await lfsGit();
      const clone = path.join(await tempDir(), 'anonymous');
      await anon.ok(['clone', '-q', server.repoUrl(`${open}.git`), clone]);
      assert.deepEqual(await digests(clone, Object.keys(FILES)), source);
    });

    test('a 200 MB object round-trips byte for byte', { skip: !PUSHES_BIG.has(config.name) && 'one configuration per backend' }, async (t) => {
      const bigRepo = 'alice/main/big';
      await createRepo(server, tokens.root.admin, bigRepo);
      const dir = path.join(await tempDir(), 'big');
      await git.ok(['init', '-q', '-b', 'main', dir]);
      await git.ok(['lfs', 'track', '*.bin'], { cwd: dir });
      const started = Date.now();
      await writeRandomFile(path.join(dir, 'huge.bin'), BIG, 200);
      const digest = await sha256File(path.join(dir, 'huge.bin'));
      await git.ok(['add', '-A'], { cwd: dir });
      await git.ok(['commit', '-q', '-m', 'huge'], { cwd: dir });
      const pushStart = Date.now();
      await git.ok(['push', '-q', server.repoUrl(`${bigRepo}.git`, tokens.alice.write), 'main'], { cwd: dir });
      const cloneStart = Date.now();
      const clone = path.join(await tempDir(), 'big-clone');
      await git.ok(['clone', '-q', server.repoUrl(`${bigRepo}.git`, tokens.alice.read), clone]);
      assert.equal(await sha256File(path.join(clone, 'huge.bin')), digest);
      t.diagnostic(`200 MB: prepare ${pushStart - started} ms, push ${cloneStart - pushStart} ms, clone ${Date.now() - cloneStart} ms`);
      await rm(dir, { recursive: true, force: true });
      await rm(clone, { recursive: true, force: true });
    });
  });
}

/** A server process started on an existing data directory, for restarts. */
async function startOn(dataDir: string, port: number, env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', '--data', dataDir, '--port', String(port)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"gitstratum listening"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`restarted server exited with ${code}:\n${stderr}`)));
    setTimeout(() => reject(new Error(`restarted server did not start:\n${stderr}`)), 30_000).unref();
  });
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

describe('git-lfs locks, two writers of an organization repository', () => {
  const config: LfsConfig = LFS_CONFIGS[0]!;
  const repo = 'acme/games/art';
  let lfs: LfsServer;
  let server: Server;
  let tokens: Tokens;
  let restarted: ChildProcess | undefined;
  let alice: Git;
  let bob: Git;
  let root: Git;
  let aliceDir: string;
  let bobDir: string;
  const urlFor = (token: string) => server.repoUrl(`${repo}.git`, token);

  before(async () => {
    lfs = await startLfsServer(config);
    server = lfs.server;
    tokens = await seedFast(server);
    const admin = tokens.root.admin;
    await api(server, admin, 'POST', '/orgs', { name: 'acme' });
    await api(server, admin, 'PUT', '/orgs/acme/members/alice', { role: 'write' });
    await api(server, admin, 'PUT', '/orgs/acme/members/bob', { role: 'write' });
    await api(server, admin, 'POST', '/spaces', { owner: 'acme', name: 'games' });
    await createRepo(server, tokens.root.admin, repo);
    [alice, bob, root] = await Promise.all([lfsGit(), lfsGit(), lfsGit()]);

    aliceDir = path.join(await tempDir(), 'alice');
    await alice.ok(['init', '-q', '-b', 'main', aliceDir]);
    await alice.ok(['lfs', 'track', '*.bin'], { cwd: aliceDir });
    await writeFile(path.join(aliceDir, 'model.bin'), randomBytesSeeded(4096, 11));
    await writeFile(path.join(aliceDir, 'texture.bin'), randomBytesSeeded(4096, 12));
    await mkdir(path.join(aliceDir, 'art'));
    await writeFile(path.join(aliceDir, 'art', 'café au lait.bin'), randomBytesSeeded(2048, 13));
    await alice.ok(['add', '-A'], { cwd: aliceDir });
    await alice.ok(['commit', '-q', '-m', 'models'], { cwd: aliceDir });
    await alice.ok(['remote', 'add', 'origin', urlFor(tokens.alice.write)], { cwd: aliceDir });
    await alice.ok(['push', '-q', '-u', 'origin', 'main'], { cwd: aliceDir });

    bobDir = path.join(await tempDir(), 'bob');
    await bob.ok(['clone', '-q', urlFor(tokens.bob.write), bobDir]);
  });

  after(async () => {
    if (restarted) await stopProcess(restarted);
    await lfs?.stop();
  });

  test('alice locks a file; bob cannot lock it and is told who holds it', async () => {
    await alice.ok(['lfs', 'lock', 'model.bin'], { cwd: aliceDir });
    const r = await bob.run(['lfs', 'lock', 'model.bin'], { cwd: bobDir });
    assert.notEqual(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /alice/, 'the refusal names the lock owner');
  });

  test('git lfs locks lists the lock with its owner', async () => {
    const out = await bob.ok(['lfs', 'locks'], { cwd: bobDir });
    assert.match(out, /^model\.bin\s+alice\s+ID:\S+/m);
    const json = JSON.parse(await bob.ok(['lfs', 'locks', '--json'], { cwd: bobDir })) as { path: string; owner: { name: string } }[];
    assert.deepEqual(
      json.map((l) => [l.path, l.owner.name]),
      [['model.bin', 'alice']],
    );
  });

  test("the server refuses bob's push that changes the locked file, naming the lock", async () => {
    await writeFile(path.join(bobDir, 'model.bin'), randomBytesSeeded(4096, 21));
    await bob.ok(['commit', '-q', '-am', 'bob edits the model'], { cwd: bobDir });
    // Without git-lfs's pre-push hook nothing checks locks on the client: the server must.
    const r = await bob.run(['-c', 'core.hooksPath=/dev/null', 'push', 'origin', 'main'], { cwd: bobDir });
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /remote: .*model\.bin is locked by alice/, r.stderr);
    assert.match(r.stderr, /pre-receive hook declined/, r.stderr);
  });

  test('a merge commit that changes the locked file is refused too', async () => {
    const dir = path.join(await tempDir(), 'bob-merge');
    await bob.ok(['clone', '-q', urlFor(tokens.bob.write), dir]);
    await bob.ok(['checkout', '-q', '-b', 'side'], { cwd: dir });
    await writeFile(path.join(dir, 'notes.txt'), 'side work\n');
    await bob.ok(['add', 'notes.txt'], { cwd: dir });
    await bob.ok(['commit', '-q', '-m', 'side work'], { cwd: dir });
    await bob.ok(['checkout', '-q', 'main'], { cwd: dir });
    // The change to the locked file exists only in the merge commit ("evil merge").
    await bob.ok(['merge', '-q', '--no-ff', '--no-commit', 'side'], { cwd: dir });
    await writeFile(path.join(dir, 'model.bin'), randomBytesSeeded(4096, 51));
    await bob.ok(['add', 'model.bin'], { cwd: dir });
    await bob.ok(['commit', '-q', '-m', 'merge side'], { cwd: dir });
    const r = await bob.run(['-c', 'core.hooksPath=/dev/null', 'push', 'origin', 'main'], { cwd: dir });
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /remote: .*model\.bin is locked by alice/, r.stderr);
  });

  test('a locked path with non-ASCII characters and spaces is enforced as well', async () => {
    const name = 'art/café au lait.bin';
    await alice.ok(['lfs', 'lock', name], { cwd: aliceDir });
    const dir = path.join(await tempDir(), 'bob-unicode');
    await bob.ok(['clone', '-q', urlFor(tokens.bob.write), dir]);
    await writeFile(path.join(dir, name), randomBytesSeeded(2048, 61));
    await bob.ok(['commit', '-q', '-am', 'bob edits the café'], { cwd: dir });
    const r = await bob.run(['-c', 'core.hooksPath=/dev/null', 'push', 'origin', 'main'], { cwd: dir });
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /café au lait\.bin is locked by alice/, r.stderr);
    await alice.ok(['lfs', 'unlock', name], { cwd: aliceDir });
  });

  test('the lock owner may push changes to the locked file', async () => {
    await writeFile(path.join(aliceDir, 'model.bin'), randomBytesSeeded(4096, 41));
    await alice.ok(['commit', '-q', '-am', 'alice edits the model'], { cwd: aliceDir });
    await alice.ok(['push', '-q', 'origin', 'main:refs/heads/alice-edit'], { cwd: aliceDir });
  });

  test("bob may merge the lock owner's pushed change into his own work", async () => {
    const dir = path.join(await tempDir(), 'bob-merge-ok');
    await bob.ok(['clone', '-q', urlFor(tokens.bob.write), dir]);
    await bob.ok(['checkout', '-q', '-b', 'bob-work'], { cwd: dir });
    await writeFile(path.join(dir, 'notes.txt'), 'bob work\n');
    await bob.ok(['add', 'notes.txt'], { cwd: dir });
    await bob.ok(['commit', '-q', '-m', 'bob work'], { cwd: dir });
    // model.bin changes on bob-work only as alice changed it, in a commit the server has.
    await bob.ok(['merge', '-q', '--no-ff', '--no-edit', 'origin/alice-edit'], { cwd: dir });
    await bob.ok(['-c', 'core.hooksPath=/dev/null', 'push', '-q', 'origin', 'bob-work'], { cwd: dir });
  });

  test('an unlocked file in the same repository can still be pushed by bob', async () => {
    const other = path.join(await tempDir(), 'bob-texture');
    await bob.ok(['clone', '-q', urlFor(tokens.bob.write), other]);
    await writeFile(path.join(other, 'texture.bin'), randomBytesSeeded(4096, 31));
    await bob.ok(['commit', '-q', '-am', 'bob edits the texture'], { cwd: other });
    await bob.ok(['push', '-q', 'origin', 'main:refs/heads/texture'], { cwd: other });
  });

  test("bob cannot unlock alice's lock, neither plainly nor by force", async () => {
    const plain = await bob.run(['lfs', 'unlock', 'model.bin'], { cwd: bobDir });
    assert.notEqual(plain.code, 0, plain.stderr);
    assert.match(plain.stdout + plain.stderr, /alice/);
    const forced = await bob.run(['lfs', 'unlock', '--force', 'model.bin'], { cwd: bobDir });
    assert.notEqual(forced.code, 0, forced.stderr);
    assert.match(forced.stdout + forced.stderr, /administrator/);
  });

  test('with lock enforcement turned off for the repository, the server accepts the push', async () => {
    const admin = tokens.root.admin;
    const dir = path.join(await tempDir(), 'bob-enforcement');
    await bob.ok(['clone', '-q', urlFor(tokens.bob.write), dir]);
    const editAndPush = async (seed: number, branch: string) => {
      await writeFile(path.join(dir, 'model.bin'), randomBytesSeeded(4096, seed));
      await bob.ok(['commit', '-q', '-am', `bob edits the model (${seed})`], { cwd: dir });
      return bob.run(['push', 'origin', `HEAD:refs/heads/${branch}`], { cwd: dir });
    };
    const off = await api(server, admin, 'PATCH', `/repos/${repo}`, { enforceLocks: false });
    assert.equal(off.enforceLocks, false);
    const accepted = await editAndPush(31, 'bob-side-1');
    assert.equal(accepted.code, 0, accepted.stderr);
    await api(server, admin, 'PATCH', `/repos/${repo}`, { enforceLocks: true });
    const refused = await editAndPush(32, 'bob-side-2');
    assert.notEqual(refused.code, 0, refused.stderr);
    assert.match(refused.stderr, /model\.bin is locked by alice/);
  });

  test('locks survive a restart of the server', async () => {
    const port = Number(new URL(server.url).port);
    await server.stop();
    restarted = await startOn(server.dataDir, port, lfs.env);
    const out = await bob.ok(['lfs', 'locks'], { cwd: bobDir });
    assert.match(out, /^model\.bin\s+alice\s+ID:\S+/m);
  });

  test('an organization administrator force-unlocks a lock of another member', async () => {
    await alice.ok(['lfs', 'lock', 'texture.bin'], { cwd: aliceDir });
    const admin = tokens.root.admin;
    await api(server, admin, 'POST', '/users', { name: 'carol', admin: false });
    await api(server, admin, 'PUT', '/orgs/acme/members/carol', { role: 'admin' });
    const carolToken = String((await api(server, admin, 'POST', '/users/carol/tokens', { scope: 'admin' })).token);
    const carol = await lfsGit();
    const carolDir = path.join(await tempDir(), 'carol');
    await carol.ok(['clone', '-q', urlFor(carolToken), carolDir], { env: { GIT_LFS_SKIP_SMUDGE: '1' } });
    await carol.ok(['lfs', 'unlock', '--force', 'texture.bin'], { cwd: carolDir });
    const left = await bob.ok(['lfs', 'locks'], { cwd: bobDir });
    assert.doesNotMatch(left, /texture\.bin/);
    assert.match(left, /^model\.bin\s+alice/m);
  });

  test('a site administrator force-unlocks; then bob pushes', async () => {
    const rootDir = path.join(await tempDir(), 'root');
    await root.ok(['clone', '-q', urlFor(tokens.root.admin), rootDir], { env: { GIT_LFS_SKIP_SMUDGE: '1' } });
    await root.ok(['lfs', 'unlock', '--force', 'model.bin'], { cwd: rootDir });
    assert.equal((await bob.ok(['lfs', 'locks'], { cwd: bobDir })).trim(), '');
    await bob.ok(['push', '-q', 'origin', 'main'], { cwd: bobDir });
    const check = path.join(await tempDir(), 'alice-check');
    await alice.ok(['clone', '-q', urlFor(tokens.alice.read), check]);
    assert.equal(await sha256File(path.join(check, 'model.bin')), sha256(randomBytesSeeded(4096, 21)));
  });
});
