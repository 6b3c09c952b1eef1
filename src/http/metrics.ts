/** Prometheus metrics of the HTTP edge and the git processes behind it. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Node's process metrics (CPU, memory, event loop lag, GC). Event loop lag is sampled every
 * 100 ms rather than prom-client's 10: its timer woke an idle server 200 times a second, about
 * 1 % of a core, which a long slow download paid for as much as for its bytes.
 */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: 'gitstratum_', eventLoopMonitoringPrecision: 100 });
}

export function createMetrics(sources: { gitRunning: () => number; gitQueued: () => number }) {
  const registry = new Registry();
  collectProcessMetrics(registry);
  const requests = new Counter({
    name: 'gitstratum_http_requests_total',
    help: 'HTTP requests by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'gitstratum_http_request_duration_seconds',
    help: 'HTTP request latency by route and method, until the response finished',
    labelNames: ['route', 'method'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  });
  const gitBytes = new Counter({
    name: 'gitstratum_git_bytes_total',
    help: 'Bytes of git traffic by service and direction (in: request bodies after gzip decoding; out: responses)',
    labelNames: ['service', 'direction'] as const,
    registers: [registry],
  });
  const gitProcesses = new Counter({
    name: 'gitstratum_git_processes_total',
    help: 'Git processes started, by service and outcome',
    labelNames: ['service', 'outcome'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'gitstratum_git_processes_running',
    help: 'Git processes running now',
    registers: [registry],
    collect() {
      this.set(sources.gitRunning());
    },
  });
  new Gauge({
    name: 'gitstratum_git_processes_queued',
    help: 'Requests waiting for a git process slot',
    registers: [registry],
    collect() {
      this.set(sources.gitQueued());
    },
  });
  return { registry, requests, duration, gitBytes, gitProcesses };
}

export type Metrics = ReturnType<typeof createMetrics>;
