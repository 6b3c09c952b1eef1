/**
 * Metadata backups end to end, on the filesystem and S3 (s3rver) object stores: the server
 * backs meta.sqlite up on its schedule and keeps the newest few; `backup-meta` takes one now;
 * after meta.sqlite is lost (server stopped), `restore-meta` brings it back and the restarted
 * server knows its users, tokens and repositories again. restore-meta refuses while the server
 * runs and over an existing database unless forced; with PostgreSQL both commands refuse.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseBackends, freshDatabaseUrl, Git, Server, seedAlice, tempDir } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';

for (const backend of ['filesystem', 's3'] as const) {
  describe(`metadata backup on ${backend}`, () => {
    let s3: TestS3 | undefined;
    let storeArgs: string[] = [];
    let server: Server;
    let git: Git;

    before(async () => {
      if (backend === 's3') {
        s3 = await startS3();
        storeArgs = s3.storeArgs();
      }
      git = await Git.create();
    });
    after(async () => {
      await server?.cleanup();
      await s3?.stop();
    });

    const cli = (args: string[]) => server.cli([...args, ...storeArgs]);
    const list = async () => JSON.parse((await cli(['restore-meta', '--list', '--json'])).stdout) as { stamp: string }[];

    test('meta.sqlite lost → restore-meta → the restarted server serves the same repositories to the same tokens', async () => {
      server = await Server.start({ args: ['--maintenance-enabled', 'false', '--meta-backup-interval-seconds', '1', '--meta-backup-keep', '2', ...storeArgs] });
      const token = await seedAlice(server);
      await server.createRepo('alice/main/kept', { private: true });
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 3 });
      const url = () => server.repoUrl('alice/main/kept.git', token);
      await git.ok(['push', '-q', url(), 'main'], { cwd: work });

      // The schedule: a backup about every second, the newest two kept. Between a backup's
      // upload and the pruning after it there are three for a moment: wait for the state
      // after a later backup was pruned to two, rather than looking once at a fixed time.
      let seen = await list();
      for (const bound = Date.now() + 60_000; seen.length < 2 && Date.now() < bound; await sleep(250)) seen = await list();
      assert.ok(seen.length >= 2, 'scheduled backups were made');
      const newest = seen.map((b) => b.stamp).sort().pop()!;
      const replaced = () => seen.length === 2 && seen.some((b) => b.stamp > newest);
      for (const bound = Date.now() + 60_000; !replaced() && Date.now() < bound; await sleep(250)) seen = await list();
      assert.ok(replaced(), `later backups replaced the older ones, two kept: ${JSON.stringify(seen)}`);

      const now = await cli(['backup-meta']);
      assert.equal(now.code, 0, now.stderr);
      assert.match(now.stdout, /backed up metadata to backups\/meta\/\d{8}T\d{6}\.\d{3}Z\.sqlite\.gz/);

      const running = await cli(['restore-meta']);
      assert.equal(running.code, 1);
      assert.match(running.stderr, /server is running/);

      // No scheduled backup between backup-meta and the stop may miss what the test checks:
      // every one of them holds the state above.
      assert.equal(await server.stop(), 0);
      const refused = await cli(['restore-meta']);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /meta\.sqlite exists: pass --force/);

      for (const f of ['meta.sqlite', 'meta.sqlite-wal', 'meta.sqlite-shm']) await rm(path.join(server.dataDir, f), { force: true });
      const restored = await cli(['restore-meta']);
      assert.equal(restored.code, 0, restored.stderr);
      assert.match(restored.stdout, /restored metadata backup \d{8}T/);

      const forced = await cli(['restore-meta', '--force']);
      assert.equal(forced.code, 0, forced.stderr);
      assert.ok((await readdir(server.dataDir)).some((f) => /^meta\.sqlite\.before-restore-\d{8}T\d{6}\.\d{3}Z$/.test(f)));

      server = await Server.start({ dataDir: server.dataDir, args: ['--maintenance-enabled', 'false', ...storeArgs] });
      const clone = path.join(await tempDir(), 'clone');
      await git.ok(['clone', '-q', url(), clone]);
      assert.equal(await git.revParse(clone, 'HEAD'), await git.revParse(work, 'HEAD'));
      await git.commits(work, 1, { seed: 4 });
      await git.ok(['push', '-q', url(), 'main'], { cwd: work });
      assert.match(await server.cliOk(['repo', 'list']), /alice\/main\/kept\tprivate/);
    });
  });
}

if (databaseBackends().includes('postgres')) {
  test('with PostgreSQL, backup-meta and restore-meta refuse and point at its own tools', async () => {
    const data = await tempDir();
    try {
      const databaseUrl = await freshDatabaseUrl();
      const { run, BIN } = await import('./harness.js');
      const backup = await run(process.execPath, [BIN, 'backup-meta', '--data', data, '--database-url', databaseUrl]);
      assert.equal(backup.code, 2);
      assert.match(backup.stderr, /PostgreSQL.*pg_dump/);
      const restore = await run(process.execPath, [BIN, 'restore-meta', '--data', data, '--database-url', databaseUrl]);
      assert.equal(restore.code, 2);
      assert.match(restore.stderr, /PostgreSQL.*pg_restore/);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
}
