/**
 * The RepoHost of a storage node reached over HTTP (host.ts; the node's side is
 * http/node-routes.ts). Requests are signed with the cluster secret; bodies and responses
 * stream both ways with back-pressure (undici), so a pack never sits in this process's memory.
 *
 * How git ended on the node arrives after the body, as a trailer; a response cut before it
 * (node gone, connection lost) settles `done` with no exit code, and the client sees the
 * truncated stream fail, as it would with git dying in this process. A node that cannot be
 * reached is `unavailable` (503 with Retry-After at the edge), before any byte was sent.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Agent, request, type Dispatcher } from 'undici';
import type { GitResponse, Outcome } from '../git/smart-http.js';
import { signRequest } from '../shared/cluster-signature.js';
import { DomainError, invalid, unavailable, type ErrorKind } from '../shared/errors.js';
import { counting } from '../shared/streams.js';
import type { GitCall, HostedRepo, NewRepo, RepoHost, RpcCall, SessionCall } from './host.js';

// Mirrors http/node-routes.ts (repos/ does not import http/).
const NODE_PREFIX = '/_node/v1';
const NODE_RPC_TYPE = 'application/x-gitstratum-rpc';
const SESSION_PREAMBLE = Buffer.from('gitstratum-session\n');
const OUTCOME_TRAILER = 'x-gitstratum-outcome';
const SYNC_OIDS_PER_CALL = 200;
const KINDS: readonly ErrorKind[] = ['not_found', 'conflict', 'invalid', 'unauthenticated', 'forbidden', 'too_large', 'unavailable', 'rate_limited'];

export interface RemoteHostOptions {
  /** The node's internal URL (its `--advertise-url`). */
  url: string;
  /** The cluster secret. */
  secret: string;
  /** How long to wait for a connection and for the node's first response byte (default 10 s). */
  connectTimeoutMs?: number;
}

export class RemoteRepoHost implements RepoHost {
  private readonly base: URL;
  private readonly dispatcher: Dispatcher;

  constructor(private readonly opts: RemoteHostOptions) {
    this.base = new URL(opts.url);
    const timeout = opts.connectTimeoutMs ?? 10_000;
    // A push's body can pause for as long as the client's does: the edge bounds that, not this.
    this.dispatcher = new Agent({ connect: { timeout }, headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 10_000 });
  }

  location(id: string): string {
    return `${id} on ${this.base.origin}`;
  }

  async create(repo: NewRepo): Promise<void> {
    await this.call('POST', `/repos/${repo.id}`, { defaultBranch: repo.defaultBranch, ...(repo.forkOf && { forkOf: repo.forkOf }) });
  }

  async remove(id: string): Promise<void> {
    await this.call('DELETE', `/repos/${id}`, {});
  }

  advertiseRefs(repo: HostedRepo, call: GitCall, signal: AbortSignal): Promise<GitResponse> {
    return this.stream('GET', `/repos/${repo.id}/info/refs`, { repo, service: call.service, ...(call.protocol && { protocol: call.protocol }) }, undefined, signal);
  }

  statelessRpc(repo: HostedRepo, call: RpcCall, signal: AbortSignal): Promise<GitResponse> {
    const params = {
      repo,
      service: call.service,
      ...(call.protocol && { protocol: call.protocol }),
      ...(call.encoding && { encoding: call.encoding }),
      ...(call.open && { open: true }),
      pusher: call.pusher,
    };
    return this.stream('POST', `/repos/${repo.id}/rpc`, params, call.input, signal);
  }

  /**
   * A whole v0/v1 fetch conversation on the node (git over SSH): the client's lines go up the
   * request body while git's answers come down the response, as they are written. The client
   * says nothing until it has git's advertisement, and undici sends a request's head with its
   * body's first bytes, so the body starts with a preamble the node takes off.
   */
  uploadPackSession(repo: HostedRepo, call: SessionCall, signal: AbortSignal): Promise<GitResponse> {
    return this.stream('POST', `/repos/${repo.id}/session`, { repo, ...(call.protocol && { protocol: call.protocol }) }, call.input, signal, SESSION_PREAMBLE);
  }

  /**
   * Has a synchronous replica hold these objects of a repository, returning once it does
   * (http/node-routes.ts, the sync route), in calls of SYNC_OIDS_PER_CALL: from `pack` (the
   * transaction's new objects, sent along) and, for whatever it still lacks, by fetching them
   * from its writer.
   */
  async holdObjects(id: string, oids: readonly string[], signal?: AbortSignal, pack?: Buffer): Promise<void> {
    for (let i = 0; i < oids.length; i += SYNC_OIDS_PER_CALL) {
      // The pack rides with the first call; the replica fetches whatever it leaves missing.
      const body = i === 0 && pack && pack.length > 0 ? Readable.from([pack]) : undefined;
      const res = await this.send('POST', `/sync/${id}`, { oids: oids.slice(i, i + SYNC_OIDS_PER_CALL) }, body, signal);
      await res.body.dump();
    }
  }

