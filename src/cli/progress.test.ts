import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, formatBytes } from './progress.js';

function fake(isTTY: boolean) {
  let t = 0;
  const out: string[] = [];
  const stream = { isTTY, columns: 100, write: (s: string) => out.push(s) };
  return { out, stream, now: () => t, advance: (ms: number) => (t += ms) };
}

test('on a terminal: a bar redrawn in place at most every 100 ms, with bytes, percentage and rate, one line per item', () => {
  const f = fake(true);
  const p = createProgress({ stream: f.stream, now: f.now });
  p.update('alice/main/a', { bytes: 0, totalBytes: 4 * 1048576 });
  f.advance(50);
  p.update('alice/main/a', { bytes: 1048576, totalBytes: 4 * 1048576 });
  assert.equal(f.out.length, 1, 'throttled');
  f.advance(950);
  p.update('alice/main/a', { bytes: 2 * 1048576, totalBytes: 4 * 1048576 });
  assert.match(f.out[1]!, /^\ralice\/main\/a \[#{10}\.{10}\] 50% 2\.0 MiB\/4\.0 MiB 2\.0 MiB\/s +$/);
  assert.equal(f.out[1]!.length, 100);
  f.advance(1000);
  p.update('alice/main/b', { bytes: 10, totalBytes: 10 });
  // The first item's line is finished (final figures, newline) before the next begins.
  assert.match(f.out[2]!, /^\ralice\/main\/a .* 50% .*\n$/);
  assert.match(f.out[3]!, /^\ralice\/main\/b \[#{20}\] 100% 10 B\/10 B/);
  p.finish();
  assert.match(f.out[4]!, /\n$/);
  p.finish();
  assert.equal(f.out.length, 5);
});

test('a long name gives way to the figures on a narrow terminal', () => {
  const f = fake(true);
  f.stream.columns = 60;
  const p = createProgress({ stream: f.stream, now: f.now });
  p.update('a-very-long-owner/a-very-long-space/a-very-long-repository-name', { bytes: 5, totalBytes: 10 });
  assert.equal(f.out[0]!.length, 60);
  assert.match(f.out[0]!, /^\r…[a-z-]+ \[#{10}\.{10}\] 50% 5 B\/10 B/);
});

test('not on a terminal: nothing for a short transfer, a plain line every 30 s for a long one', () => {
  const f = fake(false);
  const p = createProgress({ stream: f.stream, now: f.now });
  p.update('r', { bytes: 0, totalBytes: 100 * 1048576 });
  f.advance(29_000);
  p.update('r', { bytes: 10 * 1048576, totalBytes: 100 * 1048576 });
  assert.deepEqual(f.out, []);
  f.advance(1_000);
  p.update('r', { bytes: 30 * 1048576, totalBytes: 100 * 1048576 });
  assert.deepEqual(f.out, ['r: 30.0 MiB of 100.0 MiB (30%), 1.0 MiB/s\n']);
  p.finish();
  assert.equal(f.out.length, 1);
});

test('byte counts read as a person would write them', () => {
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(3 * 1024 ** 3), '3.0 GiB');
});
