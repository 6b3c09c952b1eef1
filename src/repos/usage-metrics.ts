/**
 * Repository and owner sizes and quotas as Prometheus gauges, read from the metadata database
 * at each scrape (git bytes as last measured, LFS bytes summed): always current, and costing
 * nothing between scrapes. Alert on `usage / quota` to warn before pushes are refused.
 */
import { Gauge, type Registry } from 'prom-client';
import type { Quotas } from './quotas.js';

export function createUsageMetrics(registry: Registry, quotas: Pick<Quotas, 'repoUsages' | 'ownerUsages'>) {
  return {
    repoUsage: new Gauge({
      name: 'gitstratum_repository_usage_bytes',
      help: 'Bytes a repository uses, by kind (git: its object store as last measured; lfs: the LFS objects linked to it)',
      labelNames: ['repository', 'kind'] as const,
      registers: [registry],
      async collect() {
        this.reset();
        for (const u of (await quotas.repoUsages()).values()) {
          this.set({ repository: u.fullName, kind: 'git' }, u.gitBytes);
          this.set({ repository: u.fullName, kind: 'lfs' }, u.lfsBytes);
        }
      },
    }),
    repoQuota: new Gauge({
      name: 'gitstratum_repository_quota_bytes',
      help: 'The size quota in force for a repository (repositories without one are not listed)',
      labelNames: ['repository'] as const,
      registers: [registry],
      async collect() {
        this.reset();
        for (const u of (await quotas.repoUsages()).values()) if (u.quotaBytes !== null) this.set({ repository: u.fullName }, u.quotaBytes);
      },
    }),
    ownerUsage: new Gauge({
      name: 'gitstratum_owner_usage_bytes',
      help: "Bytes an owner's repositories use together, by kind (git, lfs; an LFS object shared by several counts once)",
      labelNames: ['owner', 'kind'] as const,
      registers: [registry],
      async collect() {
        this.reset();
        for (const u of await quotas.ownerUsages()) {
          this.set({ owner: u.owner, kind: 'git' }, u.gitBytes);
          this.set({ owner: u.owner, kind: 'lfs' }, u.lfsBytes);
        }
      },
    }),
    ownerQuota: new Gauge({
      name: 'gitstratum_owner_quota_bytes',
      help: 'The size quota in force for an owner (owners without one are not listed)',
      labelNames: ['owner'] as const,
      registers: [registry],
      async collect() {
        this.reset();
        for (const u of await quotas.ownerUsages()) if (u.quotaBytes !== null) this.set({ owner: u.owner }, u.quotaBytes);
      },
    }),
  };
}
