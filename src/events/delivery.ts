/**
 * Sends webhook deliveries (meta/webhooks.ts holds them). Every process that runs background
 * work (`serve`, `gitstratum worker`) runs one Deliverer; each claims due deliveries with a
 * lease, so of several processes one sends a given delivery, and a process that dies mid-send
 * leaves its lease to expire and another to send it again (receivers tell repeats apart by
 * the delivery id header).
 *
 * An attempt POSTs the event's JSON with GitHub-style headers and its signature
 * (`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body with the hook's secret>`), waits at
 * most `timeoutMs`, follows no redirect and reads at most RESPONSE_EXCERPT_BYTES of the answer.
 * A 2xx answer delivers it; anything else is tried again after an exponential backoff with
 * jitter, up to `maxAttempts`. A hook failing `disableAfterFailures` times in a row is turned
 * off (audited); its later events are not delivered until it is turned on again.
 */
import { createHmac } from 'node:crypto';
import { Counter, Histogram, type Registry } from 'prom-client';
import { Agent, request } from 'undici';
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { appendAudit } from '../meta/audit.js';
import * as w from '../meta/webhooks.js';
import type { Logger } from '../shared/log.js';
import { Alarm, IdleWait, type Changes } from '../shared/alarm.js';
import { IDLE_POLL_MS } from '../meta/changes.js';
import { guardedLookup, type AllowList } from './url-safety.js';

const RESPONSE_EXCERPT_BYTES = 4096;
const USER_AGENT = 'gitstratum-webhook/1';

export interface DelivererOptions {
  /** This process, as lease holder. */
  holder: string;
  /** Deliveries sent at once by this process. */
  concurrency: number;
  timeoutMs: number;
  maxAttempts: number;
  /** The first retry's delay; each later one doubles, up to maxBackoffMs, each with ±50% jitter. */
  backoffBaseMs: number;
  maxBackoffMs: number;
  /** A hook failing this many deliveries in a row is disabled; 0: never. */
  disableAfterFailures: number;
  /** How often the database is asked for due deliveries when nothing woke this process. */
  pollMs: number;
  /** The longest an idle Deliverer with a live change feed sleeps (default IDLE_POLL_MS). */
  idlePollMs?: number;
  /** Finished deliveries and delivered events are kept this long. */
  retentionMs: number;
  allowed: AllowList;
}

/** The name of an event in `X-GitHub-Event`, as GitHub's own tools know it. */
function githubEvent(event: w.StoredEvent): string {
  if (event.kind === 'branch' || event.kind === 'tag') return event.payload['action'] === 'deleted' ? 'delete' : 'create';
  return event.kind;
}

/** The signature header value of a body. */
export function signature(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** The delay before attempt `attempt + 1` (attempt ≥ 1), with ±50% jitter. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random = Math.random): number {
  const plain = Math.min(maxMs, baseMs * 2 ** Math.min(30, attempt - 1));
  return Math.round(plain * (0.5 + random()));
}

export function createDeliveryMetrics(registry: Registry) {
  return {
    attempts: new Counter({ name: 'gitstratum_webhook_attempts_total', help: 'Webhook delivery attempts, by result (delivered, failed: will retry, gave_up, refused: internal address)', labelNames: ['result'] as const, registers: [registry] }),
    latency: new Histogram({
      name: 'gitstratum_webhook_delivery_seconds',
      help: 'From an event being written to its delivery being answered 2xx',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600],
      registers: [registry],
    }),
    disabled: new Counter({ name: 'gitstratum_webhooks_disabled_total', help: 'Webhooks turned off after failing too often in a row', registers: [registry] }),
  };
}

export class Deliverer {
  private readonly agent: Agent;
  private readonly running = new Set<Promise<void>>();
  private readonly stop = new AbortController();
  private readonly alarm = new Alarm();
  private readonly pace: IdleWait;
  private loop: Promise<void> | undefined;
  private lastPrune = 0;

