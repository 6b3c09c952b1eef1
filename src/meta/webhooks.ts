/**
 * Webhooks, the event outbox and deliveries (repos/webhooks.ts decides, webhooks/delivery.ts
 * sends). An event is written with what caused it, in the caller's transaction, together with
 * one pending delivery for each active hook it matches: once that transaction commits, every
 * delivery is owed, whatever happens to the process afterwards.
 *
 * A delivery is claimed with a lease (one conditional update, atomic on both engines, judged
 * by the database's clock), so of several processes only one sends it at a time; of one hook,
 * a repository's deliveries are sent in event order: one waits while an earlier one is pending.
 */
import { sql, type Selectable } from 'kysely';
import type { Db, Dialect } from './db.js';
import { nowMs } from './leases.js';
import type { WebhooksTable } from './schema.js';
import { newId } from '../shared/ids.js';

export const EVENT_KINDS = ['push', 'branch', 'tag', 'repository', 'lock'] as const;
export type RepoEventKind = (typeof EVENT_KINDS)[number];

export interface HookRow {
  id: string;
  ownerId: string;
  spaceId: string | null;
  repositoryId: string | null;
  url: string;
  secret: string | null;
  events: RepoEventKind[];
  active: boolean;
  consecutiveFailures: number;
  disabledAt: string | null;
  disabledReason: string | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

type HookDbRow = Selectable<WebhooksTable>;

function toHook(r: HookDbRow): HookRow {
  return {
    id: r.id,
    ownerId: r.owner_id,
    spaceId: r.space_id,
    repositoryId: r.repository_id,
    url: r.url,
    secret: r.secret,
    events: r.events.split(',').filter(Boolean) as RepoEventKind[],
    active: r.active === 1,
    consecutiveFailures: Number(r.consecutive_failures),
    disabledAt: r.disabled_at,
    disabledReason: r.disabled_reason,
    createdBy: r.created_by,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export async function insertHook(db: Db, h: Omit<HookRow, 'consecutiveFailures' | 'disabledAt' | 'disabledReason' | 'updatedAt'>): Promise<void> {
  await db
    .insertInto('webhooks')
    .values({
      id: h.id,
      owner_id: h.ownerId,
      space_id: h.spaceId,
      repository_id: h.repositoryId,
      url: h.url,
      secret: h.secret,
      events: h.events.join(','),
      active: h.active ? 1 : 0,
      disabled_at: null,
      disabled_reason: null,
      created_by: h.createdBy,
      created_at: h.createdAt,
      updated_at: h.createdAt,
    })
    .execute();
}

export interface HookPatch {
  url?: string;
  secret?: string | null;
  events?: RepoEventKind[];
  /** Turning a hook on clears its failure count and why it was disabled. */
  active?: boolean;
}

export async function updateHook(db: Db, id: string, patch: HookPatch, at: string): Promise<void> {
  await db
    .updateTable('webhooks')
    .set({
      ...(patch.url !== undefined && { url: patch.url }),
      ...(patch.secret !== undefined && { secret: patch.secret }),
      ...(patch.events !== undefined && { events: patch.events.join(',') }),
      ...(patch.active !== undefined && { active: patch.active ? 1 : 0 }),
      ...(patch.active === true && { consecutive_failures: 0, disabled_at: null, disabled_reason: null }),
      updated_at: at,
    })
    .where('id', '=', id)
    .execute();
}

export async function deleteHook(db: Db, id: string): Promise<void> {
  await db.deleteFrom('webhooks').where('id', '=', id).execute();
}

export async function findHook(db: Db, id: string): Promise<HookRow | undefined> {
  const row = await db.selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
  return row && toHook(row);
}

/** The hooks set on exactly this scope (an owner's own, a space's, a repository's). */
export async function listHooks(db: Db, scope: { ownerId: string; spaceId: string | null; repositoryId: string | null }): Promise<HookRow[]> {
  let q = db.selectFrom('webhooks').selectAll().where('owner_id', '=', scope.ownerId);
  q = scope.spaceId === null ? q.where('space_id', 'is', null) : q.where('space_id', '=', scope.spaceId);
  q = scope.repositoryId === null ? q.where('repository_id', 'is', null) : q.where('repository_id', '=', scope.repositoryId);
  return (await q.orderBy('created_at').execute()).map(toHook);
}

export interface NewEvent {
  ownerId: string;
  spaceId: string;
  repositoryId: string;
  kind: RepoEventKind;
  payload: Record<string, unknown>;
}

/**
 * Writes the events to the outbox and a pending delivery of each to every active hook it
 * matches, in `db` (the caller's transaction); the events' ids, in order.
 */
export async function appendEvents(db: Db, dialect: Dialect, events: readonly NewEvent[], at: string): Promise<number[]> {
  if (events.length === 0) return [];
  const owners = [...new Set(events.map((e) => e.ownerId))];
  const hooks = (await db.selectFrom('webhooks').selectAll().where('owner_id', 'in', owners).where('active', '=', 1).execute()).map(toHook);
  const ids: number[] = [];
  for (const e of events) {
    const row = await db
      .insertInto('repo_events')
      .values({ owner_id: e.ownerId, space_id: e.spaceId, repository_id: e.repositoryId, kind: e.kind, payload: JSON.stringify(e.payload), created_at: at })
      .returning('id')
      .executeTakeFirstOrThrow();
    const eventId = Number(row.id);
    ids.push(eventId);
    const matching = hooks.filter(
      (h) => h.ownerId === e.ownerId && (h.spaceId === null || h.spaceId === e.spaceId) && (h.repositoryId === null || h.repositoryId === e.repositoryId) && h.events.includes(e.kind),
    );
    if (matching.length === 0) continue;
    await db
      .insertInto('webhook_deliveries')
      .values(
        matching.map((h) => ({
          id: newId(),
          hook_id: h.id,
          event_id: eventId,
          repository_id: e.repositoryId,
          status: 'pending',
          next_attempt_at: sql<number>`${nowMs(dialect)}`,
          created_at: at,
        })) as never,
      )
      .execute();
  }
  return ids;
}

export interface StoredEvent {
  id: number;
  ownerId: string;
  spaceId: string;
  repositoryId: string;
  kind: RepoEventKind;
  payload: Record<string, unknown>;
  createdAt: string;
}

function toEvent(r: { id: number | string; owner_id: string; space_id: string; repository_id: string; kind: string; payload: string; created_at: string }): StoredEvent {
  return {
    id: Number(r.id),
    ownerId: r.owner_id,
    spaceId: r.space_id,
    repositoryId: r.repository_id,
    kind: r.kind as RepoEventKind,
    payload: JSON.parse(r.payload) as Record<string, unknown>,
    createdAt: r.created_at,
  };
}

/** Events after `afterId` in one scope (an owner, a space or a repository) or all, oldest first. */
export async function eventsAfter(db: Db, scope: { ownerId: string; spaceId?: string | undefined; repositoryId?: string | undefined } | 'all', afterId: number, limit: number): Promise<StoredEvent[]> {
  let q = db.selectFrom('repo_events').selectAll().where('id', '>', afterId);
  if (scope !== 'all') {
    q = q.where('owner_id', '=', scope.ownerId);
    if (scope.spaceId) q = q.where('space_id', '=', scope.spaceId);
    if (scope.repositoryId) q = q.where('repository_id', '=', scope.repositoryId);
  }
  return (await q.orderBy('id').limit(limit).execute()).map(toEvent);
}

export async function lastEventId(db: Db): Promise<number> {
  const row = await db.selectFrom('repo_events').select((eb) => eb.fn.max('id').as('id')).executeTakeFirst();
  return Number(row?.id ?? 0);
}

export interface ClaimedDelivery {
  id: string;
  hook: HookRow;
  event: StoredEvent;
  attempts: number;
  redeliveryOf: string | null;
}

/**
 * In how many milliseconds (database clock) the nearest pending delivery of an active hook is
 * due: its next attempt, or the end of a lease someone holds on it; undefined when none is
 * pending. An idle Deliverer sleeps until then (events/delivery.ts).
 */
export async function nextDeliveryDueMs(db: Db, dialect: Dialect): Promise<number | undefined> {
  const { rows } = await sql<{ due: number | string | null }>`
    select min(case when d.lease_until is not null and d.lease_until > d.next_attempt_at then d.lease_until else d.next_attempt_at end) - ${nowMs(dialect)} as due
    from webhook_deliveries d
    join webhooks h on h.id = d.hook_id and h.active = 1
    where d.status = 'pending'`.execute(db);
  const due = rows[0]?.due;
  return due === null || due === undefined ? undefined : Math.max(0, Number(due));
}

/**
 * Claims up to `limit` deliveries that are due, each the oldest pending one of its hook and
 * repository, for `holder`, for `leaseMs`.
 */
export async function claimDeliveries(db: Db, dialect: Dialect, holder: string, leaseMs: number, limit: number): Promise<ClaimedDelivery[]> {
  const now = nowMs(dialect);
  const { rows } = await sql<{ id: string }>`
    select d.id from webhook_deliveries d
    join webhooks h on h.id = d.hook_id and h.active = 1
    where d.status = 'pending' and d.next_attempt_at <= ${now}
      and (d.lease_until is null or d.lease_until < ${now})
      and not exists (
        select 1 from webhook_deliveries e
        where e.hook_id = d.hook_id and e.repository_id = d.repository_id and e.status = 'pending'
          and (e.event_id < d.event_id or (e.event_id = d.event_id and e.created_at < d.created_at))
      )
    order by d.event_id
    limit ${limit}`.execute(db);
  const claimed: ClaimedDelivery[] = [];
  for (const { id } of rows) {
    const res = await db
      .updateTable('webhook_deliveries')
      .set({ lease_holder: holder, lease_until: sql<number>`${now} + ${Math.round(leaseMs)}` })
      .where('id', '=', id)
      .where('status', '=', 'pending')
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) continue;
    const row = await db
      .selectFrom('webhook_deliveries as d')
      .innerJoin('webhooks as h', 'h.id', 'd.hook_id')
      .innerJoin('repo_events as e', 'e.id', 'd.event_id')
      .select(['d.id as delivery_id', 'd.attempts', 'd.redelivery_of'])
      .select(['h.id', 'h.owner_id', 'h.space_id', 'h.repository_id', 'h.url', 'h.secret', 'h.events', 'h.active', 'h.consecutive_failures', 'h.disabled_at', 'h.disabled_reason', 'h.created_by', 'h.created_at', 'h.updated_at'])
      .select(['e.id as event_id', 'e.owner_id as event_owner_id', 'e.space_id as event_space_id', 'e.repository_id as event_repository_id', 'e.kind', 'e.payload', 'e.created_at as event_created_at'])
      .where('d.id', '=', id)
      .executeTakeFirst();
    if (!row) {
      // Its event was pruned (or its hook deleted) meanwhile: nothing left to send.
      await db.updateTable('webhook_deliveries').set({ status: 'failed', error: 'the event is no longer kept', lease_holder: null, lease_until: null }).where('id', '=', id).execute();
      continue;
    }
    claimed.push({
      id,
      attempts: Number(row.attempts),
      redeliveryOf: row.redelivery_of,
      hook: toHook(row),
      event: toEvent({ id: row.event_id, owner_id: row.event_owner_id, space_id: row.event_space_id, repository_id: row.event_repository_id, kind: row.kind, payload: row.payload, created_at: row.event_created_at }),
    });
  }
  return claimed;
}

export interface AttemptRecord {
  requestHeaders: Record<string, string>;
  requestBody: string;
  responseStatus: number | null;
  responseExcerpt: string | null;
  error: string | null;
  durationMs: number;
  at: string;
}

/** Records a successful attempt: the delivery is done and its hook's failure count reset. */
export async function deliverySucceeded(db: Db, id: string, hookId: string, a: AttemptRecord): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx
      .updateTable('webhook_deliveries')
      .set({ ...attemptColumns(a), status: 'delivered', finished_at: a.at, attempts: sql<number>`attempts + 1`, lease_holder: null, lease_until: null })
      .where('id', '=', id)
      .execute();
    await trx.updateTable('webhooks').set({ consecutive_failures: 0 }).where('id', '=', hookId).execute();
  });
}

