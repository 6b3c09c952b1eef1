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
import { unavailable } from '../shared/errors.js';
import type { GitResponse } from '../git/smart-http.js';
import type { GitCall, HostedRepo, HostOf, NewRepo, RepoHost, RpcCall } from './host.js';
import { RemoteRepoHost } from './remote-host.js';

export interface ShardWriterOptions {
  shard: string;
  advertiseUrl: string;
  leaseMs: number;
}

export class ShardWriter {
  readonly holder = `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
  private epoch: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly opts: ShardWriterOptions,
    private readonly deps: { leases: ShardLeases; log: Logger },
  ) {}

  /** The epoch this node writes under, while it holds the lease. */
  get heldEpoch(): number | undefined {
    return this.epoch;
  }

  /** Tries once at once (so a sole node serves from its first request), then keeps at it. */
  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => {
      this.ticking ??= this.tick().finally(() => (this.ticking = undefined));
    }, Math.max(200, Math.floor(this.opts.leaseMs / 5)));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const { leases, log } = this.deps;
    const { shard, advertiseUrl, leaseMs } = this.opts;
    try {
      if (this.epoch !== undefined) {
        if (await leases.renew(shard, this.holder, this.epoch, leaseMs)) return;
        log.error({ shard, epoch: this.epoch }, 'shard lease lost: this node no longer serves the shard');
        this.epoch = undefined;
      }
      const got = await leases.acquire(shard, this.holder, advertiseUrl, leaseMs);
      if (got) {
        this.epoch = got.epoch;
        log.info({ shard, epoch: got.epoch, holder: this.holder }, 'shard lease taken: this node is the shard writer');
      }
    } catch (err) {
      // The database is unreachable: the lease runs out by its clock, and so must our claim.
      log.error({ err, shard }, 'shard lease not renewed');
      this.epoch = undefined;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.ticking;
    if (this.epoch !== undefined) {
      await this.deps.leases.release(this.opts.shard, this.holder, this.epoch).catch(() => false);
      this.epoch = undefined;
    }
  }
}

/** A storage node's host: its local host, only while it is the shard's writer. */
export class WriterHost implements RepoHost {
  constructor(
    private readonly inner: RepoHost,
    private readonly writer: ShardWriter,
    private readonly shard: string,
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
    return this.inner.advertiseRefs(repo, call, signal);
  }

  async statelessRpc(repo: HostedRepo, call: RpcCall, signal: AbortSignal): Promise<GitResponse> {
    this.check();
    return this.inner.statelessRpc(repo, call, signal);
  }
}

/** A frontend's hosts: each shard's current writer, found through its lease. */
export function shardRoutedHosts(leases: ShardLeases, secret: string, cacheMs = 2000): HostOf & { close(): Promise<void> } {
  const remotes = new Map<string, RemoteRepoHost>();
  const writers = new Map<string, { url: string; until: number }>();
  const hosts = new Map<string, RepoHost>();

  async function writerOf(shard: string): Promise<RemoteRepoHost> {
    let known = writers.get(shard);
    if (!known || known.until < Date.now()) {
      const lease = await leases.current(shard);
      if (!lease || lease.expiresInMs <= 0 || !lease.url) {
        writers.delete(shard);
        throw unavailable('shard_unavailable', `no storage node serves shard ${shard} now; retry shortly`, { shard });
      }
      known = { url: lease.url, until: Date.now() + Math.min(cacheMs, lease.expiresInMs) };
      writers.set(shard, known);
    }
    let remote = remotes.get(known.url);
    if (!remote) {
      remote = new RemoteRepoHost({ url: known.url, secret });
      remotes.set(known.url, remote);
    }
    return remote;
  }

  const hostOf = ((repo: { id: string; shard: string }) => {
    const shard = repo.shard;
    let host = hosts.get(shard);
    if (!host) {
      host = {
        location: (id) => `${id} on shard ${shard}`,
        create: async (r) => (await writerOf(shard)).create(r),
        remove: async (id) => (await writerOf(shard)).remove(id),
        advertiseRefs: async (r, call, signal) => (await writerOf(shard)).advertiseRefs(r, call, signal),
        statelessRpc: async (r, call, signal) => (await writerOf(shard)).statelessRpc(r, call, signal),
      };
      hosts.set(shard, host);
    }
    return host;
  }) as HostOf & { close(): Promise<void> };
  hostOf.close = async () => {
    await Promise.all([...remotes.values()].map((r) => r.close()));
  };
  return hostOf;
}
