import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRange } from './range.js';

test('parses the ranges a resuming git-lfs client sends', () => {
  assert.deepEqual(parseRange('bytes=100-199', 1000), { kind: 'range', range: { start: 100, end: 199 } });
  assert.deepEqual(parseRange('bytes=900-', 1000), { kind: 'range', range: { start: 900, end: 999 } });
  assert.deepEqual(parseRange('bytes=-10', 1000), { kind: 'range', range: { start: 990, end: 999 } });
  assert.deepEqual(parseRange('bytes=0-5000', 1000), { kind: 'range', range: { start: 0, end: 999 } });
});

test('refuses ranges past the end and ignores what it does not support', () => {
  assert.deepEqual(parseRange('bytes=1000-', 1000), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=5-1', 1000), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=0-1,5-6', 1000), { kind: 'none' });
  assert.deepEqual(parseRange(undefined, 1000), { kind: 'none' });
});
