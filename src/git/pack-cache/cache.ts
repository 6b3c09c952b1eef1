/**
 * The upload-pack response cache (docs/design/pack-cache.md): the same shape as the plain git
 * services, so the edge does not know it is there. For each cacheable request it computes the
 * key, then in order:
 * - a running generation of the same key: follow it (coalesced);
 * - a stored entry that checks out: stream it, no git at all (hit);
 * - free space under the threshold: plain git, uncached;
 * - otherwise start a generation (miss) that every identical request follows.
 * Receive-pack, and upload-pack requests that cannot be cached, go to git as before.
 */
import { Readable } from 'node:stream';
import type { Logger } from '../../shared/log.js';
import { isDomainError, unavailable } from '../../shared/errors.js';
import { runGit } from '../command.js';
import { wholeResponse, type AdvertiseOptions, type GitResponse, type GitServices, type Outcome, type RpcOptions, type SessionOptions } from '../smart-http.js';
import { GenerationAdmission, type AdmissionOptions } from './admission.js';
import { CacheUnusable, Flight, type GenerateInto } from './flight.js';
import { GrowingFile, type GrowingFileReader } from './growing-file.js';
import { cacheKey, classifyUploadPackRequest, protocolVersion, type Endpoint, type ProtocolVersion, type UncacheableReason } from './key.js';
import type { PackCacheMetrics } from './metrics.js';
import { RefsVersions } from './refs-version.js';
import { bufferRequest } from '../request-body.js';
import { PackStore, type OpenedEntry, type StoreLimits } from './store.js';

/** Keys remembered for packCacheAdmitAfter=2; the oldest are forgotten beyond this. */
const MAX_SIGHTINGS = 100_000;

export interface PackCacheOptions {
  /** <data>/cache */
  dir: string;
  limits: StoreLimits;
  /** Store a response on the first request for its key (1) or only on the second within the window (2). */
  admitAfter: number;
  admitWindowMs: number;
  /** Larger request bodies (after gzip decoding) are not cached. */
  maxRequestBytes: number;
  admission: AdmissionOptions;
  /**
   * Hand hits to a front proxy: answer with `X-Accel-Redirect: <prefix><key[0:2]>/<key>` and
   * no body, and the proxy sends the entry file itself (nginx: an `internal` location whose
   * `alias` is <data>/cache/entries/). Undefined: Node streams every hit.
   */
  handoffPrefix?: string | undefined;
  /**
   * Where the refs versions that key entries come from. Default: the repository's disk
   * (refs-version.ts). A frontend, which has no disk, reads the version its storage nodes keep
   * in PostgreSQL (meta/refs-versions.ts).
   */
  versions?: RefsVersionSource;
  /** Part of every key; default `git --version` here. A frontend's git is not the one that answers. */
  gitVersion?: string;
}

/** What keys an entry to the refs it was generated from (see PackCacheOptions.versions). */
export interface RefsVersionSource {
  /** Changes whenever the repository's refs (or its configuration) may have changed. */
  read(repoId: string, repoPath: string): Promise<string>;
  /** Changes whenever what a v2 capability advertisement depends on (the configuration) changed. */
  readConfig(repoId: string, repoPath: string): Promise<string>;
  close(): Promise<void>;
}

/** How long a dropped entry's file stays readable by a proxy it was handed to. */
const HANDOFF_GRACE_MS = 60_000;

export interface PackCache extends GitServices {
  /** Stops running generations and waits for them. */
  close(): Promise<void>;
}

interface Request {
  repoId: string;
  repoPath: string;
  protocol: ProtocolVersion;
  endpoint: Endpoint;
  /** The normalized request body (empty for the advertisement). */
  request: Buffer;
  bytesIn: number;
  /** The request has `have` lines (key.ts): stored only when seen a second time in the window. */
  negotiation?: boolean;
}

type Generate = (signal: AbortSignal) => Promise<GitResponse>;

