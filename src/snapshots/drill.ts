/**
 * The DR drill (docs/design/snapshots.md): proves that snapshots restore, and restore what the
 * server holds. For a sample of the repositories that have snapshots (all by default), it
 * restores the latest snapshot into a scratch directory under <data>/tmp (the full restore:
 * every pack through index-pack, the refs imported, `git fsck`), then compares
 * - the restored refs with the snapshot row's refs digest: any difference is a mismatch;
 * - the live repository's refs with that digest: a difference is a mismatch unless a push
 *   began after the snapshot did (then the repository is reported dirty: the worker has not
 *   caught up, which the RPO metrics watch). The live refs are read before the event log, so a
 *   push landing meanwhile is seen as dirty, never as a mismatch.
 * A restore that fails (a damaged or missing object, a broken chain) is a failure. The scratch
 * directory is removed after each repository and at the end.
 */
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { Gauge, type Registry } from 'prom-client';
import path from 'node:path';
import type { MetaStore } from '../meta/db.js';
import * as repositories from '../meta/repositories.js';
import * as snapshots from '../meta/snapshots.js';
import type { ObjectStore } from '../storage/object-store.js';
import { readRefs } from './create.js';
import { encodeRefs, refsDigest, type RefEntry } from './format.js';
import { restoreRepository } from './restore.js';

export interface DrillDeps {
  meta: MetaStore;
  store: ObjectStore;
  dataDir: string;
  repoPath: (repositoryId: string) => string;
  repoConfig: readonly (readonly [string, string])[];
}

export interface DrillOptions {
  /** How many repositories to check, chosen at random; all when unset. */
  sample?: number | undefined;
  /** Checked between repositories: an aborted drill reports what it checked so far. */
  signal?: AbortSignal;
  onRepository?: (r: DrillRepository) => void;
}

export type DrillStatus = 'ok' | 'dirty' | 'mismatch' | 'failed' | 'no-live-copy';

export interface DrillRepository {
  repository: string;
  repositoryId: string;
  snapshot: string | undefined;
  status: DrillStatus;
  /** What differs or what failed. */
  detail?: string;
  refs: number;
  bytes: number;
  durationMs: number;
}

export interface DrillReport {
  startedAt: string;
  finishedAt: string;
  /** Repositories that have snapshots; `checked` of them were drilled. */
  repositoriesWithSnapshots: number;
  checked: number;
  counts: Record<DrillStatus, number>;
  bytes: number;
  restoreSeconds: number;
  bytesPerSecond: number;
  /** No mismatch and no failure. */
  passed: boolean;
  repositories: DrillRepository[];
}

