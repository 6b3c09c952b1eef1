import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { lstat, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { tempDir } from '../../test/e2e/harness.js';
import { createLogger } from '../shared/log.js';
import { HOOK_NAMES, HookServer, SERVER_HOOKS, hookSocketPath, hooksDir, installHooks, relayPath, serverRunning, type RelayKind } from './hooks.js';

/** Both relays answer to one contract: every relay test runs for each. */
const RELAYS: RelayKind[] = ['perl', 'node'];

test('a short data path keeps the socket in <data>/run', async () => {
  const dataDir = await tempDir();
  try {
    const server = new HookServer(dataDir, createLogger('silent'));
    await server.listen();
    assert.equal(server.socketPath, path.join(dataDir, 'run', 'hooks.sock'));
    assert.equal(hookSocketPath(dataDir), server.socketPath);
    await server.close();
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('issue 9: a long data path gets a private, unpredictable socket directory, recorded for the CLI, removed at close', async () => {
  const base = await tempDir();
  const dataDir = path.join(base, 'x'.repeat(120));
  try {
    const first = new HookServer(dataDir, createLogger('silent'));
    await first.listen();
    const socket = first.socketPath;
    assert.ok(socket.length < 100, socket);
    const dir = await lstat(path.dirname(socket));
    assert.equal(dir.mode & 0o777, 0o700);
    assert.notEqual(path.dirname(socket), tmpdir());
    assert.equal((await readFile(path.join(dataDir, 'run', 'hooks.sock.path'), 'utf8')).trim(), socket);
    assert.equal(hookSocketPath(dataDir), socket);
    assert.equal(await serverRunning(dataDir), true);

    // A second server on the same data directory is refused, as with a short path.
    const second = new HookServer(dataDir, createLogger('silent'));
    await assert.rejects(second.listen(), /another gitstratum server is running/);

    await first.close();
    assert.equal(await lstat(path.dirname(socket)).then(() => true, () => false), false);
    assert.equal(await serverRunning(dataDir), false);
    // A restart (the record stale) gets a fresh directory.
    const again = new HookServer(dataDir, createLogger('silent'));
    await again.listen();
    assert.notEqual(again.socketPath, socket);
    await again.close();
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});

interface RelayRun {
  args?: string[];
  env?: NodeJS.ProcessEnv;
  stdin?: string;
}

function runRelay(kind: RelayKind, hook: string, socket: string, { args = [], env = {}, stdin = `${'0'.repeat(40)} ${'1'.repeat(40)} refs/heads/main\n` }: RelayRun = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const program = kind === 'perl' ? 'perl' : process.execPath;
    const child = spawn(program, [relayPath(kind), hook, socket, ...args], { env: { PATH: process.env['PATH'], ...env }, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
    child.stdin.end(stdin);
  });
}

for (const kind of RELAYS) {
  test(`issue 9: with no server to ask, pre-receive refuses and post-receive says what it skipped (${kind} relay)`, async () => {
    const nowhere = path.join(await tempDir(), 'none.sock');
    const pre = await runRelay(kind, 'pre-receive', nowhere);
    assert.equal(pre.code, 1);
    assert.match(pre.stderr, /server cannot be reached to check this push; push refused/);
    const post = await runRelay(kind, 'post-receive', nowhere);
    assert.equal(post.code, 0);
    assert.match(post.stderr, /post-receive skipped/);
    // A storage node's push is refused before its refs commit; git's own ref changes go on.
    const prepared = await runRelay(kind, 'reference-transaction', nowhere, { args: ['prepared'], env: { GITSTRATUM_SHARD_EPOCH: '3' } });
    assert.equal(prepared.code, 1);
    assert.match(prepared.stderr, /storage node that received this push is gone/);
  });

  test(`the ${kind} relay hands the server the hook's name, arguments, stdin, context and environment, and relays its answer`, async () => {
    const dataDir = await tempDir();
    try {
      const server = new HookServer(dataDir, createLogger('silent'));
      const calls: Parameters<Parameters<HookServer['on']>[1]>[0][] = [];
      server.on('pre-receive', async (call) => {
        calls.push(call);
        return { code: 1, message: 'refusé: verrou détenu par ümit' };
      });
      await server.listen();
      const stdin = `${'0'.repeat(40)} ${'1'.repeat(40)} refs/heads/déjà-vu\n`;
      const env = { GITSTRATUM_ACTOR_NAME: 'zoë', GIT_PUSH_OPTION_COUNT: '1', GIT_PUSH_OPTION_0: 'ci.skip', GIT_QUARANTINE_PATH: '/q', HOME: '/not-sent' };
      const answer = await runRelay(kind, 'pre-receive', server.socketPath, { env, stdin, args: ['ärg'] });
      assert.equal(answer.code, 1);
      assert.equal(answer.stderr, 'refusé: verrou détenu par ümit\n');
      assert.equal(calls.length, 1);
      const call = calls[0]!;
      assert.equal(call.hook, 'pre-receive');
      assert.deepEqual(call.args, ['ärg']);
      assert.equal(call.stdin, stdin);
      assert.deepEqual(call.env, { GITSTRATUM_ACTOR_NAME: 'zoë', GIT_PUSH_OPTION_COUNT: '1', GIT_PUSH_OPTION_0: 'ci.skip', GIT_QUARANTINE_PATH: '/q' });
      assert.equal(call.cwd, process.cwd());
      await server.close();
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}

for (const kind of RELAYS) {
  test(`the ${kind} relay stops the process that ran it when the server answers abort (a commit it could not record)`, async () => {
    const dataDir = await tempDir();
    const server = new HookServer(dataDir, createLogger('silent'));
    try {
      server.on('reference-transaction', async () => ({ code: 0, message: 'not recorded', abort: true }));
      await server.listen();
      const program = kind === 'perl' ? 'perl' : process.execPath;
      // sh stands for git: the relay's parent, which must not go on to report success.
      const parent = spawn('sh', ['-c', `"$0" "$1" reference-transaction "$2" committed </dev/null; echo went on`, program, relayPath(kind), server.socketPath], {
        env: { PATH: process.env['PATH'] },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      parent.stdout.on('data', (d: Buffer) => (out += d.toString()));
      parent.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const [code, signal] = (await once(parent, 'close')) as [number | null, NodeJS.Signals | null];
      assert.deepEqual([code, signal, out], [null, 'SIGKILL', 'not recorded\n']);
      assert.equal(out, 'not recorded\n');
    } finally {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}

for (const kind of RELAYS) {
  test(`an installed hook (${kind} relay) says nothing of its own, even under a locale this host lacks`, async () => {
    const dataDir = await tempDir();
    const server = new HookServer(dataDir, createLogger('silent'));
    try {
      server.on('post-receive', async () => ({ code: 0 }));
      await server.listen();
      await installHooks(dataDir, server.socketPath, SERVER_HOOKS, kind);
      const child = spawn(path.join(hooksDir(dataDir), 'post-receive'), [], {
        env: { PATH: process.env['PATH'], LANG: 'xx_YY.UTF-8', LC_ALL: 'xx_YY.UTF-8' },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      child.stdin.end(`${'0'.repeat(40)} ${'1'.repeat(40)} refs/heads/main\n`);
      const [code] = (await once(child, 'close')) as [number | null];
      assert.equal(code, 0);
      assert.equal(output, '');
    } finally {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}

function git(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { cwd, env: { ...process.env, ...env }, stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', resolve);
  });
}

for (const kind of RELAYS) test(`a storage node's push relays only \`prepared\` of each ref transaction; other ref changes and phases start no relay (${kind} relay)`, async () => {
  const dataDir = await tempDir();
  try {
    const server = new HookServer(dataDir, createLogger('silent'));
    const phases: string[] = [];
    server.on('reference-transaction', async (call) => {
      phases.push(call.args[0]!);
      return { code: 0 };
    });
    await server.listen({ shared: true });
    assert.equal(await installHooks(dataDir, server.socketPath, HOOK_NAMES, kind), kind);
    const repo = path.join(dataDir, 'r.git');
    assert.equal(await git(['init', '-q', '--bare', repo], dataDir), 0);
    assert.equal(await git(['config', 'core.hooksPath', hooksDir(dataDir)], repo), 0);
    const oid = '4b825dc642cb6eb9a060e54bf8d69288fbee4904'; // the empty tree, which git always knows
    const commit = await new Promise<string>((resolve) => {
      const c = spawn('git', ['commit-tree', oid, '-m', 'x'], { cwd: repo, env: { ...process.env, GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@a', GIT_COMMITTER_NAME: 'a', GIT_COMMITTER_EMAIL: 'a@a' } });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', () => resolve(out.trim()));
    });

    // Three ref transactions of a push (a non-atomic push makes one per ref).
    for (const ref of ['refs/heads/a', 'refs/heads/b', 'refs/heads/c']) {
      assert.equal(await git(['update-ref', ref, commit], repo, { GITSTRATUM_SHARD_EPOCH: '7' }), 0);
    }
    assert.deepEqual(phases, ['prepared', 'prepared', 'prepared'], 'no committed call reached the server');

    // git run on the disk by hand or by maintenance (no epoch) does not ask the server at all.
    assert.equal(await git(['update-ref', 'refs/heads/d', commit], repo), 0);
    assert.equal(phases.length, 3);

    // A push with a synchronous replica (GITSTRATUM_SYNC): `committed` is relayed too, for the standby's record.
    assert.equal(await git(['update-ref', 'refs/heads/s', commit], repo, { GITSTRATUM_SHARD_EPOCH: '7', GITSTRATUM_SYNC: '1' }), 0);
    assert.deepEqual(phases.slice(3), ['prepared', 'committed']);

    // The fencing answer still stops the ref: a refused `prepared` leaves the ref unwritten.
    server.on('reference-transaction', async () => ({ code: 1, message: 'deposed' }));
    assert.notEqual(await git(['update-ref', 'refs/heads/e', commit], repo, { GITSTRATUM_SHARD_EPOCH: '7' }), 0);
    assert.notEqual(await git(['rev-parse', '--verify', '-q', 'refs/heads/e'], repo), 0);
    await server.close();
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
