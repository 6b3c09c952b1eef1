import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDomainError } from '../shared/errors.js';
import { DEFAULT_MAX_TOKEN_DAYS, parseDuration } from './tokens.js';

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return isDomainError(err) ? err.code : String(err);
  }
  return 'accepted';
};

test('durations parse in their units', () => {
  assert.equal(parseDuration('90m'), 90 * 60e3);
  assert.equal(parseDuration('2w'), 14 * 86400e3);
  assert.equal(parseDuration('30'), 30 * 86400e3);
  assert.equal(parseDuration(`${DEFAULT_MAX_TOKEN_DAYS}d`), DEFAULT_MAX_TOKEN_DAYS * 86400e3);
});

test('issue 9: durations past the bound are refused as invalid, never a 500 or a date past year 9999', () => {
  // 99999999999d overflowed Date (RangeError, 500); 3000000d gave `+10190-…`, which compares as expired.
  for (const text of ['99999999999d', '3000000d', `${DEFAULT_MAX_TOKEN_DAYS + 1}d`, '9'.repeat(400), '522w']) {
    assert.equal(code(() => parseDuration(text)), 'duration_too_long', text);
  }
  assert.equal(code(() => parseDuration('2d', 86400e3)), 'duration_too_long');
  assert.equal(code(() => parseDuration('0d')), 'invalid_duration');
  assert.equal(code(() => parseDuration('1y')), 'invalid_duration');
  assert.equal(code(() => parseDuration('-1d')), 'invalid_duration');
});
