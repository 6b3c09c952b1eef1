/**
 * The servers a git benchmark measures, behind one interface: gitstratum (one Node process and
 * its git children) and the peer (`git http-backend` behind nginx + fcgiwrap). A `Side` knows
 * how to read its server's process-tree CPU and peak RSS, and `measure` takes one sample of an
 * action against it the way /work/shared/BENCHMARKING.md says: readings when no git child runs,
 * VmHWM reset first. Also here: the peer's prerequisites and gitstratum's /metrics.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GitstratumServer } from './gitstratum-server.js';
import { httpBackendPath, type HttpBackendPeer } from './http-backend-peer.js';
import { findExecutable, run } from './processes.js';
import { ownCpuSeconds, peakRss, resetPeakRss, treeCpuSeconds, waitForTree } from './proc-stats.js';
import type { Sample } from './report.js';

export interface Side {
  name: string;
  /** URL of `alice/bench/<name>.git`, with credentials if needed. */
  repoUrl(name: string): string;
  createRepo(name: string): Promise<string>;
  repoPath(name: string): string;
  cpuSeconds(): number;
  /** CPU of the server's own processes, git excluded. */
  ownCpuSeconds(): number;
  waitIdle(): Promise<void>;
  resetPeak(): boolean;
  peakRss(): number;
  /** The process whose RSS a streaming check samples. */
  samplePid?: number;
  /** gitstratum's /metrics URL (without credentials). */
  metricsUrl?: string;
}

export function gitstratumSide(gs: GitstratumServer, name = 'gitstratum'): Side {
  const paths = new Map<string, string>();
  const resident = new Set([gs.pid]);
  return {
    name,
    repoUrl: (repo) => `${gs.authUrl}/alice/bench/${repo}.git`,
    createRepo: async (repo) => {
      const dir = paths.get(repo) ?? (await gs.createRepo(repo));
      paths.set(repo, dir);
      return dir;
    },
    repoPath: (repo) => {
      const dir = paths.get(repo);
      if (!dir) throw new Error(`${name}: no repository ${repo}`);
      return dir;
    },
    cpuSeconds: () => treeCpuSeconds([gs.pid]),
    ownCpuSeconds: () => ownCpuSeconds([gs.pid]),
    waitIdle: () => waitForTree([gs.pid], resident, 120_000),
    resetPeak: () => resetPeakRss(gs.pid),
    peakRss: () => peakRss(gs.pid),
    samplePid: gs.pid,
    metricsUrl: `${gs.url}/metrics`,
  };
}

/**
 * gitstratum behind nginx with the pack cache's hand-off on (`--pack-cache-accel-redirect`):
 * clients talk to nginx, which proxies to gitstratum and sends cache hits itself. Server CPU is
 * both process trees; non-git CPU is Node's plus nginx's.
 */
export function handoffSide(gs: GitstratumServer, nginx: { pid: number; url: string }, name = 'gitstratum+nginx'): Side {
  const inner = gitstratumSide(gs, name);
  const front = new URL(nginx.url);
  return {
    ...inner,
    repoUrl: (repo) => {
      const u = new URL(inner.repoUrl(repo));
      u.host = front.host;
      return u.toString();
    },
    cpuSeconds: () => treeCpuSeconds([gs.pid, nginx.pid]),
    ownCpuSeconds: () => ownCpuSeconds([gs.pid]) + treeCpuSeconds([nginx.pid]),
  };
}

export function peerSide(peer: HttpBackendPeer, name = 'http-backend'): Side {
  return {
    name,
    repoUrl: (repo) => `${peer.url}/alice/bench/${repo}.git`,
    createRepo: (repo) => peer.createRepo(repo),
    repoPath: (repo) => peer.repoPath(repo),
    cpuSeconds: () => peer.cpuSeconds(),
    ownCpuSeconds: () => peer.ownCpuSeconds(),
    waitIdle: () => peer.waitIdle(),
    resetPeak: () => peer.resetPeak(),
    peakRss: () => peer.peakRss(),
  };
}

/** One sample: server CPU and peak RSS around `action`, which returns the wall time it measured. */
export async function measure(side: Side, action: () => Promise<number>): Promise<Sample> {
  await side.waitIdle();
  side.resetPeak();
  const before = side.cpuSeconds();
  const ownBefore = side.ownCpuSeconds();
  const wall = await action();
  await side.waitIdle();
  return { wall, cpu: side.cpuSeconds() - before, own: side.ownCpuSeconds() - ownBefore, rss: side.peakRss() };
}

