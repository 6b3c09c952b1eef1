/**
 * Repository size quotas and the total-refs cap (issue 9, items 3 and 4; docs/design/quotas.md).
 *
 * Usage is git bytes (the object store as `git count-objects -v` counts it, measured after
 * each push and maintenance run, and afresh when a push is checked) plus LFS bytes (the sizes
 * of the objects linked to the repository). An owner's usage is the sum over its
 * repositories, each LFS object counted once. A quota is set per repository and per owner,
 * or follows the configured default; 0 means no limit.
 *
 * What is refused: a push that brings objects while the repository or its owner would end up
 * over a quota, and an LFS upload of objects new to the repository (or owner) that would.
 * What is not: a push that brings no objects (deleting branches, moving them to commits
 * already there), so a repository over its quota can always be cleaned up. Pushes and uploads
 * checked at the same time can together overshoot a quota by what they bring; the next one
 * is refused.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { appendAudit } from '../meta/audit.js';
import { findOwnerByName } from '../meta/owners.js';
import { findRepositoryByPath } from '../meta/repositories.js';
import * as q from '../meta/quotas.js';
import { countRefs, objectStoreBytes } from '../git/command.js';
import { actorId, actorName, requireSiteAdmin, type Actor } from '../access/policy.js';
import { invalid, isDomainError, notFound, tooLarge } from '../shared/errors.js';
import { formatBytes } from '../shared/bytes.js';
import { parseBytes } from '../config/units.js';
import { parseRepoPath } from './names.js';

export interface QuotaSettings {
  /** Quota of a repository without its own, in bytes; 0: none. */
  repoQuotaBytes: number;
  /** Quota of an owner without its own, in bytes; 0: none. */
  ownerQuotaBytes: number;
  /** Most refs a repository may have after a push. */
  maxRefs: number;
}

/** A quota as an administrator sets it: bytes (0: no limit), or back to the configured default. */
export type QuotaValue = number | 'default';

export interface Usage {
  gitBytes: number;
  lfsBytes: number;
  usedBytes: number;
  /** The quota in force; null when there is none. */
  quotaBytes: number | null;
  /** `set`: the repository's (or owner's) own; `default`: the configured default. */
  quotaSource: 'set' | 'default';
}

const ZERO_OID = /^0+$/;

/** `10GiB`, `500MB`, `none` (no limit) or `default` (the configured default). */
export function parseQuotaValue(text: string): QuotaValue {
  const t = text.trim().toLowerCase();
  if (t === 'none' || t === 'unlimited') return 0;
  if (t === 'default') return 'default';
  const bytes = parseBytes(t);
  if (bytes === undefined) throw invalid('invalid_quota', `invalid quota: ${text} (a size such as 10GiB or 500MB, none, or default)`);
  return bytes;
}

/** Sums the sizes of the files under `dir` (a push's quarantine); 0 when it does not exist. */
export async function directoryBytes(dir: string): Promise<number> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  let total = 0;
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await directoryBytes(p);
    else if (e.isFile()) total += (await stat(p).catch(() => undefined))?.size ?? 0;
  }
  return total;
}

