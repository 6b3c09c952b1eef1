/**
 * A writer's sweep of copies it must not keep (replication/move-copies.ts): a copy of a
 * repository placed on another shard goes unless a request holds it; a copy whose repository
 * is gone goes only once untouched for the grace period (a repository being created has its
 * directory before its row); the shard's own repositories stay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, utimes } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from '../../test/e2e/harness.js';
import { seedShardRepositories } from '../../test/support/shard-fixture.js';
import { openMetaStore } from '../meta/db.js';
import { createLogger } from '../shared/log.js';
import { MoveCopies, type MoveCopiesDeps } from './move-copies.js';

test('the sweep removes copies of repositories on other shards or deleted long enough ago, and nothing else', async () => {
  const dataDir = await tempDir('gitstratum-move-copies-');
  const meta = await openMetaStore({ dataDir, databaseUrl: undefined });
  try {
    await seedShardRepositories(meta); // R1, R2 on s1; R3 on local
    const repoPath = (id: string) => path.join(dataDir, 'copies', id);
    let onDisk = ['R1', 'R3', 'NEW', 'GONE'];
    for (const id of onDisk) await mkdir(repoPath(id), { recursive: true });
    const anHourAgo = new Date(Date.now() - 3_600_000);
    await utimes(repoPath('GONE'), anHourAgo, anHourAgo);
    const held = new Set(['R3']);
    const copies = new MoveCopies({
      meta,
      shard: 's1',
      repoPath,
      inUse: (id) => held.has(id),
      copies: async () => onDisk,
      removeCopy: async (id) => {
        await rm(repoPath(id), { recursive: true });
        onDisk = onDisk.filter((d) => d !== id);
      },
      log: createLogger('silent'),
    } as Partial<MoveCopiesDeps> as MoveCopiesDeps);

    // R3 is held by a request; NEW has no row yet but was just made; GONE's row is gone.
    assert.deepEqual(await copies.sweep(300_000), ['GONE']);
    held.clear();
    assert.deepEqual(await copies.sweep(300_000), ['R3']);
    assert.deepEqual(onDisk, ['R1', 'NEW']);
    assert.deepEqual(await copies.sweep(300_000), []);
  } finally {
    await meta.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});
