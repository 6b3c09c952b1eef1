/**
 * An async replica of a shard (issue 11; docs/design/replication.md): a storage node started
 * with `--replica async` keeps its own copy of every repository of its shard, following the
 * writer. It never takes the shard's lease.
 *
 * - A repository it lacks is restored from its latest snapshot (or made empty), then brought
 *   up to the writer by one round of follow.ts: the writer sends only what came after.
 * - Each round reads the repository's refs version first and records it as the replica's
 *   position once the round applied, so the position never claims more than the copy holds.
 * - What to do: every repository whose version passed the replica's position, found by one
 *   query at start and every `intervalMs`, and at once for each version bump the writer
 *   announces (NOTIFY); and every repository of the shard every `reconcileMs`, which repairs
 *   drift the versions do not show (a round compares every ref with the writer's).
 * - At most `concurrency` rounds at a time, one per repository; a failed round is logged and
 *   counted, and the repository tried again at the next pass.
 * - A copy of a repository no longer on the shard (deleted on the writer, or moved away) is
 *   removed at the next reconciliation, which lists the whole shard anyway; one moved away
 *   is kept for the move grace period first (meta/moves.ts copiesToKeep).
 */
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../shared/log.js';
import type { MetaStore } from '../meta/db.js';
import type { ObjectStore } from '../storage/object-store.js';
import { readRefsVersion, REFS_CHANNEL } from '../meta/refs-versions.js';
import { behindRepositories, forgetReplica, recordPosition, REPLICA_HEARTBEAT_MS, replicaHeartbeat } from '../meta/replication.js';
import { findRepositoryById, repositoryIdsOnShard } from '../meta/repositories.js';
import { restoreRepository } from '../snapshots/restore.js';
import { copiesToKeep } from '../meta/moves.js';
import { replicaToken } from '../shared/cluster-signature.js';
import { REPLICA_PREFIX } from '../http/node-routes.js';
import { notFound, unavailable } from '../shared/errors.js';
import { fetchObjects, installPack, objectsConnected, packObjectCount } from '../git/command.js';
import { followOnce } from './follow.js';

export interface MirrorOptions {
  shard: string;
  /** This replica's disk (meta/replication.ts). */
  diskId: string;
  /** `sync`: also the shard's standby, holding every push's objects before the refs commit. */
  mode: 'async' | 'sync';
  /** Where frontends reach this node. */
  advertiseUrl: string;
  intervalMs: number;
  /** How often every repository of the shard gets a round, behind or not: drift is repaired (a round compares every ref). */
  reconcileMs: number;
  concurrency: number;
  /** How long a copy of a repository moved away from the shard is kept (config moveGraceSeconds). */
  moveGraceMs: number;
}

export interface MirrorDeps {
  meta: MetaStore;
  store: ObjectStore;
  dataDir: string;
  repoPath(id: string): string;
  /** The repositories this disk holds a copy of. */
  copies(): Promise<string[]>;
  /** Removes this disk's copy of a repository. */
  removeCopy(id: string): Promise<void>;
  repoConfig: readonly (readonly [string, string])[];
  /** The cluster secret: replica tokens are made with it. */
  secret: string;
  /** The URL of the shard's writer now (its lease), or undefined when it has none. */
  writerUrl(): Promise<string | undefined>;
  log: Logger;
  metrics: MirrorMetrics;
}

export interface MirrorMetrics {
  rounds: { inc(labels: { result: 'ok' | 'failed' }): void };
  removed: { inc(): void };
  lagSeconds: { set(value: number): void };
  behind: { set(value: number): void };
  /** Transactions a synchronous replica held for its writer, by how: the writer's pack sufficed, or objects were fetched. */
  holds: { inc(labels: { how: 'pack' | 'fetch' }): void };
}

/** How long a replica token lasts: one round's fetch, with room. */
const TOKEN_MS = 15 * 60_000;

export class Mirror {
  private readonly wanted = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  /** Copies being restored or made, shared by a round and a synchronous fetch. */
  private readonly copying = new Map<string, Promise<string>>();
  /** The refs version each running round read: a pass does not queue another round for it. */
  private readonly roundVersions = new Map<string, bigint>();
  private timer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private passing: Promise<void> | undefined;
  private lastReconcile = 0;
  private closed = false;

  constructor(
    private readonly opts: MirrorOptions,
    private readonly deps: MirrorDeps,
  ) {}

