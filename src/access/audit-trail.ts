/**
 * Reading the audit log (meta/audit.ts writes it): site administrators only, newest first,
 * one page at a time. The cursor is the id of the last entry of a page; the next page holds
 * the entries below it, so pages stay stable while new entries are appended.
 */
import type { MetaStore } from '../meta/db.js';
import { listAudit } from '../meta/audit.js';
import type { RepoService } from '../repos/service.js';
import { parseRepoPath } from '../repos/names.js';
import { invalid } from '../shared/errors.js';
import { requireSiteAdmin, type Actor } from './policy.js';
import { parseDuration } from './tokens.js';

export interface AuditQuery {
  /** OWNER/SPACE/REPO of an existing repository. */
  repo?: string | undefined;
  /** The acting user's name (or `cli` for the local command line). */
  actor?: string | undefined;
  /** An ISO-8601 time, or a duration back from now (`2h`, `7d`). */
  since?: string | undefined;
  /** The `nextCursor` of the previous page. */
  before?: string | undefined;
  limit?: number | undefined;
}

export interface AuditView {
  id: number;
  at: string;
  actor: string;
  actorId: string | null;
  action: string;
  target: string;
  repositoryId: string | null;
  details: Record<string, unknown>;
  requestId: string | null;
}

const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 1000;

/** `--since`: an ISO-8601 time, or a duration such as `2h` meaning that long ago. */
export function parseSince(text: string, nowMs = Date.now()): string {
  if (/^\d+\s*[smhdw]?$/.test(text.trim())) return new Date(nowMs - parseDuration(text)).toISOString();
  const ms = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(ms)) throw invalid('invalid_time', 'since must be an ISO-8601 time (2026-01-31T12:00:00Z) or a duration such as 2h or 7d', { value: text });
  return new Date(ms).toISOString();
}

function parseCursor(text: string): number {
  if (!/^[1-9]\d{0,15}$/.test(text)) throw invalid('invalid_cursor', 'cursor must be the nextCursor of a previous page', { value: text });
  return Number(text);
}

function parseLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) throw invalid('invalid_limit', 'limit must be a positive integer');
  return Math.min(limit, MAX_LIMIT);
}

export function createAuditTrail(meta: MetaStore, deps: { repos: Pick<RepoService, 'resolve'> }) {
  return {
    async list(actor: Actor, q: AuditQuery = {}): Promise<{ entries: AuditView[]; nextCursor: string | null }> {
      requireSiteAdmin(actor);
      const limit = parseLimit(q.limit);
      const repo = q.repo === undefined ? undefined : await deps.repos.resolve(actor, parseRepoPath(q.repo), 'admin');
      const rows = await listAudit(meta.db, {
        repositoryId: repo?.id,
        actorName: q.actor,
        since: q.since === undefined ? undefined : parseSince(q.since),
        before: q.before === undefined ? undefined : parseCursor(q.before),
        limit: limit + 1,
      });
      const page = rows.slice(0, limit);
      return {
        entries: page.map((r) => ({
          id: r.id,
          at: r.at,
          actor: r.actorName,
          actorId: r.actorId,
          action: r.action,
          target: r.target,
          repositoryId: r.repositoryId ?? null,
          details: r.details,
          requestId: r.requestId ?? null,
        })),
        nextCursor: rows.length > limit ? String(page[page.length - 1]!.id) : null,
      };
    },
  };
}

export type AuditTrail = ReturnType<typeof createAuditTrail>;
