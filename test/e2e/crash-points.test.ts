/**
 * Issue 16, one scenario per named crash point (src/shared/crash.ts): the real server, started
 * with GITSTRATUM_TEST_CRASH_AT, dies by SIGKILL at that point under real git; it is restarted
 * on the same data directory, and then the repository must be whole and working: no lock or
 * quarantine left (nor the dead process's scratch), the next push to the same ref succeeds,
 * fsck is clean, maintenance runs, and it is snapshotted (waited for, with a generous bound)
 * so that the refs restored from object storage (a DR drill) equal the live ones.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { cp, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, seedAlice, tempDir } from './harness.js';
import { findLeftovers } from '../../src/repos/recovery.js';
import { scratchOwner } from '../../src/shared/pid.js';
import { openMetaStore } from '../../src/meta/db.js';
import { latestSnapshot } from '../../src/meta/snapshots.js';
import { readRefs } from '../../src/snapshots/create.js';
import { encodeRefs, refsDigest } from '../../src/snapshots/format.js';
import type { CrashPoint } from '../../src/shared/crash.js';

/** Fast background work, so that each scenario's steps follow one another quickly. */
const FAST = ['--maintenance-delay-seconds', '0', '--snapshot-debounce-seconds', '0', '--snapshot-max-delay-seconds', '1'];
/** Generous: the RPO is 10 s; the machine running the suite may be loaded. */
const BOUND_MS = 60_000;

async function metric(server: Server, name: string, label = ''): Promise<number> {
  const text = await (await fetch(new URL('/metrics', server.url))).text();
  return text
    .split('\n')
    .filter((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && l.includes(label))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

async function until(what: string, done: () => Promise<boolean>, boundMs = BOUND_MS): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!(await done())) {
    assert.ok(Date.now() < deadline, `not within ${boundMs / 1000} s: ${what}`);
    await sleep(100);
  }
}

/** Waits for the server to die at its crash point (SIGKILL, not another end). */
async function crashed(server: Server): Promise<void> {
  const proc = server.process;
  if (proc.exitCode === null && proc.signalCode === null) {
    const timer = setTimeout(() => proc.kill('SIGKILL'), BOUND_MS);
    await once(proc, 'exit');
    clearTimeout(timer);
  }
  assert.equal(proc.signalCode, 'SIGKILL', `the server ended otherwise (exit ${proc.exitCode}):\n${server.logs.slice(-5).join('\n')}`);
}

interface Scenario {
  server: Server;
  git: Git;
  token: string;
  repo: { id: string; path: string };
  work: string;
  url: string;
  args: string[];
}

/**
 * A data directory with user alice, her token and an empty repository, made once and copied
 * for each scenario (the admin commands that make it cost seconds each on a loaded machine).
 */
let template: Promise<{ dataDir: string; token: string; repo: { id: string; path: string } }> | undefined;
function templateDataDir() {
  return (template ??= (async () => {
    const server = await Server.start({ args: FAST });
    const token = await seedAlice(server);
    const repo = await server.createRepo('alice/main/r');
    await server.stop();
    return { dataDir: server.dataDir, token, repo };
  })());
}

/** Starts a server armed at `point` on a copy of the template, with a work tree ready. */
async function armed(point: CrashPoint, args: string[] = []): Promise<Scenario> {
  const all = [...FAST, ...args];
  const t = await templateDataDir();
  const dataDir = await tempDir('gitstratum-data-');
  await cp(t.dataDir, dataDir, { recursive: true });
  const server = await Server.start({ dataDir, args: all, env: { GITSTRATUM_TEST_CRASH_AT: point } });
  const repo = { id: t.repo.id, path: path.join(dataDir, path.relative(t.dataDir, t.repo.path)) };
  const git = await Git.create();
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 7 });
  return { server, git, token: t.token, repo, work, url: server.repoUrl('alice/main/r.git', t.token), args: all };
}

