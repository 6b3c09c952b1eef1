/**
 * Prometheus metrics of the upload-pack response cache, registered in the server's registry.
 * Hit ratio for a graph:
 *   sum(rate(gitstratum_pack_cache_requests_total{result=~"hit|coalesced"}[5m]))
 *     / sum(rate(gitstratum_pack_cache_requests_total[5m]))
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface GenerationGauges {
  running(): number;
  queued(): number;
}

export function createPackCacheMetrics(registry: Registry) {
  let generations: GenerationGauges = { running: () => 0, queued: () => 0 };
  return {
    requests: new Counter({
      name: 'gitstratum_pack_cache_requests_total',
      help: 'upload-pack requests seen by the response cache, by endpoint (advertisement, ls-refs, fetch) and result (hit: served from disk; miss: ran git; coalesced: shared a running generation; uncacheable: went to git uncached)',
      labelNames: ['endpoint', 'result'] as const,
      registers: [registry],
    }),
    uncacheable: new Counter({
      name: 'gitstratum_pack_cache_uncacheable_total',
      help: 'upload-pack requests served without the cache, by reason (have: a request with have lines seen once in the admission window; command, malformed, request_too_large, no_space, refs_unreadable)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    servedBytes: new Counter({
      name: 'gitstratum_pack_cache_served_bytes_total',
      help: 'Response bytes streamed from cache files, by result (hit, miss, coalesced)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    handoffs: new Counter({
      name: 'gitstratum_pack_cache_handoffs_total',
      help: 'Hits handed to the front proxy to send (X-Accel-Redirect, packCacheAccelRedirect); their bytes are in served_bytes_total{result="hit"}',
      registers: [registry],
    }),
    entries: new Gauge({
      name: 'gitstratum_pack_cache_entries',
      help: 'Responses stored on disk',
      registers: [registry],
    }),
    bytes: new Gauge({
      name: 'gitstratum_pack_cache_bytes',
      help: 'Bytes of stored responses on disk, headers included',
      registers: [registry],
    }),
    stored: new Counter({
      name: 'gitstratum_pack_cache_stored_total',
      help: 'Generated responses kept as cache entries',
      registers: [registry],
    }),
    notStored: new Counter({
      name: 'gitstratum_pack_cache_not_stored_total',
      help: 'Generated responses not kept, by reason (failed: git failed; abandoned: every client left; too_large; admit_after; no_space; stale: refs changed meanwhile; error)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    evictions: new Counter({
      name: 'gitstratum_pack_cache_evictions_total',
      help: 'Entries deleted, by reason (stale: refs changed since; size: least recently used, over packCacheMaxBytes)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    damaged: new Counter({
      name: 'gitstratum_pack_cache_damaged_total',
      help: 'Damaged entries found and dropped instead of served, by reason (missing, length, header, checksum)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    admissionRejections: new Counter({
      name: 'gitstratum_pack_cache_admission_rejections_total',
      help: 'Cache misses refused with 503 because too many pack generations ran, by code (git_busy, git_queue_timeout)',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
    generationsRunning: new Gauge({
      name: 'gitstratum_pack_generations_running',
      help: 'Pack generations (cacheable fetch misses) running now',
      registers: [registry],
      collect() {
        this.set(generations.running());
      },
    }),
    generationsQueued: new Gauge({
      name: 'gitstratum_pack_generations_queued',
      help: 'Cache misses waiting for a pack generation slot',
      registers: [registry],
      collect() {
        this.set(generations.queued());
      },
    }),
    /** Where the generation gauges read from (the admission control, once it exists). */
    observeGenerations(source: GenerationGauges): void {
      generations = source;
    },
  };
}

export type PackCacheMetrics = ReturnType<typeof createPackCacheMetrics>;
