/**
 * The checksum of a pack cache entry's data: CRC-32 (zlib's, in Node). It guards against damage
 * (a torn or truncated write, a flipped block), not against an adversary who can write to the
 * cache directory (who could rewrite the header as well). On these machines it runs at about
 * 4 GB/s against sha256's 1: on a cold clone of 100 MB that is 0.02 CPU-seconds instead of
 * 0.09, a fifth of what plain git spends on the whole clone (issue 12).
 */
import { crc32 } from 'node:zlib';

export const CHECKSUM_BYTES = 4;

export class Checksum {
  private crc = 0;

  update(data: Uint8Array): this {
    this.crc = crc32(data, this.crc);
    return this;
  }

  digest(): Buffer {
    const out = Buffer.alloc(CHECKSUM_BYTES);
    out.writeUInt32BE(this.crc >>> 0);
    return out;
  }
}
