import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnFromHelper, spawnerPid } from './spawner.js';
import { gitEnv } from './command.js';

const parentOf = async (pid: number) => Number((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[1]);
const env = () => gitEnv() as Record<string, string>;

async function readAll(s: NodeJS.ReadableStream): Promise<string> {
  let out = '';
  for await (const chunk of s) out += String(chunk);
  return out;
}

test('spawner: git is started by the helper, not forked from the server, and its pipes and exit status reach the server', async () => {
  const child = await spawnFromHelper(['hash-object', '--stdin'], env());
  assert.notEqual(await parentOf(child.pid), process.pid);
  assert.equal(await parentOf(child.pid), spawnerPid());
  child.stdin.end('hello\n');
  const [out, err] = await Promise.all([readAll(child.stdout), readAll(child.stderr)]);
  assert.equal(out.trim(), 'ce013625030ba8dba906f756967f9e9ca394464a');
  assert.equal(err, '');
  assert.deepEqual(await child.exit, { code: 0, signal: null });

  const failing = await spawnFromHelper(['no-such-command'], env());
  failing.stdin.end();
  const [, stderr] = await Promise.all([readAll(failing.stdout), readAll(failing.stderr)]);
  assert.match(stderr, /no-such-command/);
  assert.deepEqual(await failing.exit, { code: 1, signal: null });
});

test('spawner: when the helper dies, the git it started is killed and reported as failed; the next git gets a new helper', async () => {
  // `git cat-file --batch` waits on stdin for ever.
  const child = await spawnFromHelper(['cat-file', '--batch'], env());
  const first = spawnerPid()!;
  child.stdout.resume();
  child.stderr.resume();
  process.kill(first, 'SIGKILL');
  assert.deepEqual(await child.exit, { error: 'the git spawner exited before git did' });
  // Killed: /proc/<pid> goes away once it is reaped (by init, its parent gone).
  for (let i = 0; i < 600; i++) {
    try {
      const state = (await readFile(`/proc/${child.pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[0];
      if (state === 'Z') break;
    } catch {
      break;
    }
    assert.ok(i < 599, 'git outlived its helper');
    await sleep(50);
  }
  const next = await spawnFromHelper(['version'], env());
  assert.notEqual(spawnerPid(), first);
  next.stdin.end();
  assert.match(await readAll(next.stdout), /^git version/);
  assert.deepEqual(await next.exit, { code: 0, signal: null });
});

test('spawner: a helper whose server was killed exits, and so does the git waiting on that server', async () => {
  // A stand-in server: starts a git that waits on stdin for ever, prints both pids, and waits.
  const script = `
    import { spawnFromHelper, spawnerPid } from ${JSON.stringify(new URL('./spawner.js', import.meta.url).href)};
    const child = await spawnFromHelper(['cat-file', '--batch'], { PATH: process.env.PATH });
    console.log(JSON.stringify({ helper: spawnerPid(), git: child.pid }));
    setInterval(() => {}, 1000);
  `;
  const server = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  server.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  for (let i = 0; !out.includes('\n'); i++) {
    assert.ok(i < 600, 'the stand-in server did not start its git');
    await sleep(50);
  }
  const { helper, git } = JSON.parse(out) as { helper: number; git: number };
  server.kill('SIGKILL');
  const gone = async (pid: number) => {
    for (let i = 0; i < 1200; i++) {
      try {
        if ((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.startsWith('Z')) return true;
      } catch {
        return true;
      }
      await sleep(50);
    }
    return false;
  };
  assert.ok(await gone(helper), 'the helper outlived its server');
  assert.ok(await gone(git), 'git outlived its helper and server');
});
