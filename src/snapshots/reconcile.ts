/**
 * At start, the disk and the event log reconciled (docs/design/snapshots.md, "Crash
 * recovery"): a repository whose live refs differ from its latest snapshot, and which the event
 * log does not already call dirty, is marked dirty, so the snapshot worker persists it within
 * the RPO like any pushed repository.
 *
 * The event log alone misses what happened while no server recorded it: a push made with git
 * on the disk itself, a repository changed by hand while the server was down. The live refs are the truth; comparing
 * their digest costs two git commands per repository, once per start, off the request path.
 *
 * The mark is a `push-begin` event with `{ "source": "recovery" }` in its details: the one kind
 * the dirty rule already counts for "the refs may have changed", with no schema change.
 *
 * A push that began and never ended (the server died while git received it) is one the snapshot
 * worker would otherwise wait out as if still in flight (worker.ts, `openPushGraceMs`): the
 * restarted server, before it takes a request, marks it the same way, so it is persisted at once.
 */
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { appendEvent, dirtyRepositories, isDirty, latestSnapshot } from '../meta/snapshots.js';
import { readRefs } from './create.js';
import { encodeRefs, refsDigest } from './format.js';

export interface ReconcileDeps {
  meta: MetaStore;
  /** The resident repositories; one whose directory is missing (evicted) is skipped. */
  repositories: () => Promise<{ id: string; path: string }[]>;
}

/** Marks dirty every repository whose refs moved past its latest snapshot; returns their ids. */
export async function markChangedRepositoriesDirty(deps: ReconcileDeps, signal?: AbortSignal): Promise<string[]> {
  const { db } = deps.meta;
  const marked: string[] = [];
  for (const repo of await deps.repositories()) {
    if (signal?.aborted) break;
    if (await isDirty(db, repo.id)) continue;
    const refs = await readRefs(repo.path).catch(() => undefined);
    if (!refs) continue; // evicted, or deleted meanwhile
    const latest = await latestSnapshot(db, repo.id);
    const changed = latest ? refsDigest(encodeRefs(refs)) !== latest.refsDigest : refs.some((r) => r.oid !== undefined);
    if (!changed) continue;
    await appendEvent(db, repo.id, 'push-begin', now(), { source: 'recovery', reason: latest ? 'refs differ from the latest snapshot' : 'refs and no snapshot' });
    marked.push(repo.id);
  }
  return marked;
}

/**
 * Marks the pushes left open by a previous process as cut off; returns their repositories' ids.
 * Only before this server takes requests: then no push on its repositories can be in flight.
 */
export async function closeCutOffPushes(deps: ReconcileDeps): Promise<string[]> {
  const mine = new Set((await deps.repositories()).map((r) => r.id));
  const open = (await dirtyRepositories(deps.meta.db)).filter((d) => d.openPushSince !== undefined && mine.has(d.repositoryId));
  for (const d of open) {
    await appendEvent(deps.meta.db, d.repositoryId, 'push-begin', now(), { source: 'recovery', reason: `push begun at ${d.openPushSince} never ended` });
  }
  return open.map((d) => d.repositoryId);
}
