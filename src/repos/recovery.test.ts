/**
 * Crash recovery on real repositories: the leftovers a killed git leaves (made here the way
 * git makes them) are found, removed, and the repository works again: pushes to the locked
 * ref, a repack with a multi-pack bitmap, fsck.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { gitEnv } from '../../test/e2e/harness.js';
import { busyRepositories, createRecoveryMetrics, findLeftovers, Recovery, removeLeftovers } from './recovery.js';

const exec = promisify(execFile);
const DEAD_PID = 2 ** 22 + 1; // above Linux's pid_max: never a running process

async function git(args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  return exec('git', args, { cwd, env });
}

/** A bare repository with two commits on main and a branch b1, as a push leaves it. */
async function repository(dir: string) {
  const env = gitEnv(dir);
  const bare = path.join(dir, 'r.git');
  const work = path.join(dir, 'work');
  await git(['init', '-q', '--bare', '-b', 'main', bare], dir, env);
  await git(['init', '-q', '-b', 'main', work], dir, env);
  for (const n of [1, 2]) {
    await writeFile(path.join(work, 'a.txt'), `change ${n}\n`);
    await git(['add', '-A'], work, env);
    await git(['commit', '-q', '-m', `change ${n}`], work, env);
  }
  await git(['push', '-q', bare, 'main', 'main:refs/heads/p2/b1'], work, env);
  return { bare, work, env };
}

/** What a killed receive-pack, repack, commit-graph write and gc leave behind. */
async function crashLeftovers(bare: string) {
  await writeFile(path.join(bare, 'refs/heads/p2/b1.lock'), '0'.repeat(40) + '\n');
  await writeFile(path.join(bare, 'packed-refs.lock'), '');
  await writeFile(path.join(bare, 'objects/pack/multi-pack-index.lock'), '');
  await mkdir(path.join(bare, 'objects/info/commit-graphs'), { recursive: true });
  await writeFile(path.join(bare, 'objects/info/commit-graphs/commit-graph-chain.lock'), '');
  await writeFile(path.join(bare, 'gc.pid'), `${DEAD_PID} ${hostname()}`);
  await mkdir(path.join(bare, 'objects/tmp_objdir-incoming-Ab12Cd/pack'), { recursive: true });
  await writeFile(path.join(bare, 'objects/tmp_objdir-incoming-Ab12Cd/pack/tmp_pack_x'), 'partial');
  await mkdir(path.join(bare, 'objects/incoming-Zz99'), { recursive: true });
  await writeFile(path.join(bare, 'objects/pack/tmp_pack_Q1w2E3'), 'partial');
  await writeFile(path.join(bare, 'objects/pack/.tmp-1234-pack-abc.pack'), 'partial');
}

const EXPECTED = [
  { kind: 'ref_lock', path: 'packed-refs.lock' },
  { kind: 'ref_lock', path: 'refs/heads/p2/b1.lock' },
  { kind: 'maintenance_lock', path: 'gc.pid' },
  { kind: 'maintenance_lock', path: 'objects/info/commit-graphs/commit-graph-chain.lock' },
  { kind: 'maintenance_lock', path: 'objects/pack/multi-pack-index.lock' },
  { kind: 'quarantine', path: 'objects/incoming-Zz99' },
  { kind: 'quarantine', path: 'objects/tmp_objdir-incoming-Ab12Cd' },
  { kind: 'temp_pack', path: 'objects/pack/.tmp-1234-pack-abc.pack' },
  { kind: 'temp_pack', path: 'objects/pack/tmp_pack_Q1w2E3' },
];
const sorted = (items: { kind: string; path: string }[]) => [...items].sort((a, b) => a.kind.localeCompare(b.kind) || a.path.localeCompare(b.path));