  async start(): Promise<void> {
    const { meta, log } = this.deps;
    await replicaHeartbeat(meta, { diskId: this.opts.diskId, shard: this.opts.shard, url: this.opts.advertiseUrl, mode: this.opts.mode });
    this.unlisten = await meta.listen?.(REFS_CHANNEL, (payload) => {
      // A takeover announces its whole shard: compare every repository of it.
      if (payload === `shard:${this.opts.shard}`) this.schedulePass();
      // A synchronous replica holds every push's objects before its refs commit and a takeover
      // applies the committed record, so it brings its refs up at its passes only: a round per
      // push would cost the writer an advertisement on every push, and serves no one.
      else if (this.opts.mode === 'async' && /^[0-9A-HJKMNP-TV-Z]{26}$/.test(payload)) this.want(payload);
    });
    this.timer = setInterval(() => this.schedulePass(), this.opts.intervalMs);
    this.timer.unref();
    // Frontends send reads only to replicas heard from lately (REPLICA_SEEN_WITHIN_MS).
    this.heartbeat = setInterval(() => {
      replicaHeartbeat(meta, { diskId: this.opts.diskId, shard: this.opts.shard, url: this.opts.advertiseUrl, mode: this.opts.mode }).catch((err: unknown) =>
        log.warn({ err }, 'replica heartbeat not recorded; frontends stop sending it reads until one is'),
      );
    }, REPLICA_HEARTBEAT_MS);
    this.heartbeat.unref();
    log.info({ shard: this.opts.shard, disk_id: this.opts.diskId }, 'replica following the shard writer');
    this.schedulePass();
  }

  /**
   * Stops following for good and leaves the replicas' table, for a sync replica taking its
   * shard over: from then on it writes, and no writer may wait for it.
   */
  async becomeWriter(): Promise<void> {
    await this.close();
    await forgetReplica(this.deps.meta, this.opts.diskId);
  }

  /** Resolves once no pass and no round is running (at shutdown, after the timers stopped). */
  async settled(): Promise<void> {
    while (this.passing || this.running.size > 0) await Promise.all([this.passing, ...this.running.values()]);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    clearInterval(this.heartbeat);
    await this.unlisten?.().catch(() => {});
    await this.settled().catch(() => {});
  }

  private schedulePass(): void {
    if (this.closed || this.passing) return;
    this.passing = this.pass()
      .catch((err: unknown) => this.deps.log.warn({ err }, 'replica pass failed; trying again at the next'))
      .finally(() => (this.passing = undefined));
  }

  private async pass(): Promise<void> {
    const { meta, metrics } = this.deps;
    const behind = await behindRepositories(meta, this.opts.diskId, this.opts.shard);
    metrics.behind.set(behind.length);
    metrics.lagSeconds.set(behind.reduce((max, r) => Math.max(max, r.lagMs), 0) / 1000);
    for (const r of behind) {
      const reading = this.roundVersions.get(r.id);
      if (reading === undefined || reading < BigInt(r.version)) this.want(r.id);
    }
    if (performance.now() - this.lastReconcile < this.opts.reconcileMs) return;
    this.lastReconcile = performance.now();
    // The disk is listed before the database is read: a copy made in between is not in the
    // listing, so it is never taken for the copy of a repository that is gone.
    const onDisk = await this.deps.copies();
    const onShard = await repositoryIdsOnShard(meta.db, this.opts.shard);
    // Moved away lately: reads that began before the switch may still run here.
    const keep = await copiesToKeep(meta, this.opts.shard, this.opts.moveGraceMs);
    for (const id of onDisk) {
      if (onShard.has(id) || keep.has(id) || this.running.has(id) || this.wanted.has(id)) continue;
      await this.deps.removeCopy(id);
      metrics.removed.inc();
      this.deps.log.info({ repo_id: id }, 'replica removed its copy of a repository no longer on its shard');
    }
    for (const id of onShard) this.want(id);
  }

  /**
   * Queues a round for the repository (announced ones may be of another shard: the round looks).
   * One already running for it ends first; then drain() starts the next.
   */
  private want(id: string): void {
    if (this.closed) return;
    this.wanted.add(id);
    this.drain();
  }

  private drain(): void {
    for (const id of this.wanted) {
      if (this.running.size >= this.opts.concurrency) return;
      if (this.running.has(id)) continue;
      this.wanted.delete(id);
      const round = this.round(id).finally(() => {
        this.running.delete(id);
        this.roundVersions.delete(id);
        this.drain();
      });
      this.running.set(id, round);
    }
  }

  private async round(id: string): Promise<void> {
    const { meta, log, metrics } = this.deps;
    try {
      const repo = await findRepositoryById(meta.db, id);
      if (!repo || repo.shard !== this.opts.shard) return;
      // First: the copy this round makes is at least as new as this version.
      const version = await readRefsVersion(meta.db, id);
      this.roundVersions.set(id, BigInt(version));
      const target = await this.ensureCopy(id, repo.defaultBranch);
      const writer = await this.writerSource(id);
      const { changes } = await followOnce(target, writer.url, writer.settings, this.opts.mode === 'sync');
      await recordPosition(meta, this.opts.diskId, id, version);
      metrics.rounds.inc({ result: 'ok' });
      if (changes.length > 0) log.debug({ repo_id: id, version, changes: changes.length }, 'replica applied the writer’s refs');
    } catch (err) {
      metrics.rounds.inc({ result: 'failed' });
      log.warn({ err, repo_id: id }, 'replica round failed; the repository is tried again at the next pass');
    }
  }

