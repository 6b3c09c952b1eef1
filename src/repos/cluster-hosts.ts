/**
 * The two sides of a cluster's "where a repository lives" (issue 10):
 *
 * - ShardWriter, on a storage node: takes its shard's lease (meta/shard-leases.ts, judged by the
 *   database's clock) and renews it every fifth of its lifetime. A node that does not hold it
 *   (a standby, or a writer whose renewal failed) serves nothing of the shard: WriterHost
 *   refuses with 503 until it holds the lease again, which it retries for on every tick.
 * - ShardRoutedHost, on a frontend: one RepoHost per shard that asks the database which node
 *   holds the shard's lease (cached for `cacheMs`) and forwards to it (RemoteRepoHost). No
 *   writer: 503 with Retry-After, which git and git-lfs show and retry.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { ShardLeases } from '../meta/shard-leases.js';
import type { Logger } from '../shared/log.js';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { invalid, isDomainError, unavailable } from '../shared/errors.js';
import type { GitResponse } from '../git/smart-http.js';
import type { GitCall, HostedRepo, HostOf, NewRepo, RepoHost, RpcCall, SessionCall } from './host.js';
import { RemoteRepoHost } from './remote-host.js';
import { Counter, type Registry } from 'prom-client';

export interface ShardWriterOptions {
  shard: string;
  advertiseUrl: string;
  leaseMs: number;
}

export interface ShardWriterEvents {
  /**
   * Runs once this node holds the lease, before it serves anything: crash recovery of the
   * shard's disk and the start of its background work. Renewals go on meanwhile. A failure
   * gives the lease up (another node may do better) and deposes this one.
   */
  takeover(epoch: number): Promise<void>;
  /**
   * This node held the lease and no longer does (taken over, or not renewed in time). It has
   * already stopped serving; the caller stops the process (a supervisor starts it again as a
   * standby), since background work begun under the old epoch must not go on.
   */
  deposed(why: string): void;
}

export interface ShardWriterMetrics {
  renewals: { inc(labels: { result: 'ok' | 'lost' | 'error' }): void };
  takeovers: { inc(): void };
}

/**
 * A storage node's claim on its shard. A standby tries to take the lease every fifth of its
 * lifetime; the writer renews it as often. It serves only while the lease is surely its own:
 * until `sentAt + 0.8 × lifetime` of the last renewal the database accepted, measured on this
 * node's monotonic clock from *before* the request was sent (the database extends the lease
 * from its own later "now", so this ends earlier than the lease; the margin covers a clock that
 * runs slow). A renewal refused means deposed at once; renewals that fail (database unreachable)
 * let the lease run out by that bound, then deposed.
 */
