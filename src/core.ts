/**
 * The core every role shares: configuration, the metadata store and the services over it.
 * The admin CLI needs only this, so it lives apart from app.ts and its HTTP, git and LFS
 * module graph (which would double every command's start-up time).
 */
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Config } from './config/schema.js';
import { openMetaStore, type MetaStore } from './meta/db.js';
import { createAccounts, type Accounts } from './access/accounts.js';
import { createRepoService, type RepoService } from './repos/service.js';
import { createQuotas, type Quotas } from './repos/quotas.js';

export interface Core {
  config: Config;
  dataDir: string;
  meta: MetaStore;
  accounts: Accounts;
  repos: RepoService;
  quotas: Quotas;
  close(): Promise<void>;
}

export async function openCore(config: Config): Promise<Core> {
  const dataDir = path.resolve(config.data);
  await mkdir(dataDir, { recursive: true });
  const meta = await openMetaStore({ dataDir, databaseUrl: config.databaseUrl });
  return {
    config,
    dataDir,
    meta,
    accounts: createAccounts(meta),
    repos: createRepoService(meta, { dataDir, defaultBranch: config.defaultBranch }),
    quotas: createQuotas(meta, { repoQuotaBytes: config.repoQuotaBytes, ownerQuotaBytes: config.ownerQuotaBytes, maxRefs: config.maxRefs }),
    close: () => meta.close(),
  };
}

