/** Stream transforms shared by the git and (later) LFS paths. */
import { Transform, type TransformCallback } from 'node:stream';
import { tooLarge } from './errors.js';

/** Passes bytes through until `max` is exceeded, then fails with `too_large`. */
export function byteLimit(max: number, what: string): Transform & { bytes: number } {
  const t = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      t.bytes += chunk.length;
      if (t.bytes > max) {
        done(tooLarge('body_too_large', `${what} exceeds the limit of ${max} bytes`, { limit: max }));
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
