import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { isDomainError } from '../shared/errors.js';
import { FLUSH_PKT, RequestValidator, pktLine, type PushCaps } from './pkt-line.js';

async function feed(service: 'upload-pack' | 'receive-pack', chunks: Buffer[], caps?: PushCaps): Promise<RequestValidator> {
  const v = new RequestValidator(service, caps);
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

const small: PushCaps = { maxRefUpdates: 3, maxPushOptions: 2, maxCommandBytes: 4096, maxPushOptionBytes: 4096 };

test('refuses more ref updates, more push options or more command bytes than the caps allow', async () => {
  const cmd = (i: number) => pktLine(`${z} ${a} refs/heads/b${i}${i === 0 ? '\0report-status push-options' : ''}\n`);
  const ok = await feed('receive-pack', [cmd(0), cmd(1), cmd(2), FLUSH_PKT, pktLine('a\n'), pktLine('b\n'), FLUSH_PKT], small);
  assert.equal(ok.commands.length, 3);
  await assert.rejects(feed('receive-pack', [cmd(0), cmd(1), cmd(2), cmd(3), FLUSH_PKT], small), { code: 'too_many_ref_updates' });
  await assert.rejects(
    feed('receive-pack', [cmd(0), FLUSH_PKT, pktLine('a\n'), pktLine('b\n'), pktLine('c\n'), FLUSH_PKT], small),
    { code: 'too_many_push_options' },
  );
  const long = pktLine(`${'x'.repeat(1000)}\n`);
  await assert.rejects(
    feed('receive-pack', [cmd(0), FLUSH_PKT, long, long, long, long, long, FLUSH_PKT], { ...small, maxPushOptions: 100 }),
    { code: 'push_commands_too_large' },
  );
  // Options whose text passes the byte cap are refused before the one over it is held.
  const refused = new RequestValidator('receive-pack', { ...small, maxPushOptions: 100, maxCommandBytes: 1 << 20, maxPushOptionBytes: 2500 });
  const three = Buffer.concat([cmd(0), FLUSH_PKT, long, long, long, FLUSH_PKT]);
  await assert.rejects(pipeline(Readable.from([three]), refused, new Writable({ write: (_c, _e, cb) => cb() })), { code: 'push_options_too_large' });
  assert.equal(refused.pushOptions.length, 2);
});

test('regression (issue 9): a million push-option lines are refused before they are all held', async () => {
  const v = new RequestValidator('receive-pack');
  const option = pktLine('x\n');
  const chunks = function* () {
    yield Buffer.concat([pktLine(`${z} ${a} refs/heads/main\0report-status push-options\n`), FLUSH_PKT]);
    for (let i = 0; i < 1000; i++) yield Buffer.concat(Array(1000).fill(option));
  };
  await assert.rejects(pipeline(Readable.from(chunks()), v, new Writable({ write: (_c, _e, cb) => cb() })), { code: 'too_many_push_options' });
  assert.ok(v.pushOptions.length <= 100);
});

/** Feeds chunks straight into the transform: synchronous, so 10,000 cases stay quick. */
function feedSync(service: 'upload-pack' | 'receive-pack', chunks: Uint8Array[], caps: PushCaps): { v: RequestValidator; error?: unknown } {
  const v = new RequestValidator(service, caps);
  let error: unknown;
  const cb = (err?: Error | null) => {
    if (err) error = err;
  };
  for (const chunk of chunks) {
    v._transform(Buffer.from(chunk), 'buffer' as BufferEncoding, cb);
    if (error) return { v, error };
  }
  v._flush(cb);
  return error ? { v, error } : { v };
}

const service = fc.constantFrom<'upload-pack' | 'receive-pack'>('upload-pack', 'receive-pack');

test('fuzz: arbitrary bytes are accepted or refused with a domain error, and what is kept stays within the caps', () => {
  // Bytes that look like pkt-lines often enough to get past the first header.
  const pkt = fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.string({ maxLength: 60 }).map((t) => pktLine(t)),
    fc.constantFrom(FLUSH_PKT, Buffer.from('0001'), Buffer.from('0002'), Buffer.from('0004'), Buffer.from('fff0'), Buffer.from('0003')),
    fc.tuple(fc.constantFrom(z, a, 'b'.repeat(64)), fc.constantFrom(z, a), fc.string({ maxLength: 20 })).map(([o, n, r]) => pktLine(`${o} ${n} refs/${r}\0push-options\n`)),
  );
  fc.assert(
    fc.property(service, fc.array(pkt, { maxLength: 40 }), (svc, chunks) => {
      const { v, error } = feedSync(svc, chunks, small);
      if (error !== undefined) assert.ok(isDomainError(error), `not a domain error: ${String(error)}`);
      assert.ok(v.commands.length <= small.maxRefUpdates);
      assert.ok(v.pushOptions.length <= small.maxPushOptions);
    }),
    { numRuns: 10_000 },
  );
});

