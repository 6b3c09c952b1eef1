import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { lstat, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../../test/e2e/harness.js';
import { createLogger } from '../shared/log.js';
import { HOOK_NAMES, HookServer, hookSocketPath, hooksDir, installHooks, serverRunning } from './hooks.js';

const relay = fileURLToPath(new URL('./hook-relay.js', import.meta.url));

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

function runRelay(hook: string, socket: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [relay, hook, socket], { env: { PATH: process.env['PATH'] }, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
    child.stdin.end(`${'0'.repeat(40)} ${'1'.repeat(40)} refs/heads/main\n`);
  });
}

test('issue 9: with no server to ask, pre-receive refuses and post-receive says what it skipped', async () => {
  const nowhere = path.join(await tempDir(), 'none.sock');
  const pre = await runRelay('pre-receive', nowhere);
  assert.equal(pre.code, 1);
  assert.match(pre.stderr, /server cannot be reached to check this push; push refused/);
  const post = await runRelay('post-receive', nowhere);
  assert.equal(post.code, 0);
  assert.match(post.stderr, /post-receive skipped/);
});

function git(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { cwd, env: { ...process.env, ...env }, stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', resolve);
  });
}

test("a storage node's push relays only `prepared` of each ref transaction; other ref changes and phases start no relay", async () => {
  const dataDir = await tempDir();
  try {
    const server = new HookServer(dataDir, createLogger('silent'));
    const phases: string[] = [];
    server.on('reference-transaction', async (call) => {
      phases.push(call.args[0]!);
      return { code: 0 };
    });
    await server.listen({ shared: true });
    await installHooks(dataDir, server.socketPath, HOOK_NAMES);
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

    // The fencing answer still stops the ref: a refused `prepared` leaves the ref unwritten.
    server.on('reference-transaction', async () => ({ code: 1, message: 'deposed' }));
    assert.notEqual(await git(['update-ref', 'refs/heads/e', commit], repo, { GITSTRATUM_SHARD_EPOCH: '7' }), 0);
    assert.notEqual(await git(['rev-parse', '--verify', '-q', 'refs/heads/e'], repo), 0);
    await server.close();
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
