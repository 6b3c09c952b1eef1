/**
 * LFS objects: the batch API and the basic transfer adapter.
 *
 * Storage is shared and content-addressed (`lfs/ab/cd/<oid>`), so the same file pushed to a
 * hundred repositories is stored once. Visibility is not: a repository may download an
 * object only once it was uploaded to or verified in that repository, or in another member of
 * its fork network that the caller may read (table lfs_objects, meta/lfs.ts
 * findLinkedObjects; the members come from RepoService.lfsSources). A public fork of a
 * repository that later became private, or whose source stayed private, never lends its
 * readers what was uploaded only to the private one.
 * Someone who names an oid that exists only elsewhere must upload the bytes themselves
 * (proof of possession): guessing a hash never reads a private file.
 *
 * Modes: `proxy` streams bytes through the server (hashed on the way in, Range on the way
 * out); `direct` hands out pre-signed object store URLs, and the verify action checks the
 * stored size before the object counts as present in the repository.
 *
 * In direct mode the server never sees the bytes, so "the store has it" cannot prove that
 * this client sent them. An object already known (linked to some repository) therefore gets
 * a proxy upload action even in direct mode, and only a verify issued with a pre-signed
 * upload (claim `direct`) may link an object by asking the store. What remains: a client
 * that asks to upload an oid before anyone stored it, and verifies after someone else did;
 * it had to know the oid before the object existed anywhere.
 */
import { Readable, Writable, pipeline as pipelineCb } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { findKnownObjects, findLinkedObjects, linkObject, touchObjects } from '../meta/lfs.js';
import { newestPublications, publicationsOf, type Publication } from '../meta/lfs-publish.js';
import { lfsObjectKey, objectKey, type ByteRange, type GetResult, type ObjectStore } from '../storage/object-store.js';
import { DomainError, invalid, isDomainError, notFound, tooLarge, unavailable } from '../shared/errors.js';
import { verifyContent } from './content.js';
import { counting } from '../shared/streams.js';
import type { LfsMetrics } from './metrics.js';
import type { Signer } from './signing.js';
import { objectProblem, type Action, type BatchObjectOut, type BatchRequest, type BatchResponse } from './wire.js';

export type TransferMode = 'proxy' | 'direct';

export interface LfsSettings {
  mode: TransferMode;
  maxObjectBytes: number;
  maxBatchObjects: number;
  actionExpiresSeconds: number;
}

/** Size quotas (repos/quotas.ts): throws `quota_exceeded` when the objects do not fit. */
export interface LfsQuota {
  assertLfsRoom(repoId: string, objects: readonly { oid: string; size: number }[], what: string): Promise<void>;
}

export interface LfsRepoRef {
  id: string;
  /** Absolute base of the repository's LFS endpoint: `https://host/o/s/r.git/info/lfs`. */
  lfsUrl: string;
  /**
   * The repositories whose LFS links count for this caller: this one and the members of its
   * fork network that the caller may read.
   */
  sources: string[];
}

/** Who a batch response's transfer authorizations are for; they end when the token does. */
export interface Grantee {
  sub: string | null;
  tokenId: string | null;
}