test('regression (issue 16): after a crash, recovery removes stale locks and quarantines and the locked branch, repack and fsck work again', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-recovery-'));
  try {
    const { bare, work, env } = await repository(dir);
    await crashLeftovers(bare);
    await writeFile(path.join(work, 'a.txt'), 'change 3\n');
    await git(['commit', '-q', '-am', 'change 3'], work, env);

    // What the issue saw: the lock refuses every later push to the branch, the midx lock every repack.
    await assert.rejects(git(['push', '-q', bare, 'main:refs/heads/p2/b1'], work, env), /cannot lock ref 'refs\/heads\/p2\/b1'/);
    await assert.rejects(git(['--git-dir', bare, 'repack', '-d', '-q', '--geometric=2', '--write-midx', '--write-bitmap-index'], dir, env));

    const found = await findLeftovers(bare, { olderThanMs: 0 });
    assert.deepEqual(sorted(found), sorted(EXPECTED as { kind: string; path: string }[]));
    await removeLeftovers(bare, found);
    assert.deepEqual(await findLeftovers(bare, { olderThanMs: 0 }), []);

    await git(['push', '-q', bare, 'main:refs/heads/p2/b1'], work, env);
    await git(['--git-dir', bare, 'repack', '-d', '-q', '--geometric=2', '--write-midx', '--write-bitmap-index'], dir, env);
    await git(['--git-dir', bare, 'commit-graph', 'write', '--reachable', '--split', '--no-progress'], dir, env);
    await git(['--git-dir', bare, 'fsck', '--strict', '--no-progress'], dir, env);
    // Nothing git needs was touched: objects, packs and refs are all there.
    const packs = await readdir(path.join(bare, 'objects/pack'));
    assert.ok(packs.some((f) => f.endsWith('.pack')) && packs.includes('multi-pack-index'), packs.join(' '));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('while running, only leftovers older than the bound count; a live gc.pid of this host is kept', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-recovery-'));
  try {
    const { bare } = await repository(dir);
    await crashLeftovers(bare);
    await writeFile(path.join(bare, 'gc.pid'), `${process.pid} ${hostname()}`);
    assert.deepEqual(await findLeftovers(bare, { olderThanMs: 60_000 }), [], 'fresh files are some live git process’s');

    const old = new Date(Date.now() - 120_000);
    for (const rel of ['refs/heads/p2/b1.lock', 'objects/tmp_objdir-incoming-Ab12Cd', 'gc.pid']) await utimes(path.join(bare, rel), old, old);
    assert.deepEqual(sorted(await findLeftovers(bare, { olderThanMs: 60_000 })), [
      { kind: 'quarantine', path: 'objects/tmp_objdir-incoming-Ab12Cd' },
      { kind: 'ref_lock', path: 'refs/heads/p2/b1.lock' },
    ]);
    // git's own rule: a gc.pid naming a process of this host that is gone is stale at any age.
    await writeFile(path.join(bare, 'gc.pid'), `${DEAD_PID} ${hostname()}`);
    assert.ok((await findLeftovers(bare, { olderThanMs: 60_000 })).some((l) => l.path === 'gc.pid'));
    // … and at start every one is (no git of ours runs yet).
    await writeFile(path.join(bare, 'gc.pid'), `${process.pid} ${hostname()}`);
    assert.ok((await findLeftovers(bare, { olderThanMs: 0 })).some((l) => l.path === 'gc.pid'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('Recovery: at start everything, scheduled only in repositories nobody holds; scratch of dead processes; counted by kind', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-recovery-'));
  try {
    const { bare } = await repository(dir);
    const scratchDir = path.join(dir, 'tmp');
    await mkdir(path.join(scratchDir, `restore-R1-pid${DEAD_PID}-abc`, 'objects'), { recursive: true });
    await mkdir(path.join(scratchDir, `compact-R1-pid${process.pid}-def`), { recursive: true });
    await mkdir(path.join(scratchDir, 'init-R2.git'), { recursive: true });
    await crashLeftovers(bare);
    let held = true;
    const registry = new Registry();
    const recovery = new Recovery(
      { intervalMs: 0, staleMs: 1000 },
      { repositories: async () => [{ id: 'R1', path: bare }, { id: 'R9', path: path.join(dir, 'evicted.git') }], scratchDir, held: () => held, log: pino({ level: 'silent' }), metrics: createRecoveryMetrics(registry) },
    );
    const report = await recovery.atStart();
    assert.deepEqual(report, { repositories: 2, removed: EXPECTED.length + 2, skipped: 0 });
    // The dead process's scratch and (at start) a predecessor's with our pid; a fresh unnamed one stays.
    assert.deepEqual(await readdir(scratchDir), ['init-R2.git']);
    const text = await registry.metrics();
    assert.match(text, /gitstratum_recovery_removed_total\{kind="ref_lock"\} 2/);
    assert.match(text, /gitstratum_recovery_removed_total\{kind="maintenance_lock"\} 3/);
    assert.match(text, /gitstratum_recovery_removed_total\{kind="quarantine"\} 2/);
    assert.match(text, /gitstratum_recovery_removed_total\{kind="scratch"\} 2/);

    // Scheduled: a held repository is left alone even with old leftovers …
    await crashLeftovers(bare);
    const old = new Date(Date.now() - 60_000);
    await utimes(path.join(bare, 'refs/heads/p2/b1.lock'), old, old);
    // … and scratch named for this (running) process is its own.
    await mkdir(path.join(scratchDir, `compact-R1-pid${process.pid}-ghi`));
    assert.equal((await recovery.sweep()).skipped, 2);
    assert.ok(await stat(path.join(bare, 'refs/heads/p2/b1.lock')));
    held = false;
    const swept = await recovery.sweep();
    assert.equal(swept.removed, 2, 'the old lock, and the gc.pid of a dead process');
    assert.equal(await stat(path.join(bare, 'refs/heads/p2/b1.lock')).catch(() => undefined), undefined);
    assert.ok(await stat(path.join(bare, 'packed-refs.lock')), 'a fresh lock stays');
    assert.ok(await stat(path.join(scratchDir, `compact-R1-pid${process.pid}-ghi`)));
    await recovery.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('busyRepositories names the repositories another live process works in (an orphan of a killed server)', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-recovery-'));
  const child = spawn('sleep', ['30'], { cwd: dir, stdio: 'ignore' });
  try {
    await new Promise((resolve) => child.once('spawn', resolve));
    const other = path.join(tmpdir(), 'not-a-repository-of-anyone.git');
    const busy = await busyRepositories([dir, other]);
    assert.deepEqual([...busy], [path.resolve(dir)]);
  } finally {
    child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
