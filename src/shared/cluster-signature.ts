/**
 * Requests between the parts of a cluster, signed with the cluster secret (issue 10: nothing on
 * a storage node's port works for an anonymous client).
 *
 * The signature is an HMAC-SHA256 over the method, the path with its query, the time and the
 * `x-gitstratum-call` header (every parameter of an internal request travels in it), sent as
 * `x-gitstratum-time` and `x-gitstratum-signature: v1=<base64url>`. A node accepts a signature
 * made within `maxSkewMs` of its own clock (default 60 s) and compares in constant time.
 *
 * What it does not cover: the request body (a push's pack streams and is not hashed first).
 * Between machines, run the internal port on a private network or behind TLS; the signature
 * keeps out whoever can reach the port, not whoever can rewrite the traffic.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const CALL_HEADER = 'x-gitstratum-call';
export const TIME_HEADER = 'x-gitstratum-time';
export const SIGNATURE_HEADER = 'x-gitstratum-signature';

const DEFAULT_MAX_SKEW_MS = 60_000;

function mac(secret: string, method: string, pathAndQuery: string, time: string, call: string): Buffer {
  return createHmac('sha256', secret).update(['v1', method.toUpperCase(), pathAndQuery, time, call].join('\n')).digest();
}

/** The headers that sign a request. */
export function signRequest(secret: string, method: string, pathAndQuery: string, call: string, nowMs = Date.now()): Record<string, string> {
  const time = String(nowMs);
  return {
    [CALL_HEADER]: call,
    [TIME_HEADER]: time,
    [SIGNATURE_HEADER]: `v1=${mac(secret, method, pathAndQuery, time, call).toString('base64url')}`,
  };
}

export type SignatureVerdict = { ok: true } | { ok: false; reason: string };

/** Whether a request's headers carry a valid, fresh signature. */
export function verifyRequest(
  secret: string,
  req: { method: string; url: string; headers: Record<string, string | string[] | undefined> },
  opts: { nowMs?: number; maxSkewMs?: number } = {},
): SignatureVerdict {
  const header = (name: string) => {
    const v = req.headers[name];
    return Array.isArray(v) ? undefined : v;
  };
  const signature = header(SIGNATURE_HEADER);
  const time = header(TIME_HEADER);
  if (!signature || !time) return { ok: false, reason: 'request not signed' };
  const at = Number(time);
  if (!/^\d{1,15}$/.test(time)) return { ok: false, reason: 'bad signature time' };
  if (Math.abs((opts.nowMs ?? Date.now()) - at) > (opts.maxSkewMs ?? DEFAULT_MAX_SKEW_MS)) {
    return { ok: false, reason: 'signature expired or from a clock too far off' };
  }
  const match = /^v1=([A-Za-z0-9_-]{43})$/.exec(signature);
  if (!match) return { ok: false, reason: 'bad signature' };
  const given = Buffer.from(match[1]!, 'base64url');
  const expected = mac(secret, req.method, req.url, time, header(CALL_HEADER) ?? '');
  return given.length === expected.length && timingSafeEqual(given, expected) ? { ok: true } : { ok: false, reason: 'bad signature' };
}

/**
 * A replica's bearer token for git's fetch of one repository from its writer (issue 11): git
 * sends one static header on every request of a fetch, so the token names the repository and
 * an expiry instead of signing each request. `r1.<expiry ms>.<HMAC of "replicate", id, expiry>`.
 */
export function replicaToken(secret: string, repositoryId: string, expiresAtMs: number): string {
  const expires = String(Math.floor(expiresAtMs));
  return `r1.${expires}.${replicaMac(secret, repositoryId, expires).toString('base64url')}`;
}

function replicaMac(secret: string, repositoryId: string, expires: string): Buffer {
  return createHmac('sha256', secret).update(['replicate', repositoryId, expires].join('\n')).digest();
}

/** Whether `authorization` (`Bearer r1.…`) lets a replica fetch `repositoryId` now. */
export function verifyReplicaToken(secret: string, repositoryId: string, authorization: string | undefined, nowMs = Date.now()): SignatureVerdict {
  const match = /^Bearer r1\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/.exec(authorization ?? '');
  if (!match) return { ok: false, reason: 'replica token required' };
  if (Number(match[1]) < nowMs) return { ok: false, reason: 'replica token expired' };
  const given = Buffer.from(match[2]!, 'base64url');
  const expected = replicaMac(secret, repositoryId, match[1]!);
  return given.length === expected.length && timingSafeEqual(given, expected) ? { ok: true } : { ok: false, reason: 'bad replica token' };
}
