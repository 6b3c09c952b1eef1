/**
 * Managing webhooks (issue 13): on an owner, a space or a repository, by whoever administers
 * it. A hook's secret is kept to sign deliveries and never shown again (`hasSecret` says
 * whether there is one). URLs to internal addresses are refused unless allowed
 * (url-safety.ts). The delivery log of a hook lists its latest deliveries with what was sent
 * and answered; any of them can be sent again.
 */
import { randomUUID } from 'node:crypto';
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { appendAudit } from '../meta/audit.js';
import * as w from '../meta/webhooks.js';
import { EVENT_KINDS, type HookRow, type RepoEventKind } from '../meta/webhooks.js';
import { actorId, actorName, type Actor } from '../access/policy.js';
import type { RepoService } from '../repos/service.js';
import { invalid, isDomainError, notFound } from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import { checkHookUrl, type AllowList } from './url-safety.js';
import { hookAgent, postEvent } from './delivery.js';

const MAX_HOOKS_PER_SCOPE = 20;
const MAX_SECRET_CHARS = 256;

export interface HookInput {
  url: string;
  secret?: string | null | undefined;
  events?: string[] | undefined;
  active?: boolean | undefined;
}

/** A hook as the API and CLI show it: its scope by name, and never its secret. */
export type HookView = Omit<HookRow, 'ownerId' | 'spaceId' | 'repositoryId' | 'secret'> & {
  /** OWNER, OWNER/SPACE or OWNER/SPACE/REPO. */
  scope: string;
  hasSecret: boolean;
};

function eventsOf(list: string[] | undefined): RepoEventKind[] {
  if (list === undefined) return ['push'];
  const kinds = [...new Set(list.map((e) => e.trim().toLowerCase()).filter(Boolean))];
  const unknown = kinds.filter((k) => !(EVENT_KINDS as readonly string[]).includes(k));
  if (unknown.length > 0) throw invalid('invalid_events', `unknown event ${unknown.map((u) => JSON.stringify(u.slice(0, 50))).join(', ')}; events are ${EVENT_KINDS.join(', ')}`);
  if (kinds.length === 0) throw invalid('invalid_events', `a hook needs at least one event of ${EVENT_KINDS.join(', ')}`);
  return kinds as RepoEventKind[];
}

function secretOf(secret: string | null | undefined): string | null | undefined {
  if (secret === undefined || secret === null) return secret;
  if (secret.length === 0) return null;
  if (secret.length > MAX_SECRET_CHARS) throw invalid('invalid_secret', `a hook secret may be at most ${MAX_SECRET_CHARS} characters`);
  return secret;
}

