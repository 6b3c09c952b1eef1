/**
 * statelessRpc against a real `git receive-pack` on a bare repository made by the test: what a
 * refused push costs and how long the server holds on to it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Duplex, Readable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { gzipSync, createGunzip } from 'node:zlib';
import { counting } from '../shared/streams.js';
import { Limiter } from './limiter.js';
import { DEFAULT_PUSH_CAPS, FLUSH_PKT, MAX_PKT_LEN, pktLine } from './pkt-line.js';
import { statelessRpc, type ServiceLimits } from './smart-http.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const ZERO = '0'.repeat(40);
const OID = 'a'.repeat(40);
/** "PACK", version 2, no objects, then its SHA-1: what git sends when the server has every object. */
const PACK_HEADER = Buffer.from('5041434b0000000200000000', 'hex');
const EMPTY_PACK = Buffer.concat([PACK_HEADER, createHash('sha1').update(PACK_HEADER).digest()]);

const limits: ServiceLimits = {
  timeoutMs: 60_000,
  niceness: 0,
  maxPushBytes: 5 * 1024 ** 3,
  maxFetchRequestBytes: 1024 * 1024,
  push: DEFAULT_PUSH_CAPS,
};

/** A gzip receive-pack body of `options` push options of the largest pkt-line each (about 64 KiB), without side-band. */
function pushOptionFlood(options: number): Buffer {
  const option = pktLine('o'.repeat(MAX_PKT_LEN - 4));
  return gzipSync(
    Buffer.concat([
      pktLine(`${ZERO} ${OID} refs/heads/flood\0report-status push-options\n`),
      FLUSH_PKT,
      ...Array.from({ length: options }, () => option),
      FLUSH_PKT,
      EMPTY_PACK,
    ]),
    { level: 9 },
  );
}

/** The wire body in the 64 KiB pieces a socket delivers. */
function wire(body: Buffer): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < body.length; i += 65536) pieces.push(body.subarray(i, i + 65536));
  return Readable.from(pieces);
}

test('a refused gzip push-option flood is decoded only up to the cap and released once git has exited (issue 9: bench:abuse peak RSS 2 GB)', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-smart-http-'));
  try {
    const repoPath = path.join(dir, 'repo.git');
    execFileSync('git', ['init', '--bare', '--quiet', repoPath]);
    // As every repository of the server has it (repos/local-host.ts): git reads the options.
    execFileSync('git', ['--git-dir', repoPath, 'config', 'receive.advertisePushOptions', 'true']);
    const flood = pushOptionFlood(4 * DEFAULT_PUSH_CAPS.maxPushOptions);
    const limiter = new Limiter({ maxRunning: 1, maxQueue: 0, queueTimeoutMs: 1000 });

    // Everything of the request lives in this scope; only a WeakRef and a count leave it.
    const refused = async () => {
      // gunzip, and a count of what it produced, where the route would put gunzip alone.
      const gunzip = createGunzip();
      const produced = counting(16 * 1024);
      const decoder = Duplex.from({ writable: gunzip, readable: gunzip.pipe(produced) });
      const controller = new AbortController();
      await assert.rejects(
        statelessRpc({ service: 'receive-pack', repoId: 'r1', repoPath, input: wire(flood), decoder, limits }, limiter, controller.signal),
        { code: 'push_options_too_large' },
      );
      return { decoded: produced.bytes, decoder: new WeakRef(decoder) };
    };
    const { decoded, decoder } = await refused();

    // The refusal comes at the option over the byte cap, whatever the body would decode to.
    const optionBytes = DEFAULT_PUSH_CAPS.maxPushOptionBytes + MAX_PKT_LEN;
    assert.ok(decoded <= optionBytes + 1024 * 1024, `decoded ${decoded} bytes before the refusal`);

    // Before the fix a 10 s timer (the kill of a receive-pack whose input was cut) kept the
    // whole request, its decoder and its parsed push options alive after git had exited: a
    // client repeating the push grew the heap by about 6.5 MB per request.
    for (let i = 0; i < 20 && decoder.deref(); i++) {
      await tick();
      gc();
    }
    assert.ok(decoder.deref() === undefined, 'nothing holds the refused request once git has exited');
    assert.equal(limiter.runningCount, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a push refused for its commands or options starts no git, and says why in the side-band git prints', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-smart-http-'));
  try {
    const repoPath = path.join(dir, 'repo.git');
    execFileSync('git', ['init', '--bare', '--quiet', repoPath]);
    // A limiter with no slot at all: the refusal must not need one.
    const limiter = new Limiter({ maxRunning: 0, maxQueue: 0, queueTimeoutMs: 1000 });
    const options = Array.from({ length: DEFAULT_PUSH_CAPS.maxPushOptions + 1 }, (_, i) => pktLine(`opt${i}\n`));
    const body = Buffer.concat([pktLine(`${ZERO} ${OID} refs/heads/x\0report-status side-band-64k push-options\n`), FLUSH_PKT, ...options, FLUSH_PKT, EMPTY_PACK]);
    const res = await statelessRpc({ service: 'receive-pack', repoId: 'r1', repoPath, input: wire(body), limits }, limiter, new AbortController().signal);
    const answer = Buffer.concat(await res.body.toArray()).toString('latin1');
    assert.match(answer, /\x03too many push options: the limit is 100\n/);
    assert.equal((await res.done).spawned, false);
    // A malformed body is refused the same way, before git, as a client error.
    await assert.rejects(
      statelessRpc({ service: 'upload-pack', repoId: 'r1', repoPath, input: wire(Buffer.from('zzzzwant')), limits }, limiter, new AbortController().signal),
      { code: 'malformed_pkt_line' },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