export class ShardWriter {
  readonly holder = `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
  private epoch: number | undefined;
  private serving = false;
  private validUntil = 0;
  private done = false;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private taking: Promise<void> | undefined;

  constructor(
    private readonly opts: ShardWriterOptions,
    private readonly deps: {
      leases: ShardLeases;
      log: Logger;
      events: ShardWriterEvents;
      metrics?: ShardWriterMetrics;
      /** The registry `cluster status` lists standbys from (meta/storage-nodes.ts): told at every try, writer or not. */
      nodes?: { heartbeat(node: { holder: string; shard: string; url: string }): Promise<void>; forget(holder: string): Promise<unknown> };
    },
  ) {}

  /** The epoch of the lease this node holds (while it recovers, too); undefined once deposed. */
  get leaseEpoch(): number | undefined {
    return this.epoch;
  }

  /** The epoch this node writes under, while it holds the lease and serves. */
  get heldEpoch(): number | undefined {
    if (!this.serving || performance.now() >= this.validUntil) return undefined;
    return this.epoch;
  }

  /**
   * Tries once at once and, when that takes the lease, completes the takeover before resolving
   * (a sole node serves from its first request); then keeps at it.
   */
  async start(): Promise<void> {
    await this.tick();
    await this.taking;
    this.timer = setInterval(() => {
      this.ticking ??= this.tick().finally(() => (this.ticking = undefined));
    }, Math.max(100, Math.floor(this.opts.leaseMs / 5)));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.done) return;
    const { leases, log, metrics } = this.deps;
    const { shard, advertiseUrl, leaseMs } = this.opts;
    const sentAt = performance.now();
    // For operators only: a failure must not cost the lease.
    this.deps.nodes?.heartbeat({ holder: this.holder, shard, url: advertiseUrl }).catch((err: unknown) => log.debug({ err }, 'storage node registry not updated'));
    if (this.epoch !== undefined) {
      let renewed: boolean;
      try {
        renewed = await leases.renew(shard, this.holder, this.epoch, leaseMs);
      } catch (err) {
        metrics?.renewals.inc({ result: 'error' });
        if (performance.now() < this.validUntil) {
          log.warn({ err, shard, epoch: this.epoch }, 'shard lease not renewed; retrying');
          return;
        }
        return this.depose(`its lease could not be renewed in time (${(err as Error).message})`);
      }
      if (!renewed) {
        metrics?.renewals.inc({ result: 'lost' });
        return this.depose('another node holds its lease now');
      }
      metrics?.renewals.inc({ result: 'ok' });
      this.validUntil = sentAt + leaseMs * 0.8;
      return;
    }
    let got: { epoch: number } | undefined;
    try {
      got = await leases.acquire(shard, this.holder, advertiseUrl, leaseMs);
    } catch (err) {
      log.warn({ err, shard }, 'shard lease not taken: database unreachable');
      return;
    }
    if (!got || this.done) return;
    this.epoch = got.epoch;
    this.validUntil = sentAt + leaseMs * 0.8;
    metrics?.takeovers.inc();
    log.info({ shard, epoch: got.epoch, holder: this.holder }, 'shard lease taken: recovering the shard before serving it');
    const started = Date.now();
    this.taking = this.deps.events.takeover(got.epoch).then(
      () => {
        if (this.done || this.epoch !== got.epoch) return;
        this.serving = true;
        log.info({ shard, epoch: got.epoch, recovery_ms: Date.now() - started }, 'serving the shard: this node is its writer');
        leases.announce(shard).catch((err: unknown) => log.warn({ err, shard }, 'new writer not announced; frontends find it when their routing cache expires'));
      },
      async (err: unknown) => {
        log.error({ err, shard, epoch: got.epoch }, 'takeover failed; giving the shard up');
        await leases.release(shard, this.holder, got.epoch).catch(() => false);
        this.depose(`its takeover failed (${(err as Error).message})`);
      },
    );
  }

  private depose(why: string): void {
    if (this.done) return;
    const epoch = this.epoch;
    this.done = true;
    this.serving = false;
    this.epoch = undefined;
    clearInterval(this.timer);
    this.deps.log.error({ shard: this.opts.shard, epoch }, `no longer the shard's writer: ${why}; stopping`);
    this.deps.events.deposed(why);
  }

  async close(): Promise<void> {
    this.done = true;
    clearInterval(this.timer);
    await this.ticking;
    await this.taking;
    const epoch = this.epoch;
    this.serving = false;
    this.epoch = undefined;
    if (epoch !== undefined && (await this.deps.leases.release(this.opts.shard, this.holder, epoch).catch(() => false))) {
      await this.deps.leases.announce(this.opts.shard).catch(() => {});
    }
    await this.deps.nodes?.forget(this.holder).catch(() => {});
  }
}

/**
 * A replica's host (docs/design/replication.md): clones and fetches of its copies. Creating,
 * removing and pushing belong to the writer; a frontend that asks anyway gets the error it
 * reads as "ask the writer".
 */
export class ReplicaHost implements RepoHost {
  constructor(
    private readonly inner: RepoHost,
    private readonly shard: string,
  ) {}

  private refuse(): never {
    throw unavailable('not_shard_writer', `this node is a replica of shard ${this.shard}: it serves clones and fetches only`);
  }

  location(id: string): string {
    return this.inner.location(id);
  }

  async create(): Promise<void> {
    this.refuse();
  }

  async remove(): Promise<void> {
    this.refuse();
  }

  async advertiseRefs(repo: HostedRepo, call: GitCall, signal: AbortSignal): Promise<GitResponse> {
    if (call.service !== 'upload-pack') this.refuse();
    return this.inner.advertiseRefs(repo, call, signal);
  }

