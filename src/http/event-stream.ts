/**
 * `GET /api/v1/events?repo=OWNER/SPACE/REPO` (or `space=OWNER/SPACE`, or `owner=OWNER`): the
 * repository events of that scope as Server-Sent Events (events/stream.ts), each `id:` its
 * outbox id, `event:` its kind, `data:` the same JSON a webhook receives. A repository's stream
 * needs read access to it; an owner's or a space's sends the events of the repositories the
 * caller can read (checked again every PERMISSION_TTL_MS). `Last-Event-ID` resumes after that
 * event, as far back as events are kept (webhookRetentionDays). A comment line every
 * HEARTBEAT_MS keeps proxies from closing an idle stream; a client that falls MAX_QUEUED events
 * behind is disconnected (it resumes where it was with Last-Event-ID). Each client (a user, or
 * an address) may hold `maxStreams` streams on one server.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Actor } from '../access/policy.js';
import { clientOf } from './rate-limit.js';
import type { EventHub } from '../events/stream.js';
import type { StoredEvent } from '../meta/webhooks.js';
import type { RepoService } from '../repos/service.js';
import { invalid, rateLimited } from '../shared/errors.js';

const HEARTBEAT_MS = 15_000;
const PERMISSION_TTL_MS = 30_000;
const MAX_QUEUED = 1_000;

export interface EventStreamDeps {
  hub: EventHub;
  repos: RepoService;
  actorOf(req: FastifyRequest): Promise<Actor>;
  /** Streams one client may hold open on this server. */
  maxStreams: number;
}

export function registerEventStream(api: FastifyInstance, schema: object, deps: EventStreamDeps): void {
  const { hub, repos } = deps;
  const open = new Map<string, number>();
  const ending = new Set<() => void>();
  api.addHook('preClose', async () => {
    for (const end of [...ending]) end();
    hub.close();
  });

  api.get<{ Querystring: { repo?: string; space?: string; owner?: string } }>('/events', { schema }, async (req, reply) => {
    const actor = await deps.actorOf(req);
    const given = (['repo', 'space', 'owner'] as const).filter((k) => req.query[k] !== undefined);
    if (given.length !== 1) throw invalid('invalid_stream_scope', 'name exactly one of repo=OWNER/SPACE/REPO, space=OWNER/SPACE or owner=OWNER');
    const kind = given[0]!;
    const path = req.query[kind]!;
    if ((kind === 'repo' ? 3 : kind === 'space' ? 2 : 1) !== path.split('/').length) throw invalid('invalid_stream_scope', `${kind}= takes ${kind === 'repo' ? 'OWNER/SPACE/REPO' : kind === 'space' ? 'OWNER/SPACE' : 'OWNER'}`);
    // A repository's stream needs read access to it; an owner's or space's filters by repository.
    const scope = await repos.resolveScope(actor, path, kind === 'repo' ? 'read' : 'none');
    const lastHeader = req.headers['last-event-id'];
    const last = typeof lastHeader === 'string' && /^\d{1,15}$/.test(lastHeader.trim()) ? Number(lastHeader.trim()) : undefined;
    const client = clientOf(actor.kind === 'user' ? actor : { kind: 'anonymous' }, req.ip ?? 'unknown');
    const held = open.get(client.key) ?? 0;
    if (held >= deps.maxStreams) throw rateLimited('too_many_streams', `${client.label} has ${deps.maxStreams} event streams open on this server already; close one first`, 5, { limit: 'event_streams' });
    open.set(client.key, held + 1);

    const readable = new Map<string, { ok: boolean; until: number }>();
    const mayRead = async (repoId: string): Promise<boolean> => {
      if (kind === 'repo') return true;
      const known = readable.get(repoId);
      if (known && known.until > Date.now()) return known.ok;
      const ok = await repos.canRead(actor, repoId);
      readable.set(repoId, { ok, until: Date.now() + PERMISSION_TTL_MS });
      return ok;
    };

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(`retry: 2000\n: streaming ${kind} ${scope.label}\n\n`);

    const queue: StoredEvent[] = [];
    let draining = false;
    let ended = false;
    let unsubscribe: (() => void) | undefined;
    const heartbeat = setInterval(() => res.write(': ping\n\n'), HEARTBEAT_MS);
    heartbeat.unref();
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(heartbeat);
      unsubscribe?.();
      ending.delete(end);
      const left = (open.get(client.key) ?? 1) - 1;
      if (left > 0) open.set(client.key, left);
      else open.delete(client.key);
      res.end();
    };
    ending.add(end);
    res.on('close', end);

    const drain = async () => {
      if (draining) return;
      draining = true;
      try {
        while (queue.length > 0 && !ended) {
          const e = queue.shift()!;
          if (!(await mayRead(e.repositoryId))) continue;
          const ok = res.write(`id: ${e.id}\nevent: ${e.kind}\ndata: ${JSON.stringify(e.payload)}\n\n`);
          if (!ok) await new Promise((resolve) => res.once('drain', resolve));
        }
      } catch (err) {
        req.log.error({ err }, 'event stream failed');
        end();
      } finally {
        draining = false;
      }
    };
    try {
      unsubscribe = await hub.subscribe(
        {
          scope: { ownerId: scope.ownerId, spaceId: scope.spaceId ?? undefined, repositoryId: scope.repositoryId ?? undefined },
          send: (e) => {
            if (ended) return;
            if (queue.length >= MAX_QUEUED) {
              req.log.info({ queued: queue.length }, 'event stream client too slow; disconnected (it resumes with Last-Event-ID)');
              end();
              return;
            }
            queue.push(e);
            void drain();
          },
        },
        last ?? (await hub.head()),
      );
      if (ended) unsubscribe();
    } catch (err) {
      req.log.error({ err }, 'event stream could not start');
      end();
    }
  });
}
