/**
 * An async replica follows its shard's writer (issue 11), with the fewest processes that prove
 * it: one frontend, the writer and the replica of shard `local`, each storage node on a disk of
 * its own, on PostgreSQL and s3rver.
 *
 * 1. A replica started after pushes restores the repository from its snapshot and fetches only
 *    what came after; its refs end equal to the writer's.
 * 2. A new branch, a tag, a deleted branch and a branch force-pushed backwards replicate exactly.
 * 3. The replica killed with SIGKILL while pushes go on, and started again on its disk, converges
 *    and is fsck-clean.
 * 4. Reads through the frontend go to the replica once it holds the repository's version; a
 *    fetch right after each acknowledged push sees it (read-your-writes), 10 rounds.
 * 5. A corrupt commit on the writer (as a compromised writer would send) is refused: the
 *    replica's refs stay as they were and it says why.
 *
 * Every process is stopped by its PID (the harness's ChildProcess handles); waits are for
 * conditions, with generous bounds.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, databaseBackends, freshDatabaseUrl, tempDir } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';
import { asEnv, CLUSTER_SECRET, frontendCli, seedAliceMain, serving, startStorageNode, stopCluster } from '../support/cluster.js';
import { openMetaStore } from '../../src/meta/db.js';
import { bumpRefsVersion } from '../../src/meta/refs-versions.js';

const NODE_ARGS = ['--shard-lease-seconds', '3', '--maintenance-enabled', 'false'];
const REPLICA_ARGS = [...NODE_ARGS, '--replica', 'async', '--replica-interval-seconds', '1', '--replica-reconcile-seconds', '2'];

describe('an async replica follows its writer', { skip: !databaseBackends().includes('postgres') && 'PostgreSQL not configured' }, () => {
  let s3: TestS3;
  let shared: NodeJS.ProcessEnv;
  let databaseUrl: string;
  let frontend: Server;
  let writer: Server;
  let replica: Server;
  let replicaDisk: string;
  const nodes: Server[] = [];
  let git: Git;
  let token: string;
  let scratch: string;
  let repoId: string;
  let work: string;

  const cli = frontendCli(() => frontend, () => shared);
  const repoOn = (dataDir: string) => path.join(dataDir, 'repos', repoId.slice(0, 2), `${repoId}.git`);
  const refsOf = async (gitDir: string) => {
    const r = await git.run(['--git-dir', gitDir, 'for-each-ref', '--format=%(objectname) %(refname)']);
    return r.code === 0 ? r.stdout : undefined;
  };
  /** Waits until the replica's copy has exactly the writer's refs and HEAD. */
  const converged = async (what: string) => {
    let last: string | undefined;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
      const [mine, theirs] = await Promise.all([refsOf(repoOn(replicaDisk)), refsOf(repoOn(writer.dataDir))]);
      last = mine;
      if (mine !== undefined && mine === theirs) {
        const heads = await Promise.all([repoOn(replicaDisk), repoOn(writer.dataDir)].map((d) => git.ok(['--git-dir', d, 'symbolic-ref', 'HEAD'])));
        if (heads[0] === heads[1]) return;
      }
    }
    assert.fail(`${what}: the replica did not converge; it has:\n${last}\nreplica log:\n${replica.logs.slice(-10).join('\n')}`);
  };
  const startReplica = async () => {
    replica = await startStorageNode({ shared, shard: 'local', dataDir: replicaDisk, args: REPLICA_ARGS });
    nodes.push(replica);
  };
  const url = () => frontend.repoUrl('alice/main/r.git', token);
  /** Waits until the replica's last pass found `n` repositories it is behind on. */
  const behind = async (n: number) => {
    let metrics = '';
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
      metrics = await (await fetch(new URL('/metrics', replica.url))).text();
      if (new RegExp(`^gitstratum_replica_behind_repositories ${n}$`, 'm').test(metrics)) return;
    }
    assert.fail(`the replica is not behind on ${n} repositories: ${/^gitstratum_replica_behind_repositories .*$/m.exec(metrics)?.[0]}`);
  };

  before(async () => {
    s3 = await startS3();
    databaseUrl = await freshDatabaseUrl();
    shared = asEnv(['--database-url', databaseUrl, '--cluster-secret', CLUSTER_SECRET, ...s3.storeArgs()]);
    writer = await startStorageNode({ shared, shard: 'local', args: [...NODE_ARGS, '--snapshot-debounce-seconds', '0'] });
    nodes.push(writer);
    await serving(writer);
    frontend = await Server.start({ env: { ...shared, GITSTRATUM_ROLE: 'frontend' } });
    git = await Git.create();
    token = await seedAliceMain(cli);
    repoId = (JSON.parse(await cli(['repo', 'create', 'alice/main/r', '--json'])) as { id: string }).id;
    scratch = await tempDir('gitstratum-replication-work-');
    replicaDisk = await tempDir('gitstratum-replica-disk-');
  });

  after(() => stopCluster({ frontend, nodes, s3, extraDirs: [scratch, git?.home] }));

  test('a replica started late restores from the snapshot and fetches only what came after', async () => {
    work = await git.workTree(path.join(scratch, 'work'), { commits: 3 });
    await git.ok(['push', '-q', url(), 'main'], { cwd: work });
    // The writer persists the push (debounce 0); then one more push that no snapshot holds.
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(200)) {
      const listed = JSON.parse(await cli(['snapshot', 'list', 'alice/main/r', '--json'])) as unknown[];
      if (listed.length > 0) break;
    }
    await git.commits(work, 1, { seed: 11 });
    await git.ok(['push', '-q', url(), 'main'], { cwd: work });

    await startReplica();
    await converged('first copy');
    const restored = replica.logs.find((l) => l.includes('replica copy restored from snapshots'));
    assert.ok(restored && !restored.includes('"snapshot":null'), `restored from a snapshot: ${restored}`);
  });

  test('new refs, a tag, a deleted branch and a forced rewind replicate exactly', async () => {
    await git.ok(['push', '-q', url(), 'main:refs/heads/topic', 'main~1:refs/heads/old'], { cwd: work });
    await git.ok(['tag', '-a', '-m', 'release', 'v1', 'main~2'], { cwd: work });
    await git.ok(['push', '-q', url(), 'v1'], { cwd: work });
    await converged('new refs');
    await git.ok(['push', '-q', '--force', url(), 'main~2:refs/heads/main', ':refs/heads/old'], { cwd: work });
    await converged('a deletion and a rewind');
    const refs = await refsOf(repoOn(replicaDisk));
    assert.doesNotMatch(refs!, /refs\/heads\/old/);
    assert.match(refs!, new RegExp(`^${await git.revParse(work, 'main~2')} refs/heads/main$`, 'm'));
  });

  test('a replica killed during pushes and started again converges, fsck-clean', async () => {
    let pushing = true;
    let n = 0;
    const pusher = (async () => {
      const loop = await git.workTree(path.join(scratch, 'loop'), { commits: 1, seed: 5 });
      while (pushing) {
        await git.commits(loop, 1, { seed: 1000 + n++ });
        await git.run(['push', '-q', '--force', url(), 'HEAD:refs/heads/loop'], { cwd: loop, timeoutMs: 60_000 });
      }
    })();
    try {
      for (const deadline = Date.now() + 60_000; n < 3 && Date.now() < deadline; ) await sleep(50);
      replica.process.kill('SIGKILL');
      await new Promise((resolve) => (replica.process.exitCode !== null || replica.process.signalCode !== null ? resolve(undefined) : replica.process.once('exit', resolve)));
      const before = n;
      for (const deadline = Date.now() + 60_000; n < before + 2 && Date.now() < deadline; ) await sleep(50);
      await startReplica();
    } finally {
      pushing = false;
      await pusher;
    }
    await converged('after a restart');
    const fsck = await git.run(['--git-dir', repoOn(replicaDisk), 'fsck', '--no-progress', '--strict']);
    assert.equal(fsck.code, 0, fsck.stderr);
    const metrics = await (await fetch(new URL('/metrics', replica.url))).text();
    assert.match(metrics, /^gitstratum_replica_rounds_total\{result="ok"\} [1-9]/m);
  });

  test('reads go to an up-to-date replica, and a fetch right after each push always sees it', async () => {
    const reads = async (target: string) => {
      const text = await (await fetch(new URL('/metrics', frontend.url))).text();
      return Number(new RegExp(`^gitstratum_routing_reads_total\\{target="${target}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    };
    const reader = path.join(scratch, 'reader');
    await git.ok(['clone', '-q', url(), reader]);
    let misses = 0;
    for (let i = 0; i < 10; i++) {
      await git.commits(work, 1, { seed: 500 + i });
      await git.ok(['push', '-q', '--force', url(), 'HEAD:refs/heads/main'], { cwd: work });
      const pushed = await git.revParse(work, 'HEAD');
      await git.ok(['fetch', '-q', 'origin'], { cwd: reader });
      if ((await git.revParse(reader, 'refs/remotes/origin/main')) !== pushed) misses++;
    }
    assert.equal(misses, 0, 'a fetch after an acknowledged push missed it');
    // Once the replica has recorded the last push, the first read of it is the replica's to
    // answer (later identical ones are the frontend's cache hits, which reach no node at all).
    const before = await reads('replica');
    await git.commits(work, 1, { seed: 900 });
    await git.ok(['push', '-q', '--force', url(), 'HEAD:refs/heads/main'], { cwd: work });
    await converged('the last push');
    await behind(0);
    await git.ok(['fetch', '-q', 'origin'], { cwd: reader });
    assert.ok((await reads('replica')) > before, 'the replica answered a read');
    assert.equal(await git.revParse(reader, 'refs/remotes/origin/main'), await git.revParse(work, 'HEAD'));
  });

  test('a repository deleted on the writer loses its copy on the replica; the others keep theirs', async () => {
    const gone = (JSON.parse(await cli(['repo', 'create', 'alice/main/gone', '--json'])) as { id: string }).id;
    await git.ok(['push', '-q', frontend.repoUrl('alice/main/gone.git', token), 'main'], { cwd: work });
    const copy = path.join(replicaDisk, 'repos', gone.slice(0, 2), `${gone}.git`);
    const exists = (dir: string) => stat(dir).then(() => true, () => false);
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && !(await exists(copy)); await sleep(100));
    assert.ok(await exists(copy), 'the replica made a copy of the new repository');

    await cli(['repo', 'delete', 'alice/main/gone']);
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && (await exists(copy)); await sleep(100));
    assert.equal(await exists(copy), false, 'the copy of the deleted repository is gone');
    // Counted and logged once the removal returns, a moment after the directory is gone.
    const said = () => replica.logs.some((l) => l.includes('replica removed its copy') && l.includes(gone));
    for (const deadline = Date.now() + 30_000; Date.now() < deadline && !said(); await sleep(50));
    assert.ok(said(), 'the replica logged the removal');
    assert.match(await (await fetch(new URL('/metrics', replica.url))).text(), /^gitstratum_replica_copies_removed_total 1$/m);
    assert.ok(await exists(repoOn(replicaDisk)), 'the copy of alice/main/r stays');
  });

  test('a corrupt commit from the writer is refused: no ref of the replica moves, and it says why', async () => {
    const held = await refsOf(repoOn(replicaDisk));
    const writerRepo = repoOn(writer.dataDir);
    const tree = (await git.ok(['--git-dir', writerRepo, 'rev-parse', 'main^{tree}'])).trim();
    const parent = (await git.ok(['--git-dir', writerRepo, 'rev-parse', 'main'])).trim();
    const bad = `tree ${tree}\nparent ${parent}\nauthor nobody <broken 1 +0000\ncommitter x <x@y> 1 +0000\n\nbad\n`;
    const badOid = (await git.ok(['--git-dir', writerRepo, 'hash-object', '-t', 'commit', '--literally', '-w', '--stdin'], { input: bad })).trim();
    await git.ok(['--git-dir', writerRepo, 'update-ref', 'refs/heads/main', badOid]);
    // The compromised writer announces it as it would a push.
    const meta = await openMetaStore({ dataDir: scratch, databaseUrl });
    try {
      await bumpRefsVersion(meta.db, meta.dialect, repoId);
    } finally {
      await meta.close();
    }
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
      if (replica.logs.some((l) => l.includes('replica round failed') && l.includes(repoId))) break;
    }
    const said = replica.logs.find((l) => l.includes('replica round failed') && l.includes(repoId));
    assert.ok(said, 'the replica logged the failed round');
    assert.match(said!, /fetch/);
    assert.equal(await refsOf(repoOn(replicaDisk)), held, 'no ref moved');
    const present = await git.run(['--git-dir', repoOn(replicaDisk), 'cat-file', '-e', badOid]);
    assert.notEqual(present.code, 0, 'the bad object was not kept');
    // Its next pass counts the repository as behind (it keeps trying, and keeps saying why).
    await behind(1);
    assert.equal(await refsOf(repoOn(replicaDisk)), held, 'and still no ref moved');
  });
});
