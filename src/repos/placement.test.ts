import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { chooseShard, type ShardLoad } from './placement.js';

function shard(name: string, gitBytes: number, repositories: number, extra: Partial<ShardLoad> = {}): ShardLoad {
  return { name, state: 'active', acceptsNew: true, createdAt: '', repositories, gitBytes, ...extra };
}

const anySpace = { pins: [], space: 'alice/main' };

test('placement picks the shard with the fewest git bytes, then the fewest repositories, then the first name', () => {
  assert.equal(chooseShard([shard('a', 300, 1), shard('b', 100, 9), shard('c', 200, 0)], anySpace), 'b');
  assert.equal(chooseShard([shard('a', 100, 5), shard('b', 100, 2), shard('c', 100, 3)], anySpace), 'b');
  assert.equal(chooseShard([shard('c', 0, 0), shard('b', 0, 0), shard('d', 0, 0)], anySpace), 'b');
});

test('placement skips draining and drained shards and those that do not accept new repositories', () => {
  const shards = [
    shard('a', 0, 0, { state: 'draining' }),
    shard('b', 0, 0, { state: 'drained' }),
    shard('c', 0, 0, { acceptsNew: false }),
    shard('d', 999, 99),
  ];
  assert.equal(chooseShard(shards, anySpace), 'd');
});

test('a pinned space is placed only on its pinned shards, however loaded', () => {
  const shards = [shard('a', 0, 0), shard('b', 500, 5), shard('c', 400, 4)];
  assert.equal(chooseShard(shards, { pins: ['b', 'c'], space: 'acme/games' }), 'c');
  assert.equal(chooseShard(shards, { pins: ['b'], space: 'acme/games' }), 'b');
  // A pin naming a shard that no longer takes new repositories leaves the others.
  assert.equal(chooseShard([shard('a', 0, 0), shard('b', 0, 0, { state: 'draining' }), shard('c', 9, 9)], { pins: ['b', 'c'], space: 'acme/games' }), 'c');
});

test('placement refuses with one clear error when no shard qualifies', () => {
  assert.throws(() => chooseShard([], anySpace), { kind: 'unavailable', code: 'no_shard_available', message: 'no shard accepts new repositories' });
  assert.throws(() => chooseShard([shard('a', 0, 0, { state: 'draining' })], anySpace), { code: 'no_shard_available' });
  assert.throws(() => chooseShard([shard('a', 0, 0), shard('b', 0, 0, { acceptsNew: false })], { pins: ['c', 'b'], space: 'acme/games' }), {
    code: 'no_shard_available',
    message: 'no shard that space acme/games is pinned to (b, c) accepts new repositories',
  });
});

test('placement always picks a qualifying shard that no other qualifying shard is lighter than', () => {
  const load = fc.record({
    name: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'),
    state: fc.constantFrom('active', 'draining', 'drained') as fc.Arbitrary<ShardLoad['state']>,
    acceptsNew: fc.boolean(),
    createdAt: fc.constant(''),
    repositories: fc.nat(5),
    gitBytes: fc.nat(5),
  });
  const input = fc.record({
    shards: fc.uniqueArray(load, { selector: (s) => s.name, maxLength: 6 }),
    pins: fc.uniqueArray(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), { maxLength: 3 }),
  });
  fc.assert(
    fc.property(input, ({ shards, pins }) => {
      const pinned: readonly string[] = pins;
      const qualifies = (s: ShardLoad) => s.state === 'active' && s.acceptsNew && (pinned.length === 0 || pinned.includes(s.name));
      const candidates = shards.filter(qualifies);
      let chosen: string | undefined;
      try {
        chosen = chooseShard(shards, { pins, space: 'o/s' });
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'no_shard_available');
      }
      assert.equal(chosen === undefined, candidates.length === 0);
      if (chosen === undefined) return;
      const c = candidates.find((s) => s.name === chosen)!;
      assert.ok(c, `${chosen} qualifies`);
      for (const o of candidates) {
        const key = (s: ShardLoad) => [s.gitBytes, s.repositories] as const;
        const [ob, or] = key(o);
        const [cb, cr] = key(c);
        assert.ok(ob > cb || (ob === cb && (or > cr || (or === cr && o.name >= c.name))), `${o.name} is not lighter than ${c.name}`);
      }
    }),
    { numRuns: 300 },
  );
});
