/**
 * Repository maintenance after pushes (docs/design/maintenance.md): keeps reachability bitmaps
 * and the commit-graph covering every ref, off the request path, so the first clone after a
 * push does not walk the objects the push brought.
 *
 * The post-receive hook notifies the scheduler. A repository is maintained `delayMs` after its
 * last push, so a burst of pushes costs one run, but never later than `maxDelayMs` after the
 * first push of the burst, so a repository pushed to without pause is still maintained. At
 * most `concurrency` repositories are maintained at once, in the order they became due.
 *
 * Invariants:
 * - One run per repository at a time. A push during a run marks the repository for one more
 *   run after it (with the usual delay), so the objects it brought get covered too.
 * - Nothing here can fail or slow a push: notify() records and arms a timer, nothing else. A
 *   failed or timed-out run is logged once, counted and forgotten; the next push tries again.
 * - close() drops what waits, aborts what runs (killing git's whole process group) and
 *   resolves once every run has ended.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { crashArmed, crashPoint } from '../shared/crash.js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../shared/log.js';
import { packRefs, repackGeometric, writeCommitGraph } from './command.js';
import { listLooseRefs } from './pack-cache/refs-version.js';

export interface MaintenanceTarget {
  repoId: string;
  repoPath: string;
}

/** One maintenance run of one repository; must stop soon after `signal` aborts. */
export type MaintenanceTask = (target: MaintenanceTarget, signal: AbortSignal) => Promise<void>;

export interface MaintenanceSettings {
  /** Repositories maintained at once. */
  concurrency: number;
  /** Quiet time after a repository's last push before it is maintained. */
  delayMs: number;
  /** Longest a burst of pushes can postpone a run, counted from its first push. */
  maxDelayMs: number;
  /** A run is killed after this long. */
  timeoutMs: number;
}

/** CPU priority of maintenance git processes: the server (0) and requests' git (gitNiceness, 5) come first. */
const NICENESS = 15;

/**
 * Loose refs beyond which a run packs refs. Packing rewrites packed-refs, which changes the
 * pack cache's refs version (one miss per cached answer of the repository), so a repository
 * with a few branches keeps its loose refs; one with many gets one file for all of them.
 */
export const PACK_REFS_AFTER_LOOSE = 256;

/**
 * The default run: refs packed when there are many loose ones, a geometric repack writing a
 * multi-pack bitmap, then a new commit-graph layer. A repository deleted meanwhile is
 * skipped, not reported as a failure.
 */
export const maintainRepository: MaintenanceTask = async ({ repoPath }, signal) => {
  if (!(await stat(repoPath).catch(() => undefined))) return;
  if ((await listLooseRefs(repoPath)).length >= PACK_REFS_AFTER_LOOSE) await packRefs(repoPath, { signal, niceness: NICENESS });
  const onSpawn = crashArmed('maintenance-mid-repack') ? (killGroup: () => void) => void crashMidRepack(repoPath, killGroup) : undefined;
  await repackGeometric(repoPath, { signal, niceness: NICENESS, ...(onSpawn && { onSpawn }) });
  await writeCommitGraph(repoPath, { signal, niceness: NICENESS });
};

/**
 * The `maintenance-mid-repack` crash point: once the repack has begun writing (a temporary
 * pack or a lock in objects/pack; at most 2 s), the repack's process group and the server
 * die together, as on a machine that loses power.
 */
async function crashMidRepack(repoPath: string, killGroup: () => void): Promise<void> {
  const packDir = path.join(repoPath, 'objects', 'pack');
  for (const deadline = Date.now() + 2000; Date.now() < deadline; await sleep(2)) {
    const names = await readdir(packDir).catch(() => [] as string[]);
    if (names.some((n) => n.startsWith('.tmp-') || n.startsWith('tmp_') || n.endsWith('.lock'))) break;
  }
  crashPoint('maintenance-mid-repack', killGroup);
}

export function createMaintenanceMetrics(registry: Registry) {
  let source = { pending: () => 0, running: () => 0 };
  return {
    runs: new Counter({
      name: 'gitstratum_maintenance_runs_total',
      help: 'Repository maintenance runs (repack with bitmaps, commit-graph) by result (ok, failed, timeout, aborted)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'gitstratum_maintenance_duration_seconds',
      help: 'Wall time of repository maintenance runs, whatever their result',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
      registers: [registry],
    }),
    pending: new Gauge({
      name: 'gitstratum_maintenance_pending',
      help: 'Repositories waiting for maintenance (in their post-push delay or for a free slot)',
      registers: [registry],
      collect() {
        this.set(source.pending());
      },
    }),
    running: new Gauge({
      name: 'gitstratum_maintenance_running',
      help: 'Repositories being maintained now',
      registers: [registry],
      collect() {
        this.set(source.running());
      },
    }),
    observe(from: { pending(): number; running(): number }): void {
      source = from;
    },
  };
}

export type MaintenanceMetrics = ReturnType<typeof createMaintenanceMetrics>;