  async statelessRpc(repo: HostedRepo, call: RpcCall, signal: AbortSignal): Promise<GitResponse> {
    if (call.service !== 'upload-pack') this.refuse();
    return this.inner.statelessRpc(repo, call, signal);
  }

  async uploadPackSession(repo: HostedRepo, call: SessionCall, signal: AbortSignal): Promise<GitResponse> {
    return sessionOn(this.inner, repo, call, signal);
  }
}

function sessionOn(host: RepoHost, repo: HostedRepo, call: SessionCall, signal: AbortSignal): Promise<GitResponse> {
  if (!host.uploadPackSession) throw unavailable('no_session', 'this host runs no whole fetch conversations');
  return host.uploadPackSession(repo, call, signal);
}

/** Counters of a storage node's lease: renewals by result, and takeovers. */
export function createShardWriterMetrics(registry: Registry): ShardWriterMetrics {
  return {
    renewals: new Counter({ name: 'gitstratum_shard_lease_renewals_total', help: 'Shard lease renewals by this storage node, by result (ok, lost: another node holds it, error: database unreachable).', labelNames: ['result'] as const, registers: [registry] }),
    takeovers: new Counter({ name: 'gitstratum_shard_takeovers_total', help: 'Times this storage node took its shard lease and became the writer.', registers: [registry] }),
  };
}

/**
 * A storage node's host: its local host, only while it is the shard's writer. Pushes are
 * admitted by `admitPush` (a repository being moved away pauses them: meta/moves.ts) and
 * counted while they run, so a move can wait for the last one to end (quiesce()).
 */
export class WriterHost implements RepoHost {
  private readonly pushing = new Map<string, number>();
  private readonly quiet = new Map<string, (() => void)[]>();

  constructor(
    private readonly inner: RepoHost,
    private readonly writer: ShardWriter,
    private readonly shard: string,
    private readonly hooks: {
      /** Called when a push ends without git's post-receive (git killed or failed): its refs may have changed. */
      pushCutShort?: (repoId: string) => Promise<void>;
      /** Throws (unavailable, with when to retry) when the repository's pushes may not run here now. */
      admitPush?: (repoId: string) => Promise<void>;
    } = {},
  ) {}

  private check(): void {
    if (this.writer.heldEpoch === undefined) throw unavailable('not_shard_writer', `this node does not hold shard ${this.shard} now; retry shortly`);
  }

  location(id: string): string {
    return this.inner.location(id);
  }

  async create(repo: NewRepo): Promise<void> {
    this.check();
    await this.inner.create(repo);
  }

  async remove(id: string): Promise<void> {
    this.check();
    await this.inner.remove(id);
  }

  async advertiseRefs(repo: HostedRepo, call: GitCall, signal: AbortSignal): Promise<GitResponse> {
    this.check();
    if (call.service === 'receive-pack') await this.hooks.admitPush?.(repo.id);
    return this.inner.advertiseRefs(repo, call, signal);
  }

  async statelessRpc(repo: HostedRepo, call: RpcCall, signal: AbortSignal): Promise<GitResponse> {
    this.check();
    if (call.service !== 'receive-pack') return this.inner.statelessRpc(repo, call, signal);
    // Counted before it is admitted: a move that paused pushes and then sees none running
    // knows that every later one reads the pause.
    this.pushing.set(repo.id, (this.pushing.get(repo.id) ?? 0) + 1);
    let res: GitResponse;
    try {
      await this.hooks.admitPush?.(repo.id);
      res = await this.inner.statelessRpc(repo, call, signal);
    } catch (err) {
      this.pushEnded(repo.id);
      throw err;
    }
    // git killed (client gone, timeout) between committing refs and its post-receive, which
    // bumps the refs version: bump it here, or frontends might answer from the old refs.
    void res.done
      .then((outcome) => (outcome.code !== 0 ? this.hooks.pushCutShort?.(repo.id) : undefined))
      .finally(() => this.pushEnded(repo.id))
      .catch(() => {});
    return res;
  }

  async uploadPackSession(repo: HostedRepo, call: SessionCall, signal: AbortSignal): Promise<GitResponse> {
    this.check();
    return sessionOn(this.inner, repo, call, signal);
  }

