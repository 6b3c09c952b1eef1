/** The append-only audit log: every administrative action and every push. */
import type { Db } from './db.js';

export interface AuditEntry {
  at: string;
  actorId: string | null;
  actorName: string;
  action: string;
  repositoryId?: string | null;
  target: string;
  details?: Record<string, unknown>;
  requestId?: string | null;
}

export interface AuditRecord extends AuditEntry {
  id: number;
  details: Record<string, unknown>;
}

export async function appendAudit(db: Db, e: AuditEntry): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({
      at: e.at,
      actor_id: e.actorId,
      actor_name: e.actorName,
      action: e.action,
      repository_id: e.repositoryId ?? null,
      target: e.target,
      details: JSON.stringify(e.details ?? {}),
      request_id: e.requestId ?? null,
    })
    .execute();
}

export interface AuditFilter {
  repositoryId?: string | undefined;
  action?: string | undefined;
  /** The actor's name, in any case (entries keep it after the user is deleted). */
  actorName?: string | undefined;
  /** Entries at or after this ISO-8601 time. */
  since?: string | undefined;
  /** Entries with an id below this one: the cursor of the next (older) page. */
  before?: number | undefined;
  limit?: number | undefined;
}

/** Newest first. */
export async function listAudit(db: Db, filter: AuditFilter = {}): Promise<AuditRecord[]> {
  let q = db.selectFrom('audit_log').selectAll();
  if (filter.repositoryId) q = q.where('repository_id', '=', filter.repositoryId);
  if (filter.action) q = q.where('action', '=', filter.action);
  if (filter.actorName) q = q.where((eb) => eb(eb.fn('lower', ['actor_name']), '=', filter.actorName!.toLowerCase()));
  if (filter.since) q = q.where('at', '>=', filter.since);
  if (filter.before !== undefined) q = q.where('id', '<', filter.before);
  const rows = await q.orderBy('id', 'desc').limit(filter.limit ?? 100).execute();
  return rows.map((r) => ({
    id: Number(r.id),
    at: r.at,
    actorId: r.actor_id,
    actorName: r.actor_name,
    action: r.action,
    repositoryId: r.repository_id,
    target: r.target,
    details: JSON.parse(r.details) as Record<string, unknown>,
    requestId: r.request_id,
  }));
}
