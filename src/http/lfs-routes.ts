/**
 * Git LFS routes under `/<owner>/<space>/<repo>.git/info/lfs` (the client's default
 * endpoint, docs/api/server-discovery.md): batch, basic transfers, verify and locks. The
 * edge translates; lfs/objects.ts and lfs/locks.ts decide. Errors use the LFS JSON shape
 * `{ message, request_id }` with the statuses the spec names.
 *
 * A JSON body costs nothing before the caller is known (issue 9): the credentials are
 * checked and the repository resolved in `preParsing`, before a byte of the body is read;
 * the body is then bounded by `maxJsonBodyBytes` and accepted only as the LFS media type or
 * application/json (415 otherwise: text/plain is what a cross-site form can send).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requestBody } from './body.js';
import type { Accounts } from '../access/accounts.js';
import { anonymous, systemActor, type Actor } from '../access/policy.js';
import type { RepoInfo, RepoService } from '../repos/service.js';
import { parseRepoPath } from '../repos/names.js';
import type { LfsObjects, LfsRepoRef } from '../lfs/objects.js';
import { LockConflict, toLockJson, type Locker, type Locks } from '../lfs/locks.js';
import type { Signer, TransferClaims, TransferOp } from '../lfs/signing.js';
import { looksLikeJwt } from '../lfs/signing.js';
import type { SshKeys } from '../access/ssh-keys.js';
import { LFS_MEDIA_TYPE, isOid, lockCreateSchema, lockVerifySchema, parseBatchRequest, parseBody, unlockSchema, verifySchema } from '../lfs/wire.js';
import type { LfsMetrics } from '../lfs/metrics.js';
import { DomainError, forbidden, invalid, isDomainError, tooLarge, unauthenticated } from '../shared/errors.js';
import { authenticate, presentedSecret } from './auth.js';
import { retryAfter, statusOf } from './errors.js';
import { parseRange } from './range.js';

export interface LfsRouteDeps {
  accounts: Accounts;
  repos: RepoService;
  objects: LfsObjects;
  locks: Locks;
  signer: Signer;
  metrics: LfsMetrics;
  /** Overrides the scheme://host[:port] of hrefs in batch responses (behind unusual proxies). */
  publicUrl?: string | undefined;
  /** Checks authorizations `git-lfs-authenticate` issued over SSH (their key still valid). */
  sshKeys?: Pick<SshKeys, 'grantActor'> | undefined;
}

interface RepoParams {
  owner: string;
  space: string;
  repo: string;
}

const PREFIX = '/:owner/:space/:repo/info/lfs';
const LFS_AUTH_CHALLENGE = 'Basic realm="gitstratum", charset="UTF-8"';

export function sendLfsError(req: FastifyRequest, reply: FastifyReply, err: DomainError, override?: number): FastifyReply {
  let status = statusOf(err);
  // The LFS API answers validation failures with 422; a body that is not JSON stays 400.
  if (err.kind === 'invalid' && err.code !== 'malformed_json') status = 422;
  // The batch API's status for "insufficient storage"; git-lfs prints the message.
  if (err.code === 'quota_exceeded') status = 507;
  if (override !== undefined) status = override;
  if (err.kind === 'unauthenticated') reply.header('LFS-Authenticate', LFS_AUTH_CHALLENGE);
  retryAfter(reply, err);
  return reply
    .code(status)
    .type(LFS_MEDIA_TYPE)
    .send({ message: err.message, request_id: String(req.id), documentation_url: 'https://github.com/git-lfs/git-lfs/tree/main/docs/api' });
}

function lfsUrl(req: FastifyRequest<{ Params: RepoParams }>, publicUrl?: string): string {
  const origin = publicUrl ? publicUrl.replace(/\/+$/, '') : `${req.protocol}://${req.host}`;
  const repo = req.params.repo.replace(/\.git$/i, '');
  return `${origin}/${encodeURIComponent(req.params.owner)}/${encodeURIComponent(req.params.space)}/${encodeURIComponent(repo)}.git/info/lfs`;
}

function parseJson(body: unknown): unknown {
  if (typeof body !== 'string' || body.trim() === '') return {};
  try {
    return JSON.parse(body);
  } catch {
    throw new DomainError('invalid', 'malformed_json', 'request body is not valid JSON');
  }
}

/** Fastify's own refusals (content type, body size) as domain errors with LFS statuses. */
function parserError(err: Error & { code?: string; statusCode?: number }, contentType: string | undefined): { error: DomainError; status: number } | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { error: invalid('unsupported_media_type', `unsupported content type: ${contentType ?? 'none'}; use ${LFS_MEDIA_TYPE}`), status: 415 };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { error: tooLarge('body_too_large', 'request body is too large'), status: 413 };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { error: invalid('malformed_json', 'request body is not valid JSON'), status: 400 };
  }
  return undefined;
}

