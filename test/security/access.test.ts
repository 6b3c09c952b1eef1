/**
 * Issue 9, "access that should have ended or never existed", each case as it was observed on
 * a server of main: a read-only member of an organization forked its private repository as
 * public; an LFS object uploaded later to a private source downloaded anonymously through a
 * public fork; a token made with a 1-hour token never expired, outranked it in lifetime and
 * survived its revocation; `99999999999d` answered 500 and `3000000d` made a token that was
 * expired at birth; an LFS transfer URL kept working after its token was revoked or expired.
 * The real server and CLI, for each metadata database.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, seed, Server } from '../e2e/harness.js';
import { basic, batch, batchOne, randomBytesSeeded, runAction, sha256, uploadObject } from '../e2e/lfs-fixture.js';

interface ApiAnswer {
  status: number;
  body: Record<string, unknown> & { error?: { code: string; message: string } };
}

for (const database of databaseBackends()) {
  describe(`access that should have ended or never existed, on ${database}`, () => {
    let server: Server;
    let tokens: Awaited<ReturnType<typeof seed>>;

    before(async () => {
      server = await Server.start({ database, args: ['--maintenance-enabled', 'false'] });
      tokens = await seed(server);
      await server.cliOk(['space', 'create', 'bob/forks']);
    });
    after(() => server?.cleanup());

    async function api(method: string, route: string, token: string | undefined, body?: unknown): Promise<ApiAnswer> {
      const res = await fetch(`${server.url}/api/v1${route}`, {
        method,
        headers: { ...(token && { authorization: basic(token) }), ...(body !== undefined && { 'content-type': 'application/json' }) },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, body: text ? (JSON.parse(text) as ApiAnswer['body']) : {} };
    }

    /** Creates a token with the CLI; returns its id and secret. */
    async function cliToken(user: string, scope: string, expires?: string): Promise<{ id: string; token: string; expiresAt: string | null }> {
      return JSON.parse(await server.cliOk(['token', 'create', user, '--scope', scope, ...(expires ? ['--expires', expires] : []), '--json']));
    }

    const upload = (repo: string, token: string, data: Buffer) => uploadObject(server, repo, token, data);

    function downloadBatch(repo: string, token: string | undefined, oid: string, size: number) {
      return batch(server, repo, token, { operation: 'download', transfers: ['basic'], objects: [{ oid, size }], hash_algo: 'sha256' });
    }

    test('a read-only member cannot fork a private repository, and a fork of a private repository is never public', async () => {
      await server.cliOk(['org', 'create', 'acme']);
      await server.cliOk(['org', 'add-member', 'acme', 'bob', '--role', 'read']);
      await server.cliOk(['org', 'add-member', 'acme', 'alice', '--role', 'admin']);
      await server.cliOk(['space', 'create', 'acme/games']);
      await server.cliOk(['repo', 'create', 'acme/games/engine', '--private']);

      // What was observed: bob (read) → 201, a public copy anyone could clone.
      const asReader = await api('POST', '/repos/acme/games/engine/forks', tokens.bob.write, { owner: 'bob', space: 'forks', visibility: 'public' });
      assert.equal(asReader.status, 403, JSON.stringify(asReader.body));
      assert.equal(asReader.body.error?.code, 'admin_denied');
      const asReaderPrivate = await api('POST', '/repos/acme/games/engine/forks', tokens.bob.write, { owner: 'bob', space: 'forks' });
      assert.equal(asReaderPrivate.status, 403, 'reading is not enough to copy a private repository elsewhere');

      // An administrator may fork it, privately only.
      await server.cliOk(['space', 'create', 'alice/forks']);
      const publicFork = await api('POST', '/repos/acme/games/engine/forks', tokens.alice.admin, { owner: 'alice', space: 'forks', visibility: 'public' });
      assert.equal(publicFork.status, 400, JSON.stringify(publicFork.body));
      assert.equal(publicFork.body.error?.code, 'private_fork_public');
      assert.match(publicFork.body.error!.message, /fork of the private repository acme\/games\/engine cannot be public/);
      const made = await api('POST', '/repos/acme/games/engine/forks', tokens.alice.admin, { owner: 'alice', space: 'forks' });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      assert.equal(made.body.visibility, 'private');
      assert.equal((await fetch(`${server.url}/alice/forks/engine.git/info/refs?service=git-upload-pack`)).status, 401);

      // Nor made public later, through the API or the CLI.
      const patched = await api('PATCH', '/repos/alice/forks/engine', tokens.alice.admin, { visibility: 'public' });
      assert.equal(patched.status, 400, JSON.stringify(patched.body));
      assert.equal(patched.body.error?.code, 'private_fork_public');
      const cli = await server.cli(['repo', 'fork', 'acme/games/engine', 'alice/forks/engine2', '--public']);
      assert.equal(cli.code, 2, cli.stderr);
      assert.match(cli.stderr, /cannot be public/);
    });

    test('an LFS object uploaded later to a private source does not download through a public fork, except for its readers', async () => {
      await server.cliOk(['repo', 'create', 'alice/main/assets']);
      await server.cliOk(['repo', 'fork', 'alice/main/assets', 'bob/forks/assets']);
      // The source goes private; the fork made while it was public stays public.
      const priv = await api('PATCH', '/repos/alice/main/assets', tokens.alice.admin, { visibility: 'private' });
      assert.equal(priv.status, 200, JSON.stringify(priv.body));
      const data = randomBytesSeeded(4096, 91);
      const oid = await upload('alice/main/assets', tokens.alice.write, data);

      // What was observed: anonymous got a download action through the fork.
      for (const [who, token] of [
        ['anonymous', undefined],
        ['bob', tokens.bob.write],
      ] as const) {
        const r = await downloadBatch('bob/forks/assets', token, oid, data.length);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.objects?.[0]?.error?.code, 404, `${who}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.objects?.[0]?.actions, undefined);
        const direct = await fetch(`${server.url}/bob/forks/assets.git/info/lfs/objects/${oid}`, { headers: token ? { authorization: basic(token) } : {} });
        assert.equal(direct.status, 404, `${who} downloads it straight`);
      }
      // Alice, who can read the source, still gets it through the fork.
      const alice = await downloadBatch('bob/forks/assets', tokens.alice.read, oid, data.length);
      const action = alice.body.objects?.[0]?.actions?.download;
      assert.ok(action, JSON.stringify(alice.body));
      const got = await runAction(action, { method: 'GET' });
      assert.equal(got.status, 200);
      assert.equal(sha256(Buffer.from(await got.arrayBuffer())), oid);
    });

    test('a token made with a token neither outlives nor out-scopes it, and is revoked with it', async () => {
      const parent = await cliToken('alice', 'write', '1h');
      assert.ok(parent.expiresAt);

      // What was observed: no expiry asked → `expiresAt: null`, a token that never ends.
      const child = await api('POST', '/users/alice/tokens', parent.token, { scope: 'read' });
      assert.equal(child.status, 201, JSON.stringify(child.body));
      assert.equal(child.body.expiresAt, parent.expiresAt);
      assert.equal(child.body.parentId, parent.id);
      const longer = await api('POST', '/users/alice/tokens', parent.token, { scope: 'read', expires: '30d' });
      assert.equal(longer.status, 201);
      assert.equal(longer.body.expiresAt, parent.expiresAt, 'capped at the parent’s expiry');
      const shorter = await api('POST', '/users/alice/tokens', parent.token, { scope: 'read', expires: '10m' });
      assert.ok(Date.parse(shorter.body.expiresAt as string) < Date.parse(parent.expiresAt!));
      const stronger = await api('POST', '/users/alice/tokens', parent.token, { scope: 'admin' });
      assert.equal(stronger.status, 403);
      assert.equal(stronger.body.error?.code, 'scope_exceeds_token');

      // A grandchild, made with the child.
      const grandchild = await api('POST', '/users/alice/tokens', child.body.token as string, { scope: 'read' });
      assert.equal(grandchild.status, 201, JSON.stringify(grandchild.body));
      for (const t of [child, longer, grandchild]) assert.equal((await api('GET', '/user', t.body.token as string)).status, 200);

      const revoked = await api('DELETE', `/tokens/${parent.id}`, tokens.alice.admin);
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
      for (const t of [child, longer, shorter, grandchild]) {
        const who = await api('GET', '/user', t.body.token as string);
        assert.equal(who.status, 401, `token ${t.body.id as string} outlived its parent`);
        assert.equal(who.body.error?.code, 'invalid_token');
      }
      const listed = await api('GET', '/users/alice/tokens', tokens.alice.admin);
      const row = (listed.body as unknown as { id: string; revokedAt: string | null }[]).find((t) => t.id === child.body.id);
      assert.ok(row?.revokedAt, 'listed as revoked');
      // Tokens made by the CLI (the operator) have no parent and stay.
      assert.equal((await api('GET', '/user', tokens.alice.admin)).status, 200);
    });

    test('huge token durations are refused with 400, not 500 or a token expired at birth', async () => {
      for (const expires of ['99999999999d', '3000000d', '3651d', '99999999999999999999']) {
        const r = await api('POST', '/users/alice/tokens', tokens.alice.admin, { scope: 'read', expires });
        assert.equal(r.status, 400, `${expires}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error?.code, 'duration_too_long');
        assert.match(r.body.error!.message, /at most 3650 days/);
      }
      const cli = await server.cli(['token', 'create', 'alice', '--scope', 'read', '--expires', '3000000d']);
      assert.equal(cli.code, 2, cli.stderr);
      assert.equal(cli.stderr, 'gitstratum: duration must be at most 3650 days\n');
      // The longest allowed still works.
      const max = await api('POST', '/users/alice/tokens', tokens.alice.admin, { scope: 'read', expires: '3650d' });
      assert.equal(max.status, 201);
      assert.equal((await api('GET', '/user', max.body.token as string)).status, 200);
    });

    test('an LFS transfer URL stops working when the token that obtained it is revoked or expires', async () => {
      await server.cliOk(['repo', 'create', 'alice/main/media', '--private']);
      const t = await cliToken('alice', 'write');
      const data = randomBytesSeeded(2048, 92);
      const oid = await upload('alice/main/media', t.token, data);
      const obj = await batchOne(server, 'alice/main/media', t.token, 'download', oid, data.length);
      const before = await runAction(obj.actions!.download!, { method: 'GET' });
      assert.equal(before.status, 200);
      await before.arrayBuffer();
      const up = await batchOne(server, 'alice/main/media', t.token, 'upload', sha256('other'), 5);

      await server.cliOk(['token', 'revoke', t.id]);
      // What was observed: 200 for up to the URL's lifetime.
      const after = await runAction(obj.actions!.download!, { method: 'GET' });
      assert.equal(after.status, 401, 'the revoked token’s download URL still works');
      assert.ok(after.headers.get('lfs-authenticate'));
      const put = await runAction(up.actions!.upload!, { method: 'PUT', body: 'other' });
      assert.equal(put.status, 401);

      // Expiry ends them too: a 2-second token, its URL tried once the token itself is refused.
      const short = await cliToken('alice', 'read', '2s');
      const got = await batchOne(server, 'alice/main/media', short.token, 'download', oid, data.length);
      for (const deadline = Date.now() + 30_000; (await api('GET', '/user', short.token)).status !== 401; await sleep(200)) {
        assert.ok(Date.now() < deadline, 'the 2-second token did not expire');
      }
      const late = await runAction(got.actions!.download!, { method: 'GET' });
      assert.equal(late.status, 401, 'the expired token’s download URL still works');

      // An anonymous download of a public repository has no token to end.
      await server.cliOk(['repo', 'create', 'alice/main/open']);
      const openOid = await upload('alice/main/open', tokens.alice.write, data);
      const anon = await downloadBatch('alice/main/open', undefined, openOid, data.length);
      const anonGet = await runAction(anon.body.objects![0]!.actions!.download!, { method: 'GET' });
      assert.equal(anonGet.status, 200);
      await anonGet.arrayBuffer();
    });
  });
}
