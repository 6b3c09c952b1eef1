/**
 * The ObjectStore port: what LFS, snapshots and the pack cache need from object storage,
 * and nothing more. Keys are typed (`ObjectKey`), immutable once written, and a partial or
 * failed write never appears under its final key: `put` commits only when the source stream
 * ends without error, so a verifying transform that fails in its flush aborts the write.
 *
 * Pre-signed URLs are an optional capability (`presigner`), present only on backends that
 * have them (S3), not a pair of methods every adapter must stub.
 */
import type { Readable } from 'node:stream';

declare const objectKeyBrand: unique symbol;
/** A validated object key: `lfs/ab/cd/<oid>`, `snapshots/<repo>/<snapshot>`, `backups/meta/<ts>`. */
export type ObjectKey = string & { readonly [objectKeyBrand]: true };

const KEY = /^(?:[a-z0-9][a-z0-9._-]*\/)*[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function objectKey(text: string): ObjectKey {
  if (!KEY.test(text) || text.includes('..') || text.length > 512) throw new RangeError(`invalid object key: ${text}`);
  return text as ObjectKey;
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
  /** A URL that lets its bearer GET the object until it expires. */
  presignGet(key: ObjectKey, expiresInSeconds: number): Promise<string>;
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
  /** The key's current version (what get() without a version serves). */
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
  /** Copies the current `from` to `to` within the store (S3: CopyObject, no bytes through us); the version written. */
  copy(from: ObjectKey, to: ObjectKey): Promise<{ versionId: string; size: number }>;
  /** Exactly that version of the key; `not_found` when it does not exist. */
  get(key: ObjectKey, versionId: string, opts?: { range?: ByteRange; signal?: AbortSignal }): Promise<GetResult>;
  /** Every version of every key under the prefix. */
  list(prefix: string): AsyncIterable<VersionInfo>;
  /** Deletes one version (absent is not an error); deleting the current one makes the newest left current. */
  delete(key: ObjectKey, versionId: string): Promise<void>;
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
}
