/**
 * Byte ranges as every adapter reads them, so they agree on the edge cases: the end is
 * inclusive and clamped to the object, a start at or past the end of the object is not
 * satisfiable (HTTP 416 territory, `invalid`), and a malformed range is the caller's bug.
 */
import { invalid } from '../shared/errors.js';
import type { ByteRange } from './object-store.js';

export function assertByteRange(range: ByteRange): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) {
    throw new RangeError(`invalid byte range: ${start}-${end ?? ''}`);
  }
}

/** The inclusive range actually served from an object of `size` bytes. */
export function resolveByteRange(range: ByteRange, size: number): { start: number; end: number } {
  assertByteRange(range);
  if (range.start >= size) {
    throw invalid('range_not_satisfiable', 'range starts past the end of the object', { start: range.start, size });
  }
  return { start: range.start, end: Math.min(range.end ?? size - 1, size - 1) };
}
