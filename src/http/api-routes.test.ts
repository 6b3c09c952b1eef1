/**
 * The REST API as its users meet it: the real server, fetch(), and the real git client for
 * the repositories the API creates. One server per database backend; each sub-test makes its
 * own users, repositories and tokens, so one failing does not break the others.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { Git, Server, databaseBackends, gitEnv, seed, tempDir } from '../../test/e2e/harness.js';

const execFileP = promisify(execFile);

/**
 * Runs git with the harness's isolated environment. Not `Git.ok`: the harness's `run` ends the
 * child's stdin without an error listener, so a git that exits before the write lands fails
 * the test with EPIPE (about one run in four for quick commands). Switch back once it does.
 */
async function git(g: Git, args: string[], cwd?: string): Promise<string> {
  const { stdout } = await execFileP('git', args, { cwd, env: gitEnv(g.home) });
  return stdout;
}

interface Answer {
  status: number;
  headers: Headers;
  /** Parsed JSON of whatever shape the endpoint returns; the assertions check it. */
  body: any;
}

function client(server: Server) {
  return async (method: string, route: string, opts: { token?: string; body?: unknown; raw?: string } = {}): Promise<Answer> => {
    const headers: Record<string, string> = {};
    if (opts.token) headers['authorization'] = `Bearer ${opts.token}`;
    const payload = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(new URL(`/api/v1${route}`, server.url), { method, headers, body: payload ?? null });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
  };
}

function assertError(res: Answer, status: number, code: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(res.body.error.code, code);
  assert.equal(typeof res.body.error.message, 'string');
}