export async function openPackCache(
  inner: GitServices,
  opts: PackCacheOptions,
  deps: { metrics: PackCacheMetrics; log: Logger },
): Promise<PackCache> {
  const store = await PackStore.open(
    opts.dir,
    opts.limits,
    deps.metrics,
    deps.log,
    // Group-readable: the proxy runs as another user in the server's group (README).
    opts.handoffPrefix ? { fileMode: 0o640, unlinkGraceMs: HANDOFF_GRACE_MS } : undefined,
  );
  const gitVersion = opts.gitVersion ?? (await runGit(['--version'])).stdout.trim();
  return new ResponseCache(inner, store, gitVersion, opts, deps.metrics, deps.log);
}

class ResponseCache implements PackCache {
  private readonly flights = new Map<string, Flight>();
  private readonly refsVersions: RefsVersionSource;
  private readonly sightings: Sightings;
  /** Negotiations are mostly one client's own: only one seen twice in the window runs through the cache. */
  private readonly negotiations: Sightings;
  private readonly admission: GenerationAdmission;

  constructor(
    private readonly inner: GitServices,
    private readonly store: PackStore,
    private readonly gitVersion: string,
    private readonly opts: PackCacheOptions,
    private readonly metrics: PackCacheMetrics,
    private readonly log: Logger,
  ) {
    this.sightings = new Sightings(opts.admitAfter, opts.admitWindowMs);
    this.negotiations = new Sightings(2, opts.admitWindowMs);
    this.refsVersions = opts.versions ?? diskVersions();
    this.admission = new GenerationAdmission(opts.admission);
    metrics.observeGenerations({ running: () => this.admission.running, queued: () => this.admission.queued });
  }

  async advertiseRefs(opts: AdvertiseOptions, signal: AbortSignal): Promise<GitResponse> {
    if (opts.service !== 'upload-pack') return this.inner.advertiseRefs(opts, signal);
    const req: Request = {
      repoId: opts.repoId,
      repoPath: opts.repoPath,
      protocol: protocolVersion(opts.protocol),
      endpoint: 'advertisement',
      request: Buffer.alloc(0),
      bytesIn: 0,
    };
    return this.serve(req, (s) => this.inner.advertiseRefs(opts, s), signal);
  }

  uploadPackSession(opts: SessionOptions, signal: AbortSignal): Promise<GitResponse> {
    if (!this.inner.uploadPackSession) throw unavailable('no_session', 'a whole fetch conversation runs only where the repository is');
    return this.inner.uploadPackSession(opts, signal);
  }

  async statelessRpc(opts: RpcOptions, signal: AbortSignal): Promise<GitResponse> {
    if (opts.service !== 'upload-pack') return this.inner.statelessRpc(opts, signal);
    const body = await bufferRequest(opts.input, opts.decoder, this.opts.maxRequestBytes, signal);
    if (!body.complete) {
      this.uncacheable('fetch', 'request_too_large');
      return this.inner.statelessRpc({ ...opts, input: body.stream, decoder: undefined }, signal);
    }
    const bytes = body.bytes;
    const plain: Generate = (s) => this.inner.statelessRpc({ ...opts, input: Readable.from([bytes]), decoder: undefined }, s);
    const protocol = protocolVersion(opts.protocol);
    const classified = classifyUploadPackRequest(bytes, protocol);
    if (!classified.cacheable) {
      this.uncacheable(classified.endpoint, classified.reason);
      return plain(signal);
    }
    const req: Request = {
      repoId: opts.repoId,
      repoPath: opts.repoPath,
      protocol,
      endpoint: classified.endpoint,
      request: classified.normalized,
      bytesIn: bytes.length,
      negotiation: classified.negotiation,
    };
    // A pack is written into its cache file by git itself where git runs here (issue 12).
    const into: GenerateInto | undefined =
      classified.endpoint === 'fetch' && this.inner.uploadPackInto ? (file, s) => this.inner.uploadPackInto!({ ...opts, decoder: undefined, body: bytes }, file, s) : undefined;
    return this.serve(req, plain, signal, into);
  }

  async close(): Promise<void> {
    const running = [...this.flights.values()];
    for (const flight of running) flight.stop();
    await Promise.all(running.map((f) => f.finished));
    await this.refsVersions.close();
  }

