/**
 * Offboarding with the real clients (issue 9, item 6): a member removed from an organization
 * loses its private repository; a disabled user's token stops working for git, git-lfs and the
 * API at once, their LFS lock can be released, and enabling them restores everything; the
 * audit log shows each action; deleting a user who still owns repositories is refused.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, tempDir } from './harness.js';
import { lfsGit, randomBytesSeeded } from './lfs-fixture.js';

const REPO = 'acme/secret/app';

interface AuditJson {
  entries: { action: string; actor: string; target: string; details: Record<string, unknown> }[];
  nextCursor: string | null;
}

async function apiStatus(server: Server, token: string, route: string): Promise<{ status: number; code?: string }> {
  const res = await fetch(new URL(`/api/v1${route}`, server.url), { headers: { authorization: `Bearer ${token}` } });
  const body = (await res.json()) as { error?: { code: string } };
  return { status: res.status, ...(body.error && { code: body.error.code }) };
}

/** A batch download request as git-lfs sends it, with the token as Basic password. */
async function lfsBatchStatus(server: Server, token: string, oid: string, size: number): Promise<number> {
  const res = await fetch(new URL(`/${REPO}.git/info/lfs/objects/batch`, server.url), {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`git:${token}`).toString('base64')}`,
      accept: 'application/vnd.git-lfs+json',
      'content-type': 'application/vnd.git-lfs+json',
    },
    body: JSON.stringify({ operation: 'download', transfers: ['basic'], objects: [{ oid, size }] }),
  });
  await res.arrayBuffer();
  return res.status;
}

describe('offboarding with git and git-lfs', () => {
  let server: Server;
  const tokens = { root: '', carol: '', dave: '' };
  let carol: Git;
  let dave: Git;
  let daveDir: string;
  let oid: string;
  const url = (token: string) => server.repoUrl(`${REPO}.git`, token);
  const audit = async (args: string[]) => JSON.parse(await server.cliOk(['audit', 'list', ...args, '--json'])) as AuditJson;

  before(async () => {
    server = await Server.start();
    await server.createUser('root', { admin: true });
    for (const name of ['carol', 'dave']) await server.createUser(name);
    await server.createOrg('acme');
    await server.addMember('acme', 'carol', 'write');
    await server.addMember('acme', 'dave', 'write');
    await server.createSpace('acme/secret');
    await server.createRepo(REPO, { private: true });
    tokens.root = await server.token('root', 'admin');
    tokens.carol = await server.token('carol', 'write');
    tokens.dave = await server.token('dave', 'write');

    // dave pushes a commit with an LFS object and locks it.
    dave = await lfsGit();
    daveDir = path.join(await tempDir(), 'dave');
    await dave.ok(['init', '-q', '-b', 'main', daveDir]);
    await dave.ok(['lfs', 'track', '*.bin'], { cwd: daveDir });
    await writeFile(path.join(daveDir, 'model.bin'), randomBytesSeeded(4096, 9));
    await dave.ok(['add', '-A'], { cwd: daveDir });
    await dave.ok(['commit', '-q', '-m', 'model'], { cwd: daveDir });
    await dave.ok(['remote', 'add', 'origin', url(tokens.dave)], { cwd: daveDir });
    await dave.ok(['push', '-q', '-u', 'origin', 'main'], { cwd: daveDir });
    await dave.ok(['lfs', 'lock', 'model.bin'], { cwd: daveDir });
    oid = (await dave.ok(['lfs', 'ls-files', '--long'], { cwd: daveDir })).split(' ')[0]!;
    assert.match(oid, /^[0-9a-f]{64}$/);
    carol = await Git.create();
  });

  after(() => server?.cleanup());

  test('a member removed from the organization can no longer clone or push its private repository', async () => {
    const dir = path.join(await tempDir(), 'carol');
    await carol.ok(['clone', '-q', url(tokens.carol), dir]);
    assert.equal(await server.cliOk(['org', 'remove-member', 'acme', 'carol']), 'removed carol from acme\n');
    assert.deepEqual(JSON.parse(await server.cliOk(['org', 'members', 'acme', '--json'])), [{ user: 'dave', role: 'write' }]);
    assert.equal(await server.cliOk(['org', 'list']), 'acme\t1 member\n');

    const clone = await carol.run(['clone', '-q', url(tokens.carol), path.join(dir, '..', 'again')]);
    assert.notEqual(clone.code, 0);
    assert.match(clone.stderr, /repository not found|not found/i, clone.stderr);
    await writeFile(path.join(dir, 'notes.txt'), 'after leaving\n');
    await carol.ok(['add', 'notes.txt'], { cwd: dir });
    await carol.ok(['commit', '-q', '-m', 'too late'], { cwd: dir });
    const push = await carol.run(['-c', 'core.hooksPath=/dev/null', 'push', 'origin', 'main'], { cwd: dir });
    assert.notEqual(push.code, 0);
    assert.match(push.stderr, /not found/i, push.stderr);
  });

  test("a disabled user's token fails for git, git-lfs and the API at once; the lock is released", async () => {
    assert.equal(await lfsBatchStatus(server, tokens.dave, oid, 4096), 200);
    const out = await server.cliOk(['user', 'disable', 'dave', '--release-locks']);
    assert.match(out, /^disabled user dave;/);
    assert.match(out, /released lock \S+ on model\.bin in acme\/secret\/app/);

    const fetchRun = await dave.run(['fetch', 'origin'], { cwd: daveDir });
    assert.notEqual(fetchRun.code, 0);
    assert.match(fetchRun.stderr, /remote: user 'dave' is disabled/, fetchRun.stderr);
    assert.match(fetchRun.stderr, /Authentication failed/, fetchRun.stderr);

    await rm(path.join(daveDir, '.git', 'lfs', 'objects'), { recursive: true, force: true });
    const lfsRun = await dave.run(['lfs', 'fetch', 'origin', 'main'], { cwd: daveDir });
    assert.notEqual(lfsRun.code, 0, lfsRun.stdout + lfsRun.stderr);
    assert.match(lfsRun.stderr, /batch response: Authentication required: user 'dave' is disabled/, lfsRun.stderr);
    assert.equal(await lfsBatchStatus(server, tokens.dave, oid, 4096), 401);
    assert.deepEqual(await apiStatus(server, tokens.dave, '/user'), { status: 401, code: 'user_disabled' });

    const locks = await dave.run(['lfs', 'locks'], { cwd: daveDir });
    assert.notEqual(locks.code, 0, 'the lock API refuses the token too');
    assert.match(locks.stderr, /user 'dave' is disabled/, locks.stderr);
    const listed = await fetch(new URL(`/${REPO}.git/info/lfs/locks`, server.url), {
      headers: { authorization: `Bearer ${tokens.root}`, accept: 'application/vnd.git-lfs+json' },
    });
    assert.deepEqual(((await listed.json()) as { locks: unknown[] }).locks, [], 'the lock was released');
    assert.match(await server.cliOk(['user', 'list']), /^dave \(disabled \S+\)$/m);
  });

  test('enabling the user restores git, git-lfs and the API with the same token', async () => {
    assert.equal(await server.cliOk(['user', 'enable', 'dave']), 'enabled user dave\n');
    await dave.ok(['fetch', 'origin'], { cwd: daveDir });
    await dave.ok(['lfs', 'fetch', 'origin', 'main'], { cwd: daveDir });
    assert.equal((await dave.ok(['lfs', 'ls-files'], { cwd: daveDir })).trim().split(/\s+/)[1], '*', 'the object is downloaded again');
    assert.deepEqual(await apiStatus(server, tokens.dave, '/user'), { status: 200 });
  });

  test('audit list shows each action, filtered by actor, repository and time, as text and JSON', async () => {
    const log = await audit(['--actor', 'cli', '--since', '1h']);
    const actions = log.entries.map((e) => `${e.action} ${e.target}`);
    for (const expected of ['user.enable dave', 'user.disable dave', 'org.member.remove acme', 'repo.create acme/secret/app']) {
      assert.ok(actions.includes(expected), `${expected} missing from ${actions.join(', ')}`);
    }
    assert.ok(actions.indexOf('user.enable dave') < actions.indexOf('user.disable dave'), 'newest first');
    assert.deepEqual(log.entries.find((e) => e.action === 'user.disable')?.details, { release_locks: true, locks_released: 1 });

    const pushes = await audit(['--repo', REPO]);
    assert.deepEqual(pushes.entries.map((e) => `${e.action} ${e.actor}`), ['push dave', 'repo.create cli']);

    const text = await server.cliOk(['audit', 'list', '--actor', 'cli', '--limit', '2']);
    const lines = text.trim().split('\n');
    assert.equal(lines.length, 3, text);
    assert.match(lines[0]!, /^\S+Z\tcli\tuser\.enable\tdave$/);
    assert.match(lines[1]!, /^\S+Z\tcli\tuser\.disable\tdave\trelease_locks=true locks_released=1$/);
    const cursor = /^more: --before (\d+)$/.exec(lines[2]!)?.[1];
    assert.ok(cursor, text);
    const next = await audit(['--actor', 'cli', '--limit', '1', '--before', cursor]);
    assert.equal(next.entries[0]?.action, 'org.member.remove');

    const bad = await server.cli(['audit', 'list', '--since', 'last tuesday']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^gitstratum: since must be an ISO-8601 time/);
  });

  test('token names show in the listing, and expired tokens are marked', async () => {
    const made = await server.cliOk(['token', 'create', 'dave', '--scope', 'read', '--name', 'ci-deploy', '--expires', '1s']);
    const id = /^created read token (\S+) \(ci-deploy\) for dave, expires (\S+)$/m.exec(made);
    assert.ok(id, made);
    while (Date.now() <= Date.parse(id[2]!)) await sleep(100);
    const list = await server.cliOk(['token', 'list', 'dave']);
    assert.match(list, new RegExp(`^${id[1]}\\tread\\tEXPIRED \\S+\\tlast used never\\tci-deploy$`, 'm'));
    assert.match(list, /^\S+\twrite\tno expiry\tlast used \S+\t-$/m);
    const json = JSON.parse(await server.cliOk(['token', 'list', 'dave', '--json'])) as { id: string; name: string | null; expired: boolean }[];
    const listed = json.find((t) => t.id === id[1]);
    assert.deepEqual({ name: listed?.name, expired: listed?.expired }, { name: 'ci-deploy', expired: true });
  });

  test('deleting a user who owns repositories is refused, naming them; without them the user goes, the audit log keeps the name', async () => {
    await server.createSpace('carol/own');
    await server.createRepo('carol/own/tool');
    const refused = await server.cli(['user', 'delete', 'carol']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^gitstratum: user 'carol' owns a repository: carol\/own\/tool; move it to another owner \(repo rename\) or delete it first$/m);
    await server.cliOk(['repo', 'rename', 'carol/own/tool', 'acme/secret/tool']);
    assert.match(await server.cliOk(['user', 'delete', 'carol']), /^deleted user carol \(\S+\)/);
    const r = await carol.run(['ls-remote', url(tokens.carol)]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /invalid or revoked access token/, r.stderr);
    const log = await audit(['--actor', 'cli', '--limit', '1']);
    assert.deepEqual(
      log.entries.map((e) => [e.action, e.target]),
      [['user.delete', 'carol']],
    );
  });
});
