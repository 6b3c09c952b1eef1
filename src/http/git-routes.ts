/**
 * Smart HTTP routes (gitprotocol-http): the edge only translates. It parses the path and
 * headers, resolves the actor and the repository, and hands streams to the repository's host
 * (repos/host.ts), in this process or on its storage node.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requestBody } from './body.js';
import type { Accounts } from '../access/accounts.js';
import { actorId, actorName } from '../access/policy.js';
import type { RepoInfo, RepoService } from '../repos/service.js';
import type { HostedRepo, HostOf } from '../repos/host.js';
import { gitProtocolValue, type GitService } from '../git/command.js';
import type { GitResponse } from '../git/smart-http.js';
import { DomainError, invalid, isDomainError, tooLarge } from '../shared/errors.js';
import { parseRepoPath } from '../repos/names.js';
import { authenticate } from './auth.js';
import { sendGitError } from './errors.js';
import type { Metrics } from './metrics.js';

export interface GitRouteDeps {
  accounts: Accounts;
  repos: RepoService;
  /** Where each repository is served. */
  hostOf: HostOf;
  /** A push that declares more bytes is refused before it reaches a host. */
  maxPushBytes: number;
  metrics: Metrics;
}

interface RepoParams {
  owner: string;
  space: string;
  repo: string;
}

const SERVICES: Record<string, GitService> = {
  'git-upload-pack': 'upload-pack',
  'git-receive-pack': 'receive-pack',
};

/** Headers git-http-backend sends so no proxy or client caches a dynamic answer. */
function noCache(reply: FastifyReply): FastifyReply {
  return reply
    .header('Expires', 'Fri, 01 Jan 1980 00:00:00 GMT')
    .header('Pragma', 'no-cache')
    .header('Cache-Control', 'no-cache, max-age=0, must-revalidate');
}

/** Aborts when the client goes away before the response was sent. */
export function abortSignalOf(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}

export function registerGitRoutes(app: FastifyInstance, deps: GitRouteDeps): void {
  const { accounts, repos, hostOf, metrics } = deps;

  // Request bodies stay streams: this parser hands Fastify nothing, the route reads req.raw.
  app.addContentTypeParser(
    ['application/x-git-upload-pack-request', 'application/x-git-receive-pack-request'],
    (_req, _payload, done) => done(null, undefined),
  );

  async function resolve(req: FastifyRequest<{ Params: RepoParams }>, service: GitService) {
    const where = parseRepoPath(`${req.params.owner}/${req.params.space}/${req.params.repo}`);
    const actor = await authenticate(accounts, req);
    const repo = await repos.resolve(actor, where, service === 'receive-pack' ? 'write' : 'read');
    return { actor, repo };
  }

  function hosted(repo: RepoInfo): HostedRepo {
    return { id: repo.id, defaultBranch: repo.defaultBranch, label: `${repo.ownerName}/${repo.spaceName}/${repo.name}` };
  }

  function send(reply: FastifyReply, service: GitService, kind: 'advertisement' | 'result', res: GitResponse) {
    res.done.then((outcome) => {
      metrics.gitBytes.inc({ service, direction: 'in' }, outcome.bytesIn);
      metrics.gitBytes.inc({ service, direction: 'out' }, outcome.bytesOut);
      // A response streamed from the pack cache ran no git process of its own.
      if (!outcome.spawned) return;
      metrics.gitProcesses.inc({ service, outcome: outcome.code === 0 ? 'ok' : outcome.timedOut ? 'timeout' : 'failed' });
      if (outcome.code !== 0 && outcome.signal !== 'SIGTERM') {
        reply.log.warn({ service, exit_code: outcome.code, signal: outcome.signal, stderr: outcome.stderr.slice(-2000) }, 'git process failed');
      }
    });
    noCache(reply).code(200).type(`application/x-git-${service}-${kind}`);
    // An answer before the whole body arrived (a refusal in git's own terms): don't keep the
    // connection for the rest of it.
    if (!reply.request.raw.complete) reply.header('Connection', 'close');
    // The proxy keeps Content-Type and Cache-Control and sends the file named here.
    if (res.handoff) reply.header('x-accel-redirect', res.handoff);
    return reply.send(res.bytes ?? res.body);
  }

  app.get<{ Params: RepoParams; Querystring: { service?: string } }>(
    '/:owner/:space/:repo/info/refs',
    async (req, reply) => {
      const service = SERVICES[req.query.service ?? ''];
      try {
        if (!service) {
          throw new DomainError(
            'forbidden',
            'unsupported_service',
            req.query.service ? `unsupported service: ${req.query.service}` : 'dumb HTTP is not supported; use a git client with smart HTTP',
          );
        }
        const { repo } = await resolve(req, service);
        const signal = abortSignalOf(reply);
        const protocol = gitProtocolValue(req.headers['git-protocol'] as string | undefined);
        const res = await hostOf(repo).advertiseRefs(hosted(repo), { service, protocol }, signal);
        return send(reply, service, 'advertisement', res);
      } catch (err) {
        if (isDomainError(err)) return sendGitError(reply, err);
        throw err;
      }
    },
  );

  for (const [route, service] of Object.entries(SERVICES)) {
    app.post<{ Params: RepoParams }>(`/:owner/:space/:repo/${route}`, async (req, reply) => {
      try {
        const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
        if (contentType !== `application/x-git-${service}-request`) {
          throw invalid('bad_content_type', `expected content type application/x-git-${service}-request`);
        }
        const { actor, repo } = await resolve(req, service);
        const declared = Number(req.headers['content-length'] ?? NaN);
        if (service === 'receive-pack' && declared > deps.maxPushBytes) {
          throw tooLarge('push_too_large', `push of ${declared} bytes exceeds the limit of ${deps.maxPushBytes} bytes`);
        }
        const encoding = encodingOf(req);
        const signal = abortSignalOf(reply);
        const res = await hostOf(repo).statelessRpc(
          hosted(repo),
          {
            service,
            protocol: gitProtocolValue(req.headers['git-protocol'] as string | undefined),
            input: requestBody(req),
            encoding,
            pusher: { actorId: actorId(actor), actorName: actorName(actor), requestId: String(req.id) },
          },
          signal,
        );
        return send(reply, service, 'result', res);
      } catch (err) {
        if (isDomainError(err)) {
          // The body may still be arriving; don't keep the connection for the rest of it.
          if (!req.raw.complete) reply.header('Connection', 'close');
          return sendGitError(reply, err);
        }
        throw err;
      }
    });
  }
}

export function encodingOf(req: FastifyRequest): 'gzip' | undefined {
  const encoding = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
  if (encoding === '' || encoding === 'identity') return undefined;
  if (encoding === 'gzip' || encoding === 'x-gzip') return 'gzip';
  throw invalid('unsupported_encoding', `unsupported content encoding: ${encoding}`);
}