/**
 * Records a failed attempt: tried again after `retryInMs`, or given up (`retryInMs`
 * undefined). The hook's consecutive failures, after this one.
 */
export async function deliveryFailed(db: Db, dialect: Dialect, id: string, hookId: string, a: AttemptRecord, retryInMs: number | undefined): Promise<number> {
  return db.transaction().execute(async (trx) => {
    await trx
      .updateTable('webhook_deliveries')
      .set({
        ...attemptColumns(a),
        attempts: sql<number>`attempts + 1`,
        lease_holder: null,
        lease_until: null,
        ...(retryInMs === undefined ? { status: 'failed', finished_at: a.at } : { next_attempt_at: sql<number>`${nowMs(dialect)} + ${Math.round(retryInMs)}` }),
      })
      .where('id', '=', id)
      .execute();
    const row = await trx
      .updateTable('webhooks')
      .set({ consecutive_failures: sql<number>`consecutive_failures + 1` })
      .where('id', '=', hookId)
      .returning('consecutive_failures')
      .executeTakeFirst();
    return Number(row?.consecutive_failures ?? 0);
  });
}

function attemptColumns(a: AttemptRecord) {
  return {
    request_headers: JSON.stringify(a.requestHeaders),
    request_body: a.requestBody,
    response_status: a.responseStatus,
    response_excerpt: a.responseExcerpt,
    error: a.error,
    duration_ms: Math.round(a.durationMs),
  };
}

