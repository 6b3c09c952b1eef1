import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { keySegmentProblem, lfsObjectKey, MAX_KEY_BYTES, MAX_SEGMENT_BYTES, objectKey } from './object-store.js';

describe('objectKey', () => {
  test('the keys the server writes stay valid', () => {
    const oid = 'ab'.repeat(32);
    for (const key of [
      `lfs/ab/ab/${oid}`,
      'snapshots/01j0abcdefghjkmnpqrstvwxyz/01J0ABCDEFGHJKMNPQRSTVWXYZ',
      'backups/meta/20240102T030405.678Z.sqlite.gz',
      'doctor/0123456789abcdef',
      // One segment, capitals included, as before.
      'README',
      'a..b',
    ]) {
      assert.equal(objectKey(key), key);
    }
    assert.equal(lfsObjectKey(oid), `lfs/ab/ab/${oid}`);
  });

  test('segments after the first may be repository paths', () => {
    for (const key of [
      'files/acme/docs/handbook/documents/contracts/Lease Agreement (final).pdf',
      'files/Café/naïve – ü.pdf',
      'files/日本語/ファイル 😀.txt',
      "files/UPPER/a+b %20 #1?x=y&z [x] {y} it's.txt",
      // Dot names other than `.` and `..`, and the fs store's own directory names below the first segment.
      'files/.gitattributes',
      'files/.../..x/x..',
      'files/.tmp/.versions',
      `files/${'é'.repeat(127)}x`,
    ]) {
      assert.equal(objectKey(key), key);
    }
  });

  test('the limits count UTF-8 bytes: 255 a segment, 1024 a key', () => {
    const segment = 'é'.repeat((MAX_SEGMENT_BYTES - 1) / 2) + 'x';
    assert.equal(Buffer.byteLength(segment), MAX_SEGMENT_BYTES);
    objectKey(`files/${segment}`);
    assert.throws(() => objectKey(`files/${segment}x`), RangeError);
    const dirs = `files/${['a', 'b', 'c'].map((c) => c.repeat(MAX_SEGMENT_BYTES)).join('/')}/`;
    const atLimit = dirs + 'z'.repeat(MAX_KEY_BYTES - Buffer.byteLength(dirs));
    assert.equal(objectKey(atLimit), atLimit);
    assert.throws(() => objectKey(`${atLimit}z`), RangeError);
    assert.throws(() => objectKey(`${atLimit.slice(0, -1)}é`), RangeError, 'one character more, as two bytes');
  });

  test('invalid keys are refused with a RangeError', () => {
    for (const key of [
      '',
      '/a',
      'a/',
      'a//b',
      'a/./b',
      'a/../b',
      'a/..',
      '.',
      '..',
      '.tmp',
      '.tmp/x',
      '.versions/x/y',
      // The first segment of a longer key is strict lower-case ASCII.
      'Files/x',
      'fi les/x',
      '-x/y',
      'é/x',
      // One segment: the old rule, letters, digits and . _ -
      'a b',
      '.hidden',
      'files/a\\b',
      'files/a\u0000b',
      'files/line\nbreak',
      'files/tab\there',
      'files/del\u007f',
      'files/lone \ud800 surrogate',
    ]) {
      assert.throws(() => objectKey(key), RangeError, JSON.stringify(key));
    }
  });
});

describe('keySegmentProblem', () => {
  test('says why a segment cannot be part of a key', () => {
    assert.equal(keySegmentProblem('Lease Agreement (final).pdf'), undefined);
    assert.equal(keySegmentProblem('naïve – ü.pdf'), undefined);
    assert.equal(keySegmentProblem('.gitattributes'), undefined);
    assert.equal(keySegmentProblem(''), 'empty segment');
    assert.equal(keySegmentProblem('.'), 'dot segment');
    assert.equal(keySegmentProblem('..'), 'dot segment');
    assert.equal(keySegmentProblem('a/b'), 'contains a slash');
    assert.equal(keySegmentProblem('a\\b'), 'contains a backslash');
    assert.equal(keySegmentProblem('a\rb'), 'contains a control character');
    assert.equal(keySegmentProblem('\ud800'), 'not valid unicode');
    assert.equal(keySegmentProblem('x'.repeat(256)), 'segment over 255 bytes');
  });
});
