/**
 * The snapshot operations the admin CLI offers, by repository path: list, snapshot now,
 * compact, restore one (latest, --at, --before, --to) and restore every repository whose directory is
 * missing (a data directory whose repos/ was lost).
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { MetaStore } from '../meta/db.js';
import * as repositories from '../meta/repositories.js';
import * as snapshots from '../meta/snapshots.js';
import type { ObjectStore } from '../storage/object-store.js';
import { notFound } from '../shared/errors.js';
import { parseRepoPath } from '../repos/names.js';
import * as residency from '../meta/residency.js';
import { now } from '../meta/db.js';
import { callServer } from '../git/hooks.js';
import { createSnapshot } from './create.js';
import { evictRepository, type EvictDeps, type EvictResult } from './eviction.js';
import { compactRepository, type CompactResult } from './compact.js';
import { restoreRepository, type RestoreOptions, type RestoreResult } from './restore.js';

export interface SnapshotAdminDeps {
  meta: MetaStore;
  store: ObjectStore;
  dataDir: string;
  repoPath: (repositoryId: string) => string;
  /** Settings a restored repository gets (repositoryConfig()). */
  repoConfig: readonly (readonly [string, string])[];
}

/** Byte-level restore progress, per repository (what a progress bar shows). */
export type RestoreBytes = (p: { repository: string; bytes: number; totalBytes: number }) => void;

export interface RestoredRepository extends RestoreResult {
  repository: string;
  target: string;
}

async function findRepo(deps: Pick<SnapshotAdminDeps, 'meta'>, repoPath: string) {
  const where = parseRepoPath(repoPath);
  const repo = await repositories.findRepositoryByPath(deps.meta.db, where.owner, where.space, where.repo);
  if (!repo) throw notFound('repo_not_found', `repository not found: ${repoPath}`, { repository: repoPath });
  return repo;
}

const label = (r: repositories.RepoRow) => `${r.ownerName}/${r.spaceName}/${r.name}`;

export async function listRepoSnapshots(deps: SnapshotAdminDeps, repoPath: string): Promise<snapshots.SnapshotRow[]> {
  return snapshots.listSnapshots(deps.meta.db, (await findRepo(deps, repoPath)).id);
}

export async function snapshotNow(deps: SnapshotAdminDeps, repoPath: string, opts: { full?: boolean } = {}): Promise<snapshots.SnapshotRow> {
  const repo = await findRepo(deps, repoPath);
  return createSnapshot(deps, { repositoryId: repo.id, repoPath: deps.repoPath(repo.id), ...(opts.full && { full: true }) });
}

/** Compacts a repository's snapshots up to `at` (the latest by default) into one full snapshot. */
export async function compactNow(deps: SnapshotAdminDeps, repoPath: string, opts: { at?: string | undefined } = {}): Promise<CompactResult> {
  const repo = await findRepo(deps, repoPath);
  return compactRepository(
    { meta: deps.meta, store: deps.store, scratchRoot: path.join(deps.dataDir, 'tmp') },
    { repositoryId: repo.id, defaultBranch: repo.defaultBranch, at: opts.at },
  );
}

export async function restoreOne(
  deps: SnapshotAdminDeps,
  repoPath: string,
  opts: { at?: string | undefined; before?: string | undefined; to?: string | undefined; onProgress?: RestoreOptions['onProgress']; onBytes?: RestoreBytes },
): Promise<RestoredRepository> {
  const repo = await findRepo(deps, repoPath);
  const target = opts.to ? path.resolve(opts.to) : deps.repoPath(repo.id);
  const result = await restoreRepository(deps, {
    repositoryId: repo.id,
    defaultBranch: repo.defaultBranch,
    target,
    // Beside the target, so the final move is a rename on one filesystem.
    scratchRoot: opts.to ? path.dirname(target) : path.join(deps.dataDir, 'tmp'),
    config: deps.repoConfig,
    at: opts.at,
    before: opts.before,
    ...(opts.onProgress && { onProgress: opts.onProgress }),
    ...(opts.onBytes && { onBytes: (p) => opts.onBytes!({ repository: label(repo), ...p }) }),
  });
  // Back in its own place: no longer evicted, if it was.
  if (target === deps.repoPath(repo.id)) await residency.clearEvicted(deps.meta.db, repo.id, now());
  return { ...result, repository: label(repo), target };
}

/**
 * Evicts a repository from local disk now (docs/design/snapshots.md, "Eviction"). A running
 * server does it, under its own lock against requests for the repository; with none running
 * this process does.
 */
export async function evictNow(deps: EvictDeps & { socketPath: string }, repoPath: string): Promise<EvictResult & { repository: string }> {
  const repo = await findRepo(deps, repoPath);
  const answered = await callServer(deps.socketPath, 'evict', { repositoryId: repo.id });
  const result = answered ? (answered.result as EvictResult) : await evictRepository(deps, repo.id, label(repo));
  return { ...result, repository: label(repo) };
}

/**
 * Restores the latest snapshot of every repository whose directory is missing. Evicted ones
 * are left to their next request (restoring them all could fill the disk they were evicted from).
 */
export async function restoreAll(
  deps: SnapshotAdminDeps,
  opts: { onProgress?: RestoreOptions['onProgress']; onBytes?: RestoreBytes } = {},
): Promise<{ restored: RestoredRepository[]; present: string[]; evicted: string[] }> {
  const restored: RestoredRepository[] = [];
  const present: string[] = [];
  const evicted: string[] = [];
  const marked = await residency.evictedIds(deps.meta.db);
  for (const repo of await repositories.listRepositories(deps.meta.db)) {
    const target = deps.repoPath(repo.id);
    if (await stat(target).catch(() => undefined)) {
      present.push(label(repo));
      continue;
    }
    if (marked.has(repo.id)) {
      evicted.push(label(repo));
      continue;
    }
    const result = await restoreRepository(deps, {
      repositoryId: repo.id,
      defaultBranch: repo.defaultBranch,
      target,
      scratchRoot: path.join(deps.dataDir, 'tmp'),
      config: deps.repoConfig,
      ...(opts.onProgress && { onProgress: opts.onProgress }),
      ...(opts.onBytes && { onBytes: (p) => opts.onBytes!({ repository: label(repo), ...p }) }),
    });
    restored.push({ ...result, repository: label(repo), target });
  }
  return { restored, present, evicted };
}
