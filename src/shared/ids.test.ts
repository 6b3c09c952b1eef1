import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeTime } from 'ulid';
import { newId } from './ids.js';

test('ids are ULIDs of the current time, all different, their random part spread over every character', () => {
  const before = Date.now();
  const ids = Array.from({ length: 20_000 }, () => newId());
  const after = Date.now();
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(ids.every((id, i) => i === 0 || ids[i - 1]! < id), 'each id sorts after the one before, within a millisecond too');
  const seen = new Set<string>();
  for (const id of ids) {
    assert.match(id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
    const t = decodeTime(id);
    assert.ok(t >= before && t <= after, id);
    for (const c of id.slice(10)) seen.add(c);
  }
  // All 32 characters appear in the random part (a stuck or biased source would not give that).
  assert.equal(seen.size, 32);
});
