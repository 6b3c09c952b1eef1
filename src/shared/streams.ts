/** Stream transforms shared by the git and (later) LFS paths. */
import { Transform, finished, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { invalid, tooLarge } from './errors.js';

/** The refusal of `bytes` of `what` over `max`, or undefined (byteLimit's, for a body already whole). */
export function overByteLimit(bytes: number, max: number, what: string): Error | undefined {
  return bytes > max ? tooLarge('body_too_large', `${what} exceeds the limit of ${max} bytes`, { limit: max }) : undefined;
}

/** Passes bytes through until `max` is exceeded, then fails with `too_large`. */
export function byteLimit(max: number, what: string): Transform & { bytes: number } {
  const t = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      t.bytes += chunk.length;
      const over = overByteLimit(t.bytes, max, what);
      if (over) {
        done(over);
        return;
      }
      done(null, chunk);
    },
  }) as Transform & { bytes: number };
  t.bytes = 0;
  return t;
}

/** A pass-through that counts the bytes it has passed. */
export function counting(highWaterMark = 1 << 20): Transform & { bytes: number } {
  const t = new Transform({
    highWaterMark,
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      t.bytes += chunk.length;
      done(null, chunk);
    },
  }) as Transform & { bytes: number };
  t.bytes = 0;
  return t;
}

/**
 * Checks that the stream starts with `prefix` and passes on what follows it; anything else
 * fails the stream (`what` names the stream in the error).
 */
export function afterPrefix(prefix: Buffer, what: string): Transform {
  let seen = Buffer.alloc(0);
  let through = false;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      if (through) return done(null, chunk);
      seen = Buffer.concat([seen, chunk]);
      if (seen.length < prefix.length) {
        if (!prefix.subarray(0, seen.length).equals(seen)) return done(invalid('bad_prefix', `${what} does not start as it must`));
        return done();
      }
      if (!seen.subarray(0, prefix.length).equals(prefix)) return done(invalid('bad_prefix', `${what} does not start as it must`));
      through = true;
      const rest = seen.subarray(prefix.length);
      seen = Buffer.alloc(0);
      done(null, rest.length > 0 ? rest : undefined);
    },
    flush(done: TransformCallback) {
      done(through ? null : invalid('bad_prefix', `${what} ended before its start was complete`));
    },
  });
}

/**
 * Joins the small chunks (under `alone` bytes) that arrive in one turn of the event loop, up to
 * `max` bytes, into one; larger chunks pass on as they are, in order.
 *
 * git sends a request body larger than its post buffer with chunked transfer encoding as
 * fetch-pack writes it: one pkt-line per HTTP chunk. Node's parser hands each chunk on alone,
 * so a fetch of a repository with 100,000 refs (100,000 `want` lines of 50 bytes) cost 100,000
 * trips through every later stage and 100,000 writes to git's stdin: seconds of blocked event
 * loop per request (issue 9). The parser delivers everything one socket read holds in the
 * same turn, so what arrives together leaves together, and a lone chunk waits one turn at most.
 * Back-pressure holds: a batch is pushed like any output, and Transform withholds the next
 * write's callback while its readable side is full.
 *
 * Joining spares the later stages, not the parser: each chunk still costs Node's HTTP parser
 * and this stage a few microseconds, so a client sending tiny chunks as fast as it can keeps the
 * event loop busy for everyone. `pace`, when given, is asked before each chunk is taken and
 * answers how many milliseconds to wait first (a client's budget of chunks per second, see
 * http/rate-limit.ts); meanwhile this stage takes nothing more, so the socket stops being read.
 */
export function coalescing(max = 64 * 1024, alone = 8 * 1024, pace?: () => number): Transform {
  let pending: Buffer[] = [];
  let size = 0;
  let scheduled: NodeJS.Immediate | undefined;
  const take = (): Buffer => {
    const batch = pending.length === 1 ? pending[0]! : Buffer.concat(pending, size);
    pending = [];
    size = 0;
    return batch;
  };
  let paused: NodeJS.Timeout | undefined;
  const t: Transform = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      const wait = pace?.() ?? 0;
      if (wait <= 0) return join(chunk, done);
      paused = setTimeout(() => {
        paused = undefined;
        join(chunk, done);
      }, wait);
    },
    flush(done: TransformCallback) {
      if (scheduled) clearImmediate(scheduled);
      scheduled = undefined;
      done(null, size > 0 ? take() : undefined);
    },
    destroy(err: Error | null, done: (error: Error | null) => void) {
      if (scheduled) clearImmediate(scheduled);
      if (paused) clearTimeout(paused);
      scheduled = undefined;
      paused = undefined;
      pending = [];
      done(err);
    },
  });
  function join(chunk: Buffer, done: TransformCallback): void {
    // A chunk this large goes on by itself and is never copied (a push's pack data).
    if (chunk.length >= alone) {
      if (size > 0) t.push(take());
      done(null, chunk);
      return;
    }
    pending.push(chunk);
    size += chunk.length;
    if (size >= max) {
      done(null, take());
      return;
    }
    scheduled ??= setImmediate(() => {
      scheduled = undefined;
      if (size > 0 && !t.destroyed) t.push(take());
    });
    done();
  }
  return t;
}

/**
 * `source.pipe(dest)` with what stream.pipeline adds for two streams: a failure or premature
 * end of the source reaches `dest` as an error, and `dest` destroyed destroys the source. Without
 * pipeline's per-call AbortController, aborted when it ends (a DOMException with a stack trace):
 * 30 µs of CPU per call on these machines, on every git request's body (issue 12).
 */
export function pipeInto<T extends Writable>(source: Readable, dest: T): T {
  // As with pipeline, a failure before anyone reads `dest` stays in its state (a later reader
  // gets it) rather than being thrown: a client that resets while its request waits (a lazy
  // restore) must not take the server down.
  dest.on('error', () => {});
  source.pipe(dest);
  finished(source, { writable: false }, (err) => {
    if (err) dest.destroy(err);
  });
  dest.once('close', () => {
    if (!source.readableEnded) source.destroy();
  });
  return dest;
}
