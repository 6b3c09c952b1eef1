/**
 * The budget of every client (issue 9, item 1): one `onRequest` hook in front of every route
 * but the health and metrics endpoints decides whom a request is charged to, then charges it.
 *
 * Whom: the user of a valid token; otherwise the client's address (Fastify's `req.ip`, which
 * honours `trustProxy`; an IPv6 address by its /64, which one host usually holds whole). A
 * request with a bad token is charged to its address, so spraying random tokens buys nothing,
 * and each failed authentication also spends the address's (smaller) auth-failure budget:
 * once that is gone, every request from the address that presents credentials is refused
 * without looking them up, until the window ends. The hook authenticates through
 * `authenticate()` (auth.ts), which remembers the answer, so the route reuses it.
 *
 * What: requests per window, separately for git, LFS and the API (rate-limiter-flexible; in
 * memory, or in Redis when `redisUrl` is set so every frontend spends the same budget, with a
 * memory limiter as insurance while Redis is unreachable: a Redis outage never fails a
 * request). And requests in flight, in total (over the cap: 429) and for git (each git request
 * runs at most one git process; over the cap a request waits in the client's own queue),
 * counted per server process: they bound what one client holds of this server's slots, which
 * a shared count would not bound any better.
 *
 * Over a limit: 429 with `Retry-After`, in the shape the client prints (git: text/plain;
 * git-lfs: the LFS JSON `message`, and it retries after `Retry-After`; the API: its JSON).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Redis } from 'ioredis';
import { Counter, Gauge, type Registry } from 'prom-client';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Accounts } from '../access/accounts.js';
import { Limiter, type LimiterOptions } from '../git/limiter.js';
import { looksLikeJwt } from '../lfs/signing.js';
import type { Logger } from '../shared/log.js';
import { isDomainError, rateLimited, type DomainError } from '../shared/errors.js';
import { authenticate, presentedSecret } from './auth.js';
import { paceBody } from './body.js';
import { sendGitError, sendJsonError } from './errors.js';
import { sendLfsError } from './lfs-routes.js';
import { GIT_ROUTE } from './server.js';

export type RequestClass = 'git' | 'lfs' | 'api';

/** The label of `gitstratum_rate_limited_total`: which limit refused. */
export type LimitName = RequestClass | 'auth_failures' | 'concurrent_requests' | 'concurrent_git';

/** Every count is per client; 0 means no limit. */
export interface BudgetSettings {
  windowSeconds: number;
  requests: Record<RequestClass, number>;
  authFailures: number;
  concurrentRequests: number;
  /** Git requests in flight per client; more wait in the client's queue. */
  concurrentGit: number;
  /** That queue: how many may wait, and for how long, before 429. */
  gitQueue: { maxWaiting: number; timeoutMs: number };
  /** Pieces (HTTP chunks, network reads) of git and LFS upload bodies taken per second per client; beyond it reading waits. */
  bodyChunksPerSecond: number;
}

export interface BudgetDeps {
  accounts: Pick<Accounts, 'authenticate'>;
  registry: Registry;
  log: Logger;
  /** Shares the per-window budgets among frontends; see connectRedis. */
  redis?: Redis | undefined;
  redisKeyPrefix?: string;
}

/** How long the refusals of a client far over its budget are held back, and how many at once. */
const SLOWED_MS = 1000;
const SLOWED_PER_CLIENT = 32;

/** Never budgeted: probes and scrapers must see the server as it is, even under attack. */
const EXEMPT = new Set(['/healthz', '/readyz', '/metrics']);
const LFS_ROUTE = /^\/:owner\/:space\/:repo\/info\/lfs\//;

export function requestClass(routeUrl: string | undefined): RequestClass | undefined {
  if (routeUrl !== undefined && EXEMPT.has(routeUrl)) return undefined;
  if (routeUrl !== undefined && GIT_ROUTE.test(routeUrl)) return 'git';
  if (routeUrl !== undefined && LFS_ROUTE.test(routeUrl)) return 'lfs';
  // The API and everything else, unmatched paths included: they cost little, but not nothing.
  return 'api';
}

