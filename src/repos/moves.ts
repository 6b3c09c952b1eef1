/**
 * Moving repositories between shards (issue 11; docs/design/replication.md, "Moving
 * repositories"): `gitstratum repo move` and `gitstratum shard drain`. The mover runs where the
 * command runs and drives the two shards' writers over the signed node routes; what it has
 * done is in PostgreSQL (meta/moves.ts), so a mover that dies leaves the repository on one
 * shard, served, and its pushes paused for at most `pauseMaxMs`.
 *
 * 1. The target's writer copies the repository from its latest snapshot and the source writer
 *    (replication/move-copies.ts), twice: the second round brings only what was pushed during
 *    the first, so the pause that follows is short.
 * 2. Pushes are paused (503 + Retry-After; clones and fetches go on from the source), and the
 *    source writer waits for the pushes still running to end and reports its refs.
 * 3. The target's writer copies the last changes; its refs must equal the source's.
 * 4. Routing switches in one transaction, which also lifts the pause and fails when the pause
 *    ran out meanwhile (a push may then have reached the source after step 3). Any failure
 *    before it lifts the pause and leaves the repository where it was.
 * 5. The old shard's disks remove their copies after the grace period (move-copies.ts sweep).
 *
 * Each call to a writer is retried while the shard fails over (its new writer does it again),
 * within the step's bound. A drain is a loop of moves, `concurrency` at a time.
 */
import { newId } from '../shared/ids.js';
import type { MetaStore } from '../meta/db.js';
import { now } from '../meta/db.js';
import { appendAudit } from '../meta/audit.js';
import * as moves from '../meta/moves.js';
import { findRepositoryByPath, listRepositories, type RepoRow } from '../meta/repositories.js';
import { findShard, listShardLoads, setShardState, spacePins } from '../meta/shards.js';
import type { ShardLeases } from '../meta/shard-leases.js';
import { actorId, actorName, requireSiteAdmin, type Actor } from '../access/policy.js';
import { conflict, DomainError, isDomainError, notFound, unavailable } from '../shared/errors.js';
import { parseRepoPath } from './names.js';
import { chooseShard } from './placement.js';
import { RemoteRepoHost } from './remote-host.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface MoveOptions {
  /** The longest pushes stay paused; past it the move gives up and pushes resume (default 30 s). */
  pauseMaxMs?: number;
  /** How long a copy step may keep failing over before the move gives up (default 120 s). */
  retryMs?: number;
  /** Told each step, for progress output. */
  onStep?: (text: string) => void;
}

export interface MoveResult {
  repository: string;
  id: string;
  from: string;
  to: string;
  /** False: it was on the target shard already. */
  moved: boolean;
  moveId?: string;
  refs?: number;
  /** How long its pushes were paused, and the whole move took. */
  pauseMs?: number;
  totalMs?: number;
}

export interface DrainOptions extends MoveOptions {
  /** Moves at a time (default 2). */
  concurrency?: number;
  /** Told after each repository: done so far, of how many, and its result or error. */
  onProgress?: (done: number, total: number, label: string, result: MoveResult | Error) => void;
}

export interface DrainResult {
  shard: string;
  moved: MoveResult[];
  failed: { repository: string; error: string }[];
  /** Repositories left on the shard (new ones may have been placed there meanwhile). */
  remaining: number;
  /** Whether the shard is now `drained` (empty). */
  drained: boolean;
}

const LEASE_MS = 60_000;

/** Whether these settings make a cluster member that can move repositories: PostgreSQL and the cluster secret. */
export function isCluster(dialect: MetaStore['dialect'], secret: string | undefined): boolean {
  return dialect === 'postgres' && Boolean(secret);
}

