/**
 * Git over SSH (issue 14) with the real OpenSSH client and git: clones (v2, v0, shallow,
 * partial with a lazy fetch), pushes (create, force, delete), the access matrix of keys, a
 * disabled user's key, refused commands and forwarding, a client that goes away mid-fetch, and
 * a storm of identical shallow clones answered by one pack generation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { systemActor } from '../../src/access/policy.js';
import { metricValue } from '../support/metrics.js';
import { Git, Server, tempDir } from './harness.js';
import { keygen, sshArgs, sshAs, sshPortOf, type Key } from '../support/ssh.js';

/** A server with SSH on a port of its choosing, and that port (from its `ssh listening` log line). */
async function sshServer(t: { after(fn: () => Promise<void>): void }, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ server: Server; port: number }> {
  const server = await Server.start({ args: ['--ssh-port', '0', ...args], env });
  t.after(() => server.cleanup());
  return { server, port: sshPortOf(server) };
}

/** alice with her space and a public repository `pub` (and `more` besides), made in process. */
async function seedPub(server: Server, more: (core: import('../../src/core.js').Core) => Promise<unknown> = async () => {}): Promise<void> {
  await server.admin(async (core) => {
    await core.accounts.createUser(systemActor, 'alice');
    await core.repos.createSpace(systemActor, 'alice/main');
    await core.repos.createRepo(systemActor, 'alice/main/pub', { visibility: 'public' });
    await more(core);
  });
}

/** Waits (bounded) until `check` holds. */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

