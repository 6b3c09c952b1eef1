/**
 * Domain errors → HTTP. One table of statuses; each protocol gets its own body shape:
 * git clients get text/plain (git prints it as `remote:` lines on info/refs), the REST API
 * gets `{ "error": { "code", "message" } }`.
 */
import type { FastifyReply } from 'fastify';
import { DomainError, type ErrorKind } from '../shared/errors.js';

const STATUS: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  unavailable: 503,
  rate_limited: 429,
};

export const AUTH_CHALLENGE = 'Basic realm="gitstratum", charset="UTF-8"';

export function statusOf(err: DomainError): number {
  return STATUS[err.kind];
}

/** When the client may try again: `Retry-After`, which git-lfs honours, on 503 and 429 (`fields.retryAfterSeconds` when the error knows). */
export function retryAfter(reply: FastifyReply, err: DomainError): void {
  const given = Number(err.fields['retryAfterSeconds']);
  const seconds = Number.isInteger(given) && given > 0 ? given : undefined;
  if (err.kind === 'unavailable') reply.header('Retry-After', String(seconds ?? 5));
  if (err.kind === 'rate_limited') reply.header('Retry-After', String(seconds ?? 1));
}

function commonHeaders(reply: FastifyReply, err: DomainError): void {
  if (err.kind === 'unauthenticated') reply.header('WWW-Authenticate', AUTH_CHALLENGE);
  retryAfter(reply, err);
}

/** `status` overrides the kind's status where HTTP is more precise than the kind (415). */
export function sendGitError(reply: FastifyReply, err: DomainError, status = statusOf(err)): FastifyReply {
  commonHeaders(reply, err);
  return reply.code(status).type('text/plain; charset=utf-8').header('Cache-Control', 'no-cache').send(`${err.message}\n`);
}

export function sendJsonError(reply: FastifyReply, err: DomainError, status = statusOf(err)): FastifyReply {
  commonHeaders(reply, err);
  return reply.code(status).send({ error: { code: err.code, message: err.message } });
}
