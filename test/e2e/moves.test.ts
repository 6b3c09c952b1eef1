/**
 * Moving repositories between shards (issue 11), with the fewest processes that prove it: one
 * frontend and the writers of two shards, `local` and `b`, each on a disk of its own, on
 * PostgreSQL and s3rver. The mover is the admin command line, as an operator runs it.
 *
 * 1. A repository moves while two clients push in a loop and one clones in a loop: no clone
 *    fails, a push fails only with 503 (the pause), every acknowledged push is on the new
 *    shard's copy, which is fsck-clean, and the old copy is removed after the grace period.
 * 2. The target's writer killed (SIGKILL) in the middle of its copy: the repository goes on
 *    being served, pushes included, from its shard; the writer started again on its disk, the
 *    same move finishes.
 * 3. The source's writer frozen and then killed while pushes are paused: the move gives up
 *    when the pause runs out, and the repository is served from its shard as before, pushes
 *    included, once its writer is back; moving it again succeeds.
 * 4. `shard drain b` moves what is left on b to the other shard and marks b drained.
 *
 * Every process is stopped by its PID (the harness's ChildProcess handles); waits are for
 * conditions, with generous bounds.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, Git, Server, databaseBackends, freshDatabaseUrl, tempDir, type RunResult } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';
import { asEnv, CLUSTER_SECRET, frontendCli, seedAliceMain, serving, startStorageNode, stopCluster, stopped } from '../support/cluster.js';

const NODE_ARGS = ['--shard-lease-seconds', '3', '--maintenance-enabled', 'false', '--move-grace-seconds', '2'];

describe('moving repositories between shards', { skip: !databaseBackends().includes('postgres') && 'PostgreSQL not configured' }, () => {
  let s3: TestS3;
  let shared: NodeJS.ProcessEnv;
  let frontend: Server;
  let source: Server;
  let target: Server;
  const nodes: Server[] = [];
  let git: Git;
  let token: string;
  let scratch: string;

  const cli = frontendCli(() => frontend, () => shared);
  /** The admin command line, running in the background; its result when it exits. */
  const cliInBackground = (args: string[]): Promise<RunResult> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [BIN, ...args, '--data', frontend.dataDir], { env: { ...process.env, ...shared, GITSTRATUM_ROLE: 'frontend' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  const dirOn = (node: Server, id: string) => path.join(node.dataDir, 'repos', id.slice(0, 2), `${id}.git`);
  const exists = (p: string) => stat(p).then(() => true, () => false);
  const url = (repo: string) => frontend.repoUrl(`alice/main/${repo}.git`, token);
  const shardOf = async (repo: string) => (JSON.parse(await cli(['repo', 'list', 'alice/main', '--json'])) as { name: string; shard: string }[]).find((r) => r.name === repo)?.shard;
  const startNode = async (shard: string, opts: { dataDir?: string; env?: NodeJS.ProcessEnv } = {}) => {
    const node = await startStorageNode({ shared, shard, args: NODE_ARGS, ...opts });
    nodes.push(node);
    await serving(node);
    return node;
  };
  const refOn = async (node: Server, id: string, ref: string) => (await git.run(['--git-dir', dirOn(node, id), 'rev-parse', '--verify', '-q', ref])).stdout.trim();

  before(async () => {
    s3 = await startS3();
    shared = asEnv(['--database-url', await freshDatabaseUrl(), '--cluster-secret', CLUSTER_SECRET, ...s3.storeArgs()]);
    source = await startNode('local');
    frontend = await Server.start({ env: { ...shared, GITSTRATUM_ROLE: 'frontend' } });
    git = await Git.create();
    token = await seedAliceMain(cli);
    // Placement never chooses b: repositories get there by moving only.
    await cli(['shard', 'create', 'b', '--no-new']);
    target = await startNode('b');
    scratch = await tempDir('gitstratum-moves-work-');
  });

  after(() => stopCluster({ frontend, nodes, s3, signal: 'SIGKILL', extraDirs: [scratch, git?.home] }));

  test('a repository moves while clients push and clone: no clone fails, pushes see only 503, nothing acknowledged is lost', async () => {
    const id = (JSON.parse(await cli(['repo', 'create', 'alice/main/r', '--json'])) as { id: string }).id;
    const seed = await git.workTree(path.join(scratch, 'seed'), { commits: 5 });
    await git.ok(['push', '-q', url('r'), 'main'], { cwd: seed });
    assert.equal(await shardOf('r'), 'local');

    let moving = true;
    const acknowledged = new Map<string, string>();
    const pushFailures: string[] = [];
    const cloneFailures: string[] = [];
    let pushes = 0;
    let clones = 0;
    // Each pusher its own branch, so no push fails for being behind; each goes on for a few
    // rounds after the move, so pushes to the new shard are in the ledger too.
    const pusher = async (n: number) => {
      const work = path.join(scratch, `pusher-${n}`);
      await git.ok(['clone', '-q', url('r'), work]);
      let after = 0;
      for (let round = 0; moving || after++ < 3; round++) {
        await git.commits(work, 1, { seed: n * 1000 + round, prefix: `p${n}` });
        const r = await git.run(['push', '-q', url('r'), `HEAD:refs/heads/p${n}`], { cwd: work });
        pushes++;
        if (r.code === 0) acknowledged.set(`refs/heads/p${n}`, await git.revParse(work, 'HEAD'));
        else pushFailures.push(r.stderr);
        if (r.code !== 0) await sleep(200);
      }
    };
    const cloner = async () => {
      for (let i = 0; moving || i < 2; i++) {
        const dir = path.join(scratch, `clone-${i}`);
        const r = await git.run(['clone', '-q', '--no-checkout', url('r'), dir]);
        clones++;
        if (r.code !== 0) cloneFailures.push(r.stderr);
        await rm(dir, { recursive: true, force: true });
      }
    };
    const load = Promise.all([pusher(1), pusher(2), cloner()]);
    // Some pushes before the move begins.
    for (const deadline = Date.now() + 60_000; pushes < 4 && Date.now() < deadline; ) await sleep(100);
    let moved: string;
    try {
      moved = await cli(['repo', 'move', 'alice/main/r', '--to-shard', 'b']);
    } finally {
      moving = false;
      await load;
    }
    assert.match(moved, /^moved alice\/main\/r from shard local to b: \d+ refs, pushes paused \d+\.\d s/);
    assert.equal(await shardOf('r'), 'b');
    assert.deepEqual(cloneFailures, [], 'no clone fails during the move');
    for (const failure of pushFailures) assert.match(failure, /\b503\b/, `a push failed otherwise than with 503:\n${failure}`);
    assert.ok(acknowledged.size === 2 && pushes > pushFailures.length, `pushes were acknowledged (${pushes} pushes, ${pushFailures.length} failed)`);
    // Every acknowledged push is on the new shard's copy, which is whole.
    for (const [ref, oid] of acknowledged) assert.equal(await refOn(target, id, ref), oid, `${ref} on shard b`);
    await git.ok(['--git-dir', dirOn(target, id), 'fsck', '--strict', '--no-dangling']);
    // A clone now comes from b; the old copy goes once the grace period is over.
    assert.equal((await git.run(['ls-remote', url('r'), 'refs/heads/p1'])).stdout.split('\t')[0], acknowledged.get('refs/heads/p1'));
    for (const deadline = Date.now() + 60_000; (await exists(dirOn(source, id))) && Date.now() < deadline; ) await sleep(200);
    assert.equal(await exists(dirOn(source, id)), false, 'the old copy is removed after the grace period');
    const audit = await cli(['audit', 'list', '--json']);
    assert.match(audit, /"action": "repo\.move"/);
  });

  test("kill -9 of the target's writer mid-copy, then of the source's mid-pause: the repository stays served from one shard", async () => {
    const id = (JSON.parse(await cli(['repo', 'create', 'alice/main/k', '--json'])) as { id: string }).id;
    const work = await git.workTree(path.join(scratch, 'k'), { commits: 3, seed: 7 });
    await git.ok(['push', '-q', url('k'), 'main'], { cwd: work });
    assert.equal(await shardOf('k'), 'local');

    // The target's writer, started again to stop in its copy (and, later, in a quiesce).
    await target.stop();
    target = await startNode('b', { dataDir: target.dataDir, env: { GITSTRATUM_TEST_PAUSE_AT: 'move-copy' } });
    const move = cliInBackground(['repo', 'move', 'alice/main/k', '--to-shard', 'b']);
    await stopped(target.process.pid!);
    await target.stop('SIGKILL');
    // Meanwhile the repository is served from local, pushes included (they are not paused yet).
    await git.commits(work, 1, { seed: 71 });
    await git.ok(['push', '-q', url('k'), 'main'], { cwd: work });
    assert.match(await git.ok(['ls-remote', url('k'), 'refs/heads/main']), new RegExp(`^${await git.revParse(work, 'HEAD')}\t`));
    assert.equal(await shardOf('k'), 'local');
    // Back on its disk, the target's writer finishes the same move.
    target = await startNode('b', { dataDir: target.dataDir, env: { GITSTRATUM_TEST_PAUSE_AT: 'move-quiesce' } });
    const first = await move;
    assert.equal(first.code, 0, first.stderr);
    assert.equal(await shardOf('k'), 'b');
    assert.equal(await refOn(target, id, 'refs/heads/main'), await git.revParse(work, 'HEAD'));

    // Moving it back: the source is now b, which stops in its quiesce and is killed there.
    const back = cliInBackground(['repo', 'move', 'alice/main/k', '--to-shard', 'local', '--pause-max-seconds', '8']);
    await stopped(target.process.pid!);
    await target.stop('SIGKILL');
    const failed = await back;
    assert.equal(failed.code, 1, failed.stdout);
    assert.match(failed.stderr, /failed; it stays on shard b: /);
    assert.equal(await shardOf('k'), 'b');
    // Its writer back, it serves the repository as before: the pause is lifted.
    target = await startNode('b', { dataDir: target.dataDir });
    await git.commits(work, 1, { seed: 72 });
    await git.ok(['push', '-q', url('k'), 'main'], { cwd: work });
    assert.equal(await refOn(target, id, 'refs/heads/main'), await git.revParse(work, 'HEAD'));
    // And moving it again succeeds.
    assert.match(await cli(['repo', 'move', 'alice/main/k', '--to-shard', 'local']), /^moved alice\/main\/k from shard b to local/);
    assert.equal(await shardOf('k'), 'local');
    assert.equal(await refOn(source, id, 'refs/heads/main'), await git.revParse(work, 'HEAD'));
    await git.ok(['--git-dir', dirOn(source, id), 'fsck', '--strict', '--no-dangling']);
  });

  test('shard drain moves every repository off the shard and marks it drained', async () => {
    assert.equal(await shardOf('r'), 'b', 'the first test left r on b');
    const head = (await git.run(['ls-remote', url('r'), 'refs/heads/main'])).stdout;
    const out = await cli(['shard', 'drain', 'b', '--concurrency', '2']);
    assert.equal(out, '1 moved, 0 failed; 0 left on shard b: it is drained\n');
    assert.equal(await shardOf('r'), 'local');
    assert.equal((await git.run(['ls-remote', url('r'), 'refs/heads/main'])).stdout, head, 'served from local with the same refs');
    const shards = JSON.parse(await cli(['shard', 'list', '--json'])) as { name: string; state: string; repositories: number }[];
    const b = shards.find((s) => s.name === 'b');
    assert.deepEqual([b?.state, b?.repositories], ['drained', 0]);
  });
});
