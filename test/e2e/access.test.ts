/**
 * Access control end to end, with the real git client: every kind of caller against a public
 * and a private repository, for fetch and push, on both metadata databases. Then the token
 * life cycle (revoked, expired) and organization roles.
 *
 * What the caller must see: a private repository is invisible (404, never 403) to a
 * signed-in user who cannot read it; anonymous callers are asked to authenticate (401 with
 * WWW-Authenticate); a caller who can read but not write gets 403 with the server's reason,
 * which git prints as `remote:` lines.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Git, Server, databaseBackends, seed, tempDir } from './harness.js';

type Caller = 'anonymous' | 'alice:read' | 'alice:write' | 'alice:admin' | 'bob:write' | 'root:admin';
type Op = 'fetch' | 'push';
type Visibility = 'public' | 'private';
type Expect = 'ok' | 401 | 403 | 404;

/** Alice owns both repositories; bob has no role; root is a site administrator. */
const MATRIX: Record<Caller, Record<`${Visibility} ${Op}`, Expect>> = {
  anonymous: { 'public fetch': 'ok', 'public push': 401, 'private fetch': 401, 'private push': 401 },
  'alice:read': { 'public fetch': 'ok', 'public push': 403, 'private fetch': 'ok', 'private push': 403 },
  'alice:write': { 'public fetch': 'ok', 'public push': 'ok', 'private fetch': 'ok', 'private push': 'ok' },
  'alice:admin': { 'public fetch': 'ok', 'public push': 'ok', 'private fetch': 'ok', 'private push': 'ok' },
  'bob:write': { 'public fetch': 'ok', 'public push': 403, 'private fetch': 404, 'private push': 404 },
  'root:admin': { 'public fetch': 'ok', 'public push': 'ok', 'private fetch': 'ok', 'private push': 'ok' },
};

const SERVICE: Record<Op, string> = { fetch: 'git-upload-pack', push: 'git-receive-pack' };