  private async serve(req: Request, generate: Generate, signal: AbortSignal, into?: GenerateInto): Promise<GitResponse> {
    // Read after the request arrived: a ref update acknowledged before it is always seen.
    // A v2 advertisement lists capabilities, no refs: it depends on the config alone, and is
    // kept under its own version (a pseudo-repository for the store's staleness rule), so
    // that a push does not turn the first request of every clone after it into a miss.
    const configOnly = req.endpoint === 'advertisement' && req.protocol === 2;
    const versioned = configOnly ? `${req.repoId}#config` : req.repoId;
    let version: string;
    try {
      version = await (configOnly ? this.refsVersions.readConfig(req.repoId, req.repoPath) : this.refsVersions.read(req.repoId, req.repoPath));
    } catch (err) {
      this.log.warn({ err, repo_id: req.repoId }, 'refs unreadable; serving without the cache');
      this.uncacheable(req.endpoint, 'refs_unreadable');
      return generate(signal);
    }
    this.store.noteRefsVersion(versioned, version);
    const key = cacheKey({
      repoId: versioned,
      refsVersion: version,
      gitVersion: this.gitVersion,
      service: 'upload-pack',
      protocol: req.protocol,
      endpoint: req.endpoint,
      request: req.request,
    });

    let flight = this.flights.get(key);
    if (flight) return this.join(flight, req, generate, signal);
    if (this.store.has(key)) {
      const bytes = this.opts.handoffPrefix ? undefined : this.fromMemory(key, req);
      if (bytes) return this.memoryHit(bytes, req);
      const opened = await this.store.openEntry(key).catch((err: unknown) => {
        this.log.error({ err, key, repo_id: req.repoId }, 'pack cache entry unreadable');
        return undefined;
      });
      if (opened) return this.hit(opened, req, signal);
      flight = this.flights.get(key);
      if (flight) return this.join(flight, req, generate, signal);
    }
    if (!(await this.store.hasFreeSpace())) {
      this.uncacheable(req.endpoint, 'no_space');
      return this.uncached(req, generate, signal);
    }
    flight = this.flights.get(key);
    if (flight) return this.join(flight, req, generate, signal);
    // A negotiation's first sighting goes to git as before, writing no cache file: most are
    // one client's alone. The second within the window (CI runners at one commit) starts the
    // flight its followers join: nothing awaits between this sighting and the flight's entry.
    if (req.negotiation && !this.negotiations.sight(key)) {
      this.uncacheable(req.endpoint, 'have');
      return this.uncached(req, generate, signal);
    }

    flight = new Flight(
      { key, repoId: versioned, refsVersion: version, endpoint: req.endpoint },
      {
        store: this.store,
        metrics: this.metrics,
        log: this.log,
        admission: req.endpoint === 'fetch' ? this.admission : undefined,
        onSettled: (f) => {
          if (this.flights.get(key) === f) this.flights.delete(key);
        },
      },
      generate,
      req.negotiation === true || this.sightings.sight(key),
      into,
    );
    this.flights.set(key, flight);
    this.metrics.requests.inc({ endpoint: req.endpoint, result: 'miss' });
    return this.follow(flight, req, generate, signal, true);
  }

  private join(flight: Flight, req: Request, generate: Generate, signal: AbortSignal): Promise<GitResponse> {
    if (this.sightings.sight(flight.meta.key)) flight.admitStore();
    this.metrics.requests.inc({ endpoint: req.endpoint, result: 'coalesced' });
    return this.follow(flight, req, generate, signal, false);
  }

  private async follow(flight: Flight, req: Request, generate: Generate, signal: AbortSignal, leader: boolean): Promise<GitResponse> {
    let reader: GrowingFileReader;
    try {
      reader = await flight.attach(signal);
    } catch (err) {
      if (!(err instanceof CacheUnusable)) throw err;
      this.log.error({ err, repo_id: req.repoId }, 'pack cache unusable; serving without it');
      return this.uncached(req, generate, signal);
    }
    const served = this.served(reader, req, leader ? 'miss' : 'coalesced');
    // The request that started the generation reports git's outcome (the route counts the
    // process); followers report none.
    const done = leader
      ? served.then(async (outcome) => {
          const git = await flight.finished;
          return git ? { ...git, bytesIn: req.bytesIn, bytesOut: outcome.bytesOut } : outcome;
        })
      : served;
    return { body: reader, done };
  }