/** nginx and fcgiwrap from Debian's packages, installed when missing and we are root. */
export async function peerPrerequisites(say: (msg: string) => void): Promise<{ nginx: string; fcgiwrap: string }> {
  if (process.platform !== 'linux') throw new Error('this benchmark reads /proc: it runs on Linux only');
  for (const [name, file] of [['perl', '/usr/bin/perl'], ['git-http-backend', httpBackendPath()]] as const) {
    if (!existsSync(file)) throw new Error(`${name} not found at ${file}`);
  }
  let nginx = findExecutable('nginx');
  let fcgiwrap = findExecutable('fcgiwrap');
  if (!nginx || !fcgiwrap) {
    const missing = [!nginx && 'nginx-light', !fcgiwrap && 'fcgiwrap'].filter(Boolean).join(' ');
    if (process.getuid?.() !== 0) {
      throw new Error(`nginx and fcgiwrap are needed for the peer; install them with: sudo apt-get install -y ${missing}`);
    }
    say(`installing ${missing} from Debian's packages`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    await run('apt-get', ['update', '-qq'], { env });
    await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'nginx-light', 'fcgiwrap'], { env });
    nginx = findExecutable('nginx');
    fcgiwrap = findExecutable('fcgiwrap');
    if (!nginx || !fcgiwrap) throw new Error('nginx or fcgiwrap still missing after apt-get install');
  }
  return { nginx, fcgiwrap };
}

/** gitstratum's /metrics as `name{labels}` → value (series without labels under their bare name). */
export async function scrapeMetrics(url: string): Promise<Map<string, number>> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** The sum of every series of `name` whose labels contain all of `labels` (e.g. `result="hit"`). */
export function sumSeries(metrics: Map<string, number>, name: string, ...labels: string[]): number {
  let sum = 0;
  for (const [series, value] of metrics) {
    const bare = series.split('{')[0];
    if (bare !== name) continue;
    if (labels.every((l) => series.includes(l))) sum += value;
  }
  return sum;
}

/**
 * Waits until gitstratum has no repository maintenance pending or running (after a push, the
 * post-push delay first). A server without maintenance has no such series: returns at once.
 */
export async function waitMaintenanceIdle(metricsUrl: string, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await scrapeMetrics(metricsUrl);
    if (sumSeries(m, 'gitstratum_maintenance_pending') + sumSeries(m, 'gitstratum_maintenance_running') === 0) return;
    if (Date.now() > deadline) throw new Error(`maintenance still pending or running after ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

/**
 * Waits until every push is persisted (`gitstratum_snapshot_dirty_repositories` is 0): a push's
 * snapshot starts `snapshotDebounceSeconds` (2) after it, in the middle of what a benchmark
 * measures next otherwise. It is the push's cost, as its maintenance is.
 */
export async function waitPersisted(metricsUrl: string, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await scrapeMetrics(metricsUrl);
    if (sumSeries(m, 'gitstratum_snapshot_dirty_repositories') === 0) return;
    if (Date.now() > deadline) throw new Error(`pushes still not persisted after ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

const pkt = (line: string) => (line.length + 4).toString(16).padStart(4, '0') + line;

/**
 * A protocol v2 `fetch` of `wants` (what a full clone asks for), posted by node:http with the
 * URL's credentials; the response is read as fast as it comes and discarded. Returns its bytes.
 */
export function rawFetch(repoUrl: string, wants: string[]): Promise<number> {
  const url = new URL(`${repoUrl}/git-upload-pack`);
  const body =
    pkt('command=fetch\n') + pkt('object-format=sha1\n') + '0001' + pkt('thin-pack\n') + pkt('no-progress\n') + pkt('ofs-delta\n') + pkt('include-tag\n') +
    wants.map((w) => pkt(`want ${w}\n`)).join('') + pkt('done\n') + '0000';
  const auth = Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64');
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'Content-Type': 'application/x-git-upload-pack-request', 'Git-Protocol': 'version=2', Authorization: `Basic ${auth}`, 'Content-Length': Buffer.byteLength(body) } },
      (res) => {
        let n = 0;
        res.on('data', (chunk: Buffer) => (n += chunk.length));
        res.on('end', () => (res.statusCode === 200 && n > 0 ? resolve(n) : reject(new Error(`fetch: HTTP ${res.statusCode}, ${n} bytes`))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
