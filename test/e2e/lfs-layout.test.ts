/**
 * The readable LFS layout and LFS garbage collection (issue 15), end to end with the real
 * git-lfs client, on the filesystem store and on moto's S3 server with bucket versioning, each
 * under its own server: files published under their paths with every version kept, older
 * commits checked out byte for byte from their versions after the content-addressed copies are
 * gone (also with direct transfers, pre-signed URLs naming the version), renames and
 * deletions, a fork, a pointer to another repository's object, a publish job killed midway,
 * converting a repository both ways, and GC deleting only what it should.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, tempDir } from './harness.js';
import { api, basic, batchOne, lfsGit, randomBytesSeeded, seedFast, sha256, uploadObject, type Tokens } from './lfs-fixture.js';
import { startMoto } from '../support/moto.js';
import type { TestS3 } from '../support/s3.js';
import { createFsStore } from '../../src/storage/fs-store.js';
import { createS3Store } from '../../src/storage/s3-store.js';
import { lfsObjectKey, objectKey, type ObjectStore } from '../../src/storage/object-store.js';

interface Published {
  path: string;
  oid: string;
  key: string;
  versionId: string;
  url: string | null;
}

interface Setup {
  name: string;
  server: Server;
  /** The store as the server sees it, to look at keys and versions. */
  store: ObjectStore;
  /** Object store options for admin commands and restarts. */
  storeArgs: string[];
  tokens: Tokens;
  git: Git;
  restart(extraEnv?: NodeJS.ProcessEnv): Promise<void>;
  stop(): Promise<void>;
}

type Kind = 'filesystem' | 'moto' | 'moto+direct';

async function setUp(kind: Kind): Promise<Setup> {
  const s3: TestS3 | undefined = kind !== 'filesystem' ? await startMoto({ versioning: true }) : undefined;
  const storeArgs = [...(s3 ? s3.storeArgs() : []), ...(kind === 'moto+direct' ? ['--lfs-transfer-mode', 'direct'] : [])];
  let server: Server;
  try {
    server = await Server.start({ args: storeArgs });
  } catch (err) {
    await s3?.stop(); // not left running when the server cannot start
    throw err;
  }
  const store = s3
    ? createS3Store({ endpoint: s3.endpoint, region: s3.region, bucket: s3.bucket, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey })
    : createFsStore(path.join(server.dataDir, 'objects'));
  const tokens = await seedFast(server);
  const git = await lfsGit();
  const setup: Setup = {
    name: kind,
    server,
    store,
    storeArgs,
    tokens,
    git,
    async restart(extraEnv = {}) {
      await server.stop();
      server = await Server.start({ args: storeArgs, dataDir: server.dataDir, env: extraEnv });
      setup.server = server;
    },
    async stop() {
      await server.cleanup();
      (store as { destroy?: () => void }).destroy?.();
      await s3?.stop();
    },
  };
  return setup;
}

const PREFIX = 'files';

async function published(s: Setup, repo: string, filePath?: string): Promise<Published[]> {
  const q = filePath === undefined ? '' : `?path=${encodeURIComponent(filePath)}`;
  const res = await fetch(`${s.server.url}/api/v1/repos/${repo}/lfs/published${q}`, { headers: { authorization: basic(s.tokens.alice.admin) } });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as Published[];
}

/** Waits (generously) until every publish job of the repository has ended; fails on a failed one. */
async function publishedAll(s: Setup, repo: string): Promise<void> {
  for (let i = 0; ; i++) {
    const res = await fetch(`${s.server.url}/api/v1/repos/${repo}/lfs/publish-jobs`, { headers: { authorization: basic(s.tokens.alice.admin) } });
    const jobs = (await res.json()) as { state: string; error: string | null }[];
    const failed = jobs.find((j) => j.state === 'failed');
    if (failed) throw new Error(`a publish job failed: ${failed.error}`);
    if (jobs.length > 0 && jobs.every((j) => j.state === 'done')) return;
    if (i > 600) throw new Error(`publish jobs of ${repo} not done within 120 s: ${JSON.stringify(jobs)}`);
    await sleep(200);
  }
}

