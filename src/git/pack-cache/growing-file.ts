/**
 * A file that one writer appends to while any number of readers follow it from the start.
 * This is how a single git process serves every identical request (single flight): the
 * writer drains git at git's pace, each reader drains the file at its own client's pace, so a
 * slow client never holds up the generation or the other clients.
 *
 * The data starts at `offset` (the entry header lives before it). Readers wait for more bytes
 * on a 'progress' event from the writer, never by polling, and end when the writer finished;
 * if the writer failed, they fail with its error (the response is cut, as a dying git would
 * cut it). Reads are 1 MiB: on the hit path, buffer size is most of the CPU cost
 * (BENCHMARKING.md: ~0.4 CPU-s/GB at 1 MiB, ~1.2 at 64 KiB).
 *
 * The writer is either this process (writer(): git's output read from a pipe and appended) or
 * git itself writing into the file (flight.ts), in which case the owner reports the file's
 * growth with grew(). The checksum of the data (checksum.ts) is computed from the bytes as they
 * pass: the writer's, or, with an outside writer, the reads of whichever reader is furthest
 * ahead, so a response sent to a client costs no separate read to check; digest() reads only
 * what no reader has.
 *
 * The file descriptor's lifetime is the owner's business (see flight.ts); a reader assumes it
 * stays open until the reader closes.
 */
import { EventEmitter, once } from 'node:events';
import { read, writev } from 'node:fs';
import { ServerResponse } from 'node:http';
import { Readable, Writable } from 'node:stream';
import { Checksum } from './checksum.js';

export const READ_CHUNK = 1 << 20;
/** The smallest buffer a response sent through sendTo reads into. */
const MIN_BUFFER = 16 * 1024;
/** How long a reader close behind the writer waits for a whole chunk to gather (see next()). */
const FOLLOW_WAIT_MS = 10;

type State = 'writing' | 'finished' | 'failed';

export class GrowingFile extends EventEmitter {
  /** Bytes of data written so far (after `offset`). */
  written = 0;
  state: State = 'writing';
  error: Error | undefined;
  /** The checksum of the data up to `summed`; undefined for a complete file (nothing to check). */
  private readonly sum: Checksum | undefined;
  private summed = 0;

  constructor(
    readonly fd: number,
    readonly offset: number,
    summing = true,
  ) {
    super();
    // One listener per waiting reader; twenty clients of one flight is the point.
    this.setMaxListeners(0);
    this.sum = summing ? new Checksum() : undefined;
  }

  /** A file already complete on disk (a stored entry), for the same reader. */
  static complete(fd: number, offset: number, length: number): GrowingFile {
    const file = new GrowingFile(fd, offset, false);
    file.written = length;
    file.state = 'finished';
    return file;
  }

  /**
   * The checksum of everything written; call once, after finish(). Bytes no reader went past
   * are read here.
   */
  async digest(): Promise<Buffer> {
    if (!this.sum) throw new Error('a complete file has no checksum to compute');
    const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(1, this.written - this.summed)));
    while (this.summed < this.written) {
      const at = this.summed;
      const n = Math.min(buf.length, this.written - at);
      const got = await new Promise<number>((resolve, reject) => read(this.fd, buf, 0, n, this.offset + at, (err, count) => (err ? reject(err) : resolve(count))));
      if (got === 0) throw new Error('cache file ends before the bytes written to it');
      this.observe(at, buf.subarray(0, got));
    }
    return this.sum.digest();
  }

  /** Bytes of the data at `position` passed by (read or written): summed if they come next. */
  observe(position: number, chunk: Buffer): void {
    if (!this.sum || position > this.summed || position + chunk.length <= this.summed) return;
    this.sum.update(position === this.summed ? chunk : chunk.subarray(this.summed - position));
    this.summed = position + chunk.length;
  }

  /**
   * Resolves once `length` bytes of data are written, the file is no longer being written, or
   * `ms` have passed, whichever comes first.
   */
  gathered(length: number, ms: number): Promise<void> {
    if (this.written >= length || this.state !== 'writing') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.off('progress', check);
        resolve();
      };
      const check = () => {
        if (this.written >= length || this.state !== 'writing') done();
      };
      const timer = setTimeout(done, ms);
      this.on('progress', check);
    });
  }

  /** An outside writer (git) has written the file up to `length` bytes of data. */
  grew(length: number): void {
    if (this.state !== 'writing' || length <= this.written) return;
    this.written = length;
    this.emit('progress');
  }

  /** A Writable that appends to the file; `onWritten` runs after each completed write. */
  writer(onWritten?: (written: number) => void): Writable {
    const append = (buffers: Buffer[], done: (err?: Error | null) => void) => {
      if (this.state !== 'writing') {
        done(new Error('write to a closed cache file'));
        return;
      }
      writeAll(this.fd, buffers, this.offset + this.written, (err, n) => {
        if (err) {
          done(err);
          return;
        }
        let at = this.written;
        for (const b of buffers) {
          this.observe(at, b);
          at += b.length;
        }
        this.written += n;
        this.emit('progress');
        onWritten?.(this.written);
        done();
      });
    };
    return new Writable({
      highWaterMark: READ_CHUNK,
      write: (chunk: Buffer, _enc, done) => append([chunk], done),
      writev: (chunks, done) => append(chunks.map((c) => c.chunk as Buffer), done),
    });
  }

  /** Every byte is written: readers end once they have read them all. */
  finish(): void {
    if (this.state !== 'writing') return;
    this.state = 'finished';
    this.emit('progress');
  }

  /** The write failed or was abandoned: readers fail as soon as they run out of bytes. */
  fail(err: Error): void {
    if (this.state !== 'writing') return;
    this.state = 'failed';
    this.error = err;
    this.emit('progress');
  }

  reader(): GrowingFileReader {
    return new GrowingFileReader(this);
  }
}