  /**
   * The copy of a repository this replica lacks, restored from its latest snapshot (or made
   * empty), so that the writer sends only what came after. Concurrent callers share one restore.
   */
  private ensureCopy(id: string, defaultBranch: string): Promise<string> {
    const running = this.copying.get(id);
    if (running) return running;
    const target = this.deps.repoPath(id);
    const made = (async () => {
      if (await stat(target).catch(() => undefined)) return target;
      const restored = await restoreRepository(
        { meta: this.deps.meta, store: this.deps.store },
        { repositoryId: id, defaultBranch, target, scratchRoot: path.join(this.deps.dataDir, 'tmp'), config: this.deps.repoConfig },
      );
      this.deps.log.info({ repo_id: id, snapshot: restored.snapshot?.id ?? null, refs: restored.refs }, 'replica copy restored from snapshots; the writer sends what came after');
      return target;
    })().finally(() => this.copying.delete(id));
    this.copying.set(id, made);
    return made;
  }

  /** Where and how this replica's git fetches a repository from the shard's writer now. */
  private async writerSource(id: string): Promise<{ url: string; settings: [string, string][] }> {
    const writer = await this.deps.writerUrl();
    if (!writer) throw unavailable('no_shard_writer', `shard ${this.opts.shard} has no writer now`);
    const token = replicaToken(this.deps.secret, id, Date.now() + TOKEN_MS);
    return { url: new URL(`${REPLICA_PREFIX}/${id}`, writer).href, settings: [['http.extraHeader', `Authorization: Bearer ${token}`]] };
  }

  /**
   * A synchronous replica's part of a push (docs/design/replication.md): the objects of a ref
   * transaction the writer has prepared, from the pack it sent along and, for what that leaves
   * missing, fetched by id, each checked as fsck would, into this disk's copy (made first if it
   * has none), before the writer lets the refs commit. No ref moves here: the follower's
   * rounds, or a takeover, do that.
   */
  async holdObjects(id: string, oids: readonly string[], pack?: Buffer): Promise<void> {
    if (this.closed) throw unavailable('replica_closing', 'this replica is shutting down');
    const repo = await findRepositoryById(this.deps.meta.db, id);
    if (!repo || repo.shard !== this.opts.shard) throw notFound('repo_not_found', 'no such repository on this shard');
    const target = await this.ensureCopy(id, repo.defaultBranch);
    // The writer's pack of what the transaction adds: enough when this copy holds everything
    // the writer's refs reached; otherwise (a copy behind) the rest is fetched.
    if (pack && (packObjectCount(pack) ?? 0) > 0) await installPack(target, pack);
    if (pack && (await objectsConnected(target, oids))) return this.deps.metrics.holds.inc({ how: 'pack' });
    const writer = await this.writerSource(id);
    await fetchObjects(target, writer.url, oids, writer.settings);
    this.deps.metrics.holds.inc({ how: 'fetch' });
  }
}

export function createMirrorMetrics(registry: Registry): MirrorMetrics {
  return {
    removed: new Counter({ name: 'gitstratum_replica_copies_removed_total', help: 'Copies this replica removed because their repository left its shard (deleted, or moved away).', registers: [registry] }),
    rounds: new Counter({ name: 'gitstratum_replica_rounds_total', help: 'Rounds of this replica following its writer, one per repository brought up to it, by result.', labelNames: ['result'] as const, registers: [registry] }),
    lagSeconds: new Gauge({ name: 'gitstratum_replica_lag_seconds', help: 'Age of the oldest refs version of the shard this replica has not reached, at its last pass (0: up to date).', registers: [registry] }),
    holds: new Counter({
      name: 'gitstratum_sync_holds_total',
      help: "Ref transactions this synchronous replica held before its writer let their refs commit, by how: pack (the objects the writer sent sufficed) or fetch (the rest fetched from the writer).",
      labelNames: ['how'] as const,
      registers: [registry],
    }),
    behind: new Gauge({ name: 'gitstratum_replica_behind_repositories', help: 'Repositories of the shard whose refs version this replica had not reached, at its last pass.', registers: [registry] }),
  };
}

/**
 * This disk's replica id, made at first start and kept in the data directory: positions belong
 * to a disk, so a node whose disk was replaced starts over instead of claiming copies it lost.
 */
export async function replicaDiskId(dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'replica-id');
  const kept = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (/^[0-9a-f]{32}$/.test(kept)) return kept;
  if (kept !== '') throw new Error(`${file} is damaged (not a replica id); remove it, and the node starts over as a new replica`);
  const id = randomBytes(16).toString('hex');
  await writeFile(file, id + '\n', { mode: 0o600, flag: 'wx' }).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  // Another process may have written first: its id is the one.
  return (await readFile(file, 'utf8')).trim();
}
