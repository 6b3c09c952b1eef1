import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { getPriority, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GitCommandError, initBare, runBackground, spawnService } from './command.js';

/** Running, not exited: a zombie (state Z) waiting for a reaper counts as gone. */
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};

/** nice(1) value of a running process, from /proc. */
const nicenessOf = async (pid: number) => Number((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[16]);

test('spawnService: a request’s git runs at the configured lower priority, before its request is written', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-nice-'));
  try {
    const repo = path.join(dir, 'r.git');
    await initBare(repo, 'main');
    for (const niceness of [0, 7]) {
      const child = await spawnService({ service: 'upload-pack', repoPath: repo, advertise: false, timeoutMs: 60_000, niceness });
      // upload-pack is waiting for its request on stdin: nothing has been forked from it yet.
      assert.equal(await nicenessOf(child.pid!), Math.min(19, getPriority() + niceness));
      child.stdin.end();
      await child.exited;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('runBackground: aborting kills everything git started, not only git', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-bg-'));
  try {
    const pids = path.join(dir, 'pids');
    // A git alias that starts a shell, which starts a background grandchild: like repack → pack-objects.
    const alias = `!sleep 30 & echo $$ $! > '${pids}'; wait`;
    const controller = new AbortController();
    const running = runBackground(['-c', `alias.snooze=${alias}`, 'snooze'], { signal: controller.signal, niceness: 10 });
    let written = '';
    for (let i = 0; i < 100 && !written.includes(' '); i++) {
      await sleep(20);
      written = await readFile(pids, 'utf8').catch(() => '');
    }
    const [shell, grandchild] = written.trim().split(' ').map(Number) as [number, number];
    assert.ok(alive(shell) && alive(grandchild), `started: ${written}`);
    assert.equal(await nicenessOf(grandchild), 10, 'children inherit the lowered priority');

    const reason = new Error('stop');
    controller.abort(reason);
    await assert.rejects(running, (err) => err === reason);
    // TERM reaches the whole group at once; the wait is only for a loaded machine's scheduler.
    for (let i = 0; i < 250 && (alive(shell) || alive(grandchild)); i++) await sleep(20);
    assert.ok(!alive(shell), 'the shell git started is gone');
    assert.ok(!alive(grandchild), 'its background child is gone');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('runBackground: a failing command rejects with git’s last stderr line and the subcommand', async () => {
  const controller = new AbortController();
  await assert.rejects(
    runBackground(['--git-dir', '/nonexistent/repo.git', 'repack', '-d'], { signal: controller.signal, niceness: 10 }),
    (err) => err instanceof GitCommandError && /^git repack failed \(exit 128\): .*nonexistent/.test(err.message),
  );
});
