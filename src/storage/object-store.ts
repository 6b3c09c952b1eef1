/**
 * The ObjectStore port: what LFS, snapshots and the pack cache need from object storage,
 * and nothing more. Keys are typed (`ObjectKey`), immutable once written, and a partial or
 * failed write never appears under its final key: `put` commits only when the source stream
 * ends without error, so a verifying transform that fails in its flush aborts the write.
 *
 * Keys (objectKey): `/`-separated segments. The first names the key's family (`lfs`,
 * `snapshots`, `files`, …) and is strict, lower-case ASCII starting with a letter or digit, so
 * no key can reach an adapter's own directories (the filesystem store's `.tmp/`, `.versions/`).
 * Later segments may be any text a repository path may hold (issue 15 publishes LFS files
 * under their path, `files/acme/docs/Lease Agreement (final).pdf`), minus what no store can
 * hold faithfully: `.`/`..`, control characters, backslashes, unpaired surrogates; at most 255
 * UTF-8 bytes each (a file name's limit) and 1024 for the key (S3's). Keys are compared as
 * they are: no Unicode normalization, so `Café` in NFC and NFD are two keys, as in git.
 *
 * Optional abilities are capabilities present only on backends that have them, not methods
 * every adapter must stub: pre-signed URLs (`presigner`, S3), versions (`versions`) and
 * the clean-up of abandoned uploads (`uploads`).
 */
import type { Readable } from 'node:stream';

declare const objectKeyBrand: unique symbol;
/** A validated object key: `lfs/ab/cd/<oid>`, `snapshots/<repo>/<snapshot>`, `files/<repo path>/<file path>`. */
export type ObjectKey = string & { readonly [objectKeyBrand]: true };

/** A key's first segment; a key of one segment may also hold capitals (as it always could). */
const FIRST_SEGMENT = /^[a-z0-9][a-z0-9._-]*$/;
const ONLY_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** NAME_MAX of the common filesystems; S3 has no limit of its own per segment. */
export const MAX_SEGMENT_BYTES = 255;
/** S3's limit for a whole key; an S3 store's prefix counts against it too (s3-store.ts). */
export const MAX_KEY_BYTES = 1024;

export function objectKey(text: string): ObjectKey {
  const problem = keyProblem(text);
  if (problem) throw new RangeError(`invalid object key (${problem}): ${JSON.stringify(text.slice(0, 300))}`);
  return text as ObjectKey;
}

/**
 * Why `segment` cannot be a segment of a key after the first one, or undefined when it can:
 * the publisher of the readable LFS layout skips a path with such a segment and says why.
 */
export function keySegmentProblem(segment: string): string | undefined {
  if (segment === '') return 'empty segment';
  if (segment === '.' || segment === '..') return 'dot segment';
  if (segment.includes('/')) return 'contains a slash';
  if (segment.includes('\\')) return 'contains a backslash';
  if (/[\u0000-\u001f\u007f]/.test(segment)) return 'contains a control character';
  // A lone UTF-16 surrogate has no UTF-8 form: the stored name would not be the key.
  if (/\p{Cs}/u.test(segment)) return 'not valid unicode';
  if (Buffer.byteLength(segment, 'utf8') > MAX_SEGMENT_BYTES) return `segment over ${MAX_SEGMENT_BYTES} bytes`;
  return undefined;
}

function keyProblem(text: string): string | undefined {
  if (Buffer.byteLength(text, 'utf8') > MAX_KEY_BYTES) return `over ${MAX_KEY_BYTES} bytes`;
  const [first = '', ...rest] = text.split('/');
  if (rest.length === 0) return ONLY_SEGMENT.test(first) ? undefined : 'bad segment';
  if (!FIRST_SEGMENT.test(first)) return 'bad first segment';
  for (const segment of rest) {
    const problem = keySegmentProblem(segment);
    if (problem) return problem;
  }
  return undefined;
}

/** `lfs/<oid[0:2]>/<oid[2:4]>/<oid>` for a validated lowercase SHA-256 hex oid. */
export function lfsObjectKey(oid: string): ObjectKey {
  if (!/^[0-9a-f]{64}$/.test(oid)) throw new RangeError(`invalid LFS oid: ${oid}`);
  return objectKey(`lfs/${oid.slice(0, 2)}/${oid.slice(2, 4)}/${oid}`);
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive; omitted means to the end. */
  end?: number;
}