  /** Resolves once no push of the repository runs here; false when one still does after `waitMs`. */
  async quiesce(repoId: string, waitMs: number): Promise<boolean> {
    if (!this.pushing.get(repoId)) return true;
    const waiters = this.quiet.get(repoId) ?? [];
    this.quiet.set(repoId, waiters);
    let done!: () => void;
    const quiet = new Promise<void>((resolve) => (done = resolve));
    waiters.push(done);
    const timer = setTimeout(done, waitMs);
    await quiet;
    clearTimeout(timer);
    return !this.pushing.get(repoId);
  }

  private pushEnded(repoId: string): void {
    const left = (this.pushing.get(repoId) ?? 1) - 1;
    if (left > 0) return void this.pushing.set(repoId, left);
    this.pushing.delete(repoId);
    for (const wake of this.quiet.get(repoId) ?? []) wake();
    this.quiet.delete(repoId);
  }
}

export interface RoutingOptions {
  /** How long a shard's writer is remembered without asking the database (default 2 s). */
  cacheMs?: number;
  /**
   * How long an idempotent request (a ref advertisement, a fetch) waits for a shard's new
   * writer during a failover before the client gets 503 (default 30 s).
   */
  failoverWaitMs?: number;
  /** Fetch bodies up to this size are kept so the request can be sent again (default 1 MiB). */
  replayableBytes?: number;
  /**
   * The URLs of the shard's replicas that hold every push acknowledged before now
   * (meta/replication.ts, upToDateReplicas). Given, clones and fetches go to the least busy of
   * them, and to the writer when there is none.
   */
  replicas?: (shard: string, repositoryId: string) => Promise<string[]>;
  /**
   * Whether the shard has replicas at all, remembered for `cacheMs`: a shard without any (most)
   * costs its reads no query. Without it, `replicas` is asked on every read.
   */
  shardHasReplicas?: (shard: string) => Promise<boolean>;
  /** How long a replica that failed a request gets no reads from this frontend (default 10 s). */
  replicaPauseMs?: number;
}

export interface RoutingMetrics {
  lookups: { inc(labels: { result: 'cached' | 'database' }): void };
  retries: { inc(labels: { result: 'ok' | 'failed' }): void };
  proxiedBytes: { inc(labels: { direction: 'to_node' | 'from_node' }, value: number): void };
  reads: { inc(labels: { target: 'writer' | 'replica' | 'replica_failed' }): void };
}

export function createRoutingMetrics(registry: Registry): RoutingMetrics {
  return {
    reads: new Counter({ name: 'gitstratum_routing_reads_total', help: 'Clone and fetch requests a frontend sent to a replica or to the writer (replica_failed: a replica failed and the writer answered).', labelNames: ['target'] as const, registers: [registry] }),
    lookups: new Counter({ name: 'gitstratum_routing_lookups_total', help: "Frontend lookups of a shard's writer: answered from the routing cache or by the database.", labelNames: ['result'] as const, registers: [registry] }),
    retries: new Counter({ name: 'gitstratum_routing_retries_total', help: "Idempotent requests sent again to a shard's new writer after its old one failed, by result.", labelNames: ['result'] as const, registers: [registry] }),
    proxiedBytes: new Counter({ name: 'gitstratum_proxied_bytes_total', help: 'Bytes of git requests a frontend sent to storage nodes (to_node) and of their answers (from_node).', labelNames: ['direction'] as const, registers: [registry] }),
  };
}

/** Failures that a shard's new writer may not have: its old one is gone, deposed or not serving yet. */
const FAILOVER_CODES = new Set(['storage_node_unreachable', 'not_shard_writer', 'shard_unavailable', 'storage_node_failed']);
const isFailover = (err: unknown) => isDomainError(err) && FAILOVER_CODES.has(err.code);

export type RoutedHosts = HostOf & {
  /** Forgets a shard's writer (its lease changed hands): the next request asks the database. */
  invalidate(shard: string): void;
  /** Counts lookups and retries from now on (the serving process's registry). */
  useMetrics(metrics: RoutingMetrics): void;
  close(): Promise<void>;
};

