/**
 * A metadata fixture for the tests of shard-level tables (replication, the sync standby's
 * record): shard `s1`, alice's space `main`, and repositories R1 and R2 on `s1` and R3 on the
 * `local` shard the first migration makes. Written straight into the database.
 */
import type { MetaStore } from '../../src/meta/db.js';
import { insertOwner } from '../../src/meta/owners.js';
import { insertRepository } from '../../src/meta/repositories.js';
import { insertShard } from '../../src/meta/shards.js';
import { insertSpace } from '../../src/meta/spaces.js';

export async function seedShardRepositories(meta: MetaStore): Promise<void> {
  const at = '2026-01-01T00:00:00.000Z';
  await insertShard(meta.db, { name: 's1', acceptsNew: true, createdAt: at });
  await insertOwner(meta.db, { id: 'O1', name: 'alice', kind: 'user', createdAt: at });
  await insertSpace(meta.db, { id: 'S1', ownerId: 'O1', name: 'main', createdAt: at });
  for (const [id, shard] of [['R1', 's1'], ['R2', 's1'], ['R3', 'local']] as const) {
    await insertRepository(meta.db, { id, spaceId: 'S1', name: id.toLowerCase(), visibility: 'public', defaultBranch: 'main', shard, createdAt: at });
  }
}
