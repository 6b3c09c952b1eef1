import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FLUSH_PKT, pktLine } from '../pkt-line.js';
import { cacheKey, classifyUploadPackRequest, parsePackets, type KeyParts } from './key.js';

const a = 'a'.repeat(40);
const b = 'b'.repeat(40);
const DELIM = Buffer.from('0001');

function v0(caps: string, ...rest: string[]): Buffer {
  return Buffer.concat([pktLine(`want ${a} ${caps}\n`), pktLine(`want ${b}\n`), ...rest.map((l) => pktLine(`${l}\n`)), FLUSH_PKT, pktLine('done\n')]);
}

function v2(command: string, caps: string[], args: string[]): Buffer {
  return Buffer.concat([pktLine(`command=${command}\n`), ...caps.map((c) => pktLine(`${c}\n`)), DELIM, ...args.map((l) => pktLine(`${l}\n`)), FLUSH_PKT]);
}

function normalized(body: Buffer, version: 0 | 2): string {
  const c = classifyUploadPackRequest(body, version);
  assert.ok(c.cacheable, `expected cacheable, got ${JSON.stringify(c)}`);
  return c.normalized.toString('latin1');
}

test('v0: requests that differ only in agent= or session-id= share a key body', () => {
  const base = 'multi_ack_detailed side-band-64k thin-pack ofs-delta';
  const x = normalized(v0(`${base} agent=git/2.39.5`, 'deepen 1'), 0);
  const y = normalized(v0(`${base} agent=git/2.45.0 session-id=abc`, 'deepen 1'), 0);
  const z = normalized(v0(base, 'deepen 1'), 0);
  assert.equal(x, y);
  assert.equal(x, z);
  assert.equal(x, v0(base, 'deepen 1').toString('latin1'), 'the rest of the body is kept byte for byte');
});

test('v0: anything else in the request makes a different key body', () => {
  const base = normalized(v0('side-band-64k agent=x', 'deepen 1'), 0);
  assert.notEqual(normalized(v0('side-band-64k no-progress agent=x', 'deepen 1'), 0), base);
  assert.notEqual(normalized(v0('side-band-64k agent=x', 'deepen 2'), 0), base);
  assert.notEqual(normalized(v0('side-band-64k agent=x', 'deepen 1', 'filter blob:none'), 0), base);
  // An agent value hiding another feature behind whitespace git would split on is kept.
  assert.notEqual(normalized(v0('side-band-64k agent=x\tno-progress', 'deepen 1'), 0), base);
});

test('v2: agent= lines are dropped, session-id= lines are not (git refuses them unless advertised)', () => {
  const args = ['thin-pack', 'ofs-delta', 'deepen 1', `want ${a}`, 'done'];
  const x = normalized(v2('fetch', ['agent=git/2.39.5', 'object-format=sha1'], args), 2);
  const y = normalized(v2('fetch', ['agent=other', 'object-format=sha1'], args), 2);
  assert.equal(x, y);
  assert.notEqual(normalized(v2('fetch', ['agent=x', 'session-id=1', 'object-format=sha1'], args), 2), x);
  const lsRefs = classifyUploadPackRequest(v2('ls-refs', ['agent=x'], ['peel', 'symrefs', 'ref-prefix refs/heads/']), 2);
  assert.ok(lsRefs.cacheable);
  assert.equal(lsRefs.endpoint, 'ls-refs');
});

test('requests with have lines are negotiations, keyed on every have; others are not', () => {
  const c = 'c'.repeat(40);
  for (const [body, version] of [
    [v0('side-band-64k agent=x', `have ${b}`), 0],
    [v2('fetch', ['agent=x'], [`want ${a}`, `have ${b}`, 'done']), 2],
  ] as const) {
    const classified = classifyUploadPackRequest(body, version);
    assert.ok(classified.cacheable && classified.negotiation && classified.endpoint === 'fetch', JSON.stringify(classified));
  }
  const plain = classifyUploadPackRequest(v2('fetch', [], [`want ${a}`, 'done']), 2);
  assert.ok(plain.cacheable && !plain.negotiation);
  // Another have, another order, or one more: another key body. The same request from another agent: the same.
  const base = normalized(v2('fetch', ['agent=x'], [`want ${a}`, `have ${b}`, `have ${c}`, 'done']), 2);
  assert.equal(normalized(v2('fetch', ['agent=y'], [`want ${a}`, `have ${b}`, `have ${c}`, 'done']), 2), base);
  assert.notEqual(normalized(v2('fetch', ['agent=x'], [`want ${a}`, `have ${c}`, `have ${b}`, 'done']), 2), base);
  assert.notEqual(normalized(v2('fetch', ['agent=x'], [`want ${a}`, `have ${b}`, 'done']), 2), base);
  assert.notEqual(normalized(v2('fetch', ['agent=x'], [`want ${a}`, `have ${b}`, `have ${c}`]), 2), base, 'a round without done');
  assert.notEqual(normalized(v0('side-band-64k', `have ${b}`), 0), normalized(v0('side-band-64k', `have ${c}`), 0));
});

test('other commands and broken framing are not cacheable', () => {
  assert.equal(classifyUploadPackRequest(v2('object-info', [], ['size', `oid ${a}`]), 2).cacheable, false);
  assert.deepEqual(classifyUploadPackRequest(Buffer.from('0010want'), 0), { cacheable: false, endpoint: 'other', reason: 'malformed' });
  assert.equal(parsePackets(Buffer.from('zzzz')), undefined);
  assert.equal(parsePackets(Buffer.from('0003')), undefined);
});

test('every part of the key changes the key', () => {
  const parts: KeyParts = {
    repoId: '01HZ',
    refsVersion: '0123456789abcdef',
    gitVersion: 'git version 2.39.5',
    service: 'upload-pack',
    protocol: 2,
    endpoint: 'fetch',
    request: Buffer.from('0000'),
  };
  const base = cacheKey(parts);
  assert.match(base, /^[0-9a-f]{64}$/);
  const variants: Partial<KeyParts>[] = [
    { repoId: '01HY' },
    { refsVersion: '0123456789abcdee' },
    { gitVersion: 'git version 2.45.0' },
    { protocol: 0 },
    { endpoint: 'ls-refs' },
    { request: Buffer.from('0001') },
  ];
  for (const v of variants) assert.notEqual(cacheKey({ ...parts, ...v }), base, JSON.stringify(v));
});
