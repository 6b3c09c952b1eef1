import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { bufferRequest } from './request-body.js';

const WANT = Buffer.from('0032want 0880c935cf527d09dfef0b3a9d2fa6b7c8e9f0a1b2\n');

/** git's chunked upload of a fetch of many refs, as Node's parser hands it on: one want line per chunk, 1,000 per socket read. */
async function sendWants(input: PassThrough, lines: number): Promise<void> {
  for (let sent = 0; sent < lines; sent += 1000) {
    for (let i = 0; i < 1000; i++) input.write(WANT);
    await nextTurn();
  }
  input.end(Buffer.from('0000'));
}

async function drain(stream: NodeJS.ReadableStream): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return chunks;
}

test('many refs (issue 9): a fetch request of 20,000 want lines, one per chunk, goes on to git in about one chunk per socket read, not one per line', async () => {
  const input = new PassThrough();
  const sending = sendWants(input, 20_000);
  const body = await bufferRequest(input, undefined, 64 * 1024, new AbortController().signal);
  assert.equal(body.complete, false);
  const chunks = await drain((body as { stream: NodeJS.ReadableStream }).stream);
  await sending;
  const bytes = Buffer.concat(chunks);
  assert.equal(bytes.length, 20_000 * WANT.length + 4, 'every byte, once');
  assert.ok(bytes.subarray(0, WANT.length).equals(WANT) && bytes.subarray(-4).toString() === '0000');
  // 20 socket reads of 50 KB: about 20 chunks (81 without the joining stage). Each chunk costs
  // a trip through the validator and a write to git's stdin: with 100,000 refs, one per line
  // was seconds of blocked event loop per fetch.
  assert.ok(chunks.length <= 30, `${chunks.length} chunks`);
});

test('a small request sent one line per chunk is still read whole before git starts', async () => {
  const input = new PassThrough();
  const sending = sendWants(input, 1000);
  const body = await bufferRequest(input, undefined, 64 * 1024, new AbortController().signal);
  await sending;
  assert.equal(body.complete, true);
  assert.equal((body as { bytes: Buffer }).bytes.length, 1000 * WANT.length + 4);
});

test('a gzip body is decoded after the chunks are joined', async () => {
  const gzip = createGzip();
  const input = new PassThrough();
  gzip.pipe(input);
  const sending = sendWants(gzip as unknown as PassThrough, 3000);
  const body = await bufferRequest(input, createGunzip(), 64 * 1024, new AbortController().signal);
  const chunks = body.complete ? [body.bytes] : await drain(body.stream);
  await sending;
  assert.equal(Buffer.concat(chunks).length, 3000 * WANT.length + 4);
});
