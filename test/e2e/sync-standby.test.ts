/**
 * A synchronous standby (issue 11; docs/design/replication.md), with real processes: a frontend,
 * the writer of shard `local` on its own disk, and a sync replica on another. While 8 clients
 * push in a loop through the frontend, the writer is killed with SIGKILL and its disk deleted;
 * the sync replica takes the shard over, and every push git reported as successful is on its
 * disk (a ledger, ref by ref), every repository `git fsck` clean. Where git reported a failure
 * either outcome is allowed. Then a synchronous replica of the new writer dies: pushes go on,
 * counted and logged as unsynced. Every process is stopped by its PID; waits are for conditions.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, databaseBackends, freshDatabaseUrl, tempDir } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';
import { asEnv, CLUSTER_SECRET, frontendCli, seedAliceMain, serving, startStorageNode } from '../support/cluster.js';

const NODE_ARGS = ['--shard-lease-seconds', '3', '--maintenance-enabled', 'false'];

describe('a synchronous standby', { skip: !databaseBackends().includes('postgres') && 'PostgreSQL not configured' }, () => {
  let s3: TestS3;
  let shared: NodeJS.ProcessEnv;
  let frontend: Server;
  let writer: Server;
  let standby: Server;
  const nodes: Server[] = [];
  let git: Git;
  let token: string;
  let scratch: string;
  const repoIds = new Map<string, string>();

  const cli = frontendCli(() => frontend, () => shared);
  const gitDirOn = (dataDir: string, repo: string) => {
    const id = repoIds.get(repo)!;
    return path.join(dataDir, 'repos', id.slice(0, 2), `${id}.git`);
  };
  const metric = async (node: Server, pattern: RegExp) => Number(pattern.exec(await (await fetch(new URL('/metrics', node.url))).text())?.[1] ?? 0);

  before(async () => {
    s3 = await startS3();
    shared = asEnv(['--database-url', await freshDatabaseUrl(), '--cluster-secret', CLUSTER_SECRET, ...s3.storeArgs()]);
    writer = await startStorageNode({ shared, shard: 'local', args: NODE_ARGS });
    nodes.push(writer);
    await serving(writer);
    frontend = await Server.start({ env: { ...shared, GITSTRATUM_ROLE: 'frontend' } });
    git = await Git.create();
    token = await seedAliceMain(cli);
    for (const name of ['r0', 'r1']) repoIds.set(name, (JSON.parse(await cli(['repo', 'create', `alice/main/${name}`, '--json'])) as { id: string }).id);
    standby = await startStorageNode({ shared, shard: 'local', args: [...NODE_ARGS, '--replica', 'sync', '--replica-interval-seconds', '1'] });
    nodes.push(standby);
    scratch = await tempDir('gitstratum-sync-work-');
  });

  after(async () => {
    await frontend?.cleanup();
    for (const n of nodes) await n.stop();
    for (const n of nodes) for (const dir of [n.dataDir, `${n.dataDir}-lost`]) await rm(dir, { recursive: true, force: true });
    await s3?.stop();
    await rm(scratch, { recursive: true, force: true });
    await rm(git.home, { recursive: true, force: true });
  });

  test('the writer is killed and its disk deleted while 8 clients push: the standby has every acknowledged push', async () => {
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
      if (writer.logs.some((l) => l.includes('pushes wait for this synchronous replica'))) break;
    }
    assert.ok(writer.logs.some((l) => l.includes('pushes wait for this synchronous replica')), 'the writer found its synchronous replica');

    // Each pusher commits on top of its own last commit and pushes, until the writer is killed;
    // the ledger keeps each one's last acknowledged commit. Nobody pushes again before the
    // check, so a lost push cannot be hidden by a later one carrying its commit.
    const ledger = new Map<number, { repo: string; ref: string; work: string; acked?: string }>();
    let acknowledged = 0;
    let running = true;
    let killing = false;
    /** Acknowledged commits the standby did not hold at the moment `git push` returned. */
    const notHeld: string[] = [];
    const pushers = Array.from({ length: 8 }, async (_, p) => {
      const work = path.join(scratch, `p${p}`);
      await mkdir(work, { recursive: true });
      await git.ok(['init', '-q', '-b', 'main', work]);
      // Pusher 0 pushes the default branch, which HEAD points to (its ref transactions name HEAD too).
      const entry: { repo: string; ref: string; work: string; acked?: string } = { repo: `r${p % 2}`, ref: p === 0 ? 'refs/heads/main' : `refs/heads/p${p}`, work };
      ledger.set(p, entry);
      const url = frontend.repoUrl(`alice/main/${entry.repo}.git`, token);
      for (let n = 1; running; n++) {
        await git.commits(work, 1, { files: 1, seed: p * 100_000 + n, prefix: `p${p}` });
        const sha = await git.revParse(work, 'HEAD');
        const r = await git.run(['push', '-q', '--force', url, `HEAD:${entry.ref}`], { cwd: work, timeoutMs: 120_000 });
        if (r.code === 0) {
          entry.acked = sha;
          acknowledged++;
          // Held before the refs committed, not fetched later by the follower (which lags by
          // a round trip at least): on the standby's disk the moment the push is acknowledged.
          if (!killing && (await git.run(['--git-dir', gitDirOn(standby.dataDir, entry.repo), 'cat-file', '-e', sha])).code !== 0) notHeld.push(sha);
        } else {
          await sleep(100);
        }
      }
    });
    try {
      for (const deadline = Date.now() + 120_000; acknowledged < 24 && Date.now() < deadline; ) await sleep(100);
      assert.ok(acknowledged >= 24, `pushes are acknowledged before the kill (${acknowledged})`);
      assert.ok((await metric(writer, /^gitstratum_sync_transactions_total\{result="held"\} (\d+)/m)) >= 24, 'the replica held their objects before their refs committed');
      // Mostly from the pack the writer sent along (a fetch only when the standby's copy lagged).
      assert.ok((await metric(standby, /^gitstratum_sync_holds_total\{how="pack"\} (\d+)/m)) >= 12, 'the writer sent the new objects along');
      killing = true;
      writer.process.kill('SIGKILL');
      // The disk is gone: renamed away at once (git processes the kill left may still be
      // writing into it for a moment; it is deleted at the end).
      await rename(writer.dataDir, `${writer.dataDir}-lost`);
    } finally {
      running = false;
      await Promise.all(pushers);
    }
    await serving(standby);
    assert.deepEqual(notHeld, [], 'every acknowledged commit was on the standby when its push was acknowledged');

    const took = standby.logs.find((l) => l.includes('synchronous standby took the shard over'));
    assert.ok(took && took.includes('"refs_lost":0'), `the standby applied the committed transactions and lost none: ${took}`);
    for (const [p, entry] of ledger) {
      assert.ok(entry.acked, `pusher ${p} had a push acknowledged`);
      const live = await git.run(['--git-dir', gitDirOn(standby.dataDir, entry.repo), 'rev-parse', '--verify', '-q', entry.ref]);
      assert.equal(live.code, 0, `pusher ${p}'s ref exists on the standby`);
      const r = await git.run(['--git-dir', gitDirOn(standby.dataDir, entry.repo), 'merge-base', '--is-ancestor', entry.acked!, live.stdout.trim()]);
      assert.equal(r.code, 0, `pusher ${p}'s last acknowledged commit ${entry.acked} is in ${entry.ref}`);
    }
    for (const repo of repoIds.keys()) await git.ok(['--git-dir', gitDirOn(standby.dataDir, repo), 'fsck', '--no-progress']);

    // The standby is the writer now: pushes through the frontend land on it.
    const p0 = ledger.get(0)!;
    await git.commits(p0.work, 1, { files: 1, seed: 999_999, prefix: 'after' });
    let pushed = false;
    for (const deadline = Date.now() + 60_000; !pushed && Date.now() < deadline; await sleep(pushed ? 0 : 250)) {
      pushed = (await git.run(['push', '-q', frontend.repoUrl(`alice/main/${p0.repo}.git`, token), `HEAD:${p0.ref}`], { cwd: p0.work, timeoutMs: 60_000 })).code === 0;
    }
    assert.ok(pushed, 'a push after the takeover is acknowledged');
    assert.equal(await metric(standby, /^gitstratum_sync_replica_connected (\d+)/m), 0, 'the new writer has no synchronous replica of its own');

    // A shard set to refuse pushes while no synchronous replica is connected: refused, with a
    // message git prints, and no ref moves; accepted again once set back.
    await cli(['shard', 'sync-missing', 'local', 'refuse']);
    await git.commits(p0.work, 1, { files: 1, seed: 999_998, prefix: 'refused' });
    const url = frontend.repoUrl(`alice/main/${p0.repo}.git`, token);
    let refused: { code: number | null; stderr: string } | undefined;
    let seed = 999_000;
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(250)) {
      const r = await git.run(['push', '-q', url, `HEAD:${p0.ref}`], { cwd: p0.work, timeoutMs: 60_000 });
      if (r.code !== 0) {
        refused = r;
        break;
      }
      // Accepted before the writer read the setting (it does every second): push another commit.
      await git.commits(p0.work, 1, { files: 1, seed: seed++, prefix: 'refused' });
    }
    assert.ok(refused, 'a push is refused once the writer read the setting');
    assert.match(refused.stderr, /remote: gitstratum: push refused: shard local has no synchronous replica connected, and shard local accepts pushes only with one/);
    assert.notEqual((await git.run(['--git-dir', gitDirOn(standby.dataDir, p0.repo), 'rev-parse', p0.ref])).stdout.trim(), await git.revParse(p0.work, 'HEAD'), 'no ref moved');
    await cli(['shard', 'sync-missing', 'local', 'accept']);
    pushed = false;
    for (const deadline = Date.now() + 30_000; !pushed && Date.now() < deadline; await sleep(pushed ? 0 : 250)) {
      pushed = (await git.run(['push', '-q', url, `HEAD:${p0.ref}`], { cwd: p0.work, timeoutMs: 60_000 })).code === 0;
    }
    assert.ok(pushed, 'accepted again once set back to accept');
    // Clients see it all through the frontend.
    const clone = path.join(scratch, 'after');
    await git.ok(['clone', '-q', frontend.repoUrl('alice/main/r1.git', token), clone]);
    assert.equal((await git.run(['merge-base', '--is-ancestor', ledger.get(1)!.acked!, 'refs/remotes/origin/p1'], { cwd: clone })).code, 0);
  });

  test('a synchronous replica of the new writer that dies: pushes go on unsynced (accept), counted and logged; one that comes back is waited for again', async () => {
    // `standby` writes now; a new synchronous replica on a fresh disk follows it.
    const writerNow = standby;
    const replica = await startStorageNode({ shared, shard: 'local', args: [...NODE_ARGS, '--replica', 'sync', '--replica-interval-seconds', '1'] });
    nodes.push(replica);
    const connected = async (value: number) => {
      for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
        if ((await metric(writerNow, /^gitstratum_sync_replica_connected (\d+)/m)) === value) return;
      }
      assert.fail(`gitstratum_sync_replica_connected never became ${value}`);
    };
    await connected(1);
    const work = path.join(scratch, 'unsynced');
    await mkdir(work, { recursive: true });
    await git.ok(['init', '-q', '-b', 'main', work]);
    const url = frontend.repoUrl('alice/main/r1.git', token);
    const pushOne = async (seed: number) => {
      await git.commits(work, 1, { files: 1, seed, prefix: 'unsynced' });
      return (await git.run(['push', '-q', '--force', url, 'HEAD:refs/heads/unsynced'], { cwd: work, timeoutMs: 60_000 })).code;
    };
    const held = () => metric(writerNow, /^gitstratum_sync_transactions_total\{result="held"\} (\d+)/m);
    const unsynced = () => metric(writerNow, /^gitstratum_sync_transactions_total\{result="unsynced"\} (\d+)/m);
    const heldBefore = await held();
    assert.equal(await pushOne(1), 0);
    assert.ok((await held()) > heldBefore, 'held by the new replica');

    // The replica dies; it stays registered, so pushes still wait for it, fail to reach it, and
    // are accepted unsynced (the shard's default, sync-missing accept).
    replica.process.kill('SIGKILL');
    const unsyncedBefore = await unsynced();
    assert.equal(await pushOne(2), 0, 'the push is acknowledged');
    assert.ok((await unsynced()) > unsyncedBefore, 'and counted unsynced');
    assert.ok(writerNow.logs.some((l) => l.includes('did not take the push') && l.includes('push committed without it')), 'and logged');

    // Started again on its disk (a new port): the writer finds it and waits for it again.
    const back = await startStorageNode({ shared, shard: 'local', dataDir: replica.dataDir, args: [...NODE_ARGS, '--replica', 'sync', '--replica-interval-seconds', '1'] });
    nodes.push(back);
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
      if (writerNow.logs.some((l) => l.includes('pushes wait for this synchronous replica') && l.includes(back.url.replace(/\/$/, '')))) break;
    }
    const heldAgain = await held();
    assert.equal(await pushOne(3), 0);
    assert.ok((await held()) > heldAgain, 'held by the replica that came back');
    assert.equal((await git.run(['--git-dir', gitDirOn(back.dataDir, 'r1'), 'cat-file', '-e', await git.revParse(work, 'HEAD')])).code, 0, 'which has the pushed commit');
  });
});
