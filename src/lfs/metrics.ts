/** Prometheus metrics of the LFS API and the object store behind it. */
import { Counter, Histogram, type Registry } from 'prom-client';

export function createLfsMetrics(registry: Registry) {
  return {
    batches: new Counter({
      name: 'gitstratum_lfs_batch_requests_total',
      help: 'LFS batch requests by operation and outcome',
      labelNames: ['operation', 'outcome'] as const,
      registers: [registry],
    }),
    batchObjects: new Counter({
      name: 'gitstratum_lfs_batch_objects_total',
      help: 'Objects named in LFS batch requests, by operation and result (action, present, error)',
      labelNames: ['operation', 'result'] as const,
      registers: [registry],
    }),
    bytes: new Counter({
      name: 'gitstratum_lfs_bytes_total',
      help: 'LFS object bytes transferred through the server, by direction (up, down)',
      labelNames: ['direction'] as const,
      registers: [registry],
    }),
    verifyFailures: new Counter({
      name: 'gitstratum_lfs_verify_failures_total',
      help: 'Uploads or verify calls refused because size or hash did not match',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    storeLatency: new Histogram({
      name: 'gitstratum_object_store_duration_seconds',
      help: 'Object store operation latency by backend, operation and outcome (until the stream ends for get/put)',
      labelNames: ['backend', 'operation', 'outcome'] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
      registers: [registry],
    }),
  };
}

export type LfsMetrics = ReturnType<typeof createLfsMetrics>;