/**
 * The key of an anonymous client. IPv6 hosts are usually given a whole /64, so one address
 * per request would be a fresh budget per request; an IPv4-mapped address is its IPv4.
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!ip.includes(':')) return ip;
  const [head = '', tail = ''] = ip.split('%')[0]!.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

/**
 * A Redis client for the shared budgets. Commands fail at once while it is disconnected (no
 * offline queue), so the memory insurance answers instead of a request waiting on Redis;
 * ioredis keeps reconnecting in the background.
 */
export function connectRedis(url: string, log: Logger): Redis {
  // commandTimeout: a Redis that accepts commands but stops answering must not hold requests
  // either; the timed-out command falls back to the insurance limiter.
  const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 1000 });
  let down = false;
  redis.on('error', (err: Error) => {
    // ioredis reports every reconnect attempt; one line per outage is enough.
    if (!down) log.warn({ err: err.message }, 'redis unreachable: rate limits counted in memory until it is back');
    down = true;
  });
  redis.on('ready', () => {
    if (down) log.info('redis reachable again: rate limits shared');
    down = false;
  });
  return redis;
}

/**
 * Resolves once `redis` is ready, or after `ms` whatever its state: a server starting while
 * Redis is down serves on its memory insurance rather than not at all, but one starting with
 * Redis up shares the budget from its first request.
 */
export function redisReady(redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    redis.once('ready', done);
  });
}

/** Per-key counters of requests in flight in this process. */
class InFlight {
  private readonly counts = new Map<string, number>();

  /** A release function, or undefined when `key` already has `max` in flight. */
  tryAcquire(key: string, max: number): (() => void) | undefined {
    const held = this.counts.get(key) ?? 0;
    if (max > 0 && held >= max) return undefined;
    this.counts.set(key, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left > 0) this.counts.set(key, left);
      else this.counts.delete(key);
    };
  }

  get size(): number {
    return this.counts.size;
  }
}

/**
 * Git requests in flight per client. Over the cap a request waits, in the client's own FIFO
 * queue (bounded like the server's git queue), rather than failing: a CI fleet behind one
 * address that starts more clones at once than the cap gets them all, a few later; one client
 * never holds every git process of the server meanwhile.
 */
class ClientGitSlots {
  private readonly byClient = new Map<string, Limiter>();

  constructor(private readonly opts: LimiterOptions) {}

  /** A release function; rejects when the client's queue is full, the wait timed out or `signal` aborted. */
  async acquire(key: string, signal: AbortSignal): Promise<() => void> {
    let limiter = this.byClient.get(key);
    if (!limiter) {
      limiter = new Limiter(this.opts);
      this.byClient.set(key, limiter);
    }
    const forgetIfIdle = (l: Limiter) => {
      if (l.runningCount === 0 && l.queuedCount === 0 && this.byClient.get(key) === l) this.byClient.delete(key);
    };
    try {
      const release = await limiter.acquire(signal);
      const l = limiter;
      return () => {
        release();
        forgetIfIdle(l);
      };
    } catch (err) {
      forgetIfIdle(limiter);
      throw err;
    }
  }
}

/**
 * A token bucket per client of the pieces its request bodies arrive in, shared by its
 * requests in this process: a second's worth may come at once, then `rate` a second. Taking a
 * piece over the budget answers how long to wait (at least 10 ms, so a paced stream wakes up
 * to a batch of pieces, not one). Buckets left full for a while are forgotten.
 */