/** `expires_at` as the spec wants it: RFC 3339, upper case, second precision. */
function expiresAt(seconds: number): string {
  return new Date(Date.now() + seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function createLfsObjects(deps: {
  meta: MetaStore;
  store: ObjectStore;
  signer: Signer;
  settings: LfsSettings;
  metrics: LfsMetrics;
  quota?: LfsQuota;
}) {
  const { meta, store, signer, settings, metrics, quota } = deps;
  if (settings.mode === 'direct' && !store.presigner) {
    throw new Error(`LFS direct mode needs an object store with pre-signed URLs; ${store.kind} has none`);
  }
  const ttl = settings.actionExpiresSeconds;

  async function signedAction(href: string, claims: Parameters<Signer['sign']>[0], extra: Record<string, string> = {}): Promise<Action> {
    const token = await signer.sign(claims, ttl);
    return { href, header: { Authorization: `Bearer ${token}`, ...extra }, expires_in: ttl, expires_at: expiresAt(ttl) };
  }

  async function presigned(href: Promise<string>, header?: Record<string, string>): Promise<Action> {
    return { href: await href, ...(header && { header }), expires_in: ttl, expires_at: expiresAt(ttl) };
  }

  /** `direct`: send the bytes straight to the store; else through the server, which hashes them. */
  async function uploadActions(repo: LfsRepoRef, oid: string, size: number, who: Grantee, direct: boolean) {
    const objectHref = `${repo.lfsUrl}/objects/${oid}`;
    const verify = await signedAction(`${repo.lfsUrl}/verify`, { repo: repo.id, op: 'verify', oid, size, ...who, ...(direct && { direct }) });
    if (!direct) {
      return { upload: await signedAction(objectHref, { repo: repo.id, op: 'upload', oid, size, ...who }), verify };
    }
    // A signed Content-Type must be sent as signed: the client takes it from the header map
    // instead of sniffing one. Never an Authorization header on a pre-signed URL.
    const contentType = 'application/octet-stream';
    const checksum = Buffer.from(oid, 'hex').toString('base64');
    const href = store.presigner!.presignPut(lfsObjectKey(oid), ttl, { contentType, size, checksumSha256: checksum });
    return { upload: await presigned(href, { 'Content-Type': contentType, 'x-amz-checksum-sha256': checksum }), verify };
  }

  /**
   * Direct mode: a pre-signed URL of the object's version published in this repository or its
   * network (its content-addressed copy may be gone), else of its content-addressed copy. An
   * object published only elsewhere goes through the server instead: a pre-signed URL would
   * show the client another repository's name and path.
   */
  async function downloadAction(repo: LfsRepoRef, oid: string, size: number, who: Grantee, published: readonly Publication[] = []): Promise<Action> {
    if (settings.mode === 'direct') {
      const mine = published.find((p) => p.repositoryId !== null && repo.sources.includes(p.repositoryId));
      if (mine) return presigned(store.presigner!.presignGet(objectKey(mine.key), ttl, { versionId: mine.versionId! }));
      if (published.length === 0) return presigned(store.presigner!.presignGet(lfsObjectKey(oid), ttl));
    }
    return signedAction(`${repo.lfsUrl}/objects/${oid}`, { repo: repo.id, op: 'download', oid, size, ...who });
  }

  async function batch(repo: LfsRepoRef, req: BatchRequest, who: Grantee): Promise<BatchResponse> {
    const valid = req.objects.filter((o) => objectProblem(o) === undefined).map((o) => o.oid as string);
    const linked = await findLinkedObjects(meta.db, repo.sources, [...new Set(valid)]);
    // Direct uploads only for objects nobody stored yet; see the module comment.
    const known =
      settings.mode === 'direct' && req.operation === 'upload'
        ? await findKnownObjects(meta.db, [...new Set(valid)].filter((oid) => !linked.has(oid)))
        : new Set<string>();
    if (req.operation === 'upload') {
      // What this push may name without uploading: linked here from now on (a fork's push links
      // what its pusher could read in the network, so the fork may publish it), and touched, so
      // LFS GC's grace period keeps it while the push is under way.
      const present = req.objects.filter((o) => objectProblem(o) === undefined && linked.get(o.oid as string) === o.size);
      if (present.length > 0) await touchObjects(meta.db, repo.id, present.map((o) => ({ oid: o.oid as string, size: o.size as number })), now());
    }
    if (req.operation === 'upload' && quota) {
      // The whole batch is refused, so the client prints one message naming the quota.
      const toStore = req.objects.filter(
        (o) => objectProblem(o) === undefined && (o.size as number) <= settings.maxObjectBytes && linked.get(o.oid as string) !== o.size,
      );
      await quota.assertLfsRoom(repo.id, toStore.map((o) => ({ oid: o.oid as string, size: o.size as number })), 'this upload');
    }
    const published = settings.mode === 'direct' && req.operation === 'download' && store.versions ? await newestPublications(meta.db, [...linked.keys()]) : new Map<string, Publication[]>();
    const objects: BatchObjectOut[] = [];
    for (const o of req.objects) {
      const problem = objectProblem(o);
      const oid = typeof o.oid === 'string' ? o.oid : String(o.oid);
      const size = typeof o.size === 'number' ? o.size : -1;
      if (problem) {
        objects.push({ oid, size, error: { code: 422, message: problem } });
        metrics.batchObjects.inc({ operation: req.operation, result: 'error' });
        continue;
      }
      const here = linked.get(oid);
      if (req.operation === 'download') {
        if (here === undefined) {
          objects.push({ oid, size, error: { code: 404, message: 'object does not exist in this repository' } });
          metrics.batchObjects.inc({ operation: 'download', result: 'error' });
        } else {
          objects.push({ oid, size: here, authenticated: true, actions: { download: await downloadAction(repo, oid, here, who, published.get(oid)) } });
          metrics.batchObjects.inc({ operation: 'download', result: 'action' });
        }
        continue;
      }
      if (size > settings.maxObjectBytes) {
        objects.push({ oid, size, error: { code: 413, message: `object of ${size} bytes exceeds the maximum size of ${settings.maxObjectBytes} bytes` } });
        metrics.batchObjects.inc({ operation: 'upload', result: 'error' });
      } else if (here !== undefined && here === size) {
        // Already here for this repository: no actions means "nothing to do".
        objects.push({ oid, size });
        metrics.batchObjects.inc({ operation: 'upload', result: 'present' });
      } else {
        const direct = settings.mode === 'direct' && !known.has(oid);
        objects.push({ oid, size, authenticated: true, actions: await uploadActions(repo, oid, size, who, direct) });
        metrics.batchObjects.inc({ operation: 'upload', result: 'action' });
      }
    }
    return { transfer: 'basic', objects, hash_algo: 'sha256' };
  }

  /**
   * Proxy upload: hash and count while streaming into the store; link the object to the
   * repository only once the bytes proved right. If the store already has the object (from
   * another repository), the bytes are still read and hashed, then discarded.
   *
   * `expect.size` is the size the batch declared (signed into the upload action), which the
   * body must have; `expect.contentLength` is what the request says it carries, refused
   * before any byte is read when it cannot be right.
   */
  async function upload(repo: LfsRepoRef, oid: string, body: Readable, expect: { size?: number; contentLength?: number }, signal?: AbortSignal) {
    const { size: authorized, contentLength } = expect;
    if (authorized !== undefined && contentLength !== undefined && contentLength !== authorized) {
      throw invalid('size_mismatch', `upload has ${contentLength} bytes; the declared size is ${authorized}`);
    }
    const declaredSize = authorized ?? contentLength;
    if (declaredSize !== undefined && declaredSize > settings.maxObjectBytes) {
      throw tooLarge('object_too_large', `object of ${declaredSize} bytes exceeds the maximum size of ${settings.maxObjectBytes} bytes`);
    }
    // Checked again here: uploads authorized by batches checked at once may not all fit.
    if (declaredSize !== undefined) await quota?.assertLfsRoom(repo.id, [{ oid, size: declaredSize }], 'this upload');
    const key = lfsObjectKey(oid);
    const check = verifyContent({ oid, size: declaredSize, maxBytes: settings.maxObjectBytes });
    try {
      if (await store.head(key)) {
        await pipeline(body, check, new Writable({ write: (_c, _e, cb) => cb() }), { signal });
      } else {
        // The callback form returns `check` and destroys it if the client goes away midway,
        // which fails the put: nothing is stored.
        const verified = pipelineCb(body, check, () => {});
        await store.put(key, verified, { ...(declaredSize !== undefined && { size: declaredSize }), ...(signal && { signal }) });
      }
    } catch (err) {
      if (err instanceof DomainError && (err.code === 'hash_mismatch' || err.code === 'size_mismatch')) {
        metrics.verifyFailures.inc({ reason: err.code });
      }
      throw err;
    }
    metrics.bytes.inc({ direction: 'up' }, check.bytes);
    // A body of undeclared size is checked once counted: stored, but never linked if it does not fit.
    if (declaredSize === undefined) await quota?.assertLfsRoom(repo.id, [{ oid, size: check.bytes }], 'this upload');
    await linkObject(meta.db, { repositoryId: repo.id, oid, size: check.bytes, createdAt: now() });
    return { size: check.bytes };
  }

  /** The size of an object this repository may download for this caller; `not_found` otherwise. */
  async function linkedSize(repo: LfsRepoRef, oid: string): Promise<number> {
    const size = (await findLinkedObjects(meta.db, repo.sources, [oid])).get(oid);
    if (size === undefined) throw notFound('object_not_found', 'object does not exist in this repository');
    return size;
  }

  /**
   * The object's bytes, exactly the range asked for. A store may serve more than the range
   * (s3rver answers `bytes=0-0` with the whole object, and an S3-compatible service may
   * ignore Range): the surplus is cut here, or a response would send more bytes than its
   * Content-Length and corrupt the client's kept-alive connection.
   */
  async function open(oid: string, range?: ByteRange, prefer: readonly string[] = []): Promise<GetResult> {
    const result = await located(oid, range, prefer);
    let { body } = result;
    let served = result.range;
    if (range && served) {
      const want = { start: range.start, end: Math.min(range.end ?? result.size - 1, result.size - 1) };
      if (served.start !== want.start || served.end !== want.end) {
        if (served.start > want.start || served.end < want.end) {
          body.destroy();
          throw unavailable('range_not_served', 'object store did not serve the requested range', { oid, ...want });
        }
        body = Readable.from(sliceBytes(body, want.start - served.start, want.end - want.start + 1));
        served = want;
      }
    }
    const counted = counting();
    pipelineCb(body, counted, () => metrics.bytes.inc({ direction: 'down' }, counted.bytes));
    return { ...result, body: counted, ...(served && { range: served }) };
  }

  /**
   * Where the object's bytes are: a published version (the readable layout; the
   * content-addressed copy may be gone), the repository's own and its network's first, else
   * the content-addressed copy. A version removed meanwhile (GC) is passed over.
   */
  async function located(oid: string, range: ByteRange | undefined, prefer: readonly string[]): Promise<GetResult> {
    const opts = range ? { range } : {};
    if (store.versions) {
      for (const p of await publicationsOf(meta.db, oid, prefer, 3)) {
        try {
          return await store.versions.get(objectKey(p.key), p.versionId!, opts);
        } catch (err) {
          if (!(isDomainError(err) && err.kind === 'not_found')) throw err;
        }
      }
    }
    return store.get(lfsObjectKey(oid), opts);
  }

  /**
   * The verify action. A proxy upload already linked the object; after a direct upload
   * (`direct`, from the signed verify action) this is where it becomes visible, once the
   * store confirms it holds that many bytes.
   */
  async function verify(repo: LfsRepoRef, oid: string, size: number, direct: boolean): Promise<void> {
    const linked = await findLinkedObjects(meta.db, repo.sources, [oid]);
    const known = linked.get(oid);
    if (known !== undefined) {
      if (known !== size) {
        metrics.verifyFailures.inc({ reason: 'size_mismatch' });
        throw invalid('size_mismatch', `object has ${known} bytes, not ${size}`);
      }
      return;
    }
    if (settings.mode === 'proxy' || !direct) throw notFound('object_not_found', 'object was not uploaded');
    const head = await store.head(lfsObjectKey(oid));
    if (!head) throw notFound('object_not_found', 'object was not uploaded');
    if (head.size !== size) {
      metrics.verifyFailures.inc({ reason: 'size_mismatch' });
      throw invalid('size_mismatch', `stored object has ${head.size} bytes, not ${size}`);
    }
    await linkObject(meta.db, { repositoryId: repo.id, oid, size, createdAt: now() });
  }

  return { batch, upload, linkedSize, open, verify, settings };
}

export type LfsObjects = ReturnType<typeof createLfsObjects>;

/** `take` bytes of `source` after skipping `skip`; leaving the loop early destroys the source. */
async function* sliceBytes(source: Readable, skip: number, take: number): AsyncGenerator<Buffer> {
  for await (const chunk of source as AsyncIterable<Buffer>) {
    if (skip >= chunk.length) {
      skip -= chunk.length;
      continue;
    }
    const part = chunk.subarray(skip, skip + take);
    skip = 0;
    take -= part.length;
    yield part;
    if (take === 0) return;
  }
}

