/**
 * Size quotas and the total-refs cap (issue 9, items 3 and 4) with the real git and git-lfs
 * clients: a push or LFS upload over a repository's or owner's quota is refused with a message
 * naming the quota and the usage, and changes nothing; a push that would take a repository past
 * --max-refs is refused; usage shows in the API, `repo list` and the metrics. Every scenario
 * makes its own repositories (and owner, where the owner's quota matters).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Git, Server, tempDir } from './harness.js';
import { batch, batchOne, filesUnder, lfsGit, runAction, sha256 } from './lfs-fixture.js';

const MAX_REFS = 50;

let server: Server;
let git: Git;
let aliceToken: string;
let rootToken: string;

before(async () => {
  // Maintenance off: its repack would change the measured sizes under the assertions.
  server = await Server.start({ args: ['--max-refs', String(MAX_REFS), '--maintenance-enabled', 'false'] });
  await server.createUser('alice');
  await server.createUser('root', { admin: true });
  await server.createSpace('alice/main');
  aliceToken = await server.token('alice', 'write');
  rootToken = await server.token('root', 'admin');
  git = await lfsGit();
});

after(() => server.cleanup());

async function createRepo(repoPath: string): Promise<string> {
  await server.createRepo(repoPath, { private: true });
  return server.repoUrl(`${repoPath}.git`, aliceToken);
}

/** A work tree whose next commit adds `bytes` of incompressible data in `name`. */
async function commitRandom(dir: string, name: string, bytes: number): Promise<void> {
  await writeFile(path.join(dir, name), randomBytes(bytes));
  await git.ok(['add', '-A'], { cwd: dir });
  await git.ok(['commit', '-q', '-m', `add ${name}`], { cwd: dir });
}

async function remoteRefs(url: string): Promise<string> {
  return git.ok(['ls-remote', url]);
}

async function apiJson(method: string, route: string, token: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(new URL(`/api/v1${route}`, server.url), {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    body: body === undefined ? null : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

test('a push over the repository quota is refused with the quota and usage, and changes nothing; one bringing no objects still lands', async () => {
  const url = await createRepo('alice/main/quota-repo');
  await server.cliOk(['repo', 'quota', 'alice/main/quota-repo', '200KiB']);
  const dir = await git.workTree(path.join(await tempDir(), 'w'), { commits: 1 });
  await commitRandom(dir, 'first.bin', 100 * 1024);
  await git.ok(['push', '-q', url, 'main'], { cwd: dir });
  const before = await remoteRefs(url);

  await commitRandom(dir, 'second.bin', 150 * 1024);
  const refused = await git.run(['push', url, 'main'], { cwd: dir });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /remote: gitstratum: push refused: repository quota exceeded: alice\/main\/quota-repo uses [\d.]+ KiB of its 200\.0 KiB quota/);
  assert.match(refused.stderr, /this push adds [\d.]+ KiB/);
  assert.equal(await remoteRefs(url), before, 'no ref moved');

  // A new branch at a commit the repository has brings no objects: cleaning up stays possible.
  await git.ok(['push', '-q', url, 'HEAD~1:refs/heads/kept'], { cwd: dir });
  await git.ok(['push', '-q', url, ':refs/heads/kept'], { cwd: dir });

  const repo = await apiJson('GET', '/repos/alice/main/quota-repo', rootToken);
  assert.equal(repo.status, 200);
  assert.equal(repo.body.usage.quotaBytes, 200 * 1024);
  assert.equal(repo.body.usage.quotaSource, 'set');
  assert.ok(repo.body.usage.gitBytes >= 100 * 1024, `git bytes measured after the push: ${repo.body.usage.gitBytes}`);
  assert.ok(repo.body.usage.gitBytes < 200 * 1024, 'the refused push left nothing counted');

  const list = await server.cliOk(['repo', 'list', 'alice/main']);
  assert.match(list, /alice\/main\/quota-repo\t.*KiB used of a 200\.0 KiB quota/);
  const metrics = await (await fetch(new URL('/metrics', server.url))).text();
  assert.match(metrics, /gitstratum_repository_usage_bytes\{repository="alice\/main\/quota-repo",kind="git"\} \d+/);
  assert.match(metrics, /gitstratum_repository_quota_bytes\{repository="alice\/main\/quota-repo"\} 204800/);

  // Raised (to no limit), the same push lands.
  await server.cliOk(['repo', 'quota', 'alice/main/quota-repo', 'none']);
  await git.ok(['push', '-q', url, 'main'], { cwd: dir });
});

test("a push over the owner's quota is refused, counting all of the owner's repositories", async () => {
  await server.createUser('carol');
  await server.createSpace('carol/main');
  const carol = await server.token('carol', 'write');
  await server.createRepo('carol/main/one', { private: true });
  await server.createRepo('carol/main/two', { private: true });
  const set = await apiJson('PUT', '/owners/carol/quota', rootToken, { bytes: 150 * 1024 });
  assert.equal(set.status, 200, JSON.stringify(set.body));
  assert.equal(set.body.quotaBytes, 150 * 1024);

  const one = await git.workTree(path.join(await tempDir(), 'one'), { commits: 1 });
  await commitRandom(one, 'a.bin', 100 * 1024);
  await git.ok(['push', '-q', server.repoUrl('carol/main/one.git', carol), 'main'], { cwd: one });

  const two = await git.workTree(path.join(await tempDir(), 'two'), { commits: 1, seed: 2 });
  await commitRandom(two, 'b.bin', 100 * 1024);
  const url = server.repoUrl('carol/main/two.git', carol);
  const refused = await git.run(['push', url, 'main'], { cwd: two });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /remote: gitstratum: push refused: owner quota exceeded: the repositories of carol use [\d.]+ KiB of its 150\.0 KiB quota/);
  assert.equal(await git.ok(['ls-remote', url]), '');

  const usage = await apiJson('GET', '/owners/carol/quota', rootToken);
  assert.ok(usage.body.gitBytes >= 100 * 1024 && usage.body.gitBytes < 200 * 1024, JSON.stringify(usage.body));
  const denied = await apiJson('PUT', '/owners/carol/quota', carol, { bytes: 0 });
  assert.equal(denied.status, 403);
  assert.equal(denied.body.error.code, 'admin_required');
});

test(`a push that would take a repository past ${MAX_REFS} refs is refused and creates none`, async () => {
  const url = await createRepo('alice/main/many-refs');
  const dir = await git.workTree(path.join(await tempDir(), 'w'), { commits: 1 });
  const lines = Array.from({ length: MAX_REFS + 5 }, (_, i) => `create refs/heads/b${i} HEAD`).join('\n');
  await git.ok(['update-ref', '--stdin'], { cwd: dir, input: `${lines}\n` });
  const refused = await git.run(['push', url, 'refs/heads/*:refs/heads/*'], { cwd: dir });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, new RegExp(`remote: gitstratum: push refused: the repository would have ${MAX_REFS + 6} refs; at most ${MAX_REFS} are allowed \\(maxRefs\\)`));
  assert.equal(await remoteRefs(url), '');

  // Up to the cap is fine.
  await git.ok(['push', '-q', url, ...Array.from({ length: MAX_REFS }, (_, i) => `refs/heads/b${i}`)], { cwd: dir });
  assert.equal((await remoteRefs(url)).trim().split('\n').length, MAX_REFS);
});