export class ChunkBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private sweptAt: number;

  constructor(
    private readonly rate: number,
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.sweptAt = clock();
  }

  /** Takes one piece for `key`; milliseconds to wait before reading it (0: at once). */
  take(key: string): number {
    const now = this.clock();
    this.sweep(now);
    const b = this.buckets.get(key) ?? { tokens: this.rate, at: now };
    b.tokens = Math.min(this.rate, b.tokens + ((now - b.at) * this.rate) / 1000) - 1;
    b.at = now;
    this.buckets.set(key, b);
    return b.tokens >= 0 ? 0 : Math.max(10, Math.ceil((-b.tokens * 1000) / this.rate));
  }

  get size(): number {
    return this.buckets.size;
  }

  private sweep(now: number): void {
    if (now - this.sweptAt < 10_000) return;
    this.sweptAt = now;
    // Full again after a second without pieces: the same as no bucket.
    for (const [key, b] of this.buckets) if (now - b.at > 1000) this.buckets.delete(key);
  }
}

/** Whom a request is charged to: a user (`u:ID`) or, anonymous, an address (`a:ADDRESS`). */
export interface Client {
  key: string;
  /** How messages name the client. */
  label: string;
}

/**
 * The budgets of every client, for any transport: the HTTP edge's hook below spends them per
 * request, the SSH server per command. Each refusal is a `rate_limited` error to send.
 */
export interface Budget {
  /** Spends one request of the class; the refusal when the client's window is spent. */
  charge(client: Client, cls: RequestClass): Promise<DomainError | undefined>;
  /** One request in flight, released by `call`; or the refusal over the client's cap. */
  holdRequest(client: Client): { call: () => void } | DomainError;
  /** A git slot of the client (waiting in its queue), released by `call`; or the refusal. */
  holdGit(client: Client, signal: AbortSignal): Promise<{ call: () => void } | DomainError>;
  /** The refusal when the address has spent its budget of failed authentications. */
  authBlocked(address: string): Promise<DomainError | undefined>;
  /** Spends one failed authentication of the address's budget. */
  authFailed(address: string): Promise<void>;
}

/** The client an SSH connection or an HTTP request is charged to. */
export function clientOf(actor: { kind: string; userId?: string; name?: string }, address: string): Client {
  if (actor.kind === 'user' && actor.userId) return { key: `u:${actor.userId}`, label: `user ${actor.name}` };
  const a = addressKey(address);
  return { key: `a:${a}`, label: `address ${a}` };
}

