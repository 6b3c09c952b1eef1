/**
 * A shard's writer fails and its same-volume standby takes over (issue 10), with the fewest
 * processes that prove it: one frontend and two storage nodes of shard `local` on one data
 * directory (the volume a cloud would move from the dead writer to the standby), on PostgreSQL
 * and s3rver.
 *
 * 1. Fencing: the writer freezes (SIGSTOP, at a pause point just before a push's refs commit)
 *    past its lease; the standby takes over and accepts pushes through the frontend; the old
 *    writer resumes (SIGCONT): the push it held is refused, its ref never appears, and it stops
 *    itself (exit 75, for its supervisor to start it again as a standby).
 * 2. kill -9 of the writer while 8 clients push in a loop through the frontend: a new standby
 *    takes over, every push git reported as successful is there (a ledger, ref by ref), every
 *    repository is fsck-clean, and clones through the frontend work.
 * 3. Failover from snapshots, on a second shard whose two nodes have disks of their own: the
 *    writer's disk is deleted and the writer killed; the standby serves the repository from its
 *    snapshot and reports lost exactly the acknowledged pushes that were not in it.
 * 4. The frontend's pack cache: a clone after a push sees the push; a repeated clone is served
 *    by the frontend alone, even with the storage node frozen.
 *
 * Every process is stopped by its PID (the harness's ChildProcess handles); waits are for
 * conditions, with generous bounds.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, Git, Server, databaseBackends, freshDatabaseUrl, packCacheSettled, run, tempDir } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';
import { asEnv, CLUSTER_SECRET, frontendCli, seedAliceMain, serving, startStorageNode, stopped } from '../support/cluster.js';

const LEASE = ['--shard-lease-seconds', '3', '--maintenance-enabled', 'false'];

describe('same-volume failover of a shard writer', { skip: !databaseBackends().includes('postgres') && 'PostgreSQL not configured' }, () => {
  let s3: TestS3;
  let shared: NodeJS.ProcessEnv;
  let frontend: Server;
  let volume: string;
  const nodes: Server[] = [];
  let git: Git;
  let token: string;
  let scratch: string;
  const repoDirs = new Map<string, string>();

  const cli = frontendCli(() => frontend, () => shared);
  const node = async (extraEnv: NodeJS.ProcessEnv = {}) => {
    const n = await startStorageNode({ shared, shard: 'local', dataDir: volume, args: LEASE, env: extraEnv });
    nodes.push(n);
    return n;
  };
  const refOnDisk = async (repo: string, ref: string) => {
    const r = await git.run(['--git-dir', repoDirs.get(repo)!, 'rev-parse', '--verify', '-q', ref]);
    return r.code === 0 ? r.stdout.trim() : undefined;
  };

  before(async () => {
    s3 = await startS3();
    shared = asEnv(['--database-url', await freshDatabaseUrl(), '--cluster-secret', CLUSTER_SECRET, '--shard-lease-seconds', '3', ...s3.storeArgs()]);
    volume = await tempDir('gitstratum-volume-');
    // The writer pauses itself before the first push's refs commit (test 1).
    const writer = await node({ GITSTRATUM_TEST_PAUSE_AT: 'receive-before-ref-commit' });
    await serving(writer);
    await node(); // its standby
    frontend = await Server.start({ env: { ...shared, GITSTRATUM_ROLE: 'frontend' } });
    git = await Git.create();
    token = await seedAliceMain(cli);
    for (const name of ['r0', 'r1']) {
      const created = JSON.parse(await cli(['repo', 'create', `alice/main/${name}`, '--json'])) as { id: string };
      repoDirs.set(name, path.join(volume, 'repos', created.id.slice(0, 2), `${created.id}.git`));
    }
    scratch = await tempDir('gitstratum-failover-work-');
  });

  after(async () => {
    for (const n of nodes) if (n.process.signalCode === null && n.process.exitCode === null) n.process.kill('SIGCONT');
    await frontend?.cleanup();
    for (const n of nodes) await n.stop();
    await s3?.stop();
  });

  test('a writer frozen past its lease is fenced: the standby takes pushes, and the frozen push never lands', async () => {
    const [writer, standby] = nodes as [Server, Server];
    // Operators see the writer and its standby.
    const status = JSON.parse(await cli(['cluster', 'status', '--json', '--shard-lease-seconds', '3'])) as {
      shards: { name: string; writer: { url: string; live: boolean } | null; standbys: { url: string; gone: boolean }[] }[];
    };
    const local = status.shards.find((s) => s.name === 'local')!;
    assert.equal(local.writer?.url, writer.url.replace(/\/$/, ''));
    assert.equal(local.writer?.live, true);
    assert.deepEqual(local.standbys.map((s) => [s.url, s.gone]), [[standby.url.replace(/\/$/, ''), false]]);
    const work = await git.workTree(path.join(scratch, 'fence'), { commits: 1 });
    const url = frontend.repoUrl('alice/main/r0.git', token);
    // This push reaches the writer's reference-transaction `prepared`, where it freezes.
    const frozen = git.run(['push', '-q', url, 'HEAD:refs/heads/frozen'], { cwd: work, timeoutMs: 180_000 });
    await stopped(writer.process.pid!);

    // The standby takes over once the lease has run out, and the frontend routes to it.
    await serving(standby);
    let pushed = false;
    for (const deadline = Date.now() + 60_000; !pushed && Date.now() < deadline; ) {
      const r = await git.run(['push', '-q', url, 'HEAD:refs/heads/after-takeover'], { cwd: work, timeoutMs: 60_000 });
      pushed = r.code === 0;
      if (!pushed) await sleep(250);
    }
    assert.ok(pushed, 'a push through the frontend reaches the new writer');
    assert.equal(await refOnDisk('r0', 'refs/heads/after-takeover'), await git.revParse(work, 'HEAD'));

    // The old writer wakes up: the push it held is refused before its refs commit.
    const exited = new Promise<number | null>((resolve) => writer.process.once('exit', (code) => resolve(code)));
    writer.process.kill('SIGCONT');
    const r = await frozen;
    assert.notEqual(r.code, 0, 'git does not report the frozen push as successful');
    assert.equal(await refOnDisk('r0', 'refs/heads/frozen'), undefined, 'its ref never appears');
    assert.equal(await exited, 75, 'the deposed writer stops itself, for its supervisor to start it as a standby');
    assert.ok(
      writer.logs.some((l) => l.includes('push refused before its refs commit') || l.includes('no longer the shard')),
      'the old writer says why it refused',
    );
    // The new writer goes on serving.
    const clone = path.join(scratch, 'after-fence');
    await git.ok(['clone', '-q', url, clone]);
    assert.equal(await git.revParse(clone, 'refs/remotes/origin/after-takeover'), await git.revParse(work, 'HEAD'));
  });

  test('kill -9 of the writer while 8 clients push: a standby takes over and every acknowledged push is there', async () => {
    const writer = nodes[1]!;
    const standby = await node();
    const ledger = new Map<number, { repo: string; ref: string; acked?: string }>();
    let acknowledged = 0;
    let afterKill = 0;
    let killed = false;
    let running = true;
    const pushers = Array.from({ length: 8 }, async (_, p) => {
      const work = path.join(scratch, `p${p}`);
      await mkdir(work, { recursive: true });
      await git.ok(['init', '-q', '-b', 'main', work]);
      const entry: { repo: string; ref: string; acked?: string } = { repo: `r${p % 2}`, ref: `refs/heads/p${p}`, acked: undefined };
      ledger.set(p, entry);
      const url = frontend.repoUrl(`alice/main/${entry.repo}.git`, token);
      for (let n = 1; running; n++) {
        await git.commits(work, 1, { files: 1, seed: p * 100_000 + n, prefix: `p${p}` });
        const sha = await git.revParse(work, 'HEAD');
        const r = await git.run(['push', '-q', '--force', url, `HEAD:${entry.ref}`], { cwd: work, timeoutMs: 120_000 });
        if (r.code === 0) {
          entry.acked = sha;
          acknowledged++;
          if (killed) afterKill++;
        } else {
          await sleep(100);
        }
      }
    });
    try {
      for (const deadline = Date.now() + 120_000; acknowledged < 16 && Date.now() < deadline; ) await sleep(100);
      assert.ok(acknowledged >= 16, `pushes are acknowledged before the kill (${acknowledged})`);
      writer.process.kill('SIGKILL');
      killed = true;
      await serving(standby);
      for (const deadline = Date.now() + 120_000; afterKill < 16 && Date.now() < deadline; ) await sleep(100);
      assert.ok(afterKill >= 16, `pushes are acknowledged after the takeover (${afterKill})`);
    } finally {
      running = false;
      await Promise.all(pushers);
    }

    for (const [p, entry] of ledger) {
      if (!entry.acked) continue;
      const live = await refOnDisk(entry.repo, entry.ref);
      assert.ok(live, `pusher ${p}'s ref exists`);
      const r = await git.run(['--git-dir', repoDirs.get(entry.repo)!, 'merge-base', '--is-ancestor', entry.acked, live]);
      assert.equal(r.code, 0, `pusher ${p}'s last acknowledged commit ${entry.acked} is in ${entry.ref} (${live})`);
    }
    for (const [name, dir] of repoDirs) await git.ok(['--git-dir', dir, 'fsck', '--no-progress'], {}).catch((err: Error) => assert.fail(`${name}: ${err.message}`));
    const clone = path.join(scratch, 'after-kill');
    await git.ok(['clone', '-q', frontend.repoUrl('alice/main/r1.git', token), clone]);
    const p1 = ledger.get(1)!;
    assert.equal(await git.run(['merge-base', '--is-ancestor', p1.acked!, `refs/remotes/origin/p1`], { cwd: clone }).then((r) => r.code), 0);
  });

  test('failover from snapshots: the writer disk is lost; the standby serves from snapshots and reports exactly the pushes not in them', async () => {
    await cli(['shard', 'create', 'snap']);
    await cli(['space', 'create', 'alice/snap']);
    await cli(['shard', 'pin', 'alice/snap', 'snap']);
    // Snapshots are taken by hand here (the writer's worker is off), so which pushes they hold is known.
    const writerDisk = await tempDir('gitstratum-snap-writer-');
    const writer = await startStorageNode({ shared, shard: 'snap', dataDir: writerDisk, args: [...LEASE, '--snapshots-enabled', 'false'] });
    nodes.push(writer);
    await serving(writer);
    const standby = await startStorageNode({ shared, shard: 'snap', args: [...LEASE, '--failover-from', 'snapshots'] });
    nodes.push(standby);
    const created = JSON.parse(await cli(['repo', 'create', 'alice/snap/r', '--json'])) as { shard: string };
    assert.equal(created.shard, 'snap');

    const url = frontend.repoUrl('alice/snap/r.git', token);
    const work = await git.workTree(path.join(scratch, 'snap'), { commits: 2 });
    await git.ok(['push', '-q', url, 'main'], { cwd: work });
    const persisted = await git.revParse(work, 'HEAD');
    const snap = await run(process.execPath, [BIN, 'snapshot', 'create', 'alice/snap/r', '--data', writerDisk], {
      env: { ...process.env, ...shared, GITSTRATUM_ROLE: 'storage', GITSTRATUM_SHARD: 'snap', GITSTRATUM_ADVERTISE_URL: 'http://127.0.0.1:9' },
    });
    assert.equal(snap.code, 0, snap.stderr);
    // Two acknowledged pushes after the snapshot: a new branch, and main moved on.
    await git.ok(['push', '-q', url, 'main:refs/heads/topic'], { cwd: work });
    await git.commits(work, 1, { seed: 77 });
    await git.ok(['push', '-q', url, 'main'], { cwd: work });
    const unpersisted = await git.revParse(work, 'HEAD');

    await rm(writerDisk, { recursive: true, force: true });
    writer.process.kill('SIGKILL');
    await serving(standby);

    const clone = path.join(scratch, 'snap-clone');
    await git.ok(['clone', '-q', url, clone]);
    assert.equal(await git.revParse(clone, 'HEAD'), persisted, 'the standby serves what the snapshot held');
    assert.equal((await git.run(['rev-parse', '--verify', '-q', 'refs/remotes/origin/topic'], { cwd: clone })).code, 1);

    // Reported: exactly the two acknowledged pushes the snapshot does not hold.
    const audit = JSON.parse(await cli(['audit', 'list', '--repo', 'alice/snap/r', '--json'])) as { entries: { action: string; details: { refs: { ref: string; new: string }[] } }[] };
    const lost = audit.entries.filter((e) => e.action === 'push.lost').flatMap((e) => e.details.refs.map((r) => `${r.ref} ${r.new}`));
    assert.deepEqual(lost.sort(), [`refs/heads/main ${unpersisted}`, `refs/heads/topic ${persisted}`].sort());
    assert.ok(standby.logs.some((l) => l.includes('acknowledged pushes lost')), 'and said so in its log');
    const metrics = await (await fetch(new URL('/metrics', standby.url))).text();
    assert.match(metrics, /^gitstratum_failover_lost_pushes_total 2$/m);

    // The new writer takes pushes.
    await git.ok(['push', '-q', '--force', url, 'main'], { cwd: work });
    await git.ok(['fetch', '-q'], { cwd: clone });
    assert.equal(await git.revParse(clone, 'refs/remotes/origin/main'), unpersisted);
  });

  test("the frontend's cache: a clone after a push sees it, and a repeated clone needs no storage node", async () => {
    const writer = nodes.find((n) => n.process.exitCode === null && n.process.signalCode === null && n.logs.some((l) => l.includes('"shard":"local"') && l.includes('serving the shard')))!;
    assert.ok(writer, 'the writer of shard local');
    const url = frontend.repoUrl('alice/main/r0.git', token);
    const work = path.join(scratch, 'cache-work');
    await git.ok(['clone', '-q', url, work]);
    await git.commits(work, 1, { seed: 4242 });
    await git.ok(['push', '-q', 'origin', 'HEAD:main'], { cwd: work });
    const pushed = await git.revParse(work, 'HEAD');

    // Clones of r0 were answered (and cached) before this push: the next one must not be stale.
    const first = path.join(scratch, 'cache-1');
    await git.ok(['clone', '-q', '--depth', '1', url, first]);
    assert.equal(await git.revParse(first, 'HEAD'), pushed);
    await packCacheSettled(frontend.url);

    writer.process.kill('SIGSTOP');
    try {
      await stopped(writer.process.pid!);
      const second = path.join(scratch, 'cache-2');
      await git.ok(['clone', '-q', '--depth', '1', url, second]);
      assert.equal(await git.revParse(second, 'HEAD'), pushed, 'served by the frontend alone');
    } finally {
      writer.process.kill('SIGCONT');
    }
  });
});