  /**
   * Has the node (the target shard's writer) copy a repository from the writer of shard
   * `from`, or bring its copy up to date; the copy's refs (replication/move-copies.ts).
   */
  async moveCopy(id: string, from: string, signal?: AbortSignal): Promise<{ refs: number; digest: string }> {
    return (await (await this.send('POST', `/moves/${id}/copy`, { from }, undefined, signal)).body.json()) as { refs: number; digest: string };
  }

  /** Waits (up to `waitMs`) until no push of the repository runs on the node (its writer); its refs then. */
  async moveQuiesce(id: string, waitMs: number, signal?: AbortSignal): Promise<{ refs: number; digest: string }> {
    return (await (await this.send('POST', `/moves/${id}/quiesce`, { waitMs }, undefined, signal)).body.json()) as { refs: number; digest: string };
  }

  /** Closes the connections to the node. */
  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async send(method: 'GET' | 'POST' | 'DELETE', route: string, params: object, body: Readable | undefined, signal?: AbortSignal) {
    const pathAndQuery = `${this.base.pathname.replace(/\/+$/, '')}${NODE_PREFIX}${route}`;
    const headers: Record<string, string> = { ...signRequest(this.opts.secret, method, pathAndQuery, JSON.stringify(params)), te: 'trailers' };
    if (body) headers['content-type'] = NODE_RPC_TYPE;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(new URL(pathAndQuery, this.base), { method, headers, body: body ?? null, signal, dispatcher: this.dispatcher });
    } catch (err) {
      if (signal?.aborted) throw invalid('client_gone', 'client closed the request before it was complete');
      throw unavailable('storage_node_unreachable', `storage node ${this.base.origin} cannot be reached: ${(err as Error).message}`);
    }
    if (res.statusCode >= 300) throw await nodeError(res, this.base.origin);
    return res;
  }

  private async call(method: 'POST' | 'DELETE', route: string, params: object, signal?: AbortSignal): Promise<void> {
    const res = await this.send(method, route, params, undefined, signal);
    await res.body.dump();
  }

  private async stream(method: 'GET' | 'POST', route: string, params: object, input: Readable | undefined, signal: AbortSignal, preamble?: Buffer): Promise<GitResponse> {
    const sent = input ? counting() : undefined;
    if (preamble) sent?.write(preamble);
    // A client that goes away mid-body fails the upload, so the node sees the request cut.
    if (input && sent) pipeline(input, sent).catch(() => {});
    const res = await this.send(method, route, params, sent, signal);
    const bytesIn = () => (sent?.bytes ?? 0) - (preamble?.length ?? 0);
    const body = counting();
    const done = pipeline(res.body, body).then(
      () => outcomeOf(res.trailers[OUTCOME_TRAILER], bytesIn(), body.bytes),
      (err: Error): Outcome => ({ ...CUT, stderr: `response from the storage node cut short: ${err.message}`, bytesIn: bytesIn(), bytesOut: body.bytes }),
    );
    return { body, done };
  }
}

const CUT: Outcome = { code: null, signal: null, stderr: '', timedOut: false, bytesIn: 0, bytesOut: 0, commands: [], spawned: true };

function outcomeOf(trailer: string | string[] | undefined, bytesIn: number, bytesOut: number): Outcome {
  try {
    const o = JSON.parse(typeof trailer === 'string' ? trailer : '') as Partial<Outcome>;
    return {
      code: typeof o.code === 'number' ? o.code : null,
      signal: typeof o.signal === 'string' ? (o.signal as NodeJS.Signals) : null,
      stderr: typeof o.stderr === 'string' ? o.stderr : '',
      timedOut: o.timedOut === true,
      bytesIn,
      bytesOut,
      commands: [],
      spawned: o.spawned !== false,
    };
  } catch {
    return { ...CUT, stderr: 'the storage node sent no outcome', bytesIn, bytesOut };
  }
}

async function nodeError(res: Dispatcher.ResponseData, origin: string): Promise<DomainError> {
  const text = await res.body.text().catch(() => '');
  try {
    const { error } = JSON.parse(text) as { error: { kind: ErrorKind; code: string; message: string; fields?: Record<string, unknown> } };
    // Not the client's credentials: this frontend's. Its client can only wait for an operator.
    if (error.code === 'cluster_signature_required') {
      return unavailable('storage_node_refused', `storage node ${origin} refused this frontend (${error.message}); is the cluster secret the same?`);
    }
    if (KINDS.includes(error.kind) && typeof error.code === 'string' && typeof error.message === 'string') {
      return new DomainError(error.kind, error.code, error.message, error.fields ?? {});
    }
  } catch {
    // Not a node's answer: a proxy's page, or something else listening there.
  }
  return unavailable('storage_node_failed', `storage node ${origin} answered ${res.statusCode}`);
}
