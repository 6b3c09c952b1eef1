/**
 * Repository maintenance after pushes, with the real git client against a server that
 * maintains a repository as soon as a push lands (--maintenance-delay-seconds 0): within a
 * bounded wait the repository has a reachability bitmap and a commit-graph covering the pushed
 * commits; pushes that land while maintenance runs succeed and get covered by a later run;
 * clones keep working throughout. Every scenario creates and pushes its own repository.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, tempDir } from './harness.js';

let server: Server;
let git: Git;
let token: string;

before(async () => {
  server = await Server.start({ args: ['--maintenance-delay-seconds', '0'] });
  await server.createUser('alice');
  await server.createSpace('alice/main');
  token = await server.token('alice', 'write');
  git = await Git.create();
});

after(() => server.cleanup());

async function createRepo(name: string): Promise<{ url: string; path: string }> {
  const created = await server.createRepo(`alice/main/${name}`);
  return { url: server.repoUrl(`alice/main/${name}.git`, token), path: created.path };
}

/**
 * The commits in a repository's commit-graph (a single file or a chain of layers), read from
 * the OID Lookup chunk (gitformat-commit-graph: an 8-byte header, then a table of 12-byte
 * chunk entries, id and offset; OIDF is 256 cumulative counts; OIDL the sorted object ids).
 */
async function commitGraphCommits(repoPath: string): Promise<Set<string>> {
  const info = path.join(repoPath, 'objects', 'info');
  const chain = await readFile(path.join(info, 'commit-graphs', 'commit-graph-chain'), 'utf8').catch(() => undefined);
  const files = chain
    ? chain.split('\n').filter(Boolean).map((h) => path.join(info, 'commit-graphs', `graph-${h}.graph`))
    : [path.join(info, 'commit-graph')];
  const commits = new Set<string>();
  for (const file of files) {
    const buf = await readFile(file).catch(() => undefined);
    if (!buf) continue;
    assert.equal(buf.subarray(0, 4).toString(), 'CGPH', `${file} is a commit-graph`);
    const chunks = new Map<string, number>();
    for (let i = 0; i < buf[6]!; i++) {
      const at = 8 + i * 12;
      chunks.set(buf.subarray(at, at + 4).toString('latin1'), Number(buf.readBigUInt64BE(at + 4)));
    }
    const count = buf.readUInt32BE(chunks.get('OIDF')! + 255 * 4);
    const oids = chunks.get('OIDL')!;
    for (let i = 0; i < count; i++) commits.add(buf.subarray(oids + i * 20, oids + (i + 1) * 20).toString('hex'));
  }
  return commits;
}

/** What is not yet covered: commits missing from the commit-graph, and whether `tip` has a bitmap. */
async function uncovered(repoPath: string, tip: string): Promise<{ missing: string[]; bitmap: boolean }> {
  const all = (await git.ok(['--git-dir', repoPath, 'rev-list', '--all'])).split('\n').filter(Boolean);
  const graph = await commitGraphCommits(repoPath);
  // Exits non-zero ("doesn't have an indexed bitmap") until a bitmap covers the commit.
  const test = await git.run(['--git-dir', repoPath, 'rev-list', '--test-bitmap', tip]);
  return { missing: all.filter((c) => !graph.has(c)), bitmap: test.code === 0 && /OK!/.test(test.stdout + test.stderr) };
}

/** Waits (bounded) until the repository's commit-graph and bitmap cover `tip` and everything else. */
async function waitCovered(repoPath: string, tip: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let state = await uncovered(repoPath, tip);
  while (state.missing.length > 0 || !state.bitmap) {
    if (Date.now() > deadline) {
      const packs = await readdir(path.join(repoPath, 'objects', 'pack'));
      assert.fail(`not covered after ${timeoutMs} ms: ${state.missing.length} commits missing from the commit-graph, bitmap of ${tip}: ${state.bitmap}; packs: ${packs.join(' ')}`);
    }
    await sleep(100);
    state = await uncovered(repoPath, tip);
  }
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(new URL('/metrics', server.url))).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name + ' ') || line.startsWith(name + '{')) sum += Number(line.split(' ').pop());
  return sum;
}

async function waitIdle(timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await metric('gitstratum_maintenance_pending')) + (await metric('gitstratum_maintenance_running')) > 0) {
    assert.ok(Date.now() < deadline, `maintenance still pending or running after ${timeoutMs} ms`);
    await sleep(50);
  }
}