function basic(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Basic ${Buffer.from(`git:${token}`).toString('base64')}` } : {};
}

interface Fixture {
  server: Server;
  git: Git;
  /** A work tree with a few commits on main, pushed to new branches by the push checks. */
  work: string;
  secrets: Record<Caller, string | undefined>;
}

/** The ref advertisement's status, as a git client's first request sees it. */
async function infoRefs(fx: Fixture, repo: string, op: Op, token: string | undefined) {
  const res = await fetch(`${fx.server.url}/${repo}.git/info/refs?service=${SERVICE[op]}`, { headers: basic(token) });
  return { status: res.status, wwwAuthenticate: res.headers.get('www-authenticate'), body: await res.text() };
}

/** Runs `git ls-remote` (fetch) or pushes main to a new branch (push). */
async function gitOp(fx: Fixture, repo: string, op: Op, token: string | undefined, branch: string) {
  const url = fx.server.repoUrl(`${repo}.git`, token);
  return op === 'fetch'
    ? fx.git.run(['ls-remote', url])
    : fx.git.run(['push', '--porcelain', url, `main:refs/heads/${branch}`], { cwd: fx.work });
}

/** Checks both what HTTP says and what the git user sees. */
async function expectOutcome(fx: Fixture, repo: string, op: Op, token: string | undefined, expect: Expect, branch: string) {
  const http = await infoRefs(fx, repo, op, token);
  const r = await gitOp(fx, repo, op, token, branch);
  const context = `git ${op} of ${repo}: exit ${r.code}\n${r.stderr}`;
  if (expect === 'ok') {
    assert.equal(http.status, 200, `info/refs status\n${http.body}`);
    assert.equal(r.code, 0, context);
    return;
  }
  assert.equal(http.status, expect, `info/refs status, body: ${http.body}`);
  assert.notEqual(r.code, 0, context);
  switch (expect) {
    case 401:
      assert.match(http.wwwAuthenticate ?? '', /^Basic realm="gitstratum"/);
      if (token) assert.match(r.stderr, /Authentication failed/, context);
      else assert.match(r.stderr, /could not read Username.*terminal prompts disabled/, context);
      break;
    case 403:
      assert.match(http.body, /has read access to .*; write access is required/);
      assert.match(r.stderr, /403/, context);
      // git relays the server's text/plain reason as `remote:` lines.
      assert.ok(r.stderr.includes(`remote: ${http.body.trim()}`), context);
      break;
    case 404:
      assert.equal(http.body.trim(), `repository not found: ${repo}`);
      assert.match(r.stderr, /repository '.*' not found/, context);
      assert.ok(r.stderr.includes(`remote: repository not found: ${repo}`), context);
      break;
  }
}

async function createRepo(server: Server, repoPath: string, visibility: Visibility) {
  await server.createRepo(repoPath, { private: visibility === 'private' });
}

async function remoteBranches(fx: Fixture, repo: string): Promise<string[]> {
  const out = await fx.git.ok(['ls-remote', '--heads', fx.server.repoUrl(`${repo}.git`, fx.secrets['root:admin'])]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('\t')[1]!.replace('refs/heads/', ''))
    .sort();
}

// The backends run side by side: each has its own server and database.
describe('access control', { concurrency: true }, () => {
  for (const database of databaseBackends()) {
    describe(database, () => {
      let fx: Fixture;

      before(async () => {
        const server = await Server.start({ database });
        const tokens = await seed(server);
        const git = await Git.create();
        const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, files: 2 });
        fx = {
          server,
          git,
          work,
          secrets: {
            anonymous: undefined,
            'alice:read': tokens.alice.read,
            'alice:write': tokens.alice.write,
            'alice:admin': tokens.alice.admin,
            'bob:write': tokens.bob.write,
            'root:admin': tokens.root.admin,
          },
        };
      });
      after(() => fx?.server.cleanup());

      test('callers × visibility × fetch/push', { concurrency: 4 }, async (t) => {
        const repos: Record<Visibility, string> = { public: 'alice/main/matrix-public', private: 'alice/main/matrix-private' };
        await createRepo(fx.server, repos.public, 'public');
        await createRepo(fx.server, repos.private, 'private');
        const pushed: Record<Visibility, string[]> = { public: [], private: [] };
        const cases: Promise<unknown>[] = [];
        for (const [caller, row] of Object.entries(MATRIX) as [Caller, Record<string, Expect>][]) {
          for (const [key, expect] of Object.entries(row)) {
            const [visibility, op] = key.split(' ') as [Visibility, Op];
            const branch = `by-${caller.replace(':', '-')}`;
            if (op === 'push' && expect === 'ok') pushed[visibility].push(branch);
            cases.push(
              t.test(`${caller} ${op} ${visibility} → ${expect}`, () =>
                expectOutcome(fx, repos[visibility], op, fx.secrets[caller], expect, branch),
              ),
            );
          }
        }
        await Promise.all(cases);
        // A refused push changed nothing: exactly the allowed pushes created branches.
        for (const visibility of ['public', 'private'] as const) {
          assert.deepEqual(await remoteBranches(fx, repos[visibility]), pushed[visibility].sort());
        }
      });

      test('a revoked token is refused with 401', async () => {
        const repo = 'alice/main/revoked';
        await createRepo(fx.server, repo, 'private');
        const created = JSON.parse(await fx.server.cliOk(['token', 'create', 'alice', '--scope', 'write', '--json'])) as {
          id: string;
          token: string;
        };
        await expectOutcome(fx, repo, 'fetch', created.token, 'ok', 'unused');
        const revoked = await fx.server.cliOk(['token', 'revoke', created.id]);
        assert.match(revoked, new RegExp(`revoked token ${created.id} of alice`));
        await expectOutcome(fx, repo, 'fetch', created.token, 401, 'unused');
        await expectOutcome(fx, repo, 'push', created.token, 401, 'revoked');
        assert.match((await infoRefs(fx, repo, 'fetch', created.token)).body, /invalid or revoked access token/);
        // A bad token is never treated as anonymous, even on a public repository. (git itself
        // sends credentials only when challenged, so this is checked at the HTTP level.)
        const pub = 'alice/main/revoked-public';
        await createRepo(fx.server, pub, 'public');
        assert.equal((await infoRefs(fx, pub, 'fetch', created.token)).status, 401);
      });

      test('an expired token is refused with 401', async () => {
        const repo = 'alice/main/expired';
        const pub = 'alice/main/expired-public';
        await Promise.all([createRepo(fx.server, repo, 'private'), createRepo(fx.server, pub, 'public')]);
        const out = await fx.server.cliOk(['token', 'create', 'alice', '--scope', 'write', '--expires', '1s']);
        const secret = out.trim().split('\n').pop()!;
        assert.match(out, /expires \d{4}-\d\d-\d\dT/);
        await new Promise((r) => setTimeout(r, 1100));
        await expectOutcome(fx, repo, 'fetch', secret, 401, 'unused');
        await expectOutcome(fx, pub, 'push', secret, 401, 'expired');
        assert.match((await infoRefs(fx, repo, 'fetch', secret)).body, /access token expired/);
        assert.equal((await infoRefs(fx, pub, 'fetch', secret)).status, 401);
      });

      test('organization roles give a member exactly that access', async () => {
        const repo = 'acme/tools/widget';
        await fx.server.createOrg('acme');
        await fx.server.createSpace('acme/tools');
        await createRepo(fx.server, repo, 'private');
        const bob = fx.secrets['bob:write'];
        // Not a member: the private repository does not exist for bob, nor for alice.
        await expectOutcome(fx, repo, 'fetch', bob, 404, 'unused');
        await expectOutcome(fx, repo, 'fetch', fx.secrets['alice:admin'], 404, 'unused');

        assert.match(await fx.server.cliOk(['org', 'add-member', 'acme', 'bob', '--role', 'read']), /bob is now read in acme/);
        await expectOutcome(fx, repo, 'fetch', bob, 'ok', 'unused');
        await expectOutcome(fx, repo, 'push', bob, 403, 'bob-as-reader');

        await fx.server.addMember('acme', 'bob', 'write');
        await expectOutcome(fx, repo, 'push', bob, 'ok', 'bob-as-writer');
        // The token still caps the role: bob's read token cannot push as a writer.
        const bobRead = await fx.server.token('bob', 'read');
        await expectOutcome(fx, repo, 'push', bobRead, 403, 'bob-read-token');
        assert.deepEqual(await remoteBranches(fx, repo), ['bob-as-writer']);
      });
    });
  }
});