export interface ObjectInfo {
  key: ObjectKey;
  size: number;
  /** When it was last written, where list() knows (LFS GC's grace period for unlinked objects). */
  modifiedAt?: Date;
}

export interface GetResult {
  body: Readable;
  /** Size of the whole object. */
  size: number;
  /** The range actually returned (inclusive), when one was asked for. */
  range?: { start: number; end: number };
}

export interface PutOptions {
  /** Expected length, when known (lets S3 skip multipart for small bodies). */
  size?: number;
  contentType?: string;
  signal?: AbortSignal;
}

export interface Presigner {
  /**
   * A URL that lets its bearer GET the object until it expires; with `versionId`, exactly
   * that version of it (a store with `versions`), whatever is current when the URL is used.
   */
  presignGet(key: ObjectKey, expiresInSeconds: number, opts?: { versionId?: string }): Promise<string>;
  /**
   * A URL that lets its bearer PUT the object until it expires. When `contentType` is given it
   * is signed, and the client must send exactly that `Content-Type`. `checksumSha256` (base64)
   * is signed as the `x-amz-checksum-sha256` header, which the client must send too; the
   * store then refuses content whose SHA-256 differs (S3 does; s3rver does not check).
   */
  presignPut(
    key: ObjectKey,
    expiresInSeconds: number,
    opts?: { contentType?: string; size?: number; checksumSha256?: string },
  ): Promise<string>;
}

/** One version of a key in a versioned store. */
export interface VersionInfo {
  key: ObjectKey;
  versionId: string;
  size: number;
  /**
   * The key's current version (what get() without a version serves). On the filesystem a key
   * can have no current version while its versions stay: see fs-store.ts on path conflicts.
   */
  latest: boolean;
}

/**
 * Versioned storage (issue 15, the readable LFS layout): writing a key again keeps its earlier
 * contents, each readable by the version id its write returned. The filesystem store always
 * has it (for keys written through it); an S3 store has it when the bucket's versioning is on,
 * which `enabled()` asks the bucket (GetBucketVersioning).
 */
export interface Versions {
  enabled(): Promise<boolean>;
  /**
   * Copies `from` to `to` within the store (S3: CopyObject, no bytes through us) and makes it
   * `to`'s current version; the version written. `fromVersionId` copies that version of `from`
   * instead of its current one (`not_found` when it does not exist).
   */
  copy(from: ObjectKey, to: ObjectKey, opts?: { fromVersionId?: string }): Promise<{ versionId: string; size: number }>;
  /** Exactly that version of the key; `not_found` when it does not exist. */
  get(key: ObjectKey, versionId: string, opts?: { range?: ByteRange; signal?: AbortSignal }): Promise<GetResult>;
  /** Every version of every key under the prefix. */
  list(prefix: string): AsyncIterable<VersionInfo>;
  /** Deletes one version (absent is not an error); deleting the current one makes the newest left current. */
  delete(key: ObjectKey, versionId: string): Promise<void>;
}

/**
 * Writes that were started and never finished (a crash mid-put, a multipart upload whose abort
 * failed) hold space no listing shows; `abortStale` removes those older than `olderThan`. S3
 * dates an upload by its start, the filesystem by its last write: pick `olderThan` well before
 * the longest upload could take, or an upload still running fails.
 */
export interface Uploads {
  /** `prefixes`: only uploads to keys under one of them (S3; the filesystem's are all the store's own). */
  abortStale(olderThan: Date, opts?: { prefixes?: readonly string[] }): Promise<{ aborted: number }>;
}

export interface ObjectStore {
  /** Short name for logs and metrics: `filesystem`, `s3`. */
  readonly kind: string;
  /** Streams `body` to `key`; resolves with the stored size once the object is durable. */
  put(key: ObjectKey, body: Readable, opts?: PutOptions): Promise<{ size: number }>;
  /** Streams the object (or a byte range of it); `not_found` DomainError when absent. */
  get(key: ObjectKey, opts?: { range?: ByteRange; signal?: AbortSignal }): Promise<GetResult>;
  head(key: ObjectKey): Promise<ObjectInfo | undefined>;
  /** Deleting an absent key is not an error. */
  delete(key: ObjectKey): Promise<void>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  readonly presigner?: Presigner;
  /** Versioned keys, where the store can keep them (see Versions). */
  readonly versions?: Versions;
  /** Clean-up of abandoned uploads (see Uploads). */
  readonly uploads?: Uploads;
}
