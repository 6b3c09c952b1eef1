/**
 * Bad input end to end: unknown repositories, unsafe names, malformed protocol bodies, wrong
 * headers. Each must get a clear error in the client's own terms and change nothing: no row,
 * no directory, no git process left behind.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Git, Server, seed, tempDir } from './harness.js';

type Tokens = Awaited<ReturnType<typeof seed>>;

/** One pkt-line: a 4-digit hex length that counts itself, then the payload. */
function pkt(payload: string): string {
  return (Buffer.byteLength(payload) + 4).toString(16).padStart(4, '0') + payload;
}

function basic(token: string): string {
  return `Basic ${Buffer.from(`git:${token}`).toString('base64')}`;
}

/** A metric's value from the Prometheus text format (first sample whose line starts so). */
async function metric(server: Server, prefix: string): Promise<number | undefined> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(prefix + ' ') || l.startsWith(prefix + '{'));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Names of the server's child processes, from /proc (Linux). */
async function childCommands(pid: number): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
    const close = stat.lastIndexOf(')');
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (ppid === pid) found.push(stat.slice(stat.indexOf('(') + 1, close));
  }
  return found;
}

/** The server answers, has no git process running and no git child left. */
async function assertIdle(server: Server): Promise<void> {
  assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  assert.equal(await metric(server, 'gitstratum_git_processes_running'), 0);
  assert.deepEqual((await childCommands(server.process.pid!)).filter((c) => c.startsWith('git')), []);
}

