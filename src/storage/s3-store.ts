/**
 * The S3 ObjectStore: any S3-compatible service through the AWS SDK v3.
 *
 * put always goes through lib-storage's `Upload`, which reads the body in parts of PART_SIZE:
 * a body that ends within the first part becomes one PutObject sent only after the body ended
 * cleanly; a longer one becomes a multipart upload, completed only after the last part, and
 * aborted when the body fails. So a failing body (a verifying transform, a client gone)
 * never leaves an object under the key, and memory stays at about
 * (QUEUE_SIZE + 1) × PART_SIZE per upload whatever the object size.
 *
 * An aborted multipart upload whose abort request itself fails leaves invisible parts behind;
 * buckets should carry an AbortIncompleteMultipartUpload lifecycle rule, and
 * `uploads.abortStale` aborts those begun under the store's prefix before a given time.
 *
 * Keys: the SDK encodes a key in request paths and pre-signed URLs; CopySource, a header the
 * SDK passes as it is, is encoded here segment by segment. S3 limits a key to 1024 bytes with
 * the store's prefix, so a key (at most 1024 bytes itself) that the prefix takes past that is
 * refused before any request, as `invalid` `object_key_too_long`.
 *
 * Errors: a missing key is `not_found`; network failures, 5xx and throttling (after the
 * SDK's own retries) are `unavailable`; anything else (403, a missing bucket) is a
 * misconfiguration and passes through as the SDK's error.
 */
import { Readable, addAbortSignal, finished } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCopyCommand,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { DomainError, invalid, notFound, unavailable } from '../shared/errors.js';
import { counting } from '../shared/streams.js';
import { assertByteRange } from './byte-range.js';
import {
  MAX_KEY_BYTES,
  objectKey,
  type ByteRange,
  type GetResult,
  type ObjectInfo,
  type ObjectKey,
  type ObjectStore,
  type PutOptions,
  type Uploads,
  type Versions,
} from './object-store.js';

export interface S3StoreOptions {
  /** For S3-compatible services (MinIO, s3rver, R2); omitted means AWS. */
  endpoint?: string;
  region: string;
  bucket: string;
  forcePathStyle: boolean;
  /** Both or neither; without them the SDK's default chain (AWS_* env vars, profiles, IMDS). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Keys live under `<prefix>/` in the bucket. */
  prefix?: string;
  /** ListObjectsV2 page size (S3's maximum, 1000, by default); tests set it low to page. */
  listPageSize?: number;
  /** Copies of larger objects go in parts (S3's CopyObject stops at 5 GiB); tests set it low. */
  singleCopyMaxBytes?: number;
  /** Part size of those copies (512 MiB: 100 parts for LFS's default 50 GiB limit). */
  copyPartBytes?: number;
}

/** Parts of a multipart copy in flight at once. */
const COPY_PARTS_AT_ONCE = 4;

/** 8 MiB parts, 2 in flight: ~24 MiB per upload, and 10,000 parts allow 80 GB objects. */
const PART_SIZE = 8 << 20;
const QUEUE_SIZE = 2;

