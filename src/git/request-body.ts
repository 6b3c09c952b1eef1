/**
 * Reads the start of a request body before it costs a git process (smart-http.ts) and to key
 * it (pack-cache/). Upload-pack requests without `have` lines are small (want lines,
 * capabilities, shallow options), so at most `max` decoded bytes are held; a longer body is
 * handed back as a stream that replays what was read, then the rest, so it can go to git
 * exactly as before.
 */
import { Readable, type Transform } from 'node:stream';
import { DomainError, invalid } from '../shared/errors.js';
import { coalescing, pipeInto } from '../shared/streams.js';

/** `head`: the chunks read before the body proved longer than `max` (the stream replays them first). */
export type BufferedBody = { complete: true; bytes: Buffer } | { complete: false; stream: Readable; head: readonly Buffer[] };

export async function bufferRequest(
  input: Readable,
  decoder: NodeJS.ReadWriteStream | undefined,
  max: number,
  signal: AbortSignal,
): Promise<BufferedBody> {
  // One chunk per pkt-line is how git streams a large request: joined here, before every stage.
  const joined = coalescing();
  const source = decoder ? pipeInto(pipeInto(input, joined), decoder as unknown as Transform) : pipeInto(input, joined);
  const onAbort = () => source.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
  signal.addEventListener('abort', onAbort, { once: true });
  const it = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for (;;) {
      const next = await it.next();
      if (next.done) return { complete: true, bytes: Buffer.concat(chunks, size) };
      chunks.push(next.value);
      size += next.value.length;
      if (size > max) break;
    }
  } catch (err) {
    throw toInputError(err as Error);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
  async function* replay(): AsyncGenerator<Buffer> {
    yield* chunks;
    for (;;) {
      const next = await it.next();
      if (next.done) return;
      yield next.value;
    }
  }
  return { complete: false, stream: Readable.from(replay(), { objectMode: false }), head: [...chunks] };
}

/** A failure of the request body's stream, as the domain error the client should see. */
export function toInputError(err: Error): Error {
  if (err instanceof DomainError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (code.startsWith('Z_')) return invalid('bad_gzip', 'request body is not valid gzip');
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || err.message === 'aborted') {
    return invalid('client_gone', 'client closed the request before it was complete');
  }
  return err;
}