export function registerBudget(app: FastifyInstance, settings: BudgetSettings, deps: BudgetDeps): Budget {
  const { accounts, log } = deps;
  const prefix = `${deps.redisKeyPrefix ?? 'gitstratum:'}rl:`;
  const rejected = new Counter({
    name: 'gitstratum_rate_limited_total',
    help: 'Requests refused with 429, by the limit that refused them',
    labelNames: ['limit'] as const,
    registers: [deps.registry],
  });
  const inFlight = new InFlight();
  const releases = new WeakMap<FastifyRequest, () => void>();
  const pieces = settings.bodyChunksPerSecond > 0 ? new ChunkBuckets(settings.bodyChunksPerSecond) : undefined;
  const paced = new Counter({
    name: 'gitstratum_body_paced_total',
    help: 'Times a request body was read more slowly because its client sent more pieces per second than maxBodyChunksPerSecondPerClient',
    registers: [deps.registry],
  });
  const gitSlots = settings.concurrentGit > 0 ? new ClientGitSlots({ maxRunning: settings.concurrentGit, maxQueue: settings.gitQueue.maxWaiting, queueTimeoutMs: settings.gitQueue.timeoutMs }) : undefined;
  new Gauge({
    name: 'gitstratum_rate_limit_clients_in_flight',
    help: 'Clients (users or addresses) with a request in flight on this server',
    registers: [deps.registry],
    collect() {
      this.set(inFlight.size);
    },
  });

  function limiter(name: string, points: number): RateLimiterAbstract | undefined {
    if (points <= 0) return undefined;
    const opts = { points, duration: settings.windowSeconds };
    const memory = new RateLimiterMemory({ ...opts, keyPrefix: `${prefix}${name}` });
    if (!deps.redis) return memory;
    return new RateLimiterRedis({
      ...opts,
      storeClient: deps.redis,
      keyPrefix: `${prefix}${name}`,
      insuranceLimiter: memory,
      rejectIfRedisNotReady: true,
    });
  }
  const perClass: Record<RequestClass, RateLimiterAbstract | undefined> = {
    git: limiter('git', settings.requests.git),
    lfs: limiter('lfs', settings.requests.lfs),
    api: limiter('api', settings.requests.api),
  };
  const authFailures = limiter('auth', settings.authFailures);

  const seconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));
  const what: Record<RequestClass, string> = { git: 'git requests', lfs: 'git lfs requests', api: 'api requests' };

  /** Spends one point; the refusal to send, or undefined. A store error lets the request through. */
  async function spend(rl: RateLimiterAbstract, key: string): Promise<RateLimiterRes | undefined> {
    try {
      await rl.consume(key);
      return undefined;
    } catch (err) {
      if (err instanceof RateLimiterRes) return err;
      log.error({ err }, 'rate limiter failed; request let through');
      return undefined;
    }
  }

  async function authFailuresSpent(address: string): Promise<RateLimiterRes | undefined> {
    if (!authFailures) return undefined;
    const res = await authFailures.get(address).catch(() => null);
    return res && res.consumedPoints >= settings.authFailures ? res : undefined;
  }

  /**
   * Whom to charge, or the refusal when the address has spent its auth-failure budget. An
   * LFS transfer authorization (a JWT from a batch answer) is charged to the address: it
   * names the user only once the route has verified it against the object.
   */
  async function identify(req: FastifyRequest, cls: RequestClass): Promise<Client | DomainError> {
    // req.ip is undefined once the socket is gone (a client that hung up at once).
    const address = addressKey(req.ip ?? 'unknown');
    const anonymousClient = clientOf({ kind: 'anonymous' }, req.ip ?? 'unknown');
    let secret: string | undefined;
    try {
      secret = presentedSecret(req.headers.authorization);
    } catch {
      secret = '';
    }
    if (secret === undefined || (cls === 'lfs' && looksLikeJwt(secret))) return anonymousClient;
    const spent = await authFailuresSpent(address);
    if (spent) return authFailureRefusal(address, spent);
    try {
      const actor = await authenticate(accounts, req);
      return actor.kind === 'user' ? clientOf(actor, req.ip ?? 'unknown') : anonymousClient;
    } catch (err) {
      // Anything but a refused credential (the database is down) is the route's to report.
      if (!isDomainError(err) || err.kind !== 'unauthenticated' || !authFailures) return anonymousClient;
      const over = await spend(authFailures, address);
      return over ? authFailureRefusal(address, over) : anonymousClient;
    }
  }

  const slowed = new Counter({
    name: 'gitstratum_rate_limit_slowed_total',
    help: 'Refusals answered after a pause because the client kept sending at over twice its budget (it ignores Retry-After)',
    labelNames: ['limit'] as const,
    registers: [deps.registry],
  });
  /** Per client: refusals being held back now (at most SLOWED_PER_CLIENT; beyond, at once). */
  const holding = new InFlight();

  const budget: Budget = {
    async charge(client, cls) {
      const rl = perClass[cls];
      const over = rl && (await spend(rl, client.key));
      if (!over) return undefined;
      rejected.inc({ limit: cls });
      // A client that keeps sending at twice its budget ignores Retry-After: its refusals
      // come a moment later, so one such client, alone, cannot keep the event loop busy
      // answering it (bench:abuse's push flood sent 600 refused requests a second).
      const release = over.consumedPoints > 2 * settings.requests[cls] ? holding.tryAcquire(client.key, SLOWED_PER_CLIENT) : undefined;
      if (release) {
        slowed.inc({ limit: cls });
        await sleep(Math.min(SLOWED_MS, over.msBeforeNext));
        release();
      }
      const wait = seconds(over.msBeforeNext);
      return rateLimited(
        'rate_limited',
        `rate limit exceeded: ${settings.requests[cls]} ${what[cls]} per ${settings.windowSeconds} s for ${client.label}; retry in ${wait} s`,
        wait,
        { limit: cls },
      );
    },
    holdRequest(client) {
      const release = inFlight.tryAcquire(client.key, settings.concurrentRequests);
      if (release) return { call: release };
      rejected.inc({ limit: 'concurrent_requests' });
      const message = `too many concurrent requests for ${client.label} (at most ${settings.concurrentRequests}); retry when one has finished`;
      return rateLimited('too_many_concurrent', message, 1, { limit: 'concurrent_requests' });
    },
    async holdGit(client, signal) {
      if (!gitSlots) return { call: () => {} };
      try {
        return { call: await gitSlots.acquire(client.key, signal) };
      } catch {
        if (!signal.aborted) rejected.inc({ limit: 'concurrent_git' });
        const message = `too many concurrent git requests for ${client.label} (at most ${settings.concurrentGit} at once, more wait up to ${settings.gitQueue.timeoutMs / 1000} s); retry later`;
        return rateLimited('too_many_concurrent', message, 5, { limit: 'concurrent_git' });
      }
    },
    async authBlocked(address) {
      const key = addressKey(address);
      const spent = await authFailuresSpent(key);
      return spent && authFailureRefusal(key, spent);
    },
    async authFailed(address) {
      if (authFailures) await spend(authFailures, addressKey(address));
    },
  };

  function authFailureRefusal(address: string, res: RateLimiterRes): DomainError {
    rejected.inc({ limit: 'auth_failures' });
    const wait = seconds(res.msBeforeNext);
    return rateLimited(
      'too_many_auth_failures',
      `too many failed authentications from address ${address}; credentials from it are refused for ${wait} s`,
      wait,
      { limit: 'auth_failures' },
    );
  }

  function refuse(req: FastifyRequest, reply: FastifyReply, cls: RequestClass, err: DomainError): FastifyReply {
    // The request line (server.ts) has the status and address; this adds which limit, when asked.
    req.log.debug({ code: err.code, limit: err.fields['limit'] }, 'request over budget');
    // A body may still be arriving (a push); don't keep the connection for the rest of it.
    if (!req.raw.complete) reply.header('Connection', 'close');
    if (cls === 'git') return sendGitError(reply, err);
    if (cls === 'lfs') return sendLfsError(req, reply, err);
    return sendJsonError(reply, err);
  }

  app.addHook('onRequest', async (req, reply) => {
    const cls = requestClass(req.routeOptions.url);
    if (!cls) return;
    const client = await identify(req, cls);
    if (!('key' in client)) return refuse(req, reply, cls, client);

    const over = await budget.charge(client, cls);
    if (over) return refuse(req, reply, cls, over);
    const releaseRequest = budget.holdRequest(client);
    if (!('call' in releaseRequest)) return refuse(req, reply, cls, releaseRequest);
    // Everything this request holds, given back once, when its response closes (or, as
    // inject() may not emit 'close', when it has been sent).
    const held = [releaseRequest.call];
    let ended = false;
    const release = () => {
      ended = true;
      for (const give of held.splice(0)) give();
    };
    releases.set(req, release);
    reply.raw.once('close', release);
    if (pieces && cls !== 'api') {
      const key = client.key;
      paceBody(req, () => {
        const wait = pieces.take(key);
        if (wait > 0) paced.inc();
        return wait;
      });
    }

    if (cls === 'git') {
      const gone = new AbortController();
      // Only while the slot is awaited: an abort makes a DOMException, a cost on every request.
      const leave = () => gone.abort();
      reply.raw.once('close', leave);
      const slot = await budget.holdGit(client, gone.signal);
      reply.raw.off('close', leave);
      if (gone.signal.aborted) {
        if ('call' in slot) slot.call();
        return reply;
      }
      if (!('call' in slot)) return refuse(req, reply, cls, slot);
      held.push(slot.call);
      // The slot came as the client left: nothing will run in it.
      if (ended) release();
    }
  });
  app.addHook('onResponse', async (req) => releases.get(req)?.());
  return budget;
}
