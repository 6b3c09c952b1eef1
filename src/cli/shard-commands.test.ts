import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ShardSummary } from '../repos/shards.js';
import { shardLine } from './shard-commands.js';

const base: ShardSummary = {
  name: 'eu-1',
  state: 'active',
  acceptsNew: true,
  placeable: true,
  createdAt: '',
  repositories: 1,
  gitBytes: 3 * 1024 * 1024,
  lease: null,
};

test('shard list lines: state, accepts new, repositories, bytes and the writer with its epoch and lease age', () => {
  assert.equal(shardLine(base), 'eu-1\tactive\taccepts new\t1 repository\t3.0 MiB\tno writer');
  const lease = { holder: 'node-a/41/x', url: 'http://a:8080', epoch: 7, heldForMs: 95_000, expiresInMs: 4_200 };
  assert.equal(
    shardLine({ ...base, state: 'draining', acceptsNew: false, repositories: 12, lease }),
    'eu-1\tdraining\tno new\t12 repositories\t3.0 MiB\twriter node-a/41/x epoch 7 for 95 s (expires in 4 s)',
  );
  assert.equal(
    shardLine({ ...base, lease: { ...lease, heldForMs: 3 * 3600_000, expiresInMs: -130_000 } }),
    'eu-1\tactive\taccepts new\t1 repository\t3.0 MiB\twriter node-a/41/x epoch 7 for 3.0 h (EXPIRED 2 min ago)',
  );
});
