/**
 * Git LFS wire types (docs/api/batch.md, docs/api/locking.md in git-lfs/git-lfs) and their
 * parsers. Whole-request problems raise a DomainError; per-object problems are reported in
 * the object's `error`, as the batch API requires, and never fail the whole batch.
 */
import { z } from 'zod';
import { DomainError, invalid } from '../shared/errors.js';

export const LFS_MEDIA_TYPE = 'application/vnd.git-lfs+json';

export type Operation = 'upload' | 'download';

export interface BatchObjectIn {
  oid: unknown;
  size: unknown;
}

export interface BatchRequest {
  operation: Operation;
  transfers: string[];
  ref: string | null;
  objects: BatchObjectIn[];
  hashAlgo: string;
}

export interface Action {
  href: string;
  header?: Record<string, string>;
  expires_in: number;
  expires_at: string;
}

export interface BatchObjectOut {
  oid: string;
  size: number;
  authenticated?: boolean;
  actions?: { upload?: Action; verify?: Action; download?: Action };
  error?: { code: number; message: string };
}

export interface BatchResponse {
  transfer: 'basic';
  objects: BatchObjectOut[];
  hash_algo: 'sha256';
}

/**
 * `ref` as clients send it: absent, null, `{}` (git-lfs does when it knows no ref) or
 * `{ "name": … }`. The spec asks servers to cope with all of them (docs/api/batch.md).
 */
const refSchema = z.object({ name: z.string().optional() }).loose().nullable().optional();

const batchSchema = z.object({
  operation: z.string(),
  transfers: z.array(z.string()).optional(),
  ref: refSchema,
  objects: z.array(z.object({ oid: z.unknown(), size: z.unknown() }).loose()),
  hash_algo: z.string().optional(),
});

export function parseBatchRequest(body: unknown, maxObjects: number): BatchRequest {
  // Counted before anything is validated: each element costs the schema work and memory.
  const count = (body as { objects?: unknown } | null)?.objects;
  if (Array.isArray(count) && count.length > maxObjects) {
    throw new DomainError('too_large', 'batch_too_large', `batch of ${count.length} objects exceeds the limit of ${maxObjects}`);
  }
  const parsed = batchSchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw invalid('invalid_batch', `invalid batch request: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'malformed'}`);
  }
  const b = parsed.data;
  if (b.operation !== 'upload' && b.operation !== 'download') {
    throw new DomainError('invalid', 'unknown_operation', `unknown operation: ${JSON.stringify(b.operation)}; expected upload or download`);
  }
  const hashAlgo = b.hash_algo ?? 'sha256';
  if (hashAlgo !== 'sha256') {
    throw new DomainError('conflict', 'unsupported_hash_algo', `unsupported hash algorithm: ${hashAlgo}; this server uses sha256`);
  }
  return {
    operation: b.operation,
    transfers: b.transfers ?? ['basic'],
    ref: b.ref?.name ?? null,
    objects: b.objects,
    hashAlgo,
  };
}

const OID = /^[0-9a-f]{64}$/;

export function isOid(value: unknown): value is string {
  return typeof value === 'string' && OID.test(value);
}

/** Why an object of a batch is invalid, or undefined when it is fine. */
export function objectProblem(o: BatchObjectIn): string | undefined {
  if (!isOid(o.oid)) return 'invalid oid: expected 64 lowercase hex characters of a SHA-256';
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) return 'invalid size: expected a non-negative integer';
  return undefined;
}

export const lockCreateSchema = z.object({
  path: z.string().min(1).max(4096),
  ref: refSchema,
});

export const lockVerifySchema = z.object({
  ref: refSchema,
  cursor: z.string().optional(),
  limit: z.number().int().positive().optional(),
});

export const unlockSchema = z.object({
  force: z.boolean().optional(),
  ref: refSchema,
});

export const verifySchema = z.object({ oid: z.string(), size: z.number() });

/** Parses a body with a zod schema, turning failures into an `invalid` DomainError. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown, what: string): T {
  const r = schema.safeParse(body ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    throw invalid('invalid_request', `invalid ${what}: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'malformed'}`);
  }
  return r.data;
}

export interface LockJson {
  id: string;
  path: string;
  locked_at: string;
  owner: { name: string };
}