describe('bad input', () => {
  let server: Server;
  let tokens: Tokens;
  let git: Git;
  const repo = 'alice/main/target';

  before(async () => {
    // Maintenance after the fixture's push would start a git child of the server a few seconds
    // later, which assertIdle would take for one left behind by bad input.
    server = await Server.start({ args: ['--maintenance-enabled', 'false'] });
    tokens = await seed(server);
    git = await Git.create();
    await server.createRepo(repo);
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, files: 1 });
    await git.ok(['push', server.repoUrl(`${repo}.git`, tokens.alice.write), 'main'], { cwd: work });
  });
  after(() => server?.cleanup());

  test('an unknown owner, space or repository is a 404 that git prints', async () => {
    for (const missing of ['nobody/main/target', 'alice/nospace/target', 'alice/main/nothere']) {
      const res = await fetch(`${server.url}/${missing}.git/info/refs?service=git-upload-pack`);
      assert.equal(res.status, 404);
      assert.equal(await res.text(), `repository not found: ${missing}\n`);
      const r = await git.run(['ls-remote', server.repoUrl(`${missing}.git`, tokens.alice.admin)]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`remote: repository not found: ${missing}\\n`));
      assert.match(r.stderr, /fatal: repository '.*' not found/);
    }
  });

  test('a name outside the safe set in a URL is a 400 that git prints', async () => {
    for (const [bad, message] of [
      ['alice/main/a..b', /must not contain '\.\.'/],
      ['alice/main/x.lock', /must not contain '\.\.' nor end in \.lock/],
      ['alice/main/-x', /must be 1-100 characters/],
    ] as const) {
      const r = await git.run(['ls-remote', server.repoUrl(`${bad}.git`)]);
      assert.notEqual(r.code, 0, bad);
      assert.match(r.stderr, /400/, r.stderr);
      assert.match(r.stderr, new RegExp(`remote: repository name ${message.source}`), r.stderr);
    }
  });

  test('the CLI refuses unsafe and reserved names with exit code 2 and creates nothing', async () => {
    const before = await state();
    const cases: [string[], RegExp][] = [
      [['user', 'create', 'bad name'], /owner name must be 1-100 characters/],
      [['user', 'create', 'api'], /owner name 'api' is reserved/],
      [['org', 'create', '..'], /owner name must be/],
      [['space', 'create', 'alice/..'], /space name must be/],
      [['space', 'create', 'alice/héllo'], /space name must be/],
      [['space', 'create', 'alice'], /space path must be OWNER\/SPACE/],
      [['repo', 'create', 'alice/main/..'], /repository name must be/],
      [['repo', 'create', '../../x'], /owner name must be/],
      [['repo', 'create', 'alice/main/a..b'], /must not contain '\.\.'/],
      [['repo', 'create', 'alice/main/x.git.git'], /nor end in \.lock or \.git/],
      [['repo', 'create', 'alice/main/objects'], /repository name 'objects' is reserved/],
      [['repo', 'create', 'alice/main/a/b'], /repository path must be OWNER\/SPACE\/REPO/],
      [['repo', 'rename', repo, 'a..b'], /must not contain '\.\.'/],
      [['repo', 'rename', repo, 'alice/../x'], /space name must be/],
      [['token', 'create', 'alice', '--scope', 'read', '--expires', '1x'], /duration must look like 30d/],
    ];
    const results = await Promise.all(cases.map(([args]) => server.cli(args)));
    results.forEach((r, i) => {
      const [args, message] = cases[i]!;
      const what = `gitstratum ${args.join(' ')}: exit ${r.code}\n${r.stderr}`;
      assert.equal(r.code, 2, what);
      assert.match(r.stderr, /^gitstratum: /, what);
      assert.match(r.stderr, message, what);
      assert.equal(r.stdout, '', what);
    });
    assert.deepEqual(await state(), before);
  });

  test('a usage error of the CLI exits with code 2 too', async () => {
    const r = await server.cli(['user', 'create', '--no-such-flag', 'carol']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /unknown option '--no-such-flag'/);
  });

  /** What exists: rows (through the REST API, as root) and directories on disk. */
  async function state() {
    const get = async (what: string) => {
      const res = await fetch(`${server.url}/api/v1/${what}`, { headers: { authorization: basic(tokens.root.admin) } });
      assert.equal(res.status, 200, what);
      return res.json();
    };
    const [users, spaces, repos] = await Promise.all(['users', 'spaces', 'repos'].map(get));
    const root = path.join(server.dataDir, 'repos');
    const dirs: string[] = [];
    for (const shard of await readdir(root)) dirs.push(...(await readdir(path.join(root, shard))).map((d) => `${shard}/${d}`));
    const tmp = await readdir(path.join(server.dataDir, 'tmp')).catch(() => []);
    return { users, spaces, repos, dirs: dirs.sort(), tmp };
  }

  const malformed: [service: 'upload-pack' | 'receive-pack', body: string, message: RegExp][] = [
    ['upload-pack', 'zzzz', /malformed pkt-line length/],
    ['upload-pack', '0003', /pkt-line length out of range/],
    ['upload-pack', 'fff1' + 'x'.repeat(100), /pkt-line length out of range/],
    ['upload-pack', '0032want ', /request body ends inside a pkt-line/],
    ['upload-pack', '00', /request body ends inside a pkt-line/],
    ['receive-pack', 'zzzz', /malformed pkt-line length/],
    ['receive-pack', '0008abc', /request body ends inside a pkt-line/],
    ['receive-pack', '0001', /unexpected special packet in a push/],
    ['receive-pack', '0011not a command0000', /malformed ref update command/],
    ['receive-pack', pkt(`${'0'.repeat(40)} ${'1'.repeat(40)} HEAD\0report-status\n`) + '0000', /malformed ref update command/],
  ];
  for (const [service, body, message] of malformed) {
    test(`a malformed ${service} body ${JSON.stringify(body.slice(0, 24))} is a 400 and leaves nothing running`, async () => {
      const res = await fetch(`${server.url}/${repo}.git/git-${service}`, {
        method: 'POST',
        headers: { 'content-type': `application/x-git-${service}-request`, authorization: basic(tokens.alice.write) },
        body,
      });
      const text = await res.text();
      assert.equal(res.status, 400, text);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
      assert.match(text, message);
      await assertIdle(server);
    });
  }

  test('a push body cut off mid-pack changes nothing', async () => {
    const refsBefore = await git.ok(['ls-remote', server.repoUrl(`${repo}.git`)]);
    const command = pkt(`${'0'.repeat(40)} ${'2'.repeat(40)} refs/heads/cut\0report-status\n`);
    const res = await fetch(`${server.url}/${repo}.git/git-receive-pack`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-git-receive-pack-request', authorization: basic(tokens.alice.write) },
      body: `${command}0000PACK\0\0\0\x02\0\0\0\x05truncated`,
    });
    await res.arrayBuffer();
    assert.equal(await git.ok(['ls-remote', server.repoUrl(`${repo}.git`)]), refsBefore);
    await assertIdle(server);
  });

  test('an unknown service is refused, and so is dumb HTTP', async () => {
    const unknown = await fetch(`${server.url}/${repo}.git/info/refs?service=git-foo`);
    assert.ok([400, 403].includes(unknown.status), String(unknown.status));
    assert.equal(await unknown.text(), 'unsupported service: git-foo\n');

    const dumb = await fetch(`${server.url}/${repo}.git/info/refs`);
    assert.equal(dumb.status, 403);
    assert.match(await dumb.text(), /dumb HTTP is not supported/);
    // A git that only speaks dumb HTTP sees the reason.
    const r = await git.run(['ls-remote', server.repoUrl(`${repo}.git`)], { env: { GIT_SMART_HTTP: '0' } });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /remote: dumb HTTP is not supported/);

    const post = await fetch(`${server.url}/${repo}.git/git-foo`, { method: 'POST', body: '0000' });
    assert.equal(post.status, 404);
    await assertIdle(server);
  });

  test('a POST with the wrong content type is refused before git runs', async () => {
    const cases: [string | undefined, string][] = [
      ['text/plain', '0000'],
      ['application/json', '{}'],
      ['application/x-www-form-urlencoded', 'a=b'],
      ['application/x-git-receive-pack-request', '0000'], // the other service's type
      [undefined, '0000'],
    ];
    for (const [type, body] of cases) {
      const headers: Record<string, string> = { authorization: basic(tokens.alice.write) };
      if (type) headers['content-type'] = type;
      const res = await fetch(`${server.url}/${repo}.git/git-upload-pack`, { method: 'POST', headers, body });
      const text = await res.text();
      assert.ok([400, 415].includes(res.status), `${type}: ${res.status} ${text}`);
      assert.match(text, /content type/i, `${type}: ${text}`);
    }
    await assertIdle(server);
  });

  test('an invalid Authorization header is a 401, never anonymous', async () => {
    const headers = [
      'Digest username="alice"',
      'Basic !!!',
      `Basic ${Buffer.from('no-colon').toString('base64')}`,
      `Basic ${Buffer.from('git:').toString('base64')}`,
      'Bearer',
      'Bearer gst_not-a-real-token',
      `Basic ${Buffer.from('git:gst_not-a-real-token').toString('base64')}`,
    ];
    for (const authorization of headers) {
      for (const [method, url, type] of [
        ['GET', `${server.url}/${repo}.git/info/refs?service=git-upload-pack`, undefined],
        ['POST', `${server.url}/${repo}.git/git-upload-pack`, 'application/x-git-upload-pack-request'],
      ] as const) {
        const res = await fetch(url, {
          method,
          headers: { authorization, ...(type && { 'content-type': type }) },
          ...(method === 'POST' && { body: '0000' }),
        });
        const text = await res.text();
        assert.equal(res.status, 401, `${method} with ${authorization}: ${text}`);
        assert.match(res.headers.get('www-authenticate') ?? '', /^Basic realm="gitstratum"/);
        assert.notEqual(text.trim(), '');
      }
    }
    await assertIdle(server);
  });
});
