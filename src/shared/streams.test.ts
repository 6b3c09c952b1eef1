import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { afterPrefix, coalescing, pipeInto } from './streams.js';

const WANT = Buffer.from('0032want 0880c935cf527d09dfef0b3a9d2fa6b7c8e9f0a1b2\n');

/** What a writer downstream of `coalescing()` is asked to write, call by call. */
function recorder(): Writable & { writes: Buffer[] } {
  const w = new Writable({
    write(chunk: Buffer, _enc, done) {
      w.writes.push(chunk);
      done();
    },
  }) as Writable & { writes: Buffer[] };
  w.writes = [];
  return w;
}

test('a body that arrives one pkt-line per chunk reaches the writer in a few large writes, byte for byte', async () => {
  // What Node's HTTP parser does with git's chunked request of 100,000 want lines: many
  // 50-byte chunks in one turn of the event loop, then the next socket read, and so on.
  const input = new PassThrough();
  const out = recorder();
  const done = pipeline(input, coalescing(), out);
  for (let turn = 0; turn < 20; turn++) {
    for (let i = 0; i < 1000; i++) input.write(WANT);
    await nextTurn();
  }
  input.end();
  await done;
  const bytes = Buffer.concat(out.writes);
  assert.equal(bytes.length, 20_000 * WANT.length);
  assert.ok(bytes.equals(Buffer.concat(Array.from({ length: 20_000 }, () => WANT))));
  // 20 turns × 50 000 bytes, at most 64 KiB a write: dozens of writes, not 20,000.
  assert.ok(out.writes.length <= 40, `${out.writes.length} writes`);
});

test('a lone chunk is not held back waiting for more', async () => {
  const input = new PassThrough();
  const joined = coalescing();
  input.pipe(joined);
  const first = new Promise<Buffer>((resolve) => joined.once('data', resolve));
  input.write(WANT);
  // The stream stays open: the chunk must come out anyway (a client that sends a little and
  // then waits for an answer, as a v2 ls-refs does over a kept-alive connection).
  assert.ok((await first).equals(WANT));
  input.destroy();
});

test('a chunk at least as large as the batch passes through as it is', async () => {
  const big = Buffer.alloc(70_000, 1);
  const out = recorder();
  await pipeline(Readable.from([big]), coalescing(64 * 1024), out);
  assert.equal(out.writes.length, 1);
  assert.equal(out.writes[0], big);
});

test('a slow reader holds the writer back: back-pressure goes through the batches', async () => {
  const joined = coalescing(1024);
  const input = new PassThrough();
  input.pipe(joined);
  // Nobody reads `joined`: after its buffers fill, the source must see back-pressure.
  let accepted = 0;
  for (let i = 0; i < 10_000 && input.write(WANT); i++) {
    accepted++;
    if (i % 100 === 0) await nextTurn();
  }
  assert.ok(accepted < 10_000, 'the source was never told to wait');
  assert.ok(joined.readableLength <= 64 * 1024, `${joined.readableLength} bytes held`);
  input.destroy();
  joined.destroy();
});

test('pack-sized chunks go on as they are, never copied, and in order with the small ones around them', async () => {
  const packChunks = [Buffer.alloc(65_520, 1), Buffer.alloc(65_520, 2), Buffer.alloc(20_000, 3)];
  const out = recorder();
  await pipeline(Readable.from([WANT, WANT, ...packChunks, WANT]), coalescing(), out);
  for (const chunk of packChunks) assert.ok(out.writes.includes(chunk), 'the same buffer, not a copy');
  assert.ok(Buffer.concat(out.writes).equals(Buffer.concat([WANT, WANT, ...packChunks, WANT])));
});

test('a paced stream asks before every chunk, takes nothing more while told to wait, and loses no byte', async () => {
  let asked = 0;
  let waiting = false;
  let takenWhileWaiting = 0;
  // Every 100th chunk must wait 5 ms (a client over its budget of pieces).
  const joined = coalescing(64 * 1024, 8 * 1024, () => {
    if (waiting) takenWhileWaiting++;
    asked++;
    if (asked % 100 !== 0) return 0;
    waiting = true;
    setTimeout(() => (waiting = false), 4);
    return 5;
  });
  const out = recorder();
  const chunks = Array.from({ length: 1000 }, (_, i) => Buffer.from(`${i}|`));
  await pipeline(Readable.from(chunks), joined, out);
  assert.equal(asked, 1000);
  assert.equal(takenWhileWaiting, 0, 'a chunk was taken while the stream was told to wait');
  assert.equal(Buffer.concat(out.writes).toString(), chunks.map(String).join(''));
});

test('afterPrefix passes on what follows its prefix, however the chunks cut it, and fails a stream that starts otherwise', async () => {
  const prefix = Buffer.from('gitstratum-session\n');
  const body = Buffer.concat([prefix, Buffer.from('0032want 1234\n0000')]);
  for (const cuts of [[body.length], [3, body.length], [prefix.length, body.length], [prefix.length + 2, body.length], [1, 2, 5, 30, body.length]]) {
    const chunks = cuts.map((end, i) => body.subarray(i === 0 ? 0 : cuts[i - 1], end));
    const out: Buffer[] = [];
    await pipeline(Readable.from(chunks), afterPrefix(prefix, 'a body'), new Writable({ write: (c: Buffer, _e, done) => done(void out.push(c)) }));
    assert.equal(Buffer.concat(out).toString(), '0032want 1234\n0000', `cut at ${cuts.join(',')}`);
  }
  for (const bad of ['gitstratum-sessioX\nrest', 'nope', '0032want']) {
    await assert.rejects(pipeline(Readable.from([Buffer.from(bad)]), afterPrefix(prefix, 'a body'), new Writable({ write: (_c, _e, done) => done() })), /a body does not start as it must/);
  }
  await assert.rejects(pipeline(Readable.from([Buffer.from('gitstr')]), afterPrefix(prefix, 'a body'), new Writable({ write: (_c, _e, done) => done() })), /a body ended before its start was complete/);
});

test('pipeInto: the source failing before anyone reads reaches the later reader, not the process; destroying the reader destroys the source', async () => {
  const source = new PassThrough();
  const dest = pipeInto(source, coalescing());
  source.write(Buffer.from('0009done\n'));
  source.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
  await nextTurn();
  await nextTurn();
  // Nobody listened until now; the process is still here, and the reader gets the failure.
  await assert.rejects(
    (async () => {
      for await (const _chunk of dest);
    })(),
    /aborted/,
  );

  const open = new PassThrough();
  const reader = pipeInto(open, coalescing());
  reader.destroy();
  await nextTurn();
  assert.equal(open.destroyed, true, 'a consumer that stops early stops the source');
});
