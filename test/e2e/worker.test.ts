/**
 * `gitstratum worker` end to end: a server with snapshots off and separate worker processes
 * on the same data directory and database. A worker alone persists a push made through the
 * server; two workers share the work without ever snapshotting one push twice (the lease per
 * repository); SIGTERM stops a worker cleanly and leaves no lease behind. SQLite and PostgreSQL.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, Git, Server, seedAlice, tempDir } from './harness.js';
import { openMetaStore } from '../../src/meta/db.js';
import { Worker } from '../support/worker.js';

for (const database of databaseBackends()) {
  describe(`gitstratum worker on ${database}`, () => {
    let server: Server;
    let git: Git;
    let token: string;
    const workers: Worker[] = [];

    before(async () => {
      server = await Server.start({ database, args: ['--snapshots-enabled', 'false', '--maintenance-enabled', 'false'] });
      token = await seedAlice(server);
      git = await Git.create();
    });
    after(async () => {
      for (const w of workers) await w.stop();
      await server?.cleanup();
    });

    const snapshotCount = async (repo: string) => (JSON.parse(await server.cliOk(['snapshot', 'list', repo, '--json'])) as unknown[]).length;

    async function push(name: string, seed: number): Promise<void> {
      await server.createRepo(name);
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed });
      await git.ok(['push', '-q', server.repoUrl(`${name}.git`, token), 'main'], { cwd: work });
    }

    test('a worker alone persists a push made through a server that has snapshots off; SIGTERM leaves no lease', async () => {
      await push('alice/main/solo', 1);
      await sleep(1500);
      assert.equal(await snapshotCount('alice/main/solo'), 0, 'the server itself must not snapshot');

      const worker = await Worker.start(server, ['--snapshot-debounce-seconds', '0']);
      workers.push(worker);
      const deadline = Date.now() + 20_000;
      while ((await snapshotCount('alice/main/solo')) === 0) {
        assert.ok(Date.now() < deadline, 'the worker did not snapshot the push');
        await sleep(200);
      }
      assert.equal(await worker.metric('gitstratum_snapshot_dirty_repositories'), 0);
      assert.equal(await worker.metric('gitstratum_snapshots_total{result="ok"}'), 1);
      assert.equal(await worker.stop(), 0);
      assert.ok(worker.logs.some((l) => l.includes('"msg":"stopped"')));

      const meta = await openMetaStore({ dataDir: server.dataDir, databaseUrl: server.databaseUrl });
      try {
        assert.deepEqual(await meta.db.selectFrom('snapshot_leases').selectAll().execute(), []);
      } finally {
        await meta.close();
      }
    });

    test('two workers never snapshot one push twice', async () => {
      const a = await Worker.start(server, ['--snapshot-debounce-seconds', '0', '--snapshot-concurrency', '2']);
      const b = await Worker.start(server, ['--snapshot-debounce-seconds', '0', '--snapshot-concurrency', '2']);
      workers.push(a, b);
      const names = Array.from({ length: 8 }, (_, i) => `alice/main/pair-${i}`);
      await Promise.all(names.map((name, i) => push(name, 10 + i)));
      const deadline = Date.now() + 30_000;
      for (;;) {
        const counts = await Promise.all(names.map(snapshotCount));
        if (counts.every((c) => c >= 1) && (await a.metric('gitstratum_snapshot_dirty_repositories')) === 0) break;
        assert.ok(Date.now() < deadline, `snapshots per repository: ${counts.join(', ')}`);
        await sleep(200);
      }
      // A few more polls: a duplicate would come from a worker that saw the repository dirty late.
      await sleep(2500);
      assert.deepEqual(await Promise.all(names.map(snapshotCount)), names.map(() => 1));
      const ok = (await a.metric('gitstratum_snapshots_total{result="ok"}')) + (await b.metric('gitstratum_snapshots_total{result="ok"}'));
      assert.equal(ok, names.length);
    });
  });
}