/** Restarts the crashed server unarmed and checks that the repository healed. */
async function restartAndCheck(s: Scenario): Promise<void> {
  const dead = s.server.process.pid;
  const server = await Server.start({ dataDir: s.server.dataDir, args: s.args });
  const meta = await openMetaStore({ dataDir: server.dataDir, databaseUrl: undefined });
  try {
    // Before anything else: whatever git committed before the crash is persisted (the worker
    // finds the repository dirty by itself). An evicted repository has no live refs yet.
    // A repository that never had a ref (the push refused by the fail-closed hook) has
    // nothing to persist.
    const refs = (await stat(s.repo.path).catch(() => undefined)) ? await readRefs(s.repo.path) : [];
    if (refs.some((r) => r.name !== 'HEAD')) {
      const live = refsDigest(encodeRefs(refs));
      await until('the refs on disk at restart were snapshotted', async () => (await latestSnapshot(meta.db, s.repo.id))?.refsDigest === live);
    }
    // The next push to the same ref: refused by nothing the crash left.
    const runsBefore = await metric(server, 'gitstratum_maintenance_runs_total', 'result="ok"');
    await s.git.commits(s.work, 1, { seed: 99, prefix: 'after' });
    await s.git.ok(['push', '-q', server.repoUrl('alice/main/r.git', s.token), 'main'], { cwd: s.work });
    // Maintenance repacks at once after a push here (delay 0) and deletes the loose objects it
    // packed: an fsck scanning meanwhile sees one vanish ("unable to mmap"). Wait for it first.
    await until(
      'maintenance ran after the push and is idle',
      async () =>
        (await metric(server, 'gitstratum_maintenance_runs_total', 'result="ok"')) > runsBefore &&
        (await metric(server, 'gitstratum_maintenance_pending')) + (await metric(server, 'gitstratum_maintenance_running')) === 0,
    );
    const r = await s.git.run(['--git-dir', s.repo.path, 'fsck', '--strict', '--no-progress']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      await s.git.revParse(s.work, 'main'),
      (await s.git.ok(['--git-dir', s.repo.path, 'rev-parse', 'refs/heads/main'])).trim(),
    );
    await until('the repository was snapshotted', async () => (await metric(server, 'gitstratum_snapshot_dirty_repositories')) === 0);
    // The refs restored from object storage equal the live ones.
    const drill = await server.cli(['dr-drill', '--json']);
    const report = JSON.parse(drill.stdout) as { repositories: { repository: string; status: string; detail?: string }[] };
    assert.deepEqual(
      report.repositories.map((x) => [x.repository, x.status]),
      [['alice/main/r', 'ok']],
      drill.stdout + drill.stderr,
    );
    // Nothing of the crash is left: no lock, quarantine or temporary pack, no scratch of the dead process.
    assert.deepEqual(await findLeftovers(s.repo.path, { olderThanMs: 0 }), []);
    const scratch = await readdir(path.join(server.dataDir, 'tmp')).catch(() => [] as string[]);
    assert.deepEqual(scratch.filter((n) => scratchOwner(n) === dead), []);
  } finally {
    await meta.close();
    await server.cleanup();
  }
}

describe('crash points (issue 16): crash, restart, healed', () => {
  after(async () => {
    if (template) await rm((await template).dataDir, { recursive: true, force: true });
  });

  for (const point of ['receive-after-unpack', 'receive-after-ref-commit', 'receive-before-push-end', 'receive-after-push-end'] as const) {
    test(`${point}: the crashed push leaves the ref pushable, and what git committed is persisted`, async () => {
      const s = await armed(point);
      // The push is not acknowledged, or is: either way nothing may be lost or left blocking.
      const pushed = await s.git.run(['push', '-q', s.url, 'main'], { cwd: s.work });
      await crashed(s.server);
      if (point === 'receive-after-unpack') {
        // The server died in pre-receive: the hook fails closed, so git moved no ref.
        assert.notEqual(pushed.code, 0);
        assert.equal((await s.git.run(['--git-dir', s.repo.path, 'rev-parse', '--verify', '-q', 'refs/heads/main'])).code, 1);
      }
      await restartAndCheck(s);
    });
  }

  test('snapshot-after-upload: the object without its row is ignored and the repository stays dirty until persisted', async () => {
    const s = await armed('snapshot-after-upload');
    // The snapshot starts when post-receive has written push-end: the server may die before
    // git's report reaches the client, so the push may or may not be acknowledged.
    await s.git.run(['push', '-q', s.url, 'main'], { cwd: s.work });
    await crashed(s.server);
    await restartAndCheck(s);
  });

  test('compaction-after-full: the recorded full snapshot and the unretired chain restore the same refs', async () => {
    const s = await armed('compaction-after-full', ['--snapshot-chain-max-length', '1', '--snapshot-chain-max-size-ratio', '0']);
    await s.git.ok(['push', '-q', s.url, 'main'], { cwd: s.work });
    await until('the first snapshot', async () => s.server.process.exitCode !== null || s.server.process.signalCode !== null || (await metric(s.server, 'gitstratum_snapshots_total', 'result="ok"')) >= 1);
    await s.git.commits(s.work, 1, { seed: 8 });
    await s.git.ok(['push', '-q', s.url, 'main'], { cwd: s.work });
    await crashed(s.server);
    await restartAndCheck(s);
  });

  test('maintenance-mid-repack: the repack dies with the server and the next one runs', async () => {
    const s = await armed('maintenance-mid-repack');
    // Maintenance starts from post-receive (no delay here): the server may die before git's
    // report reaches the client, so the push may or may not be acknowledged (CI saw both).
    await s.git.run(['push', '-q', s.url, 'main'], { cwd: s.work });
    await crashed(s.server);
    await restartAndCheck(s);
  });

  test('restore-mid-install: a lazy restore cut short restores again on the next request', async () => {
    const s = await armed('restore-mid-install');
    await s.git.ok(['push', '-q', s.url, 'main'], { cwd: s.work });
    await until('the push was snapshotted', async () => (await metric(s.server, 'gitstratum_snapshot_dirty_repositories')) === 0 && (await metric(s.server, 'gitstratum_snapshots_total', 'result="ok"')) >= 1);
    // Refused (repo_busy) while the push's maintenance runs: asked again until it is idle.
    await until('the repository was evicted', async () => (await s.server.cli(['repo', 'evict', 'alice/main/r'])).code === 0);
    // The clone's request restores the repository; the server dies in the middle of it.
    await s.git.run(['ls-remote', s.url]);
    await crashed(s.server);
    await restartAndCheck(s);
  });
});