  /** Plain git, still within the pack generation bound when it builds a pack. */
  private async uncached(req: Request, generate: Generate, signal: AbortSignal): Promise<GitResponse> {
    if (req.endpoint !== 'fetch') return generate(signal);
    let release: () => void;
    try {
      release = await this.admission.acquire(req.repoId, signal);
    } catch (err) {
      if (isDomainError(err) && err.code !== 'client_gone') this.metrics.admissionRejections.inc({ code: err.code });
      throw err;
    }
    try {
      const res = await generate(signal);
      void res.done.finally(release);
      return res;
    } catch (err) {
      release();
      throw err;
    }
  }

  private hit(opened: OpenedEntry, req: Request, signal: AbortSignal): GitResponse {
    this.metrics.requests.inc({ endpoint: req.endpoint, result: 'hit' });
    if (this.opts.handoffPrefix) {
      // Checked whole by openEntry; the proxy opens it by name (kept for a grace period if dropped).
      opened.close();
      this.metrics.handoffs.inc();
      this.metrics.servedBytes.inc({ result: 'hit' }, opened.length);
      return { body: Readable.from([]), handoff: this.opts.handoffPrefix + opened.relativePath, done: Promise.resolve(servedWithoutGit(req, opened.length)) };
    }
    const reader = GrowingFile.complete(opened.fd, 0, opened.length).reader();
    const onAbort = () => reader.destroy();
    signal.addEventListener('abort', onAbort, { once: true });
    reader.once('close', () => {
      signal.removeEventListener('abort', onAbort);
      opened.close();
    });
    return { body: reader, done: this.served(reader, req, 'hit') };
  }

  /** A small entry's bytes (store.cached), or undefined to go on as if it were not in memory. */
  private fromMemory(key: string, req: Request): Buffer | undefined {
    try {
      return this.store.cached(key);
    } catch (err) {
      this.log.error({ err, key, repo_id: req.repoId }, 'pack cache entry unreadable');
      return undefined;
    }
  }

  private memoryHit(bytes: Buffer, req: Request): GitResponse {
    this.metrics.requests.inc({ endpoint: req.endpoint, result: 'hit' });
    this.metrics.servedBytes.inc({ result: 'hit' }, bytes.length);
    return wholeResponse(bytes, Promise.resolve(servedWithoutGit(req, bytes.length)));
  }

  /** Settles when the reader is closed, with an outcome that ran no git. */
  private served(reader: GrowingFileReader, req: Request, result: 'hit' | 'miss' | 'coalesced'): Promise<Outcome> {
    return new Promise((resolve) => {
      reader.once('close', () => {
        this.metrics.servedBytes.inc({ result }, reader.bytes);
        resolve(servedWithoutGit(req, reader.bytes));
      });
    });
  }

  private uncacheable(endpoint: Endpoint | 'other', reason: UncacheableReason): void {
    this.metrics.requests.inc({ endpoint, result: 'uncacheable' });
    this.metrics.uncacheable.inc({ reason });
  }
}

/** Versions read from the repository's own disk (refs-version.ts). */
function diskVersions(): RefsVersionSource {
  const versions = new RefsVersions();
  return {
    read: (_id, repoPath) => versions.read(repoPath),
    readConfig: (_id, repoPath) => versions.readConfig(repoPath),
    close: () => versions.close(),
  };
}

/** The outcome of a response sent from a cache file: no git process of its own. */
function servedWithoutGit(req: Request, bytesOut: number): Outcome {
  return { code: 0, signal: null, stderr: '', timedOut: false, bytesIn: req.bytesIn, bytesOut, commands: [], spawned: false };
}

/**
 * packCacheAdmitAfter=2: a key is admitted to the store when it is asked for a second time
 * within the window (a request that follows a running generation counts).
 */
class Sightings {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly admitAfter: number,
    private readonly windowMs: number,
  ) {}

  sight(key: string): boolean {
    if (this.admitAfter <= 1) return true;
    const now = Date.now();
    const first = this.seen.get(key);
    this.seen.delete(key);
    if (first !== undefined && now - first <= this.windowMs) return true;
    this.seen.set(key, now);
    if (this.seen.size > MAX_SIGHTINGS) this.seen.delete(this.seen.keys().next().value!);
    return false;
  }
}
