/**
 * Which acknowledged pushes a failover from snapshots reports lost (snapshots/takeover.ts):
 * exactly those whose ref updates the latest snapshot does not hold.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lostPushes } from './takeover.js';

const Z = '0'.repeat(40);
const oid = (n: number) => n.toString(16).padStart(40, 'a');
const push = (id: string, refs: [string, string, string][] | undefined) => ({
  requestId: id,
  at: `2026-12-05T00:00:0${id.length}Z`,
  actorName: 'alice',
  refs: refs?.map(([ref, old, now]) => ({ ref, old, new: now })),
});
const lostIds = (pushes: ReturnType<typeof push>[], held?: [string, string][]) => lostPushes(pushes, held && new Map(held)).map((p) => p.requestId);

test('pushes the snapshot holds are not lost; those after it are', () => {
  const pushes = [push('a', [['refs/heads/main', Z, oid(1)]]), push('b', [['refs/heads/main', oid(1), oid(2)]]), push('c', [['refs/heads/dev', Z, oid(3)]])];
  assert.deepEqual(lostIds(pushes, [['refs/heads/main', oid(1)]]), ['b', 'c']);
  assert.deepEqual(lostIds(pushes, [['refs/heads/main', oid(2)], ['refs/heads/dev', oid(3)]]), []);
});

test('a push is held when a later push of the same ref is: the ref went on from it', () => {
  const pushes = [push('a', [['refs/heads/main', Z, oid(1)]]), push('b', [['refs/heads/main', oid(1), oid(2)]]), push('c', [['refs/heads/main', oid(2), oid(3)]])];
  assert.deepEqual(lostIds(pushes, [['refs/heads/main', oid(2)]]), ['c']);
});

test('a push of several refs is lost when any of them is not held', () => {
  const pushes = [push('atomic', [['refs/heads/a', Z, oid(1)], ['refs/heads/b', Z, oid(2)]])];
  assert.deepEqual(lostIds(pushes, [['refs/heads/a', oid(1)]]), ['atomic']);
  assert.deepEqual(lostIds(pushes, [['refs/heads/a', oid(1)], ['refs/heads/b', oid(2)]]), []);
});

test('a deletion is held when the snapshot lacks the ref', () => {
  const pushes = [push('del', [['refs/heads/old', oid(1), Z]])];
  assert.deepEqual(lostIds(pushes, [['refs/heads/main', oid(2)]]), []);
  assert.deepEqual(lostIds(pushes, [['refs/heads/old', oid(1)]]), ['del']);
});

test('with no snapshot every push is lost, and a push whose updates are unknown is reported lost', () => {
  assert.deepEqual(lostIds([push('a', [['refs/heads/main', Z, oid(1)]])], undefined), ['a']);
  assert.deepEqual(lostIds([push('unknown', undefined)], [['refs/heads/main', oid(1)]]), ['unknown']);
  const [reported] = lostPushes([push('unknown', undefined)], new Map());
  assert.deepEqual(reported!.refs, []);
});
