import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBytes } from './bytes.js';

test('formatBytes', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(10 * 1024 ** 3), '10.0 GiB');
});