async function versionsOf(s: Setup, key: string): Promise<string[]> {
  const out: string[] = [];
  for await (const v of s.store.versions!.list(key)) if (v.key === key) out.push(v.versionId);
  return out;
}

async function hasContentCopy(s: Setup, oid: string): Promise<boolean> {
  return (await s.store.head(lfsObjectKey(oid))) !== undefined;
}

/** A work tree tracking *.pdf and *.bin, cloned from the (empty) repository. */
async function workTree(s: Setup, repo: string): Promise<string> {
  const dir = await tempDir('gitstratum-layout-work-');
  await s.git.ok(['clone', '-q', s.server.repoUrl(repo, s.tokens.alice.write), dir]);
  await s.git.ok(['lfs', 'track', '*.pdf', '*.bin'], { cwd: dir });
  return dir;
}

async function put(dir: string, file: string, data: Buffer): Promise<void> {
  await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
  await writeFile(path.join(dir, file), data);
}

async function commitAndPush(s: Setup, dir: string, message: string, opts: { force?: boolean } = {}): Promise<string> {
  await s.git.ok(['add', '-A'], { cwd: dir });
  await s.git.ok(['commit', '-q', '-m', message], { cwd: dir });
  await s.git.ok(['push', '-q', ...(opts.force ? ['--force'] : []), 'origin', 'HEAD:main'], { cwd: dir });
  return s.git.revParse(dir, 'HEAD');
}

/** A fresh clone (LFS files smudged through the server) checked out at `rev`. */
async function checkout(s: Setup, repo: string, rev: string): Promise<string> {
  const dir = await tempDir('gitstratum-layout-clone-');
  await s.git.ok(['clone', '-q', s.server.repoUrl(repo, s.tokens.alice.read), dir]);
  await s.git.ok(['checkout', '-q', rev], { cwd: dir });
  return dir;
}

async function sha(dir: string, file: string): Promise<string> {
  return sha256(await readFile(path.join(dir, file)));
}