test('an LFS upload over the repository quota is refused with the message git-lfs prints, and stores nothing', async () => {
  const url = await createRepo('alice/main/lfs-quota');
  await server.cliOk(['repo', 'quota', 'alice/main/lfs-quota', '100KiB']);
  const dir = path.join(await tempDir(), 'w');
  await git.ok(['init', '-q', '-b', 'main', dir]);
  await git.ok(['lfs', 'track', '*.bin'], { cwd: dir });
  const content = randomBytes(300 * 1024);
  await writeFile(path.join(dir, 'big.bin'), content);
  await git.ok(['add', '-A'], { cwd: dir });
  await git.ok(['commit', '-q', '-m', 'big LFS file'], { cwd: dir });
  const refused = await git.run(['push', url, 'main'], { cwd: dir });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /batch response: repository quota exceeded: alice\/main\/lfs-quota uses 0 B of its 100\.0 KiB quota .*this upload adds 300\.0 KiB/);
  assert.equal(await remoteRefs(url), '');

  // The batch API says the same, with the status the LFS API gives for "insufficient storage".
  const answer = await batch(server, 'alice/main/lfs-quota', aliceToken, { operation: 'upload', objects: [{ oid: sha256(content), size: content.length }] });
  assert.equal(answer.status, 507);
  assert.match(String(answer.body.message), /repository quota exceeded/);
  const repo = await apiJson('GET', '/repos/alice/main/lfs-quota', rootToken);
  assert.equal(repo.body.usage.lfsBytes, 0);
  const stored = await filesUnder(path.join(server.dataDir, 'objects'));
  assert.ok(!stored.some((f) => path.basename(f) === sha256(content)), 'the object was not stored');
});

test('an LFS PUT authorized before the quota was lowered is refused (507) and links nothing', async () => {
  await createRepo('alice/main/lfs-put');
  const content = randomBytes(64 * 1024);
  const obj = await batchOne(server, 'alice/main/lfs-put', aliceToken, 'upload', sha256(content), content.length);
  assert.ok(obj.actions?.upload, 'an upload action while no quota applies');
  await server.cliOk(['repo', 'quota', 'alice/main/lfs-put', '10KiB']);
  const res = await runAction(obj.actions.upload, { method: 'PUT', body: content, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(res.status, 507);
  assert.match(String(((await res.json()) as { message: string }).message), /repository quota exceeded: alice\/main\/lfs-put uses 0 B of its 10\.0 KiB quota .*this upload adds 64\.0 KiB/);
  const repo = await apiJson('GET', '/repos/alice/main/lfs-put', rootToken);
  assert.equal(repo.body.usage.lfsBytes, 0);
});