for (const database of databaseBackends()) {
  test(`REST API (${database})`, async (t) => {
    const server = await Server.start({ database });
    t.after(() => server.cleanup());
    const tokens = await seed(server);
    const api = client(server);
    const root = tokens.root.admin;

    await t.test('an admin creates a user, org, space and repository; a member pushes and anyone clones it', async () => {
      const user = await api('POST', '/users', { token: root, body: { name: 'carol' } });
      assert.equal(user.status, 201, JSON.stringify(user.body));
      assert.deepEqual({ name: user.body.name, isAdmin: user.body.isAdmin }, { name: 'carol', isAdmin: false });
      const users = await api('GET', '/users', { token: root });
      assert.ok(users.body.some((u: { name: string }) => u.name === 'carol'));

      assert.equal((await api('POST', '/orgs', { token: root, body: { name: 'acme' } })).status, 201);
      const member = await api('PUT', '/orgs/acme/members/carol', { token: root, body: { role: 'write' } });
      assert.deepEqual(member.body, { org: 'acme', user: 'carol', role: 'write' });
      const members = await api('GET', '/orgs/acme/members', { token: root });
      assert.deepEqual(members.body, [
        { user: 'carol', role: 'write' },
        { user: 'root', role: 'admin' },
      ]);

      assert.equal((await api('POST', '/spaces', { token: root, body: { owner: 'acme', name: 'tools' } })).status, 201);
      const spaces = await api('GET', '/spaces?owner=acme', { token: root });
      assert.deepEqual(spaces.body.map((s: { owner: string; name: string }) => `${s.owner}/${s.name}`), ['acme/tools']);

      const repo = await api('POST', '/repos', { token: root, body: { owner: 'acme', space: 'tools', name: 'widget' } });
      assert.equal(repo.status, 201, JSON.stringify(repo.body));
      assert.equal(repo.body.fullName, 'acme/tools/widget');
      assert.equal(repo.body.visibility, 'public');
      assert.equal(repo.body.cloneUrl, `${server.url}/acme/tools/widget.git`);
      assert.equal(repo.body.path, undefined, 'the disk path stays inside the server');

      const token = await api('POST', '/users/carol/tokens', { token: root, body: { scope: 'write' } });
      assert.equal(token.status, 201, JSON.stringify(token.body));

      const g = await Git.create();
      const work = path.join(await tempDir(), 'work');
      await git(g, ['init', '-q', '-b', 'main', work]);
      await writeFile(path.join(work, 'README'), 'widget\n');
      await git(g, ['add', 'README'], work);
      await git(g, ['commit', '-q', '-m', 'first'], work);
      await git(g, ['push', '-q', server.repoUrl('acme/tools/widget.git', token.body.token), 'main'], work);
      const clone = path.join(await tempDir(), 'clone');
      await git(g, ['clone', '-q', repo.body.cloneUrl, clone]);
      assert.equal(await git(g, ['rev-parse', 'HEAD'], clone), await git(g, ['rev-parse', 'HEAD'], work));
    });

    await t.test('a user who is not a site administrator cannot create users', async () => {
      assertError(await api('POST', '/users', { token: tokens.alice.admin, body: { name: 'mallory' } }), 403, 'admin_required');
      assertError(await api('GET', '/users', { token: tokens.bob.write }), 403, 'admin_required');
    });

    await t.test('anonymous writes are asked to authenticate', async () => {
      const res = await api('POST', '/repos', { body: { owner: 'alice', space: 'main', name: 'anonymous' } });
      assertError(res, 401, 'auth_required');
      assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="gitstratum"/);
      assertError(await api('GET', '/user'), 401, 'auth_required');
      assertError(await api('GET', '/spaces'), 401, 'auth_required');
      assertError(await api('GET', '/user', { token: 'gst_not-a-token' }), 401, 'invalid_token');
    });

    await t.test('a private repository is visible to its owner and hidden from others', async () => {
      const created = await api('POST', '/repos', {
        token: tokens.alice.write,
        body: { owner: 'alice', space: 'main', name: 'secret', visibility: 'private' },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const mine = await api('GET', '/repos/alice/main/secret', { token: tokens.alice.read });
      assert.equal(mine.status, 200);
      assert.equal(mine.body.visibility, 'private');
      assertError(await api('GET', '/repos/alice/main/secret', { token: tokens.bob.write }), 404, 'repo_not_found');
      assertError(await api('GET', '/repos/alice/main/secret'), 401, 'auth_required');

      const names = async (token?: string) =>
        (await api('GET', '/repos?owner=alice', token ? { token } : {})).body.map((r: { name: string }) => r.name);
      assert.ok((await names(tokens.alice.read)).includes('secret'));
      assert.ok(!(await names(tokens.bob.write)).includes('secret'));
      assert.ok(!(await names()).includes('secret'));
    });

    await t.test('rename and move keep the repository; the old name is gone', async () => {
      const created = await api('POST', '/repos', { token: tokens.alice.write, body: { owner: 'alice', space: 'main', name: 'before' } });
      assert.equal(created.status, 201);
      const renamed = await api('PATCH', '/repos/alice/main/before', { token: tokens.alice.admin, body: { name: 'after' } });
      assert.equal(renamed.status, 200, JSON.stringify(renamed.body));
      assert.equal(renamed.body.fullName, 'alice/main/after');
      assert.equal((await api('GET', '/repos/alice/main/after', { token: tokens.alice.read })).body.id, created.body.id);
      assertError(await api('GET', '/repos/alice/main/before', { token: tokens.alice.read }), 404, 'repo_not_found');

      assert.equal((await api('POST', '/spaces', { token: tokens.alice.admin, body: { owner: 'alice', name: 'archive' } })).status, 201);
      const moved = await api('PATCH', '/repos/alice/main/after', { token: tokens.alice.admin, body: { path: 'alice/archive/after' } });
      assert.equal(moved.body.fullName, 'alice/archive/after');
      assert.equal(moved.body.id, created.body.id);

      const settings = await api('PATCH', '/repos/alice/archive/after', {
        token: tokens.alice.admin,
        body: { visibility: 'private', tags: ['ml', 'data'] },
      });
      assert.equal(settings.status, 200, JSON.stringify(settings.body));
      assert.deepEqual([settings.body.visibility, settings.body.tags], ['private', ['ml', 'data']]);

      assertError(
        await api('PATCH', '/repos/alice/archive/after', { token: tokens.alice.admin, body: { name: 'x', visibility: 'public' } }),
        400,
        'invalid_request',
      );
      assertError(await api('PATCH', '/repos/alice/archive/after', { token: tokens.alice.write, body: { name: 'x' } }), 403, 'admin_denied');

      const deleted = await api('DELETE', '/repos/alice/archive/after', { token: tokens.alice.admin });
      assert.equal(deleted.status, 204);
      assertError(await api('GET', '/repos/alice/archive/after', { token: tokens.alice.read }), 404, 'repo_not_found');
    });

    await t.test('a new token is shown once, authenticates, and stops working when revoked', async () => {
      const created = await api('POST', '/users/alice/tokens', { token: tokens.alice.admin, body: { scope: 'read', expires: '1d' } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.match(created.body.token, /^gst_/);
      assert.ok(created.body.expiresAt);

      const me = await api('GET', '/user', { token: created.body.token });
      assert.deepEqual([me.body.name, me.body.scope, me.body.tokenId], ['alice', 'read', created.body.id]);

      const list = await api('GET', '/users/alice/tokens', { token: tokens.alice.admin });
      const listed = list.body.find((tk: { id: string }) => tk.id === created.body.id);
      assert.ok(listed);
      assert.equal(listed.token, undefined, 'secrets are never listed');

      assertError(await api('POST', '/users/alice/tokens', { token: created.body.token, body: { scope: 'write' } }), 403, 'scope_exceeds_token');
      assertError(await api('POST', '/users/alice/tokens', { token: tokens.bob.write, body: { scope: 'read' } }), 403, 'admin_required');

      const revoked = await api('DELETE', `/tokens/${created.body.id}`, { token: tokens.alice.admin });
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
      assert.ok(revoked.body.revokedAt);
      assertError(await api('GET', '/user', { token: created.body.token }), 401, 'invalid_token');
    });

    await t.test('an invalid request gets 400 with a code and changes nothing', async () => {
      const token = tokens.alice.write;
      assertError(await api('POST', '/repos', { token, body: { owner: 'alice' } }), 400, 'invalid_request');
      assertError(await api('POST', '/repos', { token, body: { owner: 'alice', space: 'main', name: 'typo', visiblity: 'private' } }), 400, 'invalid_request');
      assertError(await api('POST', '/repos', { token, body: { owner: 'alice', space: 'main', name: 'typo', visibility: 'secret' } }), 400, 'invalid_request');
      assertError(await api('POST', '/repos', { token, raw: '{"owner":' }), 400, 'invalid_request');
      assertError(await api('POST', '/repos', { token, body: { owner: 'alice', space: 'main', name: 'info' } }), 400, 'reserved_name');
      assertError(await api('POST', '/users/alice/tokens', { token: tokens.alice.admin, body: { scope: 'read', expires: 'soon' } }), 400, 'invalid_duration');
      assertError(await api('GET', '/no-such-endpoint', { token }), 404, 'route_not_found');
      assertError(await api('GET', '/repos/alice/main/typo', { token }), 404, 'repo_not_found');
    });

    await t.test('size quotas: usage in the repository JSON, set by a site admin only, validated', async () => {
      assert.equal((await api('POST', '/repos', { token: root, body: { owner: 'alice', space: 'main', name: 'sized' } })).status, 201);
      const before = await api('GET', '/repos/alice/main/sized', { token: root });
      assert.deepEqual(before.body.usage, { gitBytes: 0, lfsBytes: 0, usedBytes: 0, quotaBytes: null, quotaSource: 'default' });
      const set = await api('PUT', '/repos/alice/main/sized/quota', { token: root, body: { bytes: 1048576 } });
      assert.equal(set.status, 200, JSON.stringify(set.body));
      assert.deepEqual([set.body.quotaBytes, set.body.quotaSource], [1048576, 'set']);
      const listed = await api('GET', '/repos?owner=alice', { token: root });
      assert.equal(listed.body.find((r: { name: string }) => r.name === 'sized').usage.quotaBytes, 1048576);
      assertError(await api('PUT', '/repos/alice/main/sized/quota', { token: tokens.alice.admin, body: { bytes: 0 } }), 403, 'admin_required');
      assertError(await api('PUT', '/repos/alice/main/sized/quota', { token: root, body: { bytes: -1 } }), 400, 'invalid_request');
      assertError(await api('PUT', '/owners/nobody/quota', { token: root, body: { bytes: 0 } }), 404, 'owner_not_found');
      const reset = await api('PUT', '/repos/alice/main/sized/quota', { token: root, body: { bytes: null } });
      assert.deepEqual([reset.body.quotaBytes, reset.body.quotaSource], [null, 'default']);
    });

    await t.test('the OpenAPI document describes every endpoint', async () => {
      const doc = await api('GET', '/openapi.json');
      assert.equal(doc.status, 200);
      assert.match(doc.body.openapi, /^3\./);
      assert.deepEqual(Object.keys(doc.body.paths).sort(), [
        '/api/v1/audit',
        '/api/v1/events',
        '/api/v1/hooks',
        '/api/v1/hooks/{id}',
        '/api/v1/hooks/{id}/deliveries',
        '/api/v1/hooks/{id}/deliveries/{delivery}',
        '/api/v1/hooks/{id}/deliveries/{delivery}/redeliver',
        '/api/v1/hooks/{id}/tests',
        '/api/v1/orgs',
        '/api/v1/orgs/{org}/members',
        '/api/v1/orgs/{org}/members/{user}',
        '/api/v1/owners/{owner}/quota',
        '/api/v1/repos',
        '/api/v1/repos/{owner}/{space}/{repo}',
        '/api/v1/repos/{owner}/{space}/{repo}/forks',
        '/api/v1/repos/{owner}/{space}/{repo}/lfs/publish-jobs',
        '/api/v1/repos/{owner}/{space}/{repo}/lfs/published',
        '/api/v1/repos/{owner}/{space}/{repo}/protections',
        '/api/v1/repos/{owner}/{space}/{repo}/quota',
        '/api/v1/spaces',
        '/api/v1/tokens/{id}',
        '/api/v1/user',
        '/api/v1/users',
        '/api/v1/users/{user}',
        '/api/v1/users/{user}/disable',
        '/api/v1/users/{user}/enable',
        '/api/v1/users/{user}/keys',
        '/api/v1/users/{user}/keys/{id}',
        '/api/v1/users/{user}/locks',
        '/api/v1/users/{user}/tokens',
      ]);
      assert.deepEqual(Object.keys(doc.body.paths['/api/v1/repos/{owner}/{space}/{repo}']).sort(), ['delete', 'get', 'patch']);
      assert.deepEqual(Object.keys(doc.body.paths['/api/v1/repos/{owner}/{space}/{repo}/forks']), ['post']);
      assert.ok(doc.body.components.schemas.Repo);
      assert.ok(doc.body.components.schemas.Usage);
      assert.deepEqual(Object.keys(doc.body.paths['/api/v1/repos/{owner}/{space}/{repo}/protections']).sort(), ['delete', 'get', 'put']);
      assert.ok(doc.body.components.schemas.Protection);
      assert.deepEqual(Object.keys(doc.body.paths['/api/v1/owners/{owner}/quota']).sort(), ['get', 'put']);
      assert.ok(doc.body.components.securitySchemes.bearer);
    });
  });
}
