/**
 * The few error kinds the domain speaks. Every error carries a stable code (listed in
 * docs/errors.md, never reused) and a short, lower-case, factual message. Only http/ and
 * cli/ turn these into statuses, protocol error shapes or exit codes.
 */
export type ErrorKind =
  | 'not_found'
  | 'conflict'
  | 'invalid'
  | 'unauthenticated'
  | 'forbidden'
  | 'too_large'
  | 'unavailable'
  /** Over a client's budget (requests per window, concurrent requests); `fields.retryAfterSeconds` says when to retry. */
  | 'rate_limited';

export class DomainError extends Error {
  readonly kind: ErrorKind;
  readonly code: string;
  readonly fields: Record<string, unknown>;

  constructor(kind: ErrorKind, code: string, message: string, fields: Record<string, unknown> = {}) {
    super(message);
    this.name = 'DomainError';
    this.kind = kind;
    this.code = code;
    this.fields = fields;
  }
}

export const notFound = (code: string, message: string, fields?: Record<string, unknown>) =>
  new DomainError('not_found', code, message, fields);
export const conflict = (code: string, message: string, fields?: Record<string, unknown>) =>
  new DomainError('conflict', code, message, fields);
export const invalid = (code: string, message: string, fields?: Record<string, unknown>) =>
  new DomainError('invalid', code, message, fields);
export const unauthenticated = (code: string, message: string, fields?: Record<string, unknown>) =>
  new DomainError('unauthenticated', code, message, fields);
export const forbidden = (code: string, message: string, fields?: Record<string, unknown>) =>
  new DomainError('forbidden', code, message, fields);
export const tooLarge = (code: string, message: string, fields?: Record<string, unknown>) =>
  new DomainError('too_large', code, message, fields);
export const unavailable = (code: string, message: string, fields?: Record<string, unknown>) =>
  new DomainError('unavailable', code, message, fields);

export const rateLimited = (code: string, message: string, retryAfterSeconds: number, fields?: Record<string, unknown>) =>
  new DomainError('rate_limited', code, message, { ...fields, retryAfterSeconds });

export function isDomainError(err: unknown): err is DomainError {
  return err instanceof DomainError;
}