/** Turns a hook off after too many failures in a row; true when this call did. */
export async function disableHook(db: Db, id: string, reason: string, at: string): Promise<boolean> {
  const res = await db.updateTable('webhooks').set({ active: 0, disabled_at: at, disabled_reason: reason, updated_at: at }).where('id', '=', id).where('active', '=', 1).executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

export interface DeliveryRow {
  id: string;
  hookId: string;
  eventId: number;
  kind: RepoEventKind;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  redeliveryOf: string | null;
  requestHeaders: Record<string, string> | null;
  requestBody: string | null;
  responseStatus: number | null;
  responseExcerpt: string | null;
  error: string | null;
  durationMs: number | null;
  createdAt: string;
  finishedAt: string | null;
}

const deliveryColumns = [
  'd.id',
  'd.hook_id',
  'd.event_id',
  'e.kind',
  'd.status',
  'd.attempts',
  'd.redelivery_of',
  'd.request_headers',
  'd.request_body',
  'd.response_status',
  'd.response_excerpt',
  'd.error',
  'd.duration_ms',
  'd.created_at',
  'd.finished_at',
] as const;

function toDelivery(r: Record<(typeof deliveryColumns)[number] extends `${string}.${infer C}` ? C : never, unknown>): DeliveryRow {
  return {
    id: String(r.id),
    hookId: String(r.hook_id),
    eventId: Number(r.event_id),
    kind: r.kind as RepoEventKind,
    status: r.status as DeliveryRow['status'],
    attempts: Number(r.attempts),
    redeliveryOf: (r.redelivery_of as string | null) ?? null,
    requestHeaders: r.request_headers ? (JSON.parse(String(r.request_headers)) as Record<string, string>) : null,
    requestBody: (r.request_body as string | null) ?? null,
    responseStatus: r.response_status === null || r.response_status === undefined ? null : Number(r.response_status),
    responseExcerpt: (r.response_excerpt as string | null) ?? null,
    error: (r.error as string | null) ?? null,
    durationMs: r.duration_ms === null || r.duration_ms === undefined ? null : Number(r.duration_ms),
    createdAt: String(r.created_at),
    finishedAt: (r.finished_at as string | null) ?? null,
  };
}

/** A hook's deliveries, newest first. */
export async function listDeliveries(db: Db, hookId: string, limit: number): Promise<DeliveryRow[]> {
  const rows = await db
    .selectFrom('webhook_deliveries as d')
    .innerJoin('repo_events as e', 'e.id', 'd.event_id')
    .select(deliveryColumns)
    .where('d.hook_id', '=', hookId)
    .orderBy('d.created_at', 'desc')
    .orderBy('d.id', 'desc')
    .limit(limit)
    .execute();
  return rows.map((r) => toDelivery(r));
}

export async function findDelivery(db: Db, id: string): Promise<DeliveryRow | undefined> {
  const row = await db.selectFrom('webhook_deliveries as d').innerJoin('repo_events as e', 'e.id', 'd.event_id').select(deliveryColumns).where('d.id', '=', id).executeTakeFirst();
  return row && toDelivery(row);
}

/** A new pending delivery of the same event to the same hook. */
export async function redeliver(db: Db, dialect: Dialect, of: DeliveryRow, repositoryId: string, at: string): Promise<string> {
  const id = newId();
  await db
    .insertInto('webhook_deliveries')
    .values({ id, hook_id: of.hookId, event_id: of.eventId, repository_id: repositoryId, status: 'pending', next_attempt_at: sql<number>`${nowMs(dialect)}` as never, redelivery_of: of.id, created_at: at } as never)
    .execute();
  return id;
}

/** Removes finished deliveries, and events no delivery still waits for, created before `before`. */
export async function pruneDeliveries(db: Db, before: string): Promise<{ deliveries: number; events: number }> {
  const d = await db.deleteFrom('webhook_deliveries').where('status', '!=', 'pending').where('created_at', '<', before).executeTakeFirst();
  const e = await db
    .deleteFrom('repo_events')
    .where('created_at', '<', before)
    .where(({ not, exists, selectFrom }) => not(exists(selectFrom('webhook_deliveries').select('id').whereRef('webhook_deliveries.event_id', '=', 'repo_events.id'))))
    .executeTakeFirst();
  return { deliveries: Number(d.numDeletedRows), events: Number(e.numDeletedRows) };
}
