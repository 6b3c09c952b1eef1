/**
 * A storage node's internal routes: its RepoHost (repos/host.ts) over HTTP, for the frontends'
 * RemoteRepoHost (repos/remote-host.ts). Every request must carry the cluster signature
 * (shared/cluster-signature.ts); its parameters travel in the signed `x-gitstratum-call`
 * header as JSON, the body is the client's git request as it arrived, the response git's output
 * as it is produced, and how git ended follows the body as the trailer `x-gitstratum-outcome`.
 * An error before the first byte is a status with `{ "error": { kind, code, message, fields } }`,
 * which the remote host raises again as the same domain error.
 */
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { GitResponse } from '../git/smart-http.js';
import type { HostedRepo, RepoHost } from '../repos/host.js';
import { CALL_HEADER, verifyReplicaToken, verifyRequest } from '../shared/cluster-signature.js';
import { DomainError, invalid, isDomainError, notFound, unauthenticated } from '../shared/errors.js';
import { afterPrefix } from '../shared/streams.js';
import { abortSignalOf, encodingOf } from './git-routes.js';
import { gitProtocolValue } from '../git/command.js';
import { statusOf } from './errors.js';

export const NODE_PREFIX = '/_node/v1';
/** The content type of a stateless-RPC body sent to a node. */
export const NODE_RPC_TYPE = 'application/x-gitstratum-rpc';
export const SESSION_PREAMBLE = Buffer.from('gitstratum-session\n');
export const OUTCOME_TRAILER = 'x-gitstratum-outcome';

export interface NodeRouteDeps {
  host: RepoHost;
  /** The cluster secret every request must be signed with. */
  secret: string;
  /**
   * The repository of an id, for replicas' fetches (their git names only the id); undefined
   * when it is not this shard's. Without it the replica routes are not served.
   */
  hostedRepo?: (id: string) => Promise<HostedRepo | undefined>;
  /**
   * A synchronous replica: fetches the given objects of a repository from its writer before
   * answering (replication/mirror.ts holdObjects). Without it the sync route is not served.
   */
  holdObjects?: (id: string, oids: string[], pack?: Buffer) => Promise<void>;
  /**
   * A writer's part in moving repositories (replication/move-copies.ts): copy one from another
   * shard's writer, or report its refs once no push of it runs. Without it the routes are not served.
   */
  moves?: {
    copy(id: string, from: string): Promise<{ refs: number; digest: string }>;
    quiesce(id: string, waitMs: number): Promise<{ refs: number; digest: string }>;
  };
}

/** Object ids per sync call: they travel in the signed call header, which must stay small. */
export const SYNC_OIDS_PER_CALL = 200;
/** The largest pack a sync call may carry (the writer sends larger transactions' objects by fetch). */
export const SYNC_PACK_MAX_BYTES = 8 * 1024 * 1024;

/** Where a replica's git fetches a repository from its writer: a Smart HTTP base URL (upload-pack only). */
export const REPLICA_PREFIX = `${NODE_PREFIX}/replicate`;

const ulid = z.string().regex(/^[0-9A-HJKMNP-TV-Z]{26}$/);
const service = z.enum(['upload-pack', 'receive-pack']);
const hostedRepo = z.object({ id: ulid, defaultBranch: z.string().min(1).max(255), label: z.string().max(400) });
const protocol = z.string().max(200).optional();
const oid = z.string().regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/);
const calls = {
  sync: z.object({ oids: z.array(oid).min(1).max(SYNC_OIDS_PER_CALL) }),
  moveCopy: z.object({ from: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/) }),
  moveQuiesce: z.object({ waitMs: z.number().int().min(0).max(600_000) }),
  create: z.object({ defaultBranch: z.string().min(1).max(255), forkOf: ulid.optional() }),
  remove: z.object({}),
  advertise: z.object({ repo: hostedRepo, service, protocol }),
  rpc: z.object({
    repo: hostedRepo,
    service,
    protocol,
    encoding: z.literal('gzip').optional(),
    open: z.literal(true).optional(),
    pusher: z.object({ actorId: z.string().max(64).nullable(), actorName: z.string().max(200), requestId: z.string().max(200) }),
  }),
  session: z.object({ repo: hostedRepo, protocol }),
};