export function createWebhooks(meta: MetaStore, repos: RepoService, settings: { allowed: AllowList; timeoutMs: number }) {
  const { db } = meta;

  async function scopeLabel(h: HookRow): Promise<string> {
    const owner = await db.selectFrom('owners').select('name').where('id', '=', h.ownerId).executeTakeFirst();
    if (h.repositoryId) {
      const r = await db
        .selectFrom('repositories')
        .innerJoin('spaces', 'spaces.id', 'repositories.space_id')
        .select(['spaces.name as space', 'repositories.name as repo'])
        .where('repositories.id', '=', h.repositoryId)
        .executeTakeFirst();
      return `${owner?.name}/${r?.space}/${r?.repo}`;
    }
    if (h.spaceId) {
      const s = await db.selectFrom('spaces').select('name').where('id', '=', h.spaceId).executeTakeFirst();
      return `${owner?.name}/${s?.name}`;
    }
    return String(owner?.name);
  }

  function view(h: HookRow, scope: string): HookView {
    const { ownerId: _o, spaceId: _s, repositoryId: _r, secret, ...shown } = h;
    return { ...shown, scope, hasSecret: secret !== null };
  }

  /** The hook, with its scope, when `actor` administers that scope. */
  async function administered(actor: Actor, id: string) {
    const hook = /^[0-9A-Z]{26}$/.test(id) ? await w.findHook(db, id) : undefined;
    if (!hook) throw notFound('hook_not_found', `webhook '${id.slice(0, 40)}' not found`);
    const scope = await scopeLabel(hook);
    try {
      await repos.resolveScope(actor, scope, 'admin');
    } catch (err) {
      // Not yours: as if it did not exist.
      if (isDomainError(err)) throw notFound('hook_not_found', `webhook '${id}' not found`);
      throw err;
    }
    return { hook, scope };
  }

  const audit = (actor: Actor, action: string, hook: { id: string; url: string; repositoryId: string | null }, details: Record<string, unknown>, requestId?: string) =>
    appendAudit(db, { at: now(), actorId: actorId(actor), actorName: actorName(actor), action, repositoryId: hook.repositoryId, target: hook.url, details: { hook: hook.id, ...details }, requestId: requestId ?? null });

  return {
    async create(actor: Actor, scopePath: string, input: HookInput, opts: { requestId?: string } = {}): Promise<HookView> {
      const scope = await repos.resolveScope(actor, scopePath, 'admin');
      const url = (await checkHookUrl(input.url, settings.allowed)).toString();
      const events = eventsOf(input.events);
      const existing = await w.listHooks(db, scope);
      if (existing.length >= MAX_HOOKS_PER_SCOPE) throw invalid('too_many_hooks', `${scope.label} has ${MAX_HOOKS_PER_SCOPE} webhooks already; remove one first`);
      const at = now();
      const hook: HookRow = {
        id: newId(),
        ownerId: scope.ownerId,
        spaceId: scope.spaceId,
        repositoryId: scope.repositoryId,
        url,
        secret: secretOf(input.secret) ?? null,
        events,
        active: input.active ?? true,
        consecutiveFailures: 0,
        disabledAt: null,
        disabledReason: null,
        createdBy: actorName(actor),
        createdAt: at,
        updatedAt: at,
      };
      await db.transaction().execute(async (trx) => {
        await w.insertHook(trx, hook);
        await appendAudit(trx, { at, actorId: actorId(actor), actorName: actorName(actor), action: 'webhook.create', repositoryId: hook.repositoryId, target: url, details: { hook: hook.id, scope: scope.label, events }, requestId: opts.requestId ?? null });
      });
      return view(hook, scope.label);
    },

    async list(actor: Actor, scopePath: string): Promise<HookView[]> {
      const scope = await repos.resolveScope(actor, scopePath, 'admin');
      return (await w.listHooks(db, scope)).map((h) => view(h, scope.label));
    },

    async get(actor: Actor, id: string): Promise<HookView> {
      const { hook, scope } = await administered(actor, id);
      return view(hook, scope);
    },

    async update(actor: Actor, id: string, patch: Partial<HookInput>, opts: { requestId?: string } = {}): Promise<HookView> {
      const { hook, scope } = await administered(actor, id);
      const changes: w.HookPatch = {
        ...(patch.url !== undefined && { url: (await checkHookUrl(patch.url, settings.allowed)).toString() }),
        ...(patch.secret !== undefined && { secret: secretOf(patch.secret) ?? null }),
        ...(patch.events !== undefined && { events: eventsOf(patch.events) }),
        ...(patch.active !== undefined && { active: patch.active }),
      };
      await w.updateHook(db, hook.id, changes, now());
      await audit(actor, 'webhook.update', hook, { url: changes.url, events: changes.events, active: changes.active, secret: changes.secret === undefined ? undefined : changes.secret ? 'changed' : 'removed' }, opts.requestId);
      return view((await w.findHook(db, hook.id))!, scope);
    },

    async remove(actor: Actor, id: string, opts: { requestId?: string } = {}): Promise<HookView> {
      const { hook, scope } = await administered(actor, id);
      await w.deleteHook(db, hook.id);
      await audit(actor, 'webhook.delete', hook, { scope }, opts.requestId);
      return view(hook, scope);
    },

    /** Sends a `ping` event to the hook now and says what its receiver answered (not logged as a delivery). */
    async test(actor: Actor, id: string) {
      const { hook, scope } = await administered(actor, id);
      const agent = hookAgent(settings.allowed, settings.timeoutMs);
      try {
        const deliveryId = randomUUID();
        const body = JSON.stringify({ event: 'ping', zen: 'a push, well delivered', hook: { id: hook.id, scope, events: hook.events }, sender: { id: actorId(actor), login: actorName(actor) }, at: now() });
        const a = await postEvent(agent, { url: hook.url, secret: hook.secret, kind: 'ping', githubKind: 'ping', deliveryId, hookId: hook.id, body, signal: AbortSignal.timeout(settings.timeoutMs) });
        const ok = a.responseStatus !== null && a.responseStatus >= 200 && a.responseStatus < 300;
        return { ok, status: a.responseStatus, response: a.responseExcerpt, error: a.error, durationMs: Math.round(a.durationMs), deliveryId };
      } finally {
        await agent.close().catch(() => {});
      }
    },

    async deliveries(actor: Actor, id: string, limit = 50) {
      const { hook } = await administered(actor, id);
      return w.listDeliveries(db, hook.id, Math.min(Math.max(1, limit), 200));
    },

    async delivery(actor: Actor, id: string, deliveryId: string) {
      const { hook } = await administered(actor, id);
      const d = await w.findDelivery(db, deliveryId);
      if (!d || d.hookId !== hook.id) throw notFound('delivery_not_found', `delivery '${deliveryId.slice(0, 40)}' of webhook ${hook.id} not found`);
      return d;
    },

    /** Queues the delivery's event to be sent to its hook again; the new delivery's id. */
    async redeliver(actor: Actor, id: string, deliveryId: string, opts: { requestId?: string } = {}) {
      const { hook } = await administered(actor, id);
      const d = await w.findDelivery(db, deliveryId);
      if (!d || d.hookId !== hook.id) throw notFound('delivery_not_found', `delivery '${deliveryId.slice(0, 40)}' of webhook ${hook.id} not found`);
      const event = await db.selectFrom('repo_events').select('repository_id').where('id', '=', d.eventId).executeTakeFirst();
      if (!event) throw notFound('delivery_not_found', `the event of delivery ${deliveryId} is no longer kept`);
      const newIdOf = await w.redeliver(db, meta.dialect, d, event.repository_id, now());
      await audit(actor, 'webhook.redeliver', hook, { delivery: deliveryId, redelivery: newIdOf }, opts.requestId);
      return { id: newIdOf, redeliveryOf: deliveryId };
    },
  };
}

export type Webhooks = ReturnType<typeof createWebhooks>;
