/**
 * Credentials at the edge: HTTP Basic with an access token as the password (the user name
 * is ignored, as git sends whatever the credential helper has), or `Authorization: Bearer`.
 * No header means anonymous; a header that does not parse or a bad token is refused.
 */
import type { FastifyRequest } from 'fastify';
import type { Accounts } from '../access/accounts.js';
import { anonymous, type Actor } from '../access/policy.js';
import { unauthenticated } from '../shared/errors.js';

export function presentedSecret(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const [scheme, value = ''] = header.trim().split(/\s+/, 2);
  if (/^bearer$/i.test(scheme ?? '')) return value;
  if (/^basic$/i.test(scheme ?? '')) {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw unauthenticated('malformed_credentials', 'malformed basic credentials');
    return decoded.slice(colon + 1);
  }
  throw unauthenticated('unsupported_auth_scheme', 'use HTTP Basic with an access token as the password');
}

/**
 * One answer per request: the edge's budget hook (rate-limit.ts) authenticates first to
 * know whom to charge, and the route asking again gets the same actor or the same refusal
 * without a second token lookup.
 */
const answers = new WeakMap<FastifyRequest, Promise<Actor>>();

export function authenticate(accounts: Pick<Accounts, 'authenticate'>, req: FastifyRequest): Promise<Actor> {
  let answer = answers.get(req);
  if (!answer) {
    answer = lookUp(accounts, req);
    // The route may never ask (the budget refused first): not an unhandled rejection.
    answer.catch(() => {});
    answers.set(req, answer);
  }
  return answer;
}

async function lookUp(accounts: Pick<Accounts, 'authenticate'>, req: FastifyRequest): Promise<Actor> {
  const secret = presentedSecret(req.headers.authorization);
  if (secret === undefined) return anonymous;
  if (secret === '') throw unauthenticated('missing_token', 'an access token is required as the password');
  return accounts.authenticate(secret);
}