/** The whole body, refused (413) past `limit` bytes. */
async function readBounded(body: AsyncIterable<Buffer>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new DomainError('too_large', 'sync_pack_too_large', `a sync call's pack may hold at most ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

function callOf<T extends z.ZodType>(req: FastifyRequest, schema: T): z.infer<T> {
  const raw = req.headers[CALL_HEADER];
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof raw === 'string' ? raw : '{}');
  } catch {
    throw invalid('bad_node_call', `${CALL_HEADER} is not JSON`);
  }
  const result = schema.safeParse(parsed);
  if (!result.success) throw invalid('bad_node_call', `${CALL_HEADER}: ${result.error.issues[0]?.message ?? 'invalid'}`);
  return result.data;
}

function idOf(req: FastifyRequest<{ Params: { id: string } }>): string {
  if (!ulid.safeParse(req.params.id).success) throw invalid('bad_node_call', 'not a repository id');
  return req.params.id;
}

export function sendNodeError(reply: FastifyReply, err: DomainError): FastifyReply {
  return reply.code(statusOf(err)).send({ error: { kind: err.kind, code: err.code, message: err.message, fields: err.fields } });
}

export function registerNodeRoutes(app: FastifyInstance, deps: NodeRouteDeps): void {
  const { host } = deps;
  if (deps.hostedRepo) registerReplicaRoutes(app, { ...deps, hostedRepo: deps.hostedRepo });
  app.register(async (node) => {
    // The body stays a stream: this parser hands Fastify nothing, the route reads req.raw.
    node.addContentTypeParser(NODE_RPC_TYPE, (_req, _payload, done) => done(null, undefined));
    node.addHook('onRequest', async (req, reply) => {
      const verdict = verifyRequest(deps.secret, { method: req.method, url: req.url, headers: req.headers });
      if (!verdict.ok) return sendNodeError(reply, unauthenticated('cluster_signature_required', `storage node: ${verdict.reason}`));
    });
    node.setErrorHandler((err, _req, reply) => {
      if (isDomainError(err)) return sendNodeError(reply, err);
      throw err;
    });

    node.post<{ Params: { id: string } }>(`${NODE_PREFIX}/repos/:id`, async (req, reply) => {
      const call = callOf(req, calls.create);
      await host.create({ id: idOf(req), defaultBranch: call.defaultBranch, forkOf: call.forkOf });
      return reply.code(204).send();
    });

    node.delete<{ Params: { id: string } }>(`${NODE_PREFIX}/repos/:id`, async (req, reply) => {
      callOf(req, calls.remove);
      await host.remove(idOf(req));
      return reply.code(204).send();
    });

    node.get<{ Params: { id: string } }>(`${NODE_PREFIX}/repos/:id/info/refs`, async (req, reply) => {
      const call = callOf(req, calls.advertise);
      if (call.repo.id !== idOf(req)) throw invalid('bad_node_call', 'repository id differs from the path');
      const res = await host.advertiseRefs(call.repo, { service: call.service, protocol: call.protocol }, abortSignalOf(reply));
      return stream(reply, res);
    });

    const { holdObjects } = deps;
    if (holdObjects) {
      node.post<{ Params: { id: string } }>(`${NODE_PREFIX}/sync/:id`, async (req, reply) => {
        const call = callOf(req, calls.sync);
        const pack = req.headers['content-type'] === NODE_RPC_TYPE ? await readBounded(req.raw, SYNC_PACK_MAX_BYTES) : undefined;
        await holdObjects(idOf(req), call.oids, pack);
        return reply.code(204).send();
      });
    }

    const { moves } = deps;
    if (moves) {
      node.post<{ Params: { id: string } }>(`${NODE_PREFIX}/moves/:id/copy`, async (req) => moves.copy(idOf(req), callOf(req, calls.moveCopy).from));
      node.post<{ Params: { id: string } }>(`${NODE_PREFIX}/moves/:id/quiesce`, async (req) => moves.quiesce(idOf(req), callOf(req, calls.moveQuiesce).waitMs));
    }

    node.post<{ Params: { id: string } }>(`${NODE_PREFIX}/repos/:id/rpc`, async (req, reply) => {
      const call = callOf(req, calls.rpc);
      if (call.repo.id !== idOf(req)) throw invalid('bad_node_call', 'repository id differs from the path');
      const res = await host.statelessRpc(
        call.repo,
        { service: call.service, protocol: call.protocol, encoding: call.encoding, open: call.open, input: req.raw, pusher: call.pusher },
        abortSignalOf(reply),
      );
      return stream(reply, res);
    });

    // A whole v0/v1 fetch conversation (git over SSH at a frontend): the request body is the
    // client's side and the response git's, both open at once (HTTP/1.1 carries them together).
    // The body starts with SESSION_PREAMBLE (remote-host.ts says why).
    node.post<{ Params: { id: string } }>(`${NODE_PREFIX}/repos/:id/session`, async (req, reply) => {
      const call = callOf(req, calls.session);
      if (call.repo.id !== idOf(req)) throw invalid('bad_node_call', 'repository id differs from the path');
      const input = afterPrefix(SESSION_PREAMBLE, 'a session body');
      pipeline(req.raw, input).catch(() => {});
      const res = await host.uploadPackSession(call.repo, { protocol: call.protocol, input }, abortSignalOf(reply));
      return stream(reply, res);
    });
  });
}

/**
 * Smart HTTP for replicas (issue 11; docs/design/replication.md): `git fetch` of one repository,
 * upload-pack only, authorized by a replica token for that repository (a header git sends on
 * each request of the fetch). Answers come from the writer's host, the pack cache included.
 */
function registerReplicaRoutes(app: FastifyInstance, deps: NodeRouteDeps & { hostedRepo: NonNullable<NodeRouteDeps['hostedRepo']> }): void {
  const { host, hostedRepo } = deps;
  app.register(async (replica) => {
    replica.addContentTypeParser('application/x-git-upload-pack-request', (_req, _payload, done) => done(null, undefined));
    replica.setErrorHandler((err, _req, reply) => {
      if (isDomainError(err)) return sendNodeError(reply, err);
      throw err;
    });
    const authorized = async (req: FastifyRequest<{ Params: { id: string } }>): Promise<HostedRepo> => {
      const id = idOf(req);
      const verdict = verifyReplicaToken(deps.secret, id, req.headers.authorization);
      if (!verdict.ok) throw unauthenticated('replica_token_required', `storage node: ${verdict.reason}`);
      const repo = await hostedRepo(id);
      if (!repo) throw notFound('repo_not_found', 'no such repository on this shard');
      return repo;
    };

    replica.get<{ Params: { id: string }; Querystring: { service?: string } }>(`${REPLICA_PREFIX}/:id/info/refs`, async (req, reply) => {
      const repo = await authorized(req);
      if (req.query.service !== 'git-upload-pack') throw invalid('bad_node_call', 'replicas fetch with git-upload-pack only');
      const protocol = gitProtocolValue(req.headers['git-protocol'] as string | undefined);
      const res = await host.advertiseRefs(repo, { service: 'upload-pack', protocol }, abortSignalOf(reply));
      return reply.code(200).type('application/x-git-upload-pack-advertisement').header('Cache-Control', 'no-cache').send(drain(res));
    });

    replica.post<{ Params: { id: string } }>(`${REPLICA_PREFIX}/:id/git-upload-pack`, async (req, reply) => {
      const repo = await authorized(req);
      const encoding = encodingOf(req);
      const res = await host.statelessRpc(
        repo,
        {
          service: 'upload-pack',
          protocol: gitProtocolValue(req.headers['git-protocol'] as string | undefined),
          input: req.raw,
          encoding,
          pusher: { actorId: null, actorName: 'replica', requestId: String(req.id) },
        },
        abortSignalOf(reply),
      );
      return reply.code(200).type('application/x-git-upload-pack-result').header('Cache-Control', 'no-cache').send(drain(res));
    });
  });
}

/** The response's body. A front proxy's hand-off names a file on this node's disk: no caller of a node can send it. */
function drain(res: GitResponse): GitResponse['body'] {
  if (res.handoff) throw new DomainError('unavailable', 'handoff_on_node', 'a storage node cannot hand a response to a front proxy');
  return res.body;
}

function stream(reply: FastifyReply, res: GitResponse): FastifyReply {
  const body = drain(res);
  reply.trailer(OUTCOME_TRAILER, async () => {
    const o = await res.done;
    return JSON.stringify({ code: o.code, signal: o.signal, timedOut: o.timedOut, spawned: o.spawned, stderr: o.stderr.slice(-2000) });
  });
  // The body may still be arriving when git answers (a refusal): don't keep the connection for the rest.
  if (!reply.request.raw.complete) reply.header('Connection', 'close');
  return reply.code(200).type('application/octet-stream').send(body);
}