test('after a push the repository gets a bitmap and a commit-graph covering the new commits', async () => {
  const repo = await createRepo('covered');
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 5, seed: 11 });
  await git.ok(['push', '-q', repo.url, 'main'], { cwd: work });
  await waitCovered(repo.path, await git.revParse(work, 'HEAD'));
  const packs = await readdir(path.join(repo.path, 'objects', 'pack'));
  assert.ok(packs.includes('multi-pack-index'), packs.join(' '));
  assert.ok(packs.some((f) => f.endsWith('.bitmap')), packs.join(' '));

  // The next push: its commit is covered too, and its loose objects got packed.
  await git.commits(work, 1, { seed: 12 });
  await git.ok(['tag', 'v2'], { cwd: work });
  await git.ok(['push', '-q', repo.url, 'main', 'v2'], { cwd: work });
  const tip = await git.revParse(work, 'HEAD');
  await waitCovered(repo.path, tip);
  await waitIdle();
  const loose = (await git.ok(['--git-dir', repo.path, 'count-objects', '-v'])).match(/^count: (\d+)$/m)?.[1];
  assert.equal(loose, '0', 'the pushed objects were packed');
  const fsck = await git.run(['--git-dir', repo.path, 'fsck', '--strict', '--no-progress', '--no-dangling']);
  assert.equal(fsck.code, 0, fsck.stderr);
  assert.ok((await metric('gitstratum_maintenance_runs_total')) >= 2);

  // And the repository serves the same history as the pusher's.
  const dest = path.join(await tempDir(), 'clone');
  await git.ok(['clone', '-q', repo.url, dest]);
  assert.equal(await git.revParse(dest, 'HEAD'), tip);
});

test('pushes that land while maintenance runs succeed, and a later run covers them', async () => {
  const repo = await createRepo('busy');
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, seed: 21 });
  // Incompressible bytes: packing them takes the maintenance run a second or more.
  await writeFile(path.join(work, 'blob.bin'), randomBytes(48 * 1024 * 1024));
  await git.ok(['add', 'blob.bin'], { cwd: work });
  await git.ok(['commit', '-q', '-m', 'big blob'], { cwd: work });
  const runsBefore = await metric('gitstratum_maintenance_runs_total');
  await git.ok(['push', '-q', repo.url, 'main'], { cwd: work });

  const deadline = Date.now() + 20_000;
  while ((await metric('gitstratum_maintenance_running')) === 0) {
    assert.ok(Date.now() < deadline, 'maintenance did not start after the push');
    await sleep(10);
  }
  // Pushes of new commits and of a new branch while the repack runs.
  let overlapped = 0;
  for (let i = 0; i < 3; i++) {
    await git.commits(work, 1, { seed: 30 + i, prefix: `during-${i}` });
    await git.ok(['push', '-q', repo.url, 'main', `main:refs/heads/during-${i}`], { cwd: work });
    if ((await metric('gitstratum_maintenance_running')) > 0) overlapped++;
  }
  assert.ok(overlapped > 0, 'at least one push landed while maintenance ran');
  const tip = await git.revParse(work, 'HEAD');
  await waitCovered(repo.path, tip);
  await waitIdle();
  assert.ok((await metric('gitstratum_maintenance_runs_total')) - runsBefore >= 2, 'the pushes during the run caused another run');
  assert.equal(await metric('gitstratum_maintenance_runs_total{result="failed"}'), 0);

  const refs = new Map((await git.ok(['ls-remote', repo.url])).split('\n').filter(Boolean).map((l) => l.split('\t').reverse() as [string, string]));
  assert.equal(refs.get('refs/heads/main'), tip);
  assert.equal(refs.get('refs/heads/during-2'), tip);
  assert.ok(refs.has('refs/heads/during-0'));
  const dest = path.join(await tempDir(), 'clone');
  await git.ok(['clone', '-q', repo.url, dest]);
  assert.equal(await git.revParse(dest, 'HEAD'), tip);
  const fsck = await git.run(['--git-dir', repo.path, 'fsck', '--strict', '--no-progress', '--no-dangling']);
  assert.equal(fsck.code, 0, fsck.stderr);
});

test('a server with maintenance disabled leaves the repository as the push left it', async () => {
  const quiet = await Server.start({ args: ['--maintenance-enabled', 'false'] });
  try {
    await quiet.createUser('alice');
    await quiet.createSpace('alice/main');
    const created = await quiet.createRepo('alice/main/plain');
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 41 });
    await git.ok(['push', '-q', quiet.repoUrl('alice/main/plain.git', await quiet.token('alice', 'write')), 'main'], { cwd: work });
    await sleep(1500);
    assert.deepEqual(await readdir(path.join(created.path, 'objects', 'pack')), []);
    const text = await (await fetch(new URL('/metrics', quiet.url))).text();
    assert.doesNotMatch(text, /gitstratum_maintenance_runs_total/);
  } finally {
    await quiet.cleanup();
  }
});
