import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FLUSH_PKT, RequestValidator, pktLine } from './pkt-line.js';

async function feed(service: 'upload-pack' | 'receive-pack', chunks: Buffer[]): Promise<RequestValidator> {
  const v = new RequestValidator(service);
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  await pipeline(Readable.from(chunks), v, sink);
  return v;
}

const a = 'a'.repeat(40);
const z = '0'.repeat(40);

test('parses receive-pack commands split across chunk boundaries and passes the pack through', async () => {
  const body = Buffer.concat([
    pktLine(`${z} ${a} refs/heads/main\0report-status side-band-64k push-options\n`),
    pktLine(`${a} ${z} refs/heads/old\n`),
    FLUSH_PKT,
    pktLine('ci.skip\n'),
    FLUSH_PKT,
    Buffer.from('PACK\x00\x00\x00\x02garbage-not-framed'),
  ]);
  const pieces = [];
  for (let i = 0; i < body.length; i += 7) pieces.push(body.subarray(i, i + 7));
  const v = await feed('receive-pack', pieces);
  assert.deepEqual(
    v.commands.map((c) => c.ref),
    ['refs/heads/main', 'refs/heads/old'],
  );
  assert.ok(v.capabilities.includes('report-status'));
  assert.deepEqual(v.pushOptions, ['ci.skip']);
  assert.equal(v.bytes, body.length);
});

test('refuses a non-hex length, an out-of-range length and a truncated line', async () => {
  await assert.rejects(feed('upload-pack', [Buffer.from('zzzzwant')]), { code: 'malformed_pkt_line' });
  await assert.rejects(feed('upload-pack', [Buffer.from('0003')]), { code: 'malformed_pkt_line' });
  await assert.rejects(feed('upload-pack', [Buffer.from('0010want')]), { code: 'truncated_pkt_line' });
});

test('accepts protocol v2 delimiter and flush packets in upload-pack requests', async () => {
  const v = await feed('upload-pack', [Buffer.concat([pktLine('command=ls-refs\n'), Buffer.from('0001'), pktLine('peel\n'), FLUSH_PKT])]);
  assert.equal(v.commands.length, 0);
});

test('refuses a push command that is not old-oid new-oid ref', async () => {
  await assert.rejects(feed('receive-pack', [pktLine(`${a} refs/heads/main\n`), FLUSH_PKT]), { code: 'malformed_push_command' });
});