test('git over SSH: clones, pushes, the access matrix, refusals and the shared pack cache', async (t) => {
  const { server, port } = await sshServer(t);
  const dir = await tempDir('gitstratum-ssh-');
  const keys = {
    alice: await keygen(dir, 'alice'),
    deploy: await keygen(dir, 'deploy'),
    bob: await keygen(dir, 'bob'),
    root: await keygen(dir, 'root'),
    stranger: await keygen(dir, 'stranger'),
  };
  await server.admin(async (core) => {
    for (const [name, admin] of [['alice', false], ['bob', false], ['root', true]] as const) await core.accounts.createUser(systemActor, name, { admin });
    await core.repos.createSpace(systemActor, 'alice/main');
    await core.repos.createRepo(systemActor, 'alice/main/pub', { visibility: 'public' });
    await core.repos.createRepo(systemActor, 'alice/main/priv', { visibility: 'private' });
    await core.sshKeys.add(systemActor, 'alice', keys.alice.pub);
    await core.sshKeys.add(systemActor, 'alice', keys.deploy.pub, { scope: 'read' });
    await core.sshKeys.add(systemActor, 'bob', keys.bob.pub);
    await core.sshKeys.add(systemActor, 'root', keys.root.pub);
  });
  const git = await Git.create();
  const as = (key: Key) => sshAs(key, port);
  const url = (repo: string) => `ssh://git@127.0.0.1:${port}/alice/main/${repo}.git`;

  const work = await git.workTree(path.join(dir, 'work'), { commits: 3, files: 4 });
  await t.test('push over SSH: create, force, delete; the host keys are the ones `ssh host-keys` prints', async () => {
    for (const repo of ['pub', 'priv']) await git.ok(['push', '-q', url(repo), 'main', 'main:topic'], { cwd: work, env: as(keys.alice) });
    await git.ok(['commit', '-q', '--amend', '-m', 'rewritten'], { cwd: work });
    const refused = await git.run(['push', url('pub'), 'main'], { cwd: work, env: as(keys.alice) });
    assert.notEqual(refused.code, 0, 'a non-fast-forward push without --force is refused');
    await git.ok(['push', '-q', '--force', url('pub'), 'main'], { cwd: work, env: as(keys.alice) });
    await git.ok(['push', '-q', url('pub'), ':topic'], { cwd: work, env: as(keys.alice) });
    const refs = await git.ok(['ls-remote', url('pub')], { env: as(keys.alice) });
    assert.match(refs, new RegExp(`^${await git.revParse(work, 'HEAD')}\trefs/heads/main$`, 'm'));
    assert.doesNotMatch(refs, /topic/);
    const printed = await server.cliOk(['ssh', 'host-keys']);
    const known = execFileSync('ssh-keyscan', ['-p', String(port), '-t', 'ed25519', '127.0.0.1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const scanned = execFileSync('ssh-keygen', ['-l', '-f', '-'], { input: known, encoding: 'utf8' }).split(' ')[1]!;
    assert.ok(printed.includes(scanned), `the server presents ${scanned}; ssh host-keys printed ${printed}`);
  });

  await t.test('clones over SSH: v2, v0, shallow, partial with a lazy fetch, and the scp-like URL form', async () => {
    const head = await git.revParse(work, 'HEAD');
    for (const [name, before, after] of [
      ['v2', [], []],
      ['v0', ['-c', 'protocol.version=0'], []],
      ['shallow', [], ['--depth', '1']],
    ] as const) {
      const dest = path.join(dir, `clone-${name}`);
      await git.ok([...before, 'clone', '-q', ...after, url('pub'), dest], { env: as(keys.alice) });
      assert.equal(await git.revParse(dest, 'HEAD'), head, name);
      await git.ok(['fsck', '--no-progress'], { cwd: dest });
    }
    const partial = path.join(dir, 'clone-partial');
    await git.ok(['clone', '-q', '--filter=blob:none', '--no-checkout', url('pub'), partial], { env: as(keys.alice) });
    // The checkout fetches the missing blobs: a second SSH fetch, lazily.
    await git.ok(['checkout', '-q', 'main'], { cwd: partial, env: as(keys.alice) });
    assert.equal(await git.revParse(partial, 'HEAD'), head);

    // The scp-like form, with the port (and key) in an ssh config, as the README shows.
    const config = path.join(dir, 'ssh_config');
    await writeFile(config, `Host gitserver\n  HostName 127.0.0.1\n  Port ${port}\n  IdentityFile ${keys.alice.file}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n`);
    const scp = path.join(dir, 'clone-scp');
    await git.ok(['clone', '-q', 'git@gitserver:alice/main/pub.git', scp], { env: { GIT_SSH_COMMAND: `ssh -F ${config}` } });
    assert.equal(await git.revParse(scp, 'HEAD'), head);
  });

  await t.test('Git LFS over SSH: git-lfs-authenticate hands git-lfs the HTTP endpoint and an authorization for one repository', async () => {
    const lfsWork = path.join(dir, 'lfs-work');
    await git.ok(['clone', '-q', url('priv'), lfsWork], { env: as(keys.alice) });
    await git.ok(['lfs', 'track', '*.bin'], { cwd: lfsWork });
    const content = randomBytes(300_000);
    await writeFile(path.join(lfsWork, 'model.bin'), content);
    await git.ok(['add', '-A'], { cwd: lfsWork });
    await git.ok(['commit', '-q', '-m', 'model'], { cwd: lfsWork });
    await git.ok(['push', '-q', 'origin', 'HEAD:lfs'], { cwd: lfsWork, env: as(keys.alice) });
    // A deploy key downloads; the private repository's objects come through its authorization.
    const clone = path.join(dir, 'lfs-clone');
    await git.ok(['clone', '-q', '-b', 'lfs', url('priv'), clone], { env: as(keys.deploy) });
    assert.ok((await readFile(path.join(clone, 'model.bin'))).equals(content), 'the LFS file came back whole');
    // ...but cannot upload: git-lfs-authenticate refuses it write access.
    await writeFile(path.join(clone, 'other.bin'), randomBytes(1000));
    await git.ok(['add', '-A'], { cwd: clone });
    await git.ok(['commit', '-q', '-m', 'other'], { cwd: clone });
    const refused = await git.run(['push', 'origin', 'HEAD:lfs'], { cwd: clone, env: as(keys.deploy) });
    assert.notEqual(refused.code, 0);
    // The authorization names one repository: it opens no other.
    const answer = execFileSync('ssh', [...sshArgs(keys.alice, port), 'git@127.0.0.1', 'git-lfs-authenticate alice/main/priv.git download'], { encoding: 'utf8' });
    const auth = JSON.parse(answer) as { href: string; header: { Authorization: string }; expires_in: number };
    assert.equal(auth.href, `${server.url}/alice/main/priv.git/info/lfs`);
    assert.ok(auth.expires_in > 0);
    const batch = (repo: string) =>
      fetch(`${server.url}/alice/main/${repo}.git/info/lfs/objects/batch`, {
        method: 'POST',
        headers: { authorization: auth.header.Authorization, 'content-type': 'application/vnd.git-lfs+json', accept: 'application/vnd.git-lfs+json' },
        body: JSON.stringify({ operation: 'download', objects: [] }),
      });
    assert.equal((await batch('priv')).status, 200);
    assert.equal((await batch('pub')).status, 403);
  });

  await t.test('the access matrix: keys of the owner, a deploy key, another user, an admin and a stranger', async () => {
    const expected: Record<string, Record<string, [fetch: boolean, push: boolean]>> = {
      alice: { pub: [true, true], priv: [true, true] },
      deploy: { pub: [true, false], priv: [true, false] },
      bob: { pub: [true, false], priv: [false, false] },
      root: { pub: [true, true], priv: [true, true] },
      stranger: { pub: [false, false], priv: [false, false] },
    };
    let round = 0;
    for (const [who, repos] of Object.entries(expected)) {
      for (const [repo, [canFetch, canPush]] of Object.entries(repos)) {
        const env = as(keys[who as keyof typeof keys]);
        const fetched = await git.run(['ls-remote', url(repo)], { env });
        assert.equal(fetched.code === 0, canFetch, `${who} fetch ${repo}: ${fetched.stderr}`);
        const branch = `matrix-${round++}`;
        const pushed = await git.run(['push', url(repo), `main:${branch}`], { cwd: work, env });
        assert.equal(pushed.code === 0, canPush, `${who} push ${repo}: ${pushed.stderr}`);
        if (!canPush && who !== 'stranger') assert.match(pushed.stderr, /gitstratum: /, `${who} push ${repo} says why`);
        if (who === 'stranger') assert.match(pushed.stderr, /Permission denied \(publickey\)/);
      }
    }
  });

  await t.test("a disabled user's key stops working at once", async () => {
    await server.admin((core) => core.offboarding.disable(systemActor, 'bob'));
    const fetched = await git.run(['ls-remote', url('pub')], { env: as(keys.bob) });
    assert.notEqual(fetched.code, 0);
    assert.match(fetched.stderr, /Permission denied \(publickey\)/);
  });

  await t.test('a shell, other commands, paths outside OWNER/SPACE/REPO and forwarding are refused', async () => {
    const ssh = (args: string[]) => {
      try {
        return { code: 0, stderr: execFileSync('ssh', [...sshArgs(keys.alice, port), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
      } catch (err) {
        const e = err as { status: number; stderr: string };
        return { code: e.status, stderr: e.stderr };
      }
    };
    for (const [args, message] of [
      [['git@127.0.0.1'], /no shell/],
      [['git@127.0.0.1', "git-upload-pack '../../etc'"], /repository path must be OWNER\/SPACE\/REPO/],
      [['git@127.0.0.1', "git-upload-pack 'alice/main/pub/../../../etc'"], /repository path/],
      [['git@127.0.0.1', 'cat /etc/passwd'], /is not allowed/],
    ] as const) {
      const r = ssh([...args]);
      assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
    const forward = ssh(['-N', '-o', 'ExitOnForwardFailure=yes', '-R', '0:127.0.0.1:9', 'git@127.0.0.1']);
    assert.notEqual(forward.code, 0);
    assert.match(forward.stderr, /forwarding failed/);
  });

  await t.test('a client that goes away mid-fetch ends its git process', async () => {
    // A v0 fetch: git upload-pack sends its advertisement and waits for the client's wants.
    const client = spawn('ssh', [...sshArgs(keys.alice, port), 'git@127.0.0.1', "git-upload-pack 'alice/main/pub.git'"], { stdio: ['pipe', 'pipe', 'ignore'] });
    await new Promise((resolve) => client.stdout.once('data', resolve));
    assert.equal(await metricValue(server.url, 'gitstratum_git_processes_running'), 1);
    client.kill('SIGKILL');
    await until('the upload-pack of the client that went away to end', async () => (await metricValue(server.url, 'gitstratum_git_processes_running')) === 0);
  });

  await t.test('20 identical shallow clones over SSH at once cost one pack generation', async () => {
    await git.commits(work, 1, { seed: 42 });
    await git.ok(['push', '-q', url('pub'), 'main'], { cwd: work, env: as(keys.alice) });
    const misses = () => metricValue(server.url, 'gitstratum_pack_cache_requests_total', { endpoint: 'fetch', result: 'miss' });
    const before = await misses();
    const head = await git.revParse(work, 'HEAD');
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const dest = path.join(dir, `storm-${i}`);
        await git.ok(['clone', '-q', '--depth', '1', url('pub'), dest], { env: as(keys.deploy) });
        assert.equal(await git.revParse(dest, 'HEAD'), head);
      }),
    );
    assert.equal((await misses()) - before, 1, 'one generation for the storm');
  });
});

test('SSH commands spend the same budgets as HTTP requests: over the limit, git prints why', async (t) => {
  const { server, port } = await sshServer(t, [], { GITSTRATUM_RATE_LIMIT_GIT_REQUESTS: '3', GITSTRATUM_SSH_IDLE_TIMEOUT_SECONDS: '1' });
  const key = await keygen(await tempDir('gitstratum-ssh-'), 'alice');
  await seedPub(server, (core) => core.sshKeys.add(systemActor, 'alice', key.pub));
  const git = await Git.create();
  const env = sshAs(key, port);
  const url = `ssh://git@127.0.0.1:${port}/alice/main/pub.git`;
  for (let i = 0; i < 3; i++) await git.ok(['ls-remote', url], { env });
  const over = await git.run(['ls-remote', url], { env });
  assert.notEqual(over.code, 0);
  assert.match(over.stderr, /gitstratum: rate limit exceeded: 3 git requests per 60 s for user alice; retry in \d+ s/);
  assert.equal(await metricValue(server.url, 'gitstratum_rate_limited_total', { limit: 'git' }), 1);

  // A connection that runs nothing is closed once idle (here 1 s; commands above were not cut).
  const idle = spawn('ssh', [...sshArgs(key, port), '-N', 'git@127.0.0.1'], { stdio: 'ignore' });
  const code = await Promise.race([new Promise((resolve) => idle.once('exit', resolve)), sleep(30_000).then(() => 'still open')]);
  idle.kill();
  assert.notEqual(code, 'still open', 'the idle connection was never closed');
});

test('with --ssh-anonymous-reads, a key nobody registered reads public repositories and nothing else', async (t) => {
  const { server, port } = await sshServer(t, ['--ssh-anonymous-reads', 'true']);
  const dir = await tempDir('gitstratum-ssh-');
  const stranger = await keygen(dir, 'stranger');
  await seedPub(server, (core) => core.repos.createRepo(systemActor, 'alice/main/priv', { visibility: 'private' }));
  const git = await Git.create();
  const env = sshAs(stranger, port);
  const url = (repo: string) => `ssh://git@127.0.0.1:${port}/alice/main/${repo}.git`;
  const work = await git.workTree(path.join(dir, 'work'), { commits: 1 });
  await git.ok(['ls-remote', url('pub')], { env });
  const push = await git.run(['push', url('pub'), 'main'], { cwd: work, env });
  assert.notEqual(push.code, 0);
  assert.match(push.stderr, /gitstratum: /);
  assert.notEqual((await git.run(['ls-remote', url('priv')], { env })).code, 0);
});

test('an address whose SSH connections keep failing to authenticate is shut out, over SSH and HTTP alike', async (t) => {
  const { server, port } = await sshServer(t, [], { GITSTRATUM_RATE_LIMIT_AUTH_FAILURES: '2' });
  const dir = await tempDir('gitstratum-ssh-');
  const [alice, stranger] = [await keygen(dir, 'alice'), await keygen(dir, 'stranger')];
  await seedPub(server, (core) => core.sshKeys.add(systemActor, 'alice', alice.pub));
  const git = await Git.create();
  const url = `ssh://git@127.0.0.1:${port}/alice/main/pub.git`;
  await git.ok(['ls-remote', url], { env: sshAs(alice, port) });
  for (let i = 0; i < 2; i++) assert.notEqual((await git.run(['ls-remote', url], { env: sshAs(stranger, port) })).code, 0, 'an unknown key is refused');
  // The failures are counted as the connections close: wait until the address is shut out.
  let refused: { code: number | null; stderr: string } = { code: 0, stderr: '' };
  await until('the address to be shut out', async () => (refused = await git.run(['ls-remote', url], { env: sshAs(alice, port) })).code !== 0);
  assert.doesNotMatch(refused.stderr, /refs\/heads/);
  assert.ok((await metricValue(server.url, 'gitstratum_ssh_authentications_total', { result: 'rate_limited' })) >= 1);
  // The budget is the one bad HTTP credentials spend: a token from the same address is not even checked.
  const res = await fetch(`${server.url}/api/v1/user`, { headers: { authorization: 'Bearer whatever' } });
  assert.equal(res.status, 429);
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'too_many_auth_failures');
});