interface Entry {
  target: MaintenanceTarget;
  state: 'waiting' | 'due' | 'running';
  timer?: NodeJS.Timeout;
  /** When the first push of the current burst was seen. */
  since: number;
  /** Pushed to while running: run once more afterwards. */
  again: boolean;
}

class MaintenanceTimeout extends Error {
  override name = 'MaintenanceTimeout';
}

class MaintenanceClosing extends Error {
  override name = 'MaintenanceClosing';
}

export class MaintenanceScheduler {
  private readonly entries = new Map<string, Entry>();
  private readonly due: Entry[] = [];
  private readonly running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly settings: MaintenanceSettings,
    private readonly deps: { log: Logger; metrics?: MaintenanceMetrics; task?: MaintenanceTask; now?: () => number },
  ) {
    deps.metrics?.observe({ pending: () => this.pendingCount, running: () => this.runningCount });
  }

  /** Repositories waiting: in their delay or for a slot. */
  get pendingCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state !== 'running' || e.again) n++;
    return n;
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** Maintenance waits or runs for the repository (it must stay on disk meanwhile). */
  busy(repoId: string): boolean {
    return this.entries.has(repoId);
  }

  /** A push landed in the repository. Never throws, never waits. */
  notify(repoId: string, repoPath: string): void {
    if (this.closed) return;
    const now = this.now();
    const entry = this.entries.get(repoId);
    if (!entry) {
      const fresh: Entry = { target: { repoId, repoPath }, state: 'waiting', since: now, again: false };
      this.entries.set(repoId, fresh);
      this.arm(fresh, now);
    } else if (entry.state === 'running') {
      if (!entry.again) entry.since = now;
      entry.again = true;
    } else if (entry.state === 'waiting') {
      this.arm(entry, now);
    }
    // 'due': already queued for the next free slot, which will see this push's objects.
  }

  /** Resolves when nothing waits or runs (for tests and benchmarks). */
  idle(): Promise<void> {
    if (this.entries.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const entry of this.entries.values()) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.again = false;
    }
    this.due.length = 0;
    for (const { controller } of this.running.values()) controller.abort(new MaintenanceClosing('server closing'));
    await Promise.all([...this.running.values()].map((r) => r.done));
    this.entries.clear();
    this.settle();
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** (Re)arms the entry's timer: `delayMs` from now, but no later than `maxDelayMs` after `since`. */
  private arm(entry: Entry, now: number): void {
    if (entry.timer) clearTimeout(entry.timer);
    const at = Math.min(now + this.settings.delayMs, entry.since + Math.max(this.settings.maxDelayMs, this.settings.delayMs));
    // Not unref'd: close() is what ends pending maintenance, like any other work in flight.
    entry.timer = setTimeout(() => this.becomeDue(entry), Math.max(0, at - now));
  }

  private becomeDue(entry: Entry): void {
    entry.timer = undefined;
    if (this.closed || this.entries.get(entry.target.repoId) !== entry) return;
    entry.state = 'due';
    this.due.push(entry);
    this.pump();
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.settings.concurrency && this.due.length > 0) {
      this.start(this.due.shift()!);
    }
  }

  private start(entry: Entry): void {
    const { repoId } = entry.target;
    entry.state = 'running';
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(new MaintenanceTimeout('maintenance timed out')), this.settings.timeoutMs);
    const started = process.hrtime.bigint();
    const task = this.deps.task ?? maintainRepository;
    const done = (async () => {
      let result: 'ok' | 'failed' | 'timeout' | 'aborted' = 'ok';
      try {
        await task(entry.target, controller.signal);
      } catch (err) {
        const reason: unknown = controller.signal.aborted ? controller.signal.reason : err;
        result = reason instanceof MaintenanceTimeout ? 'timeout' : reason instanceof MaintenanceClosing ? 'aborted' : 'failed';
        if (result !== 'aborted') {
          this.deps.log.warn(
            {
              repo_id: repoId,
              repo_path: entry.target.repoPath,
              result,
              duration_ms: Math.round(Number(process.hrtime.bigint() - started) / 1e6),
              err: err instanceof Error ? err.message : String(err),
            },
            'repository maintenance failed',
          );
        }
      } finally {
        clearTimeout(timeout);
      }
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      this.deps.metrics?.runs.inc({ result });
      this.deps.metrics?.duration.observe(seconds);
      if (result === 'ok') this.deps.log.info({ repo_id: repoId, duration_ms: Math.round(seconds * 1000) }, 'repository maintained');
      this.finish(entry);
    })();
    this.running.set(repoId, { controller, done });
  }

  private finish(entry: Entry): void {
    const { repoId } = entry.target;
    this.running.delete(repoId);
    if (entry.again && !this.closed) {
      entry.again = false;
      entry.state = 'waiting';
      this.arm(entry, this.now());
    } else {
      this.entries.delete(repoId);
    }
    this.pump();
    this.settle();
  }

  private settle(): void {
    if (this.entries.size > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