/**
 * A frontend's hosts: each shard's current writer, found through its lease. While a shard
 * fails over, a ref advertisement or a fetch is sent again once a new writer serves (a fetch
 * body is kept for that when it is small); a push is not (its body is gone) and fails with 503
 * and Retry-After, before any byte of an answer was sent.
 */
export function shardRoutedHosts(leases: ShardLeases, secret: string, opts: RoutingOptions = {}): RoutedHosts {
  const cacheMs = opts.cacheMs ?? 2000;
  const waitMs = opts.failoverWaitMs ?? 30_000;
  const replayable = opts.replayableBytes ?? 1024 * 1024;
  const remotes = new Map<string, RemoteRepoHost>();
  const writers = new Map<string, { url: string; until: number }>();
  const hosts = new Map<string, RepoHost>();
  let metrics: RoutingMetrics | undefined;

  const replicaPauseMs = opts.replicaPauseMs ?? 10_000;
  const inFlight = new Map<string, number>();
  const pausedUntil = new Map<string, number>();
  const withReplicas = new Map<string, { has: boolean; until: number }>();

  async function mayHaveReplicas(shard: string): Promise<boolean> {
    if (!opts.shardHasReplicas) return true;
    const known = withReplicas.get(shard);
    if (known && known.until >= Date.now()) return known.has;
    const has = await opts.shardHasReplicas(shard);
    withReplicas.set(shard, { has, until: Date.now() + cacheMs });
    return has;
  }

  function remoteAt(url: string): RemoteRepoHost {
    let remote = remotes.get(url);
    if (!remote) {
      remote = new RemoteRepoHost({ url, secret });
      remotes.set(url, remote);
    }
    return remote;
  }

  /** The least busy replica that may answer a read of the repository now, if any. */
  async function replicaFor(shard: string, repoId: string): Promise<string | undefined> {
    const { replicas } = opts;
    if (!replicas) return undefined;
    const now = Date.now();
    // The database unreachable for this: the writer answers, as without replicas.
    const candidates = await mayHaveReplicas(shard)
      .then((has) => (has ? replicas(shard, repoId) : []))
      .catch(() => [] as string[]);
    const urls = candidates.filter((u) => (pausedUntil.get(u) ?? 0) <= now);
    // Ties broken at random: one read at a time would otherwise always go to the first.
    const fewest = Math.min(...urls.map((u) => inFlight.get(u) ?? 0));
    const least = urls.filter((u) => (inFlight.get(u) ?? 0) === fewest);
    return least[Math.floor(Math.random() * least.length)];
  }

  /**
   * A read (upload-pack): on an up-to-date replica when there is one, else (or when the replica
   * fails before answering) on the writer, with the writer's failover retries.
   */
  async function read(shard: string, repoId: string, signal: AbortSignal, send: (host: RemoteRepoHost) => Promise<GitResponse>): Promise<GitResponse> {
    const url = await replicaFor(shard, repoId);
    if (url !== undefined) {
      inFlight.set(url, (inFlight.get(url) ?? 0) + 1);
      try {
        const res = await send(remoteAt(url));
        metrics?.reads.inc({ target: 'replica' });
        void res.done.finally(() => inFlight.set(url, (inFlight.get(url) ?? 1) - 1));
        return res;
      } catch (err) {
        inFlight.set(url, (inFlight.get(url) ?? 1) - 1);
        if (!isDomainError(err) || err.kind !== 'unavailable' || signal.aborted) throw err;
        // Out of this frontend's rotation for a while; the writer answers this one.
        pausedUntil.set(url, Date.now() + replicaPauseMs);
        metrics?.reads.inc({ target: 'replica_failed' });
      }
    } else {
      metrics?.reads.inc({ target: 'writer' });
    }
    return withFailover(shard, signal, send);
  }

  async function writerOf(shard: string): Promise<RemoteRepoHost> {
    let known = writers.get(shard);
    metrics?.lookups.inc({ result: known && known.until >= Date.now() ? 'cached' : 'database' });
    if (!known || known.until < Date.now()) {
      const lease = await leases.current(shard);
      if (!lease || lease.expiresInMs <= 0 || !lease.url) {
        writers.delete(shard);
        throw unavailable('shard_unavailable', `no storage node serves shard ${shard} now; retry shortly`, { shard });
      }
      known = { url: lease.url, until: Date.now() + Math.min(cacheMs, lease.expiresInMs) };
      writers.set(shard, known);
    }
    return remoteAt(known.url);
  }

  /** Counts what went through this frontend once the exchange is over. */
  function counted(res: GitResponse): GitResponse {
    void res.done.then((o) => {
      metrics?.proxiedBytes.inc({ direction: 'to_node' }, o.bytesIn);
      metrics?.proxiedBytes.inc({ direction: 'from_node' }, o.bytesOut);
    });
    return res;
  }

  /** Runs `send` on the shard's writer; on a failover failure, again on the next writer until `waitMs`. */
  async function withFailover<T>(shard: string, signal: AbortSignal, send: (host: RemoteRepoHost) => Promise<T>): Promise<T> {
    const deadline = Date.now() + waitMs;
    let retried = false;
    for (;;) {
      try {
        const result = await send(await writerOf(shard));
        if (retried) metrics?.retries.inc({ result: 'ok' });
        return result;
      } catch (err) {
        if (!isFailover(err) || signal.aborted || Date.now() >= deadline) {
          if (retried) metrics?.retries.inc({ result: 'failed' });
          throw err;
        }
        writers.delete(shard);
        retried = true;
        await sleep(Math.min(250, Math.max(0, deadline - Date.now())), undefined, { signal }).catch(() => {});
      }
    }
  }

  const hostOf = ((repo: { id: string; shard: string }) => {
    const shard = repo.shard;
    let host = hosts.get(shard);
    if (!host) {
      host = {
        location: (id) => `${id} on shard ${shard}`,
        create: async (r) => (await writerOf(shard)).create(r),
        remove: async (id) => (await writerOf(shard)).remove(id),
        advertiseRefs: async (r, call, signal) =>
          counted(
            call.service === 'upload-pack'
              ? await read(shard, r.id, signal, (h) => h.advertiseRefs(r, call, signal))
              : await withFailover(shard, signal, (h) => h.advertiseRefs(r, call, signal)),
          ),
        statelessRpc: async (r, call, signal) => {
          if (call.service !== 'upload-pack') return counted(await (await writerOf(shard)).statelessRpc(r, call, signal));
          const body = await keepIfSmall(call.input, replayable);
          if (!body.whole) return counted(await (await writerOf(shard)).statelessRpc(r, { ...call, input: body.stream }, signal));
          return counted(await read(shard, r.id, signal, (h) => h.statelessRpc(r, { ...call, input: Readable.from([body.bytes]) }, signal)));
        },
        // The client's side of a whole conversation cannot be replayed elsewhere once sent: the
        // writer answers it, as a push.
        uploadPackSession: async (r, call, signal) => counted(await (await writerOf(shard)).uploadPackSession(r, call, signal)),
      };
      hosts.set(shard, host);
    }
    return host;
  }) as RoutedHosts;
  hostOf.invalidate = (shard) => void writers.delete(shard);
  hostOf.useMetrics = (m) => void (metrics = m);
  hostOf.close = async () => {
    await Promise.all([...remotes.values()].map((r) => r.close()));
  };
  return hostOf;
}

/**
 * Reads `input` whole when it ends within `limit` bytes; otherwise gives back a stream of what
 * was read followed by the rest, unchanged.
 */
async function keepIfSmall(input: Readable, limit: number): Promise<{ whole: true; bytes: Buffer } | { whole: false; stream: Readable }> {
  const chunks: Buffer[] = [];
  let size = 0;
  const iterator = input[Symbol.asyncIterator]();
  for (;;) {
    const next = (await iterator.next().catch(() => {
      throw invalid('client_gone', 'client closed the request before it was complete');
    })) as IteratorResult<Buffer>;
    if (next.done) return { whole: true, bytes: Buffer.concat(chunks, size) };
    chunks.push(next.value);
    size += next.value.length;
    if (size > limit) {
      async function* rest() {
        yield* chunks;
        for (let n = await iterator.next(); !n.done; n = await iterator.next()) yield n.value as Buffer;
      }
      return { whole: false, stream: Readable.from(rest(), { objectMode: false }) };
    }
  }
}
