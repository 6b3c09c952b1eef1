/**
 * The snapshot object format (docs/design/snapshots.md). One immutable object per snapshot at
 * `snapshots/<repo-ulid>/<snapshot-ulid>`:
 *
 *   gitstratum-snapshot 1\n            magic and format version
 *   {"kind":…,"parents":[…],…}\n       header, one line of JSON (SnapshotHeader)
 *   <refsBytes bytes of refs dump>      `<oid> <refname>\n`, `ref: <target> <refname>\n` for
 *                                       symbolic refs (HEAD), sorted by name
 *   PACK…                               a self-contained packfile (never thin), to the end
 *
 * The refs come first and are small, so a reader learns what a snapshot names without reading
 * its pack; the pack is streamed, never held in memory. The refs digest (sha256 of the dump)
 * lets a DR drill compare live refs with a snapshot's cheaply.
 */
import { createHash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { objectKey, type ObjectKey } from '../storage/object-store.js';
import { invalid } from '../shared/errors.js';

export const MAGIC = 'gitstratum-snapshot';
export const FORMAT_VERSION = 1;
const MAX_HEADER_BYTES = 64 * 1024;

export type SnapshotKind = 'full' | 'incremental';

export interface SnapshotHeader {
  repository: string;
  id: string;
  kind: SnapshotKind;
  parents: string[];
  refsDigest: string;
  refsBytes: number;
  createdAt: string;
}

/** One ref of a dump: a direct ref has `oid`, a symbolic one (HEAD) `target`. */
export type RefEntry = { name: string; oid: string; target?: undefined } | { name: string; target: string; oid?: undefined };

/**
 * `snapshots/<repo-ulid>/<snapshot-ulid>`. Key directories are lower-case (objectKey()); a ULID
 * is case-insensitive Crockford base32, so the repository's is written in lower case.
 */
export function snapshotKey(repositoryId: string, snapshotId: string): ObjectKey {
  return objectKey(`snapshots/${repositoryId.toLowerCase()}/${snapshotId}`);
}

export function encodeRefs(refs: readonly RefEntry[]): Buffer {
  const sorted = [...refs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const text = sorted.map((r) => (r.target !== undefined ? `ref: ${r.target} ${r.name}\n` : `${r.oid} ${r.name}\n`)).join('');
  return Buffer.from(text, 'utf8');
}

export function decodeRefs(dump: Buffer): RefEntry[] {
  const refs: RefEntry[] = [];
  for (const line of dump.toString('utf8').split('\n')) {
    if (!line) continue;
    const sym = /^ref: (\S+) (\S+)$/.exec(line);
    if (sym) {
      refs.push({ name: sym[2]!, target: sym[1]! });
      continue;
    }
    const direct = /^([0-9a-f]{40}|[0-9a-f]{64}) (\S+)$/.exec(line);
    if (!direct) throw invalid('snapshot_corrupt', 'snapshot refs dump is malformed', { line });
    refs.push({ name: direct[2]!, oid: direct[1]! });
  }
  return refs;
}

export function refsDigest(dump: Buffer): string {
  return createHash('sha256').update(dump).digest('hex');
}

/** The bytes before the pack: magic line, header line, refs dump. */
export function encodePreamble(header: Omit<SnapshotHeader, 'refsDigest' | 'refsBytes'>, dump: Buffer): Buffer {
  const full: SnapshotHeader = { ...header, refsDigest: refsDigest(dump), refsBytes: dump.length };
  return Buffer.concat([Buffer.from(`${MAGIC} ${FORMAT_VERSION}\n${JSON.stringify(full)}\n`, 'utf8'), dump]);
}

/**
 * A pass-through that hashes (sha256) and counts what it passes, and reads the object count
 * from the pack header (`PACK`, version, count: gitformat-pack) once `packStart` bytes passed.
 */
export function snapshotMeter(packStart: number): Transform & { bytes: number; sha256(): string; objectCount: number } {
  const hash = createHash('sha256');
  let head = Buffer.alloc(0);
  const t = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      const before = t.bytes;
      t.bytes += chunk.length;
      hash.update(chunk);
      if (head.length < 12 && t.bytes > packStart) {
        head = Buffer.concat([head, chunk.subarray(Math.max(0, packStart - before))]);
        if (head.length >= 12) {
          if (head.subarray(0, 4).toString('latin1') !== 'PACK') return done(new Error('pack-objects wrote no pack header'));
          t.objectCount = head.readUInt32BE(8);
        }
      }
      done(null, chunk);
    },
  }) as Transform & { bytes: number; sha256(): string; objectCount: number };
  t.bytes = 0;
  t.objectCount = 0;
  let digest: string | undefined;
  t.sha256 = () => (digest ??= hash.digest('hex'));
  return t;
}

/**
 * Reads a snapshot object's preamble from `body` and returns the header, the refs and the
 * rest of the stream (the pack), which the caller must consume or destroy.
 */
export async function readSnapshot(body: Readable): Promise<{ header: SnapshotHeader; refs: RefEntry[]; pack: Readable }> {
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let buf = Buffer.alloc(0);
  const more = async (): Promise<boolean> => {
    const next = await it.next();
    if (next.done) return false;
    buf = Buffer.concat([buf, next.value]);
    return true;
  };
  const corrupt = (why: string) => {
    body.destroy();
    return invalid('snapshot_corrupt', `snapshot object is malformed: ${why}`);
  };
  let secondNewline = -1;
  while (secondNewline < 0) {
    const first = buf.indexOf(0x0a);
    secondNewline = first < 0 ? -1 : buf.indexOf(0x0a, first + 1);
    if (secondNewline >= 0) break;
    if (buf.length > MAX_HEADER_BYTES || !(await more())) throw corrupt('no header');
  }
  const [magicLine, headerLine] = buf.subarray(0, secondNewline).toString('utf8').split('\n');
  if (magicLine !== `${MAGIC} ${FORMAT_VERSION}`) throw corrupt(`unknown magic or version: ${magicLine?.slice(0, 40)}`);
  let header: SnapshotHeader;
  try {
    header = JSON.parse(headerLine!) as SnapshotHeader;
  } catch {
    throw corrupt('header is not JSON');
  }
  const refsEnd = secondNewline + 1 + header.refsBytes;
  while (buf.length < refsEnd) if (!(await more())) throw corrupt('truncated refs');
  const dump = buf.subarray(secondNewline + 1, refsEnd);
  if (refsDigest(dump) !== header.refsDigest) throw corrupt('refs digest mismatch');
  const rest = buf.subarray(refsEnd);
  const pack = Readable.from(
    (async function* () {
      if (rest.length > 0) yield rest;
      for (;;) {
        const next = await it.next();
        if (next.done) return;
        yield next.value;
      }
    })(),
    { objectMode: false },
  );
  pack.once('close', () => {
    if (!body.destroyed) body.destroy();
  });
  return { header, refs: decodeRefs(dump), pack };
}
