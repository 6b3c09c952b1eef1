/**
 * The core every role shares: configuration, the metadata store and the services over it.
 * The admin CLI needs only this, so it lives apart from app.ts and its HTTP, git and LFS
 * module graph (which would double every command's start-up time).
 */
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Config } from './config/schema.js';
import { ConfigError } from './config/load.js';
import { openMetaStore, type MetaStore } from './meta/db.js';
import { createAccounts, type Accounts } from './access/accounts.js';
import { createRepoService, type RepoService } from './repos/service.js';
import { createOffboarding, type Offboarding } from './access/offboarding.js';
import { createAuditTrail, type AuditTrail } from './access/audit-trail.js';

export interface Core {
  config: Config;
  dataDir: string;
  meta: MetaStore;
  accounts: Accounts;
  repos: RepoService;
  offboarding: Offboarding;
  auditTrail: AuditTrail;
  close(): Promise<void>;
}

export async function openCore(config: Config): Promise<Core> {
  const dataDir = path.resolve(config.data);
  await mkdir(dataDir, { recursive: true }).catch((err: Error) => {
    throw new ConfigError(`cannot create data directory ${dataDir} (setting data): ${err.message}`);
  });
  const meta = await openMetaStore({ dataDir, databaseUrl: config.databaseUrl });
  const repos = createRepoService(meta, { dataDir, defaultBranch: config.defaultBranch });
  return {
    config,
    dataDir,
    meta,
    accounts: createAccounts(meta),
    repos,
    offboarding: createOffboarding(meta, { repos }),
    auditTrail: createAuditTrail(meta, { repos }),
    close: () => meta.close(),
  };
}