export function registerLfsRoutes(app: FastifyInstance, deps: LfsRouteDeps): void {
  const { accounts, repos, objects, locks, signer, metrics } = deps;

  // authenticate() answers once per request: the budget hook, the check before the body and
  // the handler share one token lookup. A bearer JWT here (batch, locks) is what
  // git-lfs-authenticate gave git-lfs over SSH: good for its one repository only.
  const grants = new WeakMap<FastifyRequest, Promise<Actor>>();
  const actorOf = (req: FastifyRequest): Promise<Actor> => {
    let secret: string | undefined;
    try {
      secret = presentedSecret(req.headers.authorization);
    } catch {
      secret = undefined;
    }
    if (!secret || !looksLikeJwt(secret)) return authenticate(accounts, req);
    let answer = grants.get(req);
    if (!answer) {
      answer = (async () => {
        const grant = await signer.verifyGrant(secret);
        const repo = await repos.resolve(systemActor, where(req as FastifyRequest<{ Params: RepoParams }>), 'read');
        if (repo.id !== grant.repo) throw forbidden('grant_scope', 'this authorization is for another repository');
        if (!deps.sshKeys) throw unauthenticated('invalid_token', 'invalid authorization');
        return deps.sshKeys.grantActor(grant);
      })();
      answer.catch(() => {});
      grants.set(req, answer);
    }
    return answer;
  };

  const where = (req: FastifyRequest<{ Params: RepoParams }>) =>
    parseRepoPath(`${req.params.owner}/${req.params.space}/${req.params.repo}`);

  /** Wraps a handler so every DomainError comes out in the LFS error shape. */
  const handle =
    <R extends FastifyRequest<{ Params: RepoParams }>>(fn: (req: R, reply: FastifyReply) => Promise<unknown>) =>
    async (req: R, reply: FastifyReply) => {
      try {
        return await fn(req, reply);
      } catch (err) {
        if (err instanceof LockConflict) {
          return reply.code(409).type(LFS_MEDIA_TYPE).send({ lock: toLockJson(err.lock), message: err.message, request_id: String(req.id) });
        }
        if (isDomainError(err)) return sendLfsError(req, reply, err);
        throw err;
      }
    };

  /** Signed-in user, for locks: the API needs a name to own a lock. */
  function locker(actor: Actor): Locker {
    if (actor.kind !== 'user') throw unauthenticated('auth_required', 'locks need an authenticated user');
    return { userId: actor.userId, name: actor.name, isRepoAdmin: false };
  }

  /**
   * Transfers accept either the signed authorization from a batch response (whose claims
   * then bind the transfer: the declared size, how the bytes travel) or ordinary credentials
   * with the right access. An authorization lives only as long as the token that obtained it:
   * its current state is checked by the same lookup as a presented token (revoked or expired:
   * 401). One obtained anonymously (public downloads) has no token to check.
   */
  async function transferAccess(
    req: FastifyRequest<{ Params: RepoParams }>,
    op: TransferOp,
    oid: string,
  ): Promise<{ repo: LfsRepoRef; claims?: TransferClaims }> {
    const secret = presentedSecret(req.headers.authorization);
    if (secret && looksLikeJwt(secret)) {
      const repo = await repos.resolve(systemActor, where(req), 'read');
      const claims = await signer.verify(secret, { repo: repo.id, op, oid });
      let actor: Actor = anonymous;
      if (claims.tokenId) actor = await accounts.authenticateTokenId(claims.tokenId);
      // Issued to a user before authorizations named their token: it cannot be checked.
      else if (claims.sub !== null) throw unauthenticated('transfer_invalid', 'invalid transfer authorization');
      // Whoever it was issued to still has the access: not removed from the organization, the
      // repository not made private since an anonymous batch.
      await repos.resolve(actor, where(req), op === 'download' ? 'read' : 'write');
      return { repo: await lfsRepo(actor, repo, ''), claims };
    }
    const actor = await actorOf(req);
    const repo = await repos.resolve(actor, where(req), op === 'download' ? 'read' : 'write');
    return { repo: await lfsRepo(actor, repo, '') };
  }

  async function lfsRepo(actor: Actor, repo: RepoInfo, url: string): Promise<LfsRepoRef> {
    return { id: repo.id, lfsUrl: url, sources: await repos.lfsSources(actor, repo) };
  }

  /**
   * What a JSON POST needs before its body is read: a valid caller with access to the
   * repository (read for a batch, whose operation is in the body; write for locks). A
   * transfer authorization (verify) names its object in the body, so only its repository is
   * resolved here and the authorization is verified after.
   */
  async function beforeBody(req: FastifyRequest<{ Params: RepoParams }>): Promise<void> {
    const route = req.routeOptions.url ?? '';
    if (route === `${PREFIX}/verify`) {
      const secret = presentedSecret(req.headers.authorization);
      if (secret && looksLikeJwt(secret)) await repos.resolve(systemActor, where(req), 'read');
      else await transferAccess(req, 'verify', '');
      return;
    }
    const actor = await actorOf(req);
    await repos.resolve(actor, where(req), route === `${PREFIX}/objects/batch` ? 'read' : 'write');
  }

  app.register(async (lfs) => {
    // LFS bodies are parsed here, so malformed JSON gets the LFS error shape; only the JSON
    // media types have a parser, so any other type is 415. The size bound is the server's
    // bodyLimit (maxJsonBodyBytes).
    lfs.removeAllContentTypeParsers();
    lfs.addContentTypeParser([LFS_MEDIA_TYPE, 'application/json'], { parseAs: 'string' }, (_req, body, done) => done(null, body));

    lfs.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req, reply) => {
      if (!req.raw.complete) reply.header('Connection', 'close');
      if (isDomainError(err)) return sendLfsError(req, reply, err);
      const edge = parserError(err, req.headers['content-type']);
      if (edge) return sendLfsError(req, reply, edge.error, edge.status);
      if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return sendLfsError(req, reply, invalid('invalid_request', err.message), err.statusCode);
      req.log.error({ err }, 'request failed');
      return reply.code(500).type(LFS_MEDIA_TYPE).send({ message: 'internal server error', request_id: String(req.id) });
    });

    lfs.addHook('preParsing', async (req, _reply, payload) => {
      if (req.method !== 'POST') return payload;
      try {
        await beforeBody(req as FastifyRequest<{ Params: RepoParams }>);
      } catch (err) {
        // Refused before the handler, whose own count never sees it.
        if (req.routeOptions.url === `${PREFIX}/objects/batch`) metrics.batches.inc({ operation: 'unknown', outcome: isDomainError(err) ? err.kind : 'error' });
        throw err;
      }
      return payload;
    });

    lfs.post<{ Params: RepoParams }>(
      `${PREFIX}/objects/batch`,
      handle(async (req, reply) => {
        let operation = 'unknown';
        try {
          const batch = parseBatchRequest(parseJson(req.body), objects.settings.maxBatchObjects);
          operation = batch.operation;
          const actor = await actorOf(req);
          const repo = await repos.resolve(actor, where(req), batch.operation === 'upload' ? 'write' : 'read');
          const grantee = actor.kind === 'user' ? { sub: actor.userId, tokenId: actor.tokenId } : { sub: null, tokenId: null };
          const result = await objects.batch(await lfsRepo(actor, repo, lfsUrl(req, deps.publicUrl)), batch, grantee);
          metrics.batches.inc({ operation, outcome: 'ok' });
          return reply.type(LFS_MEDIA_TYPE).send(result);
        } catch (err) {
          metrics.batches.inc({ operation, outcome: isDomainError(err) ? err.kind : 'error' });
          throw err;
        }
      }),
    );

    lfs.post<{ Params: RepoParams }>(
      `${PREFIX}/verify`,
      handle(async (req, reply) => {
        const body = parseBody(verifySchema, parseJson(req.body), 'verify request');
        if (!isOid(body.oid)) throw invalid('invalid_oid', 'invalid oid');
        const { repo, claims } = await transferAccess(req, 'verify', body.oid);
        if (claims && claims.size !== body.size) throw invalid('size_mismatch', `verify of ${body.size} bytes; the declared size is ${claims.size}`);
        await objects.verify(repo, body.oid, body.size, claims?.direct === true);
        return reply.type(LFS_MEDIA_TYPE).send({ message: 'ok' });
      }),
    );

    lfs.get<{ Params: RepoParams & { oid: string } }>(
      `${PREFIX}/objects/:oid`,
      handle(async (req, reply) => {
        const { oid } = req.params;
        if (!isOid(oid)) throw invalid('invalid_oid', 'invalid oid');
        const { repo } = await transferAccess(req, 'download', oid);
        const size = await objects.linkedSize(repo, oid);
        const range = parseRange(req.headers.range, size);
        if (range.kind === 'unsatisfiable') {
          return reply.code(416).header('Content-Range', `bytes */${size}`).type(LFS_MEDIA_TYPE).send({ message: 'range not satisfiable', request_id: String(req.id) });
        }
        const got = await objects.open(oid, range.kind === 'range' ? range.range : undefined, repo.sources);
        reply.header('Accept-Ranges', 'bytes').type('application/octet-stream');
        if (range.kind === 'range') {
          const { start, end } = range.range;
          return reply.code(206).header('Content-Range', `bytes ${start}-${end}/${size}`).header('Content-Length', end - start + 1).send(got.body);
        }
        return reply.header('Content-Length', size).send(got.body);
      }),
    );

    // Uploads are raw bytes with whatever Content-Type the client sniffed: no parser may touch them.
    lfs.register(async (raw) => {
      raw.removeAllContentTypeParsers();
      raw.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
      raw.put<{ Params: RepoParams & { oid: string } }>(
        `${PREFIX}/objects/:oid`,
        handle(async (req, reply) => {
          const { oid } = req.params;
          if (!isOid(oid)) throw invalid('invalid_oid', 'invalid oid');
          const { repo, claims } = await transferAccess(req, 'upload', oid);
          const length = req.headers['content-length'];
          const contentLength = length !== undefined ? Number(length) : undefined;
          const controller = new AbortController();
          reply.raw.on('close', () => {
            if (!reply.raw.writableFinished) controller.abort();
          });
          try {
            await objects.upload(
              repo,
              oid,
              requestBody(req),
              { ...(claims && { size: claims.size }), ...(contentLength !== undefined && { contentLength }) },
              controller.signal,
            );
          } catch (err) {
            if (!req.raw.complete) reply.header('Connection', 'close');
            throw err;
          }
          return reply.code(200).type(LFS_MEDIA_TYPE).send({ message: 'ok' });
        }),
      );
    });

    lfs.post<{ Params: RepoParams }>(
      `${PREFIX}/locks`,
      handle(async (req, reply) => {
        const body = parseBody(lockCreateSchema, parseJson(req.body), 'lock request');
        const actor = await actorOf(req);
        const repo = await repos.resolve(actor, where(req), 'write');
        const lock = await locks.create(repo.id, locker(actor), body.path, body.ref?.name ?? null);
        return reply.code(201).type(LFS_MEDIA_TYPE).send({ lock: toLockJson(lock) });
      }),
    );

    lfs.get<{ Params: RepoParams; Querystring: { path?: string; id?: string; cursor?: string; limit?: string; refspec?: string } }>(
      `${PREFIX}/locks`,
      handle(async (req, reply) => {
        const actor = await actorOf(req);
        const repo = await repos.resolve(actor, where(req), 'read');
        const q = req.query;
        const page = await locks.list(repo.id, {
          ...(q.path && { path: q.path }),
          ...(q.id && { id: q.id }),
          ...(q.cursor && { cursor: q.cursor }),
          ...(q.limit && { limit: Number(q.limit) }),
        });
        return reply.type(LFS_MEDIA_TYPE).send({ locks: page.locks.map(toLockJson), ...(page.nextCursor && { next_cursor: page.nextCursor }) });
      }),
    );

    lfs.post<{ Params: RepoParams }>(
      `${PREFIX}/locks/verify`,
      handle(async (req, reply) => {
        const body = parseBody(lockVerifySchema, parseJson(req.body), 'lock verify request');
        const actor = await actorOf(req);
        const repo = await repos.resolve(actor, where(req), 'write');
        const page = await locks.verify(repo.id, locker(actor), {
          ...(body.cursor && { cursor: body.cursor }),
          ...(body.limit && { limit: body.limit }),
        });
        return reply.type(LFS_MEDIA_TYPE).send({
          ours: page.ours.map(toLockJson),
          theirs: page.theirs.map(toLockJson),
          ...(page.nextCursor && { next_cursor: page.nextCursor }),
        });
      }),
    );

    lfs.post<{ Params: RepoParams & { id: string } }>(
      `${PREFIX}/locks/:id/unlock`,
      handle(async (req, reply) => {
        const body = parseBody(unlockSchema, parseJson(req.body), 'unlock request');
        const actor = await actorOf(req);
        const repo = await repos.resolve(actor, where(req), 'write');
        const who = locker(actor);
        if (body.force) {
          who.isRepoAdmin = await repos.resolve(actor, where(req), 'admin').then(
            () => true,
            () => false,
          );
        }
        const lock = await locks.unlock(repo.id, who, req.params.id, !!body.force);
        return reply.type(LFS_MEDIA_TYPE).send({ lock: toLockJson(lock) });
      }),
    );
  });
}
