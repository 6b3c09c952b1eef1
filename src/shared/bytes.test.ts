import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatBytes, parseByteSize } from './bytes.js';

test('parseByteSize: binary and decimal units, any case, a bare number is bytes; undefined otherwise', () => {
  assert.equal(parseByteSize('5GiB'), 5 * 1024 ** 3);
  assert.equal(parseByteSize('500MB'), 500_000_000);
  assert.equal(parseByteSize('1.5 kib'), 1536);
  assert.equal(parseByteSize('42'), 42);
  assert.equal(parseByteSize('42b'), 42);
  for (const bad of ['', 'GiB', '-1MB', '5 XB', '1e3', '99999999999TiB']) assert.equal(parseByteSize(bad), undefined, bad);
});

test('formatBytes', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(10 * 1024 ** 3), '10.0 GiB');
});