export function createQuotas(meta: MetaStore, settings: QuotaSettings) {
  const { db } = meta;

  function inForce(column: number | null, fallback: number): Pick<Usage, 'quotaBytes' | 'quotaSource'> {
    const bytes = column ?? fallback;
    return { quotaBytes: bytes > 0 ? bytes : null, quotaSource: column === null ? 'default' : 'set' };
  }

  /** Neither the repository nor its owner has a quota in force. */
  function unlimited(columns: { repo: number | null; owner: number | null }): boolean {
    return inForce(columns.repo, settings.repoQuotaBytes).quotaBytes === null && inForce(columns.owner, settings.ownerQuotaBytes).quotaBytes === null;
  }

  function usage(row: q.StoredUsage, fallback: number): Usage {
    return { gitBytes: row.gitBytes, lfsBytes: row.lfsBytes, usedBytes: row.gitBytes + row.lfsBytes, ...inForce(row.quotaBytes, fallback) };
  }

  async function ownerUsageById(ownerId: string): Promise<Usage & { owner: string }> {
    const [row] = await q.ownerUsages(db, ownerId);
    if (!row) throw notFound('owner_not_found', `owner not found: ${ownerId}`);
    return { owner: row.ownerName, ...usage(row, settings.ownerQuotaBytes) };
  }

  /**
   * Throws `quota_exceeded` when adding `repoBytes` to the repository and `ownerBytes` to its
   * owner would take either over its quota. `measure`, called only when a quota applies,
   * gives the repository's git bytes afresh (else the stored ones count). `what` names the
   * operation in the message.
   */
  async function assertRoom(
    repoId: string,
    add: { repoBytes: number; ownerBytes: number },
    what: string,
    measure?: () => Promise<number>,
  ): Promise<void> {
    // Without a quota in force nothing is summed or measured: a push costs no `count-objects`.
    const columns = await q.quotaColumns(db, repoId);
    if (!columns || unlimited(columns)) return;
    const ownerQuota = inForce(columns.owner, settings.ownerQuotaBytes).quotaBytes;
    const row = (await q.repositoryUsages(db, [repoId])).get(repoId);
    if (!row) return;
    const drift = measure ? (await measure()) - row.gitBytes : 0;
    const repo = usage({ ...row, gitBytes: row.gitBytes + drift }, settings.repoQuotaBytes);
    if (add.repoBytes > 0 && repo.quotaBytes !== null && repo.usedBytes + add.repoBytes > repo.quotaBytes) {
      throw tooLarge(
        'quota_exceeded',
        `repository quota exceeded: ${row.fullName} uses ${formatBytes(repo.usedBytes)} of its ${formatBytes(repo.quotaBytes)} quota ` +
          `(git ${formatBytes(repo.gitBytes)}, LFS ${formatBytes(repo.lfsBytes)}); ${what} adds ${formatBytes(add.repoBytes)}`,
        { repository: row.fullName, quota_bytes: repo.quotaBytes, used_bytes: repo.usedBytes, adds_bytes: add.repoBytes },
      );
    }
    if (ownerQuota === null || add.ownerBytes === 0) return;
    const owner = await ownerUsageById(row.ownerId);
    const ownerUsed = owner.usedBytes + drift;
    if (add.ownerBytes > 0 && owner.quotaBytes !== null && ownerUsed + add.ownerBytes > owner.quotaBytes) {
      throw tooLarge(
        'quota_exceeded',
        `owner quota exceeded: the repositories of ${owner.owner} use ${formatBytes(ownerUsed)} of its ${formatBytes(owner.quotaBytes)} quota; ` +
          `${what} adds ${formatBytes(add.ownerBytes)}`,
        { owner: owner.owner, quota_bytes: owner.quotaBytes, used_bytes: ownerUsed, adds_bytes: add.ownerBytes },
      );
    }
  }

  return {
    settings,

    /** Usage and quota of each repository (all when `ids` is undefined), by id. */
    async repoUsages(ids?: readonly string[]): Promise<Map<string, Usage & { fullName: string }>> {
      const rows = await q.repositoryUsages(db, ids);
      return new Map([...rows].map(([id, r]) => [id, { fullName: r.fullName, ...usage(r, settings.repoQuotaBytes) }]));
    },

    async ownerUsages(): Promise<(Usage & { owner: string })[]> {
      return (await q.ownerUsages(db)).map((r) => ({ owner: r.ownerName, ...usage(r, settings.ownerQuotaBytes) }));
    },

    /** An owner's usage and quota; site administrators only. */
    async ownerUsage(actor: Actor, ownerName: string): Promise<Usage & { owner: string }> {
      requireSiteAdmin(actor);
      const owner = await findOwnerByName(db, ownerName);
      if (!owner) throw notFound('owner_not_found', `owner not found: ${ownerName}`, { owner: ownerName });
      return ownerUsageById(owner.id);
    },

    /** Sets (or resets to the default) a repository's quota; site administrators only. */
    async setRepoQuota(actor: Actor, repoPath: string, value: QuotaValue, opts: { requestId?: string } = {}) {
      requireSiteAdmin(actor);
      const where = parseRepoPath(repoPath);
      const repo = await findRepositoryByPath(db, where.owner, where.space, where.repo);
      const label = `${where.owner}/${where.space}/${where.repo}`;
      if (!repo) throw notFound('repo_not_found', `repository not found: ${label}`, { repository: label });
      const bytes = value === 'default' ? null : value;
      await db.transaction().execute(async (trx) => {
        await q.setRepositoryQuota(trx, repo.id, bytes);
        await appendAudit(trx, {
          at: now(),
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'repo.quota',
          repositoryId: repo.id,
          target: label,
          details: { quota_bytes: bytes },
          requestId: opts.requestId ?? null,
        });
      });
      const row = (await q.repositoryUsages(db, [repo.id])).get(repo.id)!;
      return { repository: row.fullName, ...usage(row, settings.repoQuotaBytes) };
    },

    /** Sets (or resets to the default) an owner's quota; site administrators only. */
    async setOwnerQuota(actor: Actor, ownerName: string, value: QuotaValue, opts: { requestId?: string } = {}) {
      requireSiteAdmin(actor);
      const owner = await findOwnerByName(db, ownerName);
      if (!owner) throw notFound('owner_not_found', `owner not found: ${ownerName}`, { owner: ownerName });
      const bytes = value === 'default' ? null : value;
      await db.transaction().execute(async (trx) => {
        await q.setOwnerQuota(trx, owner.id, bytes);
        await appendAudit(trx, {
          at: now(),
          actorId: actorId(actor),
          actorName: actorName(actor),
          action: 'owner.quota',
          repositoryId: null,
          target: owner.name,
          details: { quota_bytes: bytes },
          requestId: opts.requestId ?? null,
        });
      });
      return ownerUsageById(owner.id);
    },

    /** Measures the repository's git bytes and stores them. */
    async refreshGitBytes(repoId: string, repoPath: string): Promise<void> {
      await q.recordGitBytes(db, repoId, await objectStoreBytes(repoPath));
    },

    /**
     * Why a push must be refused (pre-receive), or undefined: more refs than `maxRefs`, or
     * objects (in the quarantine, `quarantinePath`) that would take the repository or its
     * owner over a quota.
     */
    async pushRefusal(
      repo: { id: string; path: string },
      updates: readonly { oldOid: string; newOid: string; ref: string }[],
      quarantinePath: string | undefined,
    ): Promise<string | undefined> {
      const created = updates.filter((u) => ZERO_OID.test(u.oldOid) && !ZERO_OID.test(u.newOid)).length;
      if (created > 0) {
        const deleted = updates.filter((u) => ZERO_OID.test(u.newOid) && !ZERO_OID.test(u.oldOid)).length;
        const after = (await countRefs(repo.path)) + created - deleted;
        if (after > settings.maxRefs) {
          return `gitstratum: push refused: the repository would have ${after} refs; at most ${settings.maxRefs} are allowed (maxRefs)`;
        }
      }
      const incoming = quarantinePath ? await directoryBytes(quarantinePath) : 0;
      if (incoming === 0) return undefined;
      try {
        // The new objects are counted once in both: a pack new to the repository is new to its owner.
        await assertRoom(repo.id, { repoBytes: incoming, ownerBytes: incoming }, 'this push', () => objectStoreBytes(repo.path));
      } catch (err) {
        if (isDomainError(err) && err.code === 'quota_exceeded') return `gitstratum: push refused: ${err.message}`;
        throw err;
      }
      return undefined;
    },

    /**
     * Throws `quota_exceeded` when storing these LFS objects in the repository would take it or
     * its owner over a quota. Objects already linked to the repository add nothing to it, those
     * linked to another repository of the owner nothing to the owner.
     */
    async assertLfsRoom(repoId: string, objects: readonly { oid: string; size: number }[], what: string): Promise<void> {
      if (objects.length === 0) return;
      const columns = await q.quotaColumns(db, repoId);
      if (!columns || unlimited(columns)) return;
      const sizes = new Map(objects.map((o) => [o.oid, o.size]));
      const oids = [...sizes.keys()];
      const linked = await q.oidsLinkedTo(db, repoId, oids);
      const fresh = oids.filter((o) => !linked.has(o));
      if (fresh.length === 0) return;
      const newToOwner = await q.oidsNewToOwner(db, columns.ownerId, fresh);
      const sum = (list: Iterable<string>) => [...list].reduce((n, o) => n + (sizes.get(o) ?? 0), 0);
      await assertRoom(repoId, { repoBytes: sum(fresh), ownerBytes: sum(newToOwner) }, what);
    },
  };
}

export type Quotas = ReturnType<typeof createQuotas>;