  constructor(
    private readonly opts: DelivererOptions,
    private readonly deps: { meta: MetaStore; log: Logger; metrics: ReturnType<typeof createDeliveryMetrics>; changes?: Changes | undefined },
  ) {
    this.agent = hookAgent(opts.allowed, opts.timeoutMs);
    this.pace = new IdleWait(this.alarm, deps.changes, opts.pollMs, opts.idlePollMs ?? IDLE_POLL_MS);
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Looks for due deliveries now (an event was just written by this process). */
  wake(): void {
    this.alarm.wake();
  }

  async close(): Promise<void> {
    this.stop.abort();
    this.pace.close();
    this.alarm.wake();
    await this.loop;
    await Promise.allSettled([...this.running]);
    await this.agent.close().catch(() => {});
  }

  private async run(): Promise<void> {
    const { log } = this.deps;
    while (!this.stop.signal.aborted) {
      let claimed: w.ClaimedDelivery[] = [];
      const free = this.opts.concurrency - this.running.size;
      this.pace.polling();
      if (free > 0) {
        try {
          claimed = await w.claimDeliveries(this.deps.meta.db, this.deps.meta.dialect, this.opts.holder, this.opts.timeoutMs * 2 + 5_000, free);
          await this.pruneNow();
        } catch (err) {
          log.error({ err }, 'webhook deliveries not read');
        }
      }
      for (const d of claimed) {
        const sending: Promise<void> = this.send(d)
          .catch((err: unknown) => log.error({ err, delivery: d.id }, 'webhook delivery not recorded'))
          .finally(() => {
            this.running.delete(sending);
            this.alarm.wake();
          });
        this.running.add(sending);
      }
      // More may be due at once (a burst); otherwise wait to be woken or for the next poll.
      if (claimed.length > 0 && claimed.length === free) continue;
      // Idle: sleep until a change or the nearest retry (a failed query: poll again soon).
      const idle = claimed.length === 0 && this.running.size === 0 && this.deps.changes?.live() === true;
      const due = idle ? await w.nextDeliveryDueMs(this.deps.meta.db, this.deps.meta.dialect).catch(() => 0) : undefined;
      await this.pace.wait(idle, due);
    }
  }

  private async pruneNow(): Promise<void> {
    if (Date.now() - this.lastPrune < 3_600_000) return;
    this.lastPrune = Date.now();
    const pruned = await w.pruneDeliveries(this.deps.meta.db, new Date(Date.now() - this.opts.retentionMs).toISOString());
    if (pruned.deliveries + pruned.events > 0) this.deps.log.info(pruned, 'old webhook deliveries and events pruned');
  }

  /** One attempt at a claimed delivery, recorded. */
  private async send(d: w.ClaimedDelivery): Promise<void> {
    const { meta, log, metrics } = this.deps;
    const attempt = await postEvent(this.agent, {
      url: d.hook.url,
      secret: d.hook.secret,
      kind: d.event.kind,
      githubKind: githubEvent(d.event),
      deliveryId: d.id,
      hookId: d.hook.id,
      body: JSON.stringify({ ...d.event.payload, delivery: { id: d.id, event_id: d.event.id, hook_id: d.hook.id, attempt: d.attempts + 1 } }),
      signal: AbortSignal.any([AbortSignal.timeout(this.opts.timeoutMs), this.stop.signal]),
    });
    const { responseStatus: status, error, durationMs } = attempt;
    if (status !== null && status >= 200 && status < 300) {
      await w.deliverySucceeded(meta.db, d.id, d.hook.id, attempt);
      metrics.attempts.inc({ result: 'delivered' });
      if (d.redeliveryOf === null && d.attempts === 0) metrics.latency.observe(Math.max(0, (Date.now() - Date.parse(d.event.createdAt)) / 1000));
      log.debug({ delivery: d.id, hook: d.hook.id, status, duration_ms: Math.round(durationMs) }, 'webhook delivered');
      return;
    }
    const attempts = d.attempts + 1;
    const retryIn = attempts < this.opts.maxAttempts ? backoffMs(attempts, this.opts.backoffBaseMs, this.opts.maxBackoffMs) : undefined;
    const failures = await w.deliveryFailed(meta.db, meta.dialect, d.id, d.hook.id, attempt, retryIn);
    metrics.attempts.inc({ result: error?.includes('internal address') ? 'refused' : retryIn === undefined ? 'gave_up' : 'failed' });
    log.info({ delivery: d.id, hook: d.hook.id, url: d.hook.url, status, error, attempts, retry_in_ms: retryIn ?? null }, retryIn === undefined ? 'webhook delivery failed; given up' : 'webhook delivery failed; will retry');
    if (this.opts.disableAfterFailures > 0 && failures >= this.opts.disableAfterFailures) {
      const reason = `${failures} deliveries in a row failed (last: ${status !== null ? `HTTP ${status}` : error})`;
      if (await w.disableHook(meta.db, d.hook.id, reason, now())) {
        metrics.disabled.inc();
        log.warn({ hook: d.hook.id, url: d.hook.url, failures }, 'webhook disabled after failing too often');
        await appendAudit(meta.db, { at: now(), actorId: null, actorName: 'gitstratum', action: 'webhook.disabled', repositoryId: d.hook.repositoryId, target: d.hook.url, details: { hook: d.hook.id, reason } });
      }
    }
  }
}

export interface PostedEvent {
  url: string;
  secret: string | null;
  kind: string;
  githubKind: string;
  deliveryId: string;
  hookId: string;
  body: string;
  signal: AbortSignal;
}

/** One POST of an event to a hook, as every attempt (and a hook's test) makes it; what happened. */
export async function postEvent(dispatcher: Agent, e: PostedEvent): Promise<w.AttemptRecord> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': USER_AGENT,
    'x-gitstratum-event': e.kind,
    'x-github-event': e.githubKind,
    'x-gitstratum-delivery': e.deliveryId,
    'x-github-delivery': e.deliveryId,
    'x-gitstratum-hook-id': e.hookId,
    ...(e.secret && { 'x-hub-signature-256': signature(e.secret, e.body) }),
  };
  const started = performance.now();
  let status: number | null = null;
  let excerpt: string | null = null;
  let error: string | null = null;
  try {
    const res = await request(e.url, { method: 'POST', headers, body: e.body, dispatcher, signal: e.signal });
    status = res.statusCode;
    excerpt = await readExcerpt(res.body);
  } catch (err) {
    error = ((err as Error).cause as Error | undefined)?.message ?? (err as Error).message;
    error = error.slice(0, 500);
  }
  // The signature is kept in the log: it proves nothing without the secret.
  return { requestHeaders: headers, requestBody: e.body, responseStatus: status, responseExcerpt: excerpt, error, durationMs: performance.now() - started, at: now() };
}

/** A dispatcher for webhook requests: connections only to addresses the allowlist permits. */
export function hookAgent(allowed: AllowList, timeoutMs: number): Agent {
  return new Agent({
    connect: { lookup: guardedLookup(allowed) as never, timeout: timeoutMs },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 4_000,
    connections: 8,
  });
}

/** The first RESPONSE_EXCERPT_BYTES of a body as text; the rest is not read. */
async function readExcerpt(body: AsyncIterable<Buffer> & { destroy(): void }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= RESPONSE_EXCERPT_BYTES) break;
  }
  body.destroy();
  return Buffer.concat(chunks, size).subarray(0, RESPONSE_EXCERPT_BYTES).toString('utf8');
}