export class GrowingFileReader extends Readable {
  /** Bytes handed to the consumer so far. */
  bytes = 0;
  /** The next read takes what is there: it already waited for a chunk's worth to gather. */
  private waited = false;

  constructor(private readonly file: GrowingFile) {
    super({ highWaterMark: READ_CHUNK });
  }

  override _read(): void {
    this.next().then(
      (chunk) => {
        if (!this.destroyed) this.push(chunk ?? null);
      },
      (err: Error) => this.destroy(err),
    );
  }

  /**
   * Piped into an HTTP response (how the git routes send it), the reader writes to the response
   * itself through two buffers that it reuses once the response is done with each: no buffer
   * is allocated per chunk. A fresh 1 MiB buffer per read, as `_read` must hand out, costs a
   * page fault per 4 KiB and garbage collection; reusing two cut the server's CPU per GB served
   * by about a third (0.8 → 0.5 CPU-s per GB to curl over loopback; bench:clone-storm's hit cost).
   * Any other destination gets the plain stream.
   */
  override pipe<T extends NodeJS.WritableStream>(dest: T, opts?: { end?: boolean }): T {
    if (!(dest instanceof ServerResponse) || this.bytes > 0 || this.readableFlowing !== null) return super.pipe(dest, opts);
    this.sendTo(dest, opts?.end !== false).catch((err: Error) => this.destroy(err));
    return dest;
  }

  private async sendTo(res: ServerResponse, end: boolean): Promise<void> {
    // Each buffer is no larger than the largest read it has served so far (at least
    // MIN_BUFFER): most responses are a few KiB (ref advertisements, ls-refs, small fetches), and
    // two MiB for each of them was most of the server's allocation, and its garbage collection,
    // under a fetch storm; that holds for the twenty followers of one small fetch's flight too.
    const buffers: (Buffer | undefined)[] = [undefined, undefined];
    const writes: (Promise<void> | undefined)[] = [undefined, undefined];
    for (let i = 0; ; i ^= 1) {
      // The buffer is free again once the response has handed its previous contents to the socket.
      await writes[i];
      const turn = i;
      const chunk = await this.next((n) => {
        const had = buffers[turn];
        if (had && had.length >= n) return had;
        return (buffers[turn] = Buffer.allocUnsafeSlow(Math.min(READ_CHUNK, Math.max(MIN_BUFFER, n))));
      });
      if (this.destroyed) return;
      if (!chunk) break;
      const written = new Promise<void>((resolve, reject) => res.write(chunk, (err) => (err ? reject(err) : resolve())));
      // Awaited on the next turn of this buffer; until then a failure must not count as unhandled.
      written.catch(() => {});
      writes[i] = written;
    }
    await Promise.all(writes);
    if (this.destroyed) return;
    if (end) res.end();
    // End as a drained Readable does: 'end', then 'close' (the route and the cache listen for them).
    this.push(null);
    this.resume();
  }

  /**
   * The next bytes, waiting for the writer: read into the buffer `into` gives for their size
   * (and a view of it returned), else into a new buffer of their size (at most READ_CHUNK).
   * Undefined at the end of a finished file, or once the reader is destroyed; the writer's
   * error if it failed.
   */
  private async next(into?: (bytes: number) => Buffer): Promise<Buffer | undefined> {
    const f = this.file;
    for (;;) {
      if (this.destroyed) return undefined;
      const available = f.written - this.bytes;
      // Close behind the writer, a reader would take each of git's 64 KiB writes on its own
      // (a read, a socket write, a wakeup each): it lets a chunk's worth gather first, but for
      // no longer than FOLLOW_WAIT_MS, so git's progress messages still flow.
      if (available > 0 && available < READ_CHUNK && f.state === 'writing' && !this.waited) {
        this.waited = true;
        await f.gathered(this.bytes + READ_CHUNK, FOLLOW_WAIT_MS);
        continue;
      }
      this.waited = false;
      if (available > 0) {
        const want = Math.min(available, READ_CHUNK);
        const target = into ? into(want) : Buffer.allocUnsafe(want);
        const n = Math.min(want, target.length);
        const got = await new Promise<number>((resolve, reject) => read(f.fd, target, 0, n, f.offset + this.bytes, (err, count) => (err ? reject(err) : resolve(count))));
        if (got === 0) throw new Error('cache file ends before the bytes written to it');
        const chunk = got === target.length ? target : target.subarray(0, got);
        f.observe(this.bytes, chunk);
        this.bytes += got;
        return chunk;
      }
      if (f.state === 'finished') return undefined;
      if (f.state === 'failed') throw f.error ?? new Error('cache file write failed');
      await once(f, 'progress');
    }
  }
}

/** writev until every byte is down (a regular file may take fewer bytes only on error). */
function writeAll(fd: number, buffers: Buffer[], position: number, done: (err: Error | null, n: number) => void): void {
  const total = buffers.reduce((n, b) => n + b.length, 0);
  let written = 0;
  const step = (bufs: Buffer[]) => {
    writev(fd, bufs, position + written, (err, n) => {
      if (err) {
        done(err, written);
        return;
      }
      written += n;
      if (written >= total) {
        done(null, written);
        return;
      }
      if (n === 0) {
        done(new Error('short write to cache file'), written);
        return;
      }
      step(remainder(bufs, n));
    });
  };
  step(buffers);
}

function remainder(buffers: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}
