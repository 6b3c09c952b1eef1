import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBytes, parseSeconds } from './units.js';

test('sizes: plain bytes, decimal and binary units, any case, whole bytes only', () => {
  const cases: [string, number | undefined][] = [
    ['1048576', 1048576],
    ['0', 0],
    ['5GiB', 5 * 1024 ** 3],
    ['500MB', 500e6],
    ['64KiB', 65536],
    ['64 KiB', 65536],
    ['64kib', 65536],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['1.1MB', 1_100_000],
    ['2TB', 2e12],
    ['10B', 10],
    ['0.5B', undefined],
    ['5GB!', undefined],
    ['5 GiBs', undefined],
    ['-1', undefined],
    ['1e9', undefined],
    ['0x10', undefined],
    ['', undefined],
    ['MB', undefined],
    ['99999999TiB', undefined],
  ];
  for (const [text, bytes] of cases) assert.equal(parseBytes(text), bytes, text);
});

test('durations: plain seconds, s/m/h/d, fractions', () => {
  const cases: [string, number | undefined][] = [
    ['90', 90],
    ['30s', 30],
    ['15m', 900],
    ['1h', 3600],
    ['7d', 7 * 86400],
    ['1.5h', 5400],
    ['0.5', 0.5],
    ['2 H', 7200],
    ['1w', undefined],
    ['1ms', undefined],
    ['soon', undefined],
    ['-5s', undefined],
    ['', undefined],
  ];
  for (const [text, seconds] of cases) assert.equal(parseSeconds(text), seconds, text);
});