export function createMover(deps: { meta: MetaStore; leases: ShardLeases; secret: string | undefined }) {
  const { meta } = deps;
  const { db } = meta;

  function requireCluster(): string {
    if (!isCluster(meta.dialect, deps.secret)) {
      throw conflict('not_a_cluster', 'moving repositories needs a cluster: PostgreSQL and the cluster secret, as a frontend has them (GITSTRATUM_DATABASE_URL and GITSTRATUM_CLUSTER_SECRET, or --config)');
    }
    return deps.secret!;
  }

  /**
   * `send` on the shard's writer, again while it fails over, until `deadline`. `bounded`: each
   * request is also cut at the deadline (inside the pause, where a frozen writer must not hold
   * the mover past it); a copy outside it may take as long as the repository needs.
   */
  async function onWriter<T>(
    hosts: Map<string, RemoteRepoHost>,
    shard: string,
    deadline: number,
    send: (host: RemoteRepoHost, signal?: AbortSignal) => Promise<T>,
    bounded = false,
  ): Promise<T> {
    for (;;) {
      const signal = bounded ? AbortSignal.timeout(Math.max(0, deadline - Date.now())) : undefined;
      try {
        const lease = await deps.leases.current(shard);
        if (!lease || lease.expiresInMs <= 0 || !lease.url) throw unavailable('shard_unavailable', `shard ${shard} has no writer now`, { shard });
        let host = hosts.get(lease.url);
        if (!host) hosts.set(lease.url, (host = new RemoteRepoHost({ url: lease.url, secret: requireCluster(), connectTimeoutMs: 10_000 })));
        return await send(host, signal);
      } catch (err) {
        if (signal?.aborted) throw unavailable('writer_too_slow', `the writer of shard ${shard} did not answer before the pause's end`, { shard });
        if (!isDomainError(err) || err.kind !== 'unavailable' || Date.now() >= deadline) throw err;
        await sleep(Math.min(500, Math.max(0, deadline - Date.now())));
      }
    }
  }

  async function audit(actor: Actor, action: string, repo: RepoRow, details: Record<string, unknown>) {
    await appendAudit(db, { at: now(), actorId: actorId(actor), actorName: actorName(actor), action, repositoryId: repo.id, target: label(repo), details, requestId: null });
  }

  async function moveRow(actor: Actor, repo: RepoRow, to: string, opts: MoveOptions): Promise<MoveResult> {
    requireCluster();
    const step = opts.onStep ?? (() => {});
    const pauseMaxMs = opts.pauseMaxMs ?? 30_000;
    const retryMs = opts.retryMs ?? 120_000;
    const base = { repository: label(repo), id: repo.id, from: repo.shard, to };
    if (repo.shard === to) return { ...base, moved: false };
    const target = await findShard(db, to);
    if (!target) throw notFound('shard_not_found', `shard not found: ${to}`, { shard: to });
    if (target.state !== 'active') throw conflict('shard_not_active', `shard ${to} is ${target.state}: repositories are not moved onto it`, { shard: to });
    const move = await moves.startMove(meta, { id: newId(), repositoryId: repo.id, from: repo.shard, to, actorName: actorName(actor), leaseMs: LEASE_MS });
    if (!move) throw conflict('move_running', `repository ${label(repo)} is being moved already (or left shard ${repo.shard} meanwhile)`, { repository: label(repo) });
    const started = performance.now();
    const hosts = new Map<string, RemoteRepoHost>();
    let lost = false;
    const renewal = setInterval(() => {
      moves.renewMove(meta, move.id, LEASE_MS).then((held) => (lost ||= !held), () => {});
    }, LEASE_MS / 4);
    renewal.unref();
    const stillMine = () => {
      if (lost) throw conflict('move_taken', 'the move was ended by another (its claim lapsed)');
    };
    try {
      step(`copying ${label(repo)} from shard ${repo.shard} to ${to}`);
      const first = Date.now() + retryMs;
      await onWriter(hosts, to, first, (h) => h.moveCopy(repo.id, repo.shard));
      stillMine();
      // What was pushed during the first copy: the pause waits only for what comes after this.
      await onWriter(hosts, to, Date.now() + retryMs, (h) => h.moveCopy(repo.id, repo.shard));
      stillMine();
      step(`pausing pushes to ${label(repo)} for the last changes`);
      if (!(await moves.pausePushes(meta, move, pauseMaxMs))) throw conflict('move_taken', 'the move is no longer active');
      const pausedAt = performance.now();
      // Room at the end of the pause for the switch itself.
      const pauseDeadline = Date.now() + pauseMaxMs - 2000;
      const source = await onWriter(hosts, repo.shard, pauseDeadline, (h, signal) => h.moveQuiesce(repo.id, Math.max(0, Math.min(20_000, pauseDeadline - Date.now())), signal), true);
      const copied = await onWriter(hosts, to, pauseDeadline, (h, signal) => h.moveCopy(repo.id, repo.shard, signal), true);
      if (copied.digest !== source.digest) throw new Error(`the copy's refs differ from the source's after the final copy (${copied.refs} refs against ${source.refs})`);
      stillMine();
      const pauseMs = performance.now() - pausedAt;
      if (!(await moves.switchShard(meta, move, pauseMs))) throw new Error(`pushes were paused longer than ${pauseMaxMs} ms; the repository stays on shard ${repo.shard}`);
      const totalMs = performance.now() - started;
      // Moved, whatever happens to its audit entry: a failure here is said, not made a failed move.
      await audit(actor, 'repo.move', repo, { from: repo.shard, to, move_id: move.id, pause_ms: Math.round(pauseMs), refs: copied.refs }).catch((err: unknown) =>
        step(`warning: ${label(repo)} moved, but its audit entry was not written: ${(err as Error).message}`),
      );
      return { ...base, moved: true, moveId: move.id, refs: copied.refs, pauseMs, totalMs };
    } catch (err) {
      const why = (err as Error).message;
      await moves.failMove(meta, move, why).catch(() => {});
      await audit(actor, 'repo.move_failed', repo, { from: repo.shard, to, move_id: move.id, error: why }).catch(() => {});
      const message = `moving ${label(repo)} to shard ${to} failed; it stays on shard ${repo.shard}: ${why}`;
      throw isDomainError(err) ? new DomainError(err.kind, err.code, message, err.fields) : unavailable('move_failed', message, { repository: label(repo) });
    } finally {
      clearInterval(renewal);
      await Promise.all([...hosts.values()].map((h) => h.close()));
    }
  }

  return {
    /** Moves one repository to shard `to` (site administrators only). */
    async move(actor: Actor, repoPath: string, to: string, opts: MoveOptions = {}): Promise<MoveResult> {
      requireSiteAdmin(actor);
      const where = parseRepoPath(repoPath);
      const repo = await findRepositoryByPath(db, where.owner, where.space, where.repo);
      if (!repo) throw notFound('repo_not_found', `repository not found: ${repoPath}`, { repository: repoPath });
      return moveRow(actor, repo, to, opts);
    },

    /**
     * Moves every repository off the shard (already marked draining by the caller), each to the
     * shard placement would choose for it now (a fork network's members together where they
     * can be), `concurrency` at a time; marks the shard drained when none is left.
     */
    async drain(actor: Actor, shard: string, opts: DrainOptions = {}): Promise<DrainResult> {
      requireSiteAdmin(actor);
      requireCluster();
      const todo = (await listRepositories(db)).filter((r) => r.shard === shard);
      const networks = new Map<string, string>();
      const result: DrainResult = { shard, moved: [], failed: [], remaining: 0, drained: false };
      let next = 0;
      let done = 0;
      const worker = async () => {
        for (let i = next++; i < todo.length; i = next++) {
          const repo = todo[i]!;
          let outcome: MoveResult | Error;
          try {
            const to = networks.get(repo.forkNetwork) ?? (await destination(repo, shard));
            networks.set(repo.forkNetwork, to);
            outcome = await moveRow(actor, repo, to, opts);
            result.moved.push(outcome);
          } catch (err) {
            outcome = err as Error;
            result.failed.push({ repository: label(repo), error: outcome.message });
          }
          opts.onProgress?.(++done, todo.length, label(repo), outcome);
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 2, 16)) }, worker));
      result.remaining = (await listRepositories(db)).filter((r) => r.shard === shard).length;
      const row = await findShard(db, shard);
      if (result.remaining === 0 && row?.state === 'draining') {
        await setShardState(db, shard, 'drained');
        await appendAudit(db, { at: now(), actorId: actorId(actor), actorName: actorName(actor), action: 'shard.drained', target: shard, details: { moved: result.moved.length }, requestId: null });
        result.drained = true;
      }
      return result;
    },
  };

  /** Where placement would put the repository now, the shard being drained aside. */
  async function destination(repo: RepoRow, from: string): Promise<string> {
    const [loads, pins] = await Promise.all([listShardLoads(db), spacePins(db, repo.spaceId)]);
    return chooseShard(
      loads.filter((s) => s.name !== from),
      { pins, space: `${repo.ownerName}/${repo.spaceName}` },
    );
  }
}

export type Mover = ReturnType<typeof createMover>;

function label(repo: RepoRow): string {
  return `${repo.ownerName}/${repo.spaceName}/${repo.name}`;
}
