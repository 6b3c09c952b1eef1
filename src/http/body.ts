/**
 * How a route reads the body of a git or LFS upload request: through requestBody(), which joins
 * its small chunks and, when the client's budget (rate-limit.ts) set a pace for the request,
 * reads it no faster than that pace allows.
 */
import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { coalescing, pipeInto } from '../shared/streams.js';

/** Per budgeted request: takes one piece of its body from its client's bucket, answering how long to wait. */
const paces = new WeakMap<FastifyRequest, () => number>();

export function paceBody(req: FastifyRequest, pace: () => number): void {
  paces.set(req, pace);
}

/**
 * The request's body as its route should read it (once): joined into larger chunks and paced
 * to the client's pieces per second (shared/streams.ts, coalescing); the raw stream when no
 * budget applies to the request.
 */
export function requestBody(req: FastifyRequest): Readable {
  const pace = paces.get(req);
  if (!pace) return req.raw;
  paces.delete(req);
  return pipeInto(req.raw, coalescing(undefined, undefined, pace));
}
