/**
 * Read-your-writes through a frontend with two read mirrors (issue 11), at the issue's scale:
 * 1,000 rounds of a push followed at once by a fetch from another clone, each fetch required
 * to see the commit just pushed; in 4 lanes of 250 rounds, each lane its own repository. The fewest processes that prove it: one frontend, the writer of
 * shard `local` and two async replicas, each storage node on a disk of its own, on PostgreSQL
 * and s3rver. A fetch at once is answered by the writer (no mirror holds the push yet); every
 * fifth waits 400 ms, by when a mirror may, so the mirrors' answers are checked too (counted by
 * the frontend). The lag itself is measured by bench:cluster part 4, not asserted here.
 *
 * Each round is one `commit-tree`, one `git push` and one `git fetch` (0.2–0.3 s alone). Every process is stopped by its PID; waits are for conditions.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, databaseBackends, freshDatabaseUrl, tempDir } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';
import { asEnv, CLUSTER_SECRET, frontendCli, seedAliceMain, serving, startStorageNode, stopCluster } from '../support/cluster.js';

/** The 1,000 rounds, in 4 lanes of 250 (GITSTRATUM_TEST_RYW_ROUNDS to change the total). */
const ROUNDS = Number(process.env['GITSTRATUM_TEST_RYW_ROUNDS'] ?? 1000);
const LANES = 4;
const NODE_ARGS = ['--shard-lease-seconds', '3', '--maintenance-enabled', 'false'];
const REPLICA_ARGS = [...NODE_ARGS, '--replica', 'async', '--replica-interval-seconds', '1'];

describe('read-your-writes through a frontend with two mirrors', { skip: !databaseBackends().includes('postgres') && 'PostgreSQL not configured' }, () => {
  let s3: TestS3;
  let shared: NodeJS.ProcessEnv;
  let frontend: Server;
  const nodes: Server[] = [];
  let git: Git;
  let token: string;
  let scratch: string;

  const cli = frontendCli(() => frontend, () => shared);

  before(async () => {
    s3 = await startS3();
    shared = asEnv(['--database-url', await freshDatabaseUrl(), '--cluster-secret', CLUSTER_SECRET, ...s3.storeArgs()]);
    const writer = await startStorageNode({ shared, shard: 'local', args: NODE_ARGS });
    nodes.push(writer);
    await serving(writer);
    for (let i = 0; i < 2; i++) nodes.push(await startStorageNode({ shared, shard: 'local', args: REPLICA_ARGS }));
    frontend = await Server.start({ env: { ...shared, GITSTRATUM_ROLE: 'frontend' } });
    git = await Git.create();
    token = await seedAliceMain(cli);
    scratch = await tempDir('gitstratum-ryw-');
  });

  after(() => stopCluster({ frontend, nodes, s3, extraDirs: [scratch, git?.home] }));

  test(`${ROUNDS} rounds of push, then fetch at once, in ${LANES} lanes: every fetch sees the commit just pushed`, { timeout: 900_000 }, async () => {
    const lanes = await Promise.all(
      Array.from({ length: LANES }, async (_, n) => {
        const name = `r${n}`;
        await cli(['repo', 'create', `alice/main/${name}`]);
        const url = frontend.repoUrl(`alice/main/${name}.git`, token);
        const work = await git.workTree(path.join(scratch, `work-${n}`), { commits: 1, seed: n + 1 });
        await git.ok(['push', '-q', url, 'main'], { cwd: work });
        const reader = path.join(scratch, `reader-${n}`);
        await git.ok(['clone', '-q', '--bare', url, reader]);
        return { url, work, reader };
      }),
    );
    // Both replicas hold every repository before the rounds start, so reads may go to either.
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(200)) {
      const status = JSON.parse(await cli(['cluster', 'status', '--json'])) as { shards: { name: string; replicas: { silent: boolean; behindRepositories: number }[] }[] };
      const replicas = status.shards.find((s) => s.name === 'local')?.replicas ?? [];
      if (replicas.filter((r) => !r.silent && r.behindRepositories === 0).length === 2) break;
    }
    const readsAt = async () => {
      const text = await (await fetch(new URL('/metrics', frontend.url))).text();
      return Number(/^gitstratum_routing_reads_total\{target="replica"\} (\d+)$/m.exec(text)?.[1] ?? 0);
    };
    const before = await readsAt();
    const misses: string[] = [];
    // Each lane a repository and its own pusher and reader, one round after another; the lanes
    // side by side (a round waits on the network and on fsync more than on the CPU).
    await Promise.all(
      lanes.map(async ({ url, work, reader }, n) => {
        const tree = (await git.ok(['rev-parse', 'HEAD^{tree}'], { cwd: work })).trim();
        let parent = await git.revParse(work, 'HEAD');
        for (let i = 1; i <= ROUNDS / LANES; i++) {
          const commit = (await git.ok(['commit-tree', tree, '-p', parent, '-m', `lane ${n} round ${i}`], { cwd: work })).trim();
          await git.ok(['push', '-q', url, `${commit}:refs/heads/main`], { cwd: work });
          // Most fetches at once (the writer answers: no mirror holds the push yet); every
          // fifth 400 ms later, as a CI job that starts a moment after the push, by when a
          // mirror may.
          if (i % 5 === 0) await sleep(400);
          await git.ok(['fetch', '-q', url, '+refs/heads/main:refs/heads/main'], { cwd: reader });
          const seen = (await git.ok(['--git-dir', reader, 'rev-parse', 'refs/heads/main'])).trim();
          if (seen !== commit) misses.push(`lane ${n} round ${i}: pushed ${commit}, fetched ${seen}`);
          parent = commit;
        }
      }),
    );
    assert.deepEqual(misses, [], 'every fetch right after a push sees it');
    assert.ok((await readsAt()) > before, 'the mirrors answered reads during the rounds');
  });
});
