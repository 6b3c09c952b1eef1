/**
 * Short-lived signed transfer authorizations. Batch responses put one in each action's
 * `Authorization` header, scoped to a repository, an operation and an oid, so transfer URLs
 * never carry the user's own credentials. HS256 with a server secret shared by every
 * frontend (config `signingSecret`, else a random key kept in the data directory).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { jwtVerify, errors as joseErrors } from 'jose';
import { forbidden, unauthenticated } from '../shared/errors.js';

export type TransferOp = 'upload' | 'download' | 'verify';

export interface TransferClaims {
  repo: string;
  op: TransferOp;
  oid: string;
  size: number;
  /** The user it was issued to, or null for anonymous downloads. */
  sub: string | null;
  /**
   * The access token whose batch request obtained it (claim `tok`). A transfer is allowed only
   * while that token is (still) valid: revoking or expiry ends its transfer URLs too.
   */
  tokenId?: string | null;
  /**
   * Verify only: the upload action sent the bytes straight to the object store, so the
   * server never saw them and the store is what tells whether they arrived.
   */
  direct?: boolean;
}

/**
 * What `git-lfs-authenticate` over SSH hands git-lfs (claim `typ` = `ssh-lfs`): the LFS API of
 * one repository for the user of an SSH key (or anonymous), with the key's scope. Checked
 * again at each use: the key must still exist and its user be enabled.
 */
export interface GrantClaims {
  repo: string;
  /** The user, or null for an anonymous reader. */
  sub: string | null;
  /** The SSH key it was issued through (claim `key`). */
  keyId: string | null;
  scope: 'read' | 'write';
}

export interface Signer {
  sign(claims: TransferClaims, expiresInSeconds: number): Promise<string>;
  grant(claims: GrantClaims, expiresInSeconds: number): string;
  /** Checks signature, expiry and kind; throws `unauthenticated`. */
  verifyGrant(token: string): Promise<GrantClaims>;
  /** Checks signature, expiry and scope; throws `unauthenticated`/`forbidden`. */
  verify(token: string, expect: { repo: string; op: TransferOp; oid: string }): Promise<TransferClaims>;
}

export async function loadSigningKey(dataDir: string, configured?: string): Promise<Uint8Array> {
  if (configured) return new TextEncoder().encode(configured);
  const file = path.join(dataDir, 'signing.key');
  try {
    return Buffer.from((await readFile(file, 'utf8')).trim(), 'base64');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const key = randomBytes(32);
  await mkdir(dataDir, { recursive: true });
  // 'wx': if another process created it meanwhile, use theirs.
  await writeFile(file, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' }).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  return Buffer.from((await readFile(file, 'utf8')).trim(), 'base64');
}

/** The protected header of every token we issue; it never varies, so it is encoded once. */
const JWT_HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

export function createSigner(key: Uint8Array): Signer {
  /** The compact HS256 JWT of `payload`. */
  const seal = (payload: object): string => {
    const signed = `${JWT_HEADER}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
    return `${signed}.${createHmac('sha256', key).update(signed).digest('base64url')}`;
  };
  /** The payload of a token we signed that has not expired; `expired`/`invalid`: what to throw otherwise. */
  const opened = async (token: string, expired: () => Error, invalid: () => Error) => {
    try {
      return (await jwtVerify(token, key, { algorithms: ['HS256'] })).payload;
    } catch (err) {
      throw err instanceof joseErrors.JWTExpired ? expired() : invalid();
    }
  };
  return {
    // A batch of 1,000 objects signs 1,000 tokens. jose signs through WebCrypto, which hops to
    // the libuv thread pool for every signature (~0.3 ms each on 2 cores); a synchronous HMAC
    // is a few microseconds. Verification stays with jose: it runs once per transfer.
    async sign(claims, expiresInSeconds) {
      const iat = Math.floor(Date.now() / 1000);
      const payload = {
        repo: claims.repo,
        op: claims.op,
        oid: claims.oid,
        size: claims.size,
        ...(claims.direct && { direct: true }),
        sub: claims.sub ?? 'anonymous',
        ...(claims.tokenId && { tok: claims.tokenId }),
        iat,
        exp: iat + expiresInSeconds,
      };
      return seal(payload);
    },
    grant(claims, expiresInSeconds) {
      const iat = Math.floor(Date.now() / 1000);
      return seal({ typ: 'ssh-lfs', repo: claims.repo, sub: claims.sub ?? 'anonymous', ...(claims.keyId && { key: claims.keyId }), scope: claims.scope, iat, exp: iat + expiresInSeconds });
    },
    async verifyGrant(token) {
      const payload = await opened(
        token,
        () => unauthenticated('grant_expired', 'the authorization from git-lfs-authenticate expired; git-lfs asks for a new one'),
        () => unauthenticated('invalid_token', 'invalid authorization'),
      );
      if (payload['typ'] !== 'ssh-lfs' || typeof payload['repo'] !== 'string' || (payload['scope'] !== 'read' && payload['scope'] !== 'write')) {
        throw unauthenticated('invalid_token', 'invalid authorization');
      }
      return {
        repo: payload['repo'],
        sub: payload.sub === 'anonymous' || payload.sub === undefined ? null : payload.sub,
        keyId: typeof payload['key'] === 'string' ? payload['key'] : null,
        scope: payload['scope'],
      };
    },
    async verify(token, expect) {
      const payload = await opened(
        token,
        () => unauthenticated('transfer_expired', 'transfer authorization expired; request a new batch'),
        () => unauthenticated('transfer_invalid', 'invalid transfer authorization'),
      );
      if (payload['repo'] !== expect.repo || payload['op'] !== expect.op || payload['oid'] !== expect.oid) {
        throw forbidden('transfer_scope', 'transfer authorization does not cover this object');
      }
      return {
        repo: String(payload['repo']),
        op: expect.op,
        oid: String(payload['oid']),
        size: Number(payload['size']),
        sub: payload.sub === 'anonymous' || payload.sub === undefined ? null : payload.sub,
        tokenId: typeof payload['tok'] === 'string' ? payload['tok'] : null,
        ...(payload['direct'] === true && { direct: true }),
      };
    },
  };
}

/** True when a bearer value looks like one of our JWTs rather than an access token. */
export function looksLikeJwt(value: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(value);
}
