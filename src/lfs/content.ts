/**
 * Content checks while bytes stream: an LFS object is stored only if its SHA-256 is its oid
 * and its length is the size the client declared. The transform fails in its flush, before
 * signalling the end, so the store never commits a bad object (see storage/object-store.ts).
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { invalid, tooLarge } from '../shared/errors.js';

export function verifyContent(expect: { oid: string; size?: number | undefined; maxBytes: number }): Transform & { bytes: number } {
  const hash = createHash('sha256');
  const t = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      t.bytes += chunk.length;
      if (t.bytes > expect.maxBytes) {
        done(tooLarge('object_too_large', `object exceeds the maximum size of ${expect.maxBytes} bytes`));
        return;
      }
      if (expect.size !== undefined && t.bytes > expect.size) {
        done(invalid('size_mismatch', `upload is larger than the declared size of ${expect.size} bytes`));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done: TransformCallback) {
      if (expect.size !== undefined && t.bytes !== expect.size) {
        done(invalid('size_mismatch', `upload has ${t.bytes} bytes; the declared size is ${expect.size}`));
        return;
      }
      const actual = hash.digest('hex');
      if (actual !== expect.oid) {
        done(invalid('hash_mismatch', `content SHA-256 is ${actual}, not the oid ${expect.oid}`));
        return;
      }
      done();
    },
  }) as Transform & { bytes: number };
  t.bytes = 0;
  return t;
}