// Direct transfers (pre-signed URLs, a version's for downloads) run the first case only.
for (const kind of ['filesystem', 'moto', 'moto+direct'] as const) {
  describe(`readable LFS layout (${kind})`, () => {
    let s: Setup;
    const repo = 'alice/main/docs';
    const key = (repoPath: string, file: string) => objectKey(`${PREFIX}/${repoPath}/${file}`);
    let work: string;
    const v1 = randomBytesSeeded(300_000, 1);
    const v2 = randomBytesSeeded(200_000, 2);
    const logo = randomBytesSeeded(50_000, 3);
    let first: string;

    before(async () => {
      s = await setUp(kind);
      await api(s.server, s.tokens.alice.admin, 'POST', '/repos', { owner: 'alice', space: 'main', name: 'docs', visibility: 'private', lfsLayout: 'readable' });
      work = await workTree(s, repo);
    });
    after(async () => {
      await s?.stop();
    });

    test('a file pushed twice has two versions under its path; a clone checks out each commit byte for byte', async () => {
      await put(work, 'documents/contracts/lease.pdf', v1);
      await put(work, 'art/logo.pdf', logo);
      first = await commitAndPush(s, work, 'lease, first draft');
      await publishedAll(s, repo);
      await put(work, 'documents/contracts/lease.pdf', v2);
      const second = await commitAndPush(s, work, 'lease, signed');
      await publishedAll(s, repo);

      const lease = await published(s, repo, 'documents/contracts/lease.pdf');
      assert.equal(lease.length, 2, 'two published versions of the path');
      assert.deepEqual(lease.map((p) => p.oid), [sha256(v2), sha256(v1)], 'newest first');
      assert.equal(lease[0]!.key, key(repo, 'documents/contracts/lease.pdf'));
      assert.notEqual(lease[0]!.versionId, lease[1]!.versionId);
      assert.deepEqual((await versionsOf(s, key(repo, 'documents/contracts/lease.pdf'))).sort(), lease.map((p) => p.versionId).sort(), 'the store holds exactly those versions');
      // Stored once: every repository linking them published them, so the content-addressed copies went.
      assert.equal(await hasContentCopy(s, sha256(v1)), false);
      assert.equal(await hasContentCopy(s, sha256(v2)), false);

      const head = await checkout(s, repo, second);
      assert.equal(await sha(head, 'documents/contracts/lease.pdf'), sha256(v2));
      const old = await checkout(s, repo, first);
      assert.equal(await sha(old, 'documents/contracts/lease.pdf'), sha256(v1), 'the first commit gets the first content');
      assert.equal(await sha(old, 'art/logo.pdf'), sha256(logo));
    });

    if (kind === 'moto+direct') return;

    test('a rename publishes under the new path and a deletion keeps history', async () => {
      await s.git.ok(['mv', 'documents/contracts/lease.pdf', 'documents/contracts/Lease (signed) 2026.pdf'], { cwd: work });
      await s.git.ok(['rm', '-q', 'art/logo.pdf'], { cwd: work });
      const third = await commitAndPush(s, work, 'rename the lease, drop the logo');
      await publishedAll(s, repo);
      const renamed = await published(s, repo, 'documents/contracts/Lease (signed) 2026.pdf');
      assert.deepEqual(renamed.map((p) => p.oid), [sha256(v2)]);
      assert.equal(renamed[0]!.key, key(repo, 'documents/contracts/Lease (signed) 2026.pdf'));
      assert.equal((await versionsOf(s, key(repo, 'documents/contracts/lease.pdf'))).length, 2, 'the old path keeps its versions');
      assert.equal((await versionsOf(s, key(repo, 'art/logo.pdf'))).length, 1, 'a deleted file keeps its version');
      const head = await checkout(s, repo, third);
      assert.equal(await sha(head, 'documents/contracts/Lease (signed) 2026.pdf'), sha256(v2));
      const old = await checkout(s, repo, first);
      assert.equal(await sha(old, 'art/logo.pdf'), sha256(logo), 'the deleted file still checks out at its commit');
    });

    test('a fork publishes its own pushes under its own prefix and reads what it shares from the source', async () => {
      await api(s.server, s.tokens.alice.admin, 'POST', `/repos/${repo}/forks`, { owner: 'alice', space: 'main', name: 'docs-fork' });
      const fork = 'alice/main/docs-fork';
      const dir = await tempDir('gitstratum-layout-fork-');
      await s.git.ok(['clone', '-q', s.server.repoUrl(fork, s.tokens.alice.write), dir]);
      const v3 = randomBytesSeeded(120_000, 4);
      await put(dir, 'documents/contracts/Lease (signed) 2026.pdf', v3);
      const forkHead = await commitAndPush(s, dir, 'the fork amends the lease');
      await publishedAll(s, fork);
      const mine = await published(s, fork);
      assert.deepEqual(mine.map((p) => [p.key, p.oid]), [[key(fork, 'documents/contracts/Lease (signed) 2026.pdf'), sha256(v3)]]);
      assert.deepEqual(await published(s, repo, 'documents/contracts/Lease (signed) 2026.pdf').then((l) => l.map((p) => p.oid)), [sha256(v2)], "the source's tree is untouched");
      const head = await checkout(s, fork, forkHead);
      assert.equal(await sha(head, 'documents/contracts/Lease (signed) 2026.pdf'), sha256(v3));
      const shared = await checkout(s, fork, first);
      assert.equal(await sha(shared, 'documents/contracts/lease.pdf'), sha256(v1), "the source's history, read from the source's versions");
    });

    test("a pointer to another repository's private object is never copied into this repository's tree", async () => {
      await api(s.server, s.tokens.alice.admin, 'POST', '/repos', { owner: 'alice', space: 'main', name: 'secret', visibility: 'private' });
      const secret = randomBytesSeeded(10_000, 13);
      const oid = await uploadObject(s.server, 'alice/main/secret', s.tokens.alice.write, secret);
      // A pointer written by hand, pushed without git-lfs's pre-push hook (which would look for the bytes).
      await writeFile(path.join(work, 'stolen.txt'), `version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${secret.length}\n`);
      await s.git.ok(['add', '-A'], { cwd: work });
      await s.git.ok(['commit', '-q', '-m', 'a pointer to something else'], { cwd: work });
      await s.git.ok(['push', '-q', '--no-verify', 'origin', 'HEAD:main'], { cwd: work });
      await publishedAll(s, repo);
      assert.deepEqual(await published(s, repo, 'stolen.txt'), []);
      assert.deepEqual(await versionsOf(s, key(repo, 'stolen.txt')), []);
      const res = await fetch(`${s.server.url}/api/v1/repos/${repo}/lfs/publish-jobs`, { headers: { authorization: basic(s.tokens.alice.admin) } });
      const jobs = (await res.json()) as { skipped: { path: string; reason: string }[] }[];
      assert.deepEqual(jobs.at(-1)!.skipped, [{ path: 'stolen.txt', reason: 'the object was not uploaded to this repository' }]);
      assert.equal(await hasContentCopy(s, oid), true, 'the object stays where it was');
      await s.git.ok(['rm', '-q', 'stolen.txt'], { cwd: work });
      await s.git.ok(['commit', '-q', '-m', 'drop it'], { cwd: work });
      await s.git.ok(['push', '-q', 'origin', 'HEAD:main'], { cwd: work });
    });

    test("a deleted repository's published tree leaves the bucket; an object a fork still links gets its content copy back", async () => {
      const temp = 'alice/main/temp';
      await api(s.server, s.tokens.alice.admin, 'POST', '/repos', { owner: 'alice', space: 'main', name: 'temp', visibility: 'private', lfsLayout: 'readable' });
      const dir = await workTree(s, temp);
      const x = randomBytesSeeded(25_000, 15);
      await put(dir, 'x.bin', x);
      await commitAndPush(s, dir, 'x');
      await publishedAll(s, temp);
      assert.equal(await hasContentCopy(s, sha256(x)), false, 'published: stored once');
      // A content-layout fork whose push names x: git-lfs's upload batch answers "present".
      await api(s.server, s.tokens.alice.admin, 'POST', `/repos/${temp}/forks`, { owner: 'alice', space: 'main', name: 'temp-fork' });
      await api(s.server, s.tokens.alice.admin, 'PATCH', '/repos/alice/main/temp-fork', { lfsLayout: 'content' });
      const present = await batchOne(s.server, 'alice/main/temp-fork', s.tokens.alice.write, 'upload', sha256(x), x.length);
      assert.equal(present.actions, undefined, 'nothing to upload');
      const del = await fetch(`${s.server.url}/api/v1/repos/${temp}`, { method: 'DELETE', headers: { authorization: basic(s.tokens.alice.admin) } });
      assert.equal(del.status, 204);
      for (let i = 0; (await versionsOf(s, key(temp, 'x.bin'))).length > 0; i++) {
        if (i > 600) throw new Error('the deleted repository\'s version is still there after 120 s');
        await sleep(200);
      }
      assert.equal(await hasContentCopy(s, sha256(x)), true, 'given back before the version went');
      const clone = await checkout(s, 'alice/main/temp-fork', 'main');
      assert.equal(await sha(clone, 'x.bin'), sha256(x));
    });

    test('a publish job killed midway completes after a restart, without a second version', async () => {
      await s.restart({ GITSTRATUM_TEST_CRASH_AT: 'lfs-publish-after-copy' });
      // A restarted server listens on a new port.
      await s.git.ok(['remote', 'set-url', 'origin', s.server.repoUrl(repo, s.tokens.alice.write)], { cwd: work });
      const crashed = new Promise<void>((resolve) => s.server.process.once('exit', () => resolve()));
      const v4 = randomBytesSeeded(80_000, 5);
      await put(work, 'documents/annex.pdf', v4);
      await commitAndPush(s, work, 'annex');
      await crashed; // the server killed itself between the copy and its record
      await s.restart();
      await publishedAll(s, repo);
      const annex = await published(s, repo, 'documents/annex.pdf');
      assert.deepEqual(annex.map((p) => p.oid), [sha256(v4)]);
      assert.deepEqual(await versionsOf(s, key(repo, 'documents/annex.pdf')), [annex[0]!.versionId], 'the interrupted copy was adopted: one version');
      const clone = await checkout(s, repo, 'main');
      assert.equal(await sha(clone, 'documents/annex.pdf'), sha256(v4));
    });

    test('converting a repository to readable and back serves every commit identically', async () => {
      const old = 'alice/main/archive';
      await api(s.server, s.tokens.alice.admin, 'POST', '/repos', { owner: 'alice', space: 'main', name: 'archive', visibility: 'private' });
      const dir = await workTree(s, old);
      const a1 = randomBytesSeeded(60_000, 6);
      const a2 = randomBytesSeeded(70_000, 7);
      const b = randomBytesSeeded(40_000, 8);
      await put(dir, 'data/a.bin', a1);
      await put(dir, 'data/b.bin', b);
      const c1 = await commitAndPush(s, dir, 'one');
      await put(dir, 'data/a.bin', a2);
      const c2 = await commitAndPush(s, dir, 'two');
      const expect = async () => {
        const at1 = await checkout(s, old, c1);
        const at2 = await checkout(s, old, c2);
        assert.deepEqual([await sha(at1, 'data/a.bin'), await sha(at1, 'data/b.bin'), await sha(at2, 'data/a.bin')], [sha256(a1), sha256(b), sha256(a2)]);
      };

      const plan = await s.server.cliOk(['lfs', 'relayout', old, '--to', 'readable', '--dry-run', ...s.storeArgs]);
      assert.match(plan, new RegExp(`publish data/a\\.bin .*-> ${PREFIX}/alice/main/archive/data/a\\.bin`));
      assert.match(plan, /dry run: would write 2 files/);
      assert.deepEqual(await published(s, old), [], 'a dry run writes nothing');

      const out = await s.server.cliOk(['lfs', 'relayout', old, '--to', 'readable', ...s.storeArgs]);
      assert.match(out, /2 files published/);
      assert.deepEqual((await published(s, old)).map((p) => p.path).sort(), ['data/a.bin', 'data/b.bin']);
      assert.equal(await hasContentCopy(s, sha256(a2)), false, 'published: stored once');
      assert.equal(await hasContentCopy(s, sha256(a1)), true, 'an older version no published ref has keeps its content copy');
      await expect();

      const back = await s.server.cliOk(['lfs', 'relayout', old, '--to', 'content', ...s.storeArgs]);
      assert.match(back, /2 published versions deleted; LFS layout now content/);
      assert.equal(await hasContentCopy(s, sha256(a2)), true, 'its content copy restored');
      assert.deepEqual(await versionsOf(s, key(old, 'data/a.bin')), []);
      assert.deepEqual(await published(s, old), []);
      await expect();
    });

    test('LFS GC deletes an unreachable old object and keeps reachable, recent and locked ones; its dry run deletes nothing', async () => {
      const gcRepo = 'alice/main/gc';
      await api(s.server, s.tokens.alice.admin, 'POST', '/repos', { owner: 'alice', space: 'main', name: 'gc', visibility: 'private', lfsLayout: 'readable' });
      const dir = await workTree(s, gcRepo);
      const dropped = randomBytesSeeded(30_000, 9);
      const locked = randomBytesSeeded(31_000, 10);
      const kept = randomBytesSeeded(32_000, 11);
      await put(dir, 'old.bin', dropped);
      await put(dir, 'locked.bin', locked);
      await commitAndPush(s, dir, 'to be dropped');
      await publishedAll(s, gcRepo);
      // A lock on a path whose file is no longer on any ref.
      const lock = await fetch(`${s.server.url}/${gcRepo}.git/info/lfs/locks`, {
        method: 'POST',
        headers: { authorization: basic(s.tokens.alice.write), 'content-type': 'application/vnd.git-lfs+json' },
        body: JSON.stringify({ path: 'locked.bin' }),
      });
      assert.equal(lock.status, 201, await lock.text());
      // History rewritten: only kept.bin remains reachable.
      await s.git.ok(['checkout', '-q', '--orphan', 'fresh'], { cwd: dir });
      await s.git.ok(['rm', '-q', '-r', '--cached', '.'], { cwd: dir });
      await rm(path.join(dir, 'old.bin'));
      await rm(path.join(dir, 'locked.bin'));
      await put(dir, 'kept.bin', kept);
      await commitAndPush(s, dir, 'a new history', { force: true });
      await publishedAll(s, gcRepo);
      // Everything so far is older than the grace period; an upload of a moment ago is not.
      await s.server.admin((core) => core.meta.db.updateTable('lfs_objects').set({ created_at: '2020-01-01T00:00:00.000Z', touched_at: null }).execute());
      const recent = await uploadObject(s.server, gcRepo, s.tokens.alice.write, randomBytesSeeded(20_000, 12));
      // An object of a deleted repository: linked nowhere. On the filesystem its file is made
      // old (S3 keeps its own write time: there it is within the grace period, and stays).
      await api(s.server, s.tokens.alice.admin, 'POST', '/repos', { owner: 'alice', space: 'main', name: 'gone', visibility: 'private' });
      const orphan = await uploadObject(s.server, 'alice/main/gone', s.tokens.alice.write, randomBytesSeeded(21_000, 14));
      const deleted = await fetch(`${s.server.url}/api/v1/repos/alice/main/gone`, { method: 'DELETE', headers: { authorization: basic(s.tokens.alice.admin) } });
      assert.equal(deleted.status, 204);
      const orphanOld = kind === 'filesystem';
      if (orphanOld) {
        const file = path.join(s.server.dataDir, 'objects', ...lfsObjectKey(orphan).split('/'));
        await utimes(file, new Date('2020-01-01'), new Date('2020-01-01'));
      }
      const present = async () => ({
        dropped: (await published(s, gcRepo, 'old.bin')).length > 0 || (await hasContentCopy(s, sha256(dropped))),
        locked: (await published(s, gcRepo, 'locked.bin')).length > 0,
        kept: (await published(s, gcRepo, 'kept.bin')).length > 0,
        recent: await hasContentCopy(s, recent),
        orphan: await hasContentCopy(s, orphan),
      });
      assert.deepEqual(await present(), { dropped: true, locked: true, kept: true, recent: true, orphan: true });

      const dry = await s.server.cliOk(['lfs', 'gc', '--dry-run', ...s.storeArgs]);
      assert.match(dry, new RegExp(`would delete 1 objects, .* ${orphanOld ? 1 : 0} objects no repository links`));
      assert.deepEqual(await present(), { dropped: true, locked: true, kept: true, recent: true, orphan: true }, 'the dry run deleted nothing');

      const done = await s.server.cliOk(['lfs', 'gc', ...s.storeArgs]);
      assert.match(done, /deleted 1 objects/);
      assert.deepEqual(await present(), { dropped: false, locked: true, kept: true, recent: true, orphan: !orphanOld });
      assert.deepEqual(await versionsOf(s, key(gcRepo, 'old.bin')), [], "the dropped object's published version is gone");
      const clone = await checkout(s, gcRepo, 'main');
      assert.equal(await sha(clone, 'kept.bin'), sha256(kept));
    });
  });
}