export function createS3Store(opts: S3StoreOptions): S3StoreHandle {
  if ((opts.accessKeyId === undefined) !== (opts.secretAccessKey === undefined)) {
    throw new RangeError('accessKeyId and secretAccessKey go together');
  }
  const config: S3ClientConfig = {
    region: opts.region,
    forcePathStyle: opts.forcePathStyle,
    // Recent SDKs otherwise add CRC32 checksums everywhere, including a checksum of an empty
    // body signed into pre-signed PUT URLs, which makes every real upload to them fail.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: 5_000 },
    ...(opts.endpoint !== undefined && { endpoint: opts.endpoint }),
    ...(opts.accessKeyId !== undefined &&
      opts.secretAccessKey !== undefined && { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } }),
  };
  const client = new S3Client(config);
  const Bucket = opts.bucket;
  const base = opts.prefix ? `${opts.prefix.replace(/^\/+|\/+$/g, '')}/` : '';
  const pageSize = opts.listPageSize ?? 1000;
  const Key = (key: ObjectKey) => {
    const full = base + key;
    const bytes = Buffer.byteLength(full, 'utf8');
    if (bytes > MAX_KEY_BYTES) throw invalid('object_key_too_long', 'object key too long for s3 with the store prefix', { key, bytes, limit: MAX_KEY_BYTES });
    return full;
  };
  /** CopySource: `bucket/key`, URL-encoded, `?versionId=` for one version. */
  const singleCopyMax = opts.singleCopyMaxBytes ?? 5 * 1024 ** 3;
  const copyPart = opts.copyPartBytes ?? 512 * 1024 ** 2;

  /**
   * A server-side copy in parts (UploadPartCopy), for objects CopyObject cannot take whole;
   * aborted if any part fails, so no partial object appears. The new version's id.
   */
  async function copyInParts(from: ObjectKey, to: ObjectKey, fromVersionId: string | undefined, size: number): Promise<string | undefined> {
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket, Key: Key(to) }));
    try {
      const parts: { PartNumber: number; ETag: string }[] = [];
      let next = 0;
      const count = Math.ceil(size / copyPart);
      const worker = async () => {
        while (next < count) {
          const i = next++;
          const start = i * copyPart;
          const end = Math.min(size, start + copyPart) - 1;
          const out = await client.send(
            new UploadPartCopyCommand({ Bucket, Key: Key(to), UploadId, PartNumber: i + 1, CopySource: copySource(from, fromVersionId), CopySourceRange: `bytes=${start}-${end}` }),
          );
          parts.push({ PartNumber: i + 1, ETag: out.CopyPartResult?.ETag ?? '' });
        }
      };
      await Promise.all(Array.from({ length: Math.min(COPY_PARTS_AT_ONCE, count) }, worker));
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      const done = await client.send(new CompleteMultipartUploadCommand({ Bucket, Key: Key(to), UploadId, MultipartUpload: { Parts: parts } }));
      return done.VersionId;
    } catch (err) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: Key(to), UploadId })).catch(() => {});
      throw err;
    }
  }

  const copySource = (key: ObjectKey, versionId: string | undefined) =>
    `${Bucket}/${Key(key).split('/').map(encodeURIComponent).join('/')}${versionId === undefined ? '' : `?versionId=${encodeURIComponent(versionId)}`}`;

  async function put(key: ObjectKey, body: Readable, putOpts: PutOptions = {}): Promise<{ size: number }> {
    const s3Key = Key(key); // before the body is touched: a refused key leaves it to the caller
    // The body's own failure (a verifying transform, a client gone) is the error to report:
    // when the body fails, Upload aborts the multipart upload, and if that abort fails too,
    // its error would otherwise replace the one that matters.
    let sourceError: unknown;
    const counter = counting();
    finished(body, (err) => {
      if (!err) return;
      sourceError ??= err;
      counter.destroy(err);
    });
    if (putOpts.signal) addAbortSignal(putOpts.signal, body);
    body.pipe(counter);
    // `size` is not passed on as ContentLength: Upload decides single-part or multipart from
    // the bytes it actually reads, and a wrong ContentLength would corrupt the request.
    const upload = new Upload({
      client,
      params: { Bucket, Key: s3Key, Body: counter, ...(putOpts.contentType !== undefined && { ContentType: putOpts.contentType }) },
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      const failure = sourceError ?? s3Error(err, key, 'put');
      body.destroy();
      throw failure;
    }
    return { size: counter.bytes };
  }

  async function get(key: ObjectKey, getOpts: { range?: ByteRange; signal?: AbortSignal; versionId?: string } = {}): Promise<GetResult> {
    const { range, signal, versionId } = getOpts;
    if (range) assertByteRange(range);
    let out;
    try {
      out = await client.send(
        new GetObjectCommand({
          Bucket,
          Key: Key(key),
          ...(versionId !== undefined && { VersionId: versionId }),
          ...(range && { Range: `bytes=${range.start}-${range.end ?? ''}` }),
        }),
        signal ? { abortSignal: signal } : {},
      );
    } catch (err) {
      throw s3Error(err, key, 'get');
    }
    const body = out.Body instanceof Readable ? out.Body : Readable.from([]);
    if (signal) addAbortSignal(signal, body);
    const served = parseContentRange(out.ContentRange);
    const size = served?.size ?? out.ContentLength ?? 0;
    if (!range) return { body, size };
    // A server that ignores Range answers 200 with the whole object; say so.
    return { body, size, range: served ? { start: served.start, end: served.end } : { start: 0, end: size - 1 } };
  }

  async function head(key: ObjectKey): Promise<ObjectInfo | undefined> {
    try {
      const out = await client.send(new HeadObjectCommand({ Bucket, Key: Key(key) }));
      return { key, size: out.ContentLength ?? 0 };
    } catch (err) {
      const mapped = s3Error(err, key, 'head');
      if (mapped instanceof DomainError && mapped.kind === 'not_found') return undefined;
      throw mapped;
    }
  }

  /**
   * In a bucket with versioning on (the readable LFS layout), a plain delete only hides the
   * object behind a delete marker and frees nothing: a key deleted through this store (a
   * content-addressed LFS object, a snapshot, a backup: keys that are never versioned by
   * design) has every version and marker deleted. Versioned keys go through `versions.delete`.
   */
  async function remove(key: ObjectKey): Promise<void> {
    try {
      if (!(await versioningOn())) {
        await client.send(new DeleteObjectCommand({ Bucket, Key: Key(key) }));
        return;
      }
      const s3Key = Key(key);
      let KeyMarker: string | undefined;
      let VersionIdMarker: string | undefined;
      do {
        const page = await client.send(new ListObjectVersionsCommand({ Bucket, Prefix: s3Key, MaxKeys: 1000, ...(KeyMarker && { KeyMarker }), ...(VersionIdMarker && { VersionIdMarker }) }));
        const all = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].filter((v) => v.Key === s3Key && v.VersionId !== undefined);
        for (const v of all) await client.send(new DeleteObjectCommand({ Bucket, Key: s3Key, VersionId: v.VersionId! }));
        // Past this key's versions (the listing is in key order): nothing more of it to delete.
        const past = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].some((v) => v.Key !== undefined && v.Key > s3Key);
        KeyMarker = page.IsTruncated && !past ? page.NextKeyMarker : undefined;
        VersionIdMarker = page.IsTruncated && !past ? page.NextVersionIdMarker : undefined;
      } while (KeyMarker);
    } catch (err) {
      const mapped = s3Error(err, key, 'delete');
      if (!(mapped instanceof DomainError && mapped.kind === 'not_found')) throw mapped;
    }
  }

  /** The bucket's versioning, asked at most once a minute. */
  let versioning: { on: boolean; at: number } | undefined;
  async function versioningOn(): Promise<boolean> {
    if (!versioning || Date.now() - versioning.at > 60_000) {
      // Credentials that may not ask (no s3:GetBucketVersioning): taken as off, a plain delete.
      const out = await client.send(new GetBucketVersioningCommand({ Bucket })).catch(() => undefined);
      versioning = { on: out?.Status === 'Enabled' || out?.Status === 'Suspended', at: Date.now() };
    }
    return versioning.on;
  }

  async function* list(prefix: string): AsyncIterable<ObjectInfo> {
    let ContinuationToken: string | undefined;
    do {
      let page;
      try {
        page = await client.send(
          new ListObjectsV2Command({ Bucket, Prefix: base + prefix, MaxKeys: pageSize, ...(ContinuationToken && { ContinuationToken }) }),
        );
      } catch (err) {
        throw s3Error(err, undefined, 'list');
      }
      for (const item of page.Contents ?? []) {
        if (item.Key === undefined) continue;
        let key: ObjectKey;
        try {
          key = objectKey(item.Key.slice(base.length));
        } catch {
          continue; // not written by this store (a folder marker, a foreign tool)
        }
        yield { key, size: item.Size ?? 0, ...(item.LastModified && { modifiedAt: item.LastModified }) };
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  const versions: Versions = {
    async enabled() {
      try {
        const out = await client.send(new GetBucketVersioningCommand({ Bucket }));
        return out.Status === 'Enabled';
      } catch (err) {
        throw s3Error(err, undefined, 'versioning');
      }
    },

    // CopyObject copies up to 5 GB in one request; larger objects would need UploadPartCopy.
    async copy(from, to, opts = {}) {
      try {
        const source = await client.send(new HeadObjectCommand({ Bucket, Key: Key(from), ...(opts.fromVersionId !== undefined && { VersionId: opts.fromVersionId }) }));
        const size = source.ContentLength ?? 0;
        const versionId = size > singleCopyMax ? await copyInParts(from, to, opts.fromVersionId, size) : (await client.send(new CopyObjectCommand({ Bucket, Key: Key(to), CopySource: copySource(from, opts.fromVersionId) }))).VersionId;
        if (!versionId) throw invalid('versioning_disabled', `the bucket ${Bucket} keeps no versions: turn its versioning on`, { bucket: Bucket });
        const info = await client.send(new HeadObjectCommand({ Bucket, Key: Key(to), VersionId: versionId }));
        return { versionId, size: info.ContentLength ?? 0 };
      } catch (err) {
        if (opts.fromVersionId !== undefined && isBadVersionId(err)) throw noSuchVersion(from, opts.fromVersionId);
        throw s3Error(err, from, 'copy');
      }
    },

    async get(key, versionId, opts = {}) {
      try {
        return await get(key, { ...opts, versionId });
      } catch (err) {
        if (isBadVersionId(err)) throw noSuchVersion(key, versionId);
        throw err;
      }
    },

    async *list(prefix) {
      let KeyMarker: string | undefined;
      let VersionIdMarker: string | undefined;
      do {
        let page;
        try {
          page = await client.send(
            new ListObjectVersionsCommand({ Bucket, Prefix: base + prefix, MaxKeys: pageSize, ...(KeyMarker && { KeyMarker }), ...(VersionIdMarker && { VersionIdMarker }) }),
          );
        } catch (err) {
          throw s3Error(err, undefined, 'list');
        }
        for (const v of page.Versions ?? []) {
          if (v.Key === undefined || v.VersionId === undefined) continue;
          let key: ObjectKey;
          try {
            key = objectKey(v.Key.slice(base.length));
          } catch {
            continue;
          }
          yield { key, versionId: v.VersionId, size: v.Size ?? 0, latest: v.IsLatest === true };
        }
        KeyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
        VersionIdMarker = page.IsTruncated ? page.NextVersionIdMarker : undefined;
      } while (KeyMarker);
    },

    async delete(key, versionId) {
      try {
        await client.send(new DeleteObjectCommand({ Bucket, Key: Key(key), VersionId: versionId }));
      } catch (err) {
        const mapped = s3Error(err, key, 'delete');
        if (!(mapped instanceof DomainError && mapped.kind === 'not_found')) throw mapped;
      }
    },
  };

  const uploads: Uploads = {
    // ListMultipartUploads pages by key and upload id markers, which aborting the uploads
    // already listed does not disturb.
    async abortStale(olderThan, opts = {}) {
      const only = opts.prefixes;
      let aborted = 0;
      let KeyMarker: string | undefined;
      let UploadIdMarker: string | undefined;
      do {
        let page;
        try {
          page = await client.send(
            new ListMultipartUploadsCommand({ Bucket, Prefix: base, MaxUploads: pageSize, ...(KeyMarker && { KeyMarker }), ...(UploadIdMarker && { UploadIdMarker }) }),
          );
        } catch (err) {
          throw s3Error(err, undefined, 'abort_stale');
        }
        for (const u of page.Uploads ?? []) {
          if (u.Key === undefined || u.UploadId === undefined || !u.Key.startsWith(base) || !u.Initiated || u.Initiated.getTime() >= olderThan.getTime()) continue;
          // Only this program's keys: a bucket shared without a prefix may hold other writers' uploads.
          if (only && !only.some((p) => u.Key!.slice(base.length).startsWith(p))) continue;
          try {
            await client.send(new AbortMultipartUploadCommand({ Bucket, Key: u.Key, UploadId: u.UploadId }));
            aborted++;
          } catch (err) {
            // Completed or aborted meanwhile by its own writer: nothing left to abort.
            if ((err as SdkError).name !== 'NoSuchUpload') throw s3Error(err, undefined, 'abort_stale');
          }
        }
        KeyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
        UploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
      } while (KeyMarker);
      return { aborted };
    },
  };

  // Async, so that a refused key (Key) rejects like every other failure.
  const presigner = {
    async presignGet(key: ObjectKey, expiresIn: number, p: { versionId?: string } = {}): Promise<string> {
      return getSignedUrl(client, new GetObjectCommand({ Bucket, Key: Key(key), ...(p.versionId !== undefined && { VersionId: p.versionId }) }), { expiresIn });
    },
    async presignPut(key: ObjectKey, expiresIn: number, p: { contentType?: string; size?: number; checksumSha256?: string } = {}): Promise<string> {
      const command = new PutObjectCommand({
        Bucket,
        Key: Key(key),
        ...(p.contentType !== undefined && { ContentType: p.contentType }),
        ...(p.size !== undefined && { ContentLength: p.size }),
        ...(p.checksumSha256 !== undefined && { ChecksumSHA256: p.checksumSha256 }),
      });
      return getSignedUrl(client, command, {
        expiresIn,
        // The presigner leaves Content-Type unsigned unless told; sign it so the client must
        // send exactly what the object will be served with.
        signableHeaders: new Set(['content-type']),
        // x-amz-* headers are hoisted into the query string by default, where nothing makes
        // the client send them; the checksum must stay a signed header that S3 verifies.
        unhoistableHeaders: new Set(['x-amz-checksum-sha256']),
      });
    },
  };

  return { kind: 's3', put, get: (key, o) => get(key, o), head, delete: remove, list, presigner, versions, uploads, destroy: () => client.destroy() };
}

/** An S3 store also owns its HTTP connections; `destroy` closes them (tests, shutdown). */
export type S3StoreHandle = ObjectStore & { destroy(): void };

function parseContentRange(header: string | undefined): { start: number; end: number; size: number } | undefined {
  const m = header && /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header);
  return m ? { start: Number(m[1]), end: Number(m[2]), size: Number(m[3]) } : undefined;
}

interface SdkError {
  name?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

/** S3 answers a malformed version id with 400 InvalidArgument: for the caller, no such version. */
function isBadVersionId(err: unknown): boolean {
  return (err as SdkError | undefined)?.name === 'InvalidArgument';
}

function noSuchVersion(key: ObjectKey, versionId: string) {
  return notFound('object_not_found', 'no such version', { key, version_id: versionId.slice(0, 80) });
}

const THROTTLING = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequestsException', 'RequestTimeout']);

function s3Error(err: unknown, key: ObjectKey | undefined, op: string): unknown {
  if (err instanceof DomainError || !(err instanceof Error) || err.name === 'AbortError') return err;
  const e = err as Error & SdkError;
  const status = e.$metadata?.httpStatusCode;
  const fields = { op, ...(key && { key }), s3_error: e.name, ...(status !== undefined && { status }) };
  if (e.name === 'NoSuchBucket') return err;
  if (e.name === 'NoSuchKey' || e.name === 'NotFound' || status === 404) return notFound('object_not_found', 'object not found', fields);
  if (e.name === 'InvalidRange' || status === 416) return invalid('range_not_satisfiable', 'range starts past the end of the object', fields);
  // No HTTP status at all: the request never got an answer (refused, reset, timed out).
  if (status === undefined || status >= 500 || status === 429 || THROTTLING.has(e.name) || e.$retryable) {
    return unavailable('storage_unavailable', 's3 object store failed', { ...fields, ...(e.code && { cause: e.code }) });
  }
  return err;
}