export async function runDrill(deps: DrillDeps, opts: DrillOptions = {}): Promise<DrillReport> {
  const startedAt = new Date().toISOString();
  const ids = await snapshots.repositoriesWithSnapshots(deps.meta.db);
  const chosen = sample(ids, opts.sample ?? ids.length);
  const results: DrillRepository[] = [];
  const scratch = await mkdtempIn(path.join(deps.dataDir, 'tmp'), 'dr-drill-');
  try {
    for (const id of chosen) {
      if (opts.signal?.aborted) break;
      const result = await drillOne(deps, id, scratch);
      results.push(result);
      opts.onRepository?.(result);
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  const counts: Record<DrillStatus, number> = { ok: 0, dirty: 0, mismatch: 0, failed: 0, 'no-live-copy': 0 };
  for (const r of results) counts[r.status]++;
  const bytes = results.reduce((n, r) => n + r.bytes, 0);
  const restoreSeconds = results.reduce((n, r) => n + r.durationMs, 0) / 1000;
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    repositoriesWithSnapshots: ids.length,
    checked: results.length,
    counts,
    bytes,
    restoreSeconds,
    bytesPerSecond: restoreSeconds > 0 ? bytes / restoreSeconds : 0,
    passed: counts.mismatch === 0 && counts.failed === 0,
    repositories: results,
  };
}

async function drillOne(deps: DrillDeps, repositoryId: string, scratch: string): Promise<DrillRepository> {
  const repo = await repositories.findRepositoryById(deps.meta.db, repositoryId);
  const label = repo ? `${repo.ownerName}/${repo.spaceName}/${repo.name}` : repositoryId;
  const latest = await snapshots.latestSnapshot(deps.meta.db, repositoryId);
  const base = { repository: label, repositoryId, snapshot: latest?.id, refs: 0, bytes: 0, durationMs: 0 };
  if (!repo || !latest) return { ...base, status: 'failed', detail: 'repository or snapshot vanished during the drill' };

  const livePath = deps.repoPath(repositoryId);
  const live = (await stat(livePath).catch(() => undefined)) ? await readRefs(livePath) : undefined;
  const dirty = await snapshots.pushedSince(deps.meta.db, repositoryId, latest.beginEventId);

  const target = path.join(scratch, `${repositoryId.toLowerCase()}.git`);
  const started = Date.now();
  try {
    const restored = await restoreRepository(deps, {
      repositoryId,
      defaultBranch: repo.defaultBranch,
      target,
      scratchRoot: scratch,
      config: deps.repoConfig,
      at: latest.id,
    });
    const durationMs = Date.now() - started;
    const restoredRefs = await readRefs(target);
    const measured = { ...base, refs: restored.refs, bytes: restored.bytes, durationMs };
    if (refsDigest(encodeRefs(restoredRefs)) !== latest.refsDigest) {
      return { ...measured, status: 'mismatch', detail: "restored refs differ from the snapshot's refs digest" };
    }
    if (!live) return { ...measured, status: 'no-live-copy', detail: `no repository at ${livePath}` };
    if (refsDigest(encodeRefs(live)) === latest.refsDigest) return { ...measured, status: 'ok' };
    const differences = refDifferences(restoredRefs, live);
    if (dirty) return { ...measured, status: 'dirty', detail: `pushed since the snapshot: ${differences}` };
    return { ...measured, status: 'mismatch', detail: `live refs differ from the snapshot and no push explains it: ${differences}` };
  } catch (err) {
    return { ...base, durationMs: Date.now() - started, status: 'failed', detail: (err as Error).message };
  } finally {
    await rm(target, { recursive: true, force: true });
  }
}

/** A short description of how `live` differs from `restored`: at most five refs. */
function refDifferences(restored: readonly RefEntry[], live: readonly RefEntry[]): string {
  const show = (r: RefEntry | undefined) => (r === undefined ? 'absent' : r.oid !== undefined ? r.oid.slice(0, 12) : `-> ${r.target}`);
  const before = new Map(restored.map((r) => [r.name, r]));
  const after = new Map(live.map((r) => [r.name, r]));
  const lines: string[] = [];
  for (const name of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const a = before.get(name);
    const b = after.get(name);
    if (show(a) !== show(b)) lines.push(`${name} ${show(a)} (snapshot) vs ${show(b)} (live)`);
  }
  return lines.length > 5 ? `${lines.slice(0, 5).join('; ')}; and ${lines.length - 5} more` : lines.join('; ');
}

/** `count` items of `items` in random order (Fisher–Yates). */
function sample<T>(items: readonly T[], count: number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, Math.max(0, count));
}

async function mkdtempIn(dir: string, prefix: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  return mkdtemp(path.join(dir, prefix));
}

/** The last drill's result as gauges; a drill that never ran leaves the timestamps at 0. */
export function createDrillMetrics(registry: Registry) {
  const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers: [registry] });
  const lastRun = gauge('gitstratum_dr_drill_last_run_timestamp_seconds', 'When the last DR drill finished (Unix time)');
  const lastSuccess = gauge('gitstratum_dr_drill_last_success_timestamp_seconds', 'When the last DR drill with no mismatch and no failure finished');
  const repos = gauge('gitstratum_dr_drill_repositories', 'Repositories checked by the last DR drill, by result (ok, dirty, mismatch, failed, no_live_copy)', ['result']);
  const bytes = gauge('gitstratum_dr_drill_restored_bytes', 'Snapshot bytes restored by the last DR drill');
  const rate = gauge('gitstratum_dr_drill_restore_bytes_per_second', 'Restore throughput of the last DR drill');
  lastRun.set(0);
  lastSuccess.set(0);
  return {
    record(report: DrillReport): void {
      const at = Date.parse(report.finishedAt) / 1000;
      lastRun.set(at);
      if (report.passed) lastSuccess.set(at);
      for (const [status, n] of Object.entries(report.counts)) repos.set({ result: status.replace(/-/g, '_') }, n);
      bytes.set(report.bytes);
      rate.set(report.bytesPerSecond);
    },
  };
}