test('fuzz: a well-formed push parses to its commands and options however it is split', () => {
  const ref = fc.stringMatching(/^[a-z0-9/_-]{1,30}$/).map((r) => `refs/heads/${r}`);
  const command = fc.tuple(fc.constantFrom(z, a), fc.constantFrom(a, 'c'.repeat(40)), ref);
  fc.assert(
    fc.property(
      fc.array(command, { minLength: 1, maxLength: 6 }),
      fc.array(fc.stringMatching(/^[ -~]{0,40}$/), { maxLength: 4 }),
      fc.uint8Array({ maxLength: 100 }),
      fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 10 }),
      (commands, options, pack, cuts) => {
        const body = Buffer.concat([
          ...commands.map(([o, n, r], i) => pktLine(`${o} ${n} ${r}${i === 0 ? '\0report-status push-options' : ''}\n`)),
          FLUSH_PKT,
          ...options.map((o) => pktLine(`${o}\n`)),
          FLUSH_PKT,
          Buffer.from('PACK'),
          pack,
        ]);
        const chunks: Buffer[] = [];
        for (let i = 0, c = 0; i < body.length; c++) {
          const n = cuts[c % cuts.length]!;
          chunks.push(body.subarray(i, i + n));
          i += n;
        }
        const caps: PushCaps = { maxRefUpdates: 4, maxPushOptions: 3, maxCommandBytes: 1 << 20, maxPushOptionBytes: 1 << 20 };
        const { v, error } = feedSync('receive-pack', chunks, caps);
        if (commands.length > caps.maxRefUpdates) return assert.equal((error as { code?: string })?.code, 'too_many_ref_updates');
        if (options.length > caps.maxPushOptions) return assert.equal((error as { code?: string })?.code, 'too_many_push_options');
        assert.equal(error, undefined);
        assert.deepEqual(v.commands.map((c) => [c.oldOid, c.newOid, c.ref]), commands);
        assert.deepEqual(v.pushOptions, options);
        assert.equal(v.bytes, body.length);
      },
    ),
    { numRuns: 10_000 },
  );
});

test('fuzz: the verdict on a body does not depend on how it is split (headers whole in a chunk or across chunks)', () => {
  const pkt = fc.oneof(
    fc.uint8Array({ maxLength: 16 }),
    fc.string({ maxLength: 30 }).map((t) => pktLine(t)),
    fc.constantFrom(FLUSH_PKT, Buffer.from('0001'), Buffer.from('0004'), Buffer.from('00A5'), Buffer.from('fff1'), Buffer.from('0003')),
    fc.tuple(fc.constantFrom(z, a), fc.constantFrom(z, a), fc.string({ maxLength: 10 })).map(([o, n, r]) => pktLine(`${o} ${n} refs/${r}\0push-options\n`)),
  );
  const verdict = (r: ReturnType<typeof feedSync>) => ({
    code: r.error === undefined ? undefined : (r.error as { code?: string }).code ?? String(r.error),
    commands: r.v.commands,
    options: r.v.pushOptions,
  });
  fc.assert(
    fc.property(service, fc.array(pkt, { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 8 }), (svc, parts, cuts) => {
      const body = Buffer.concat(parts);
      const chunks: Buffer[] = [];
      for (let i = 0, c = 0; i < body.length; c++) {
        chunks.push(body.subarray(i, i + cuts[c % cuts.length]!));
        i += cuts[c % cuts.length]!;
      }
      assert.deepEqual(verdict(feedSync(svc, chunks, small)), verdict(feedSync(svc, [body], small)));
    }),
    { numRuns: 5_000 },
  );
});
