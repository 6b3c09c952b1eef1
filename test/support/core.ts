/**
 * The in-process core that unit tests of services drive: on `dataDir`, with SQLite there or
 * PostgreSQL at `databaseUrl`, and the user `alice` with her space `alice/main` already made.
 */
import path from 'node:path';
import { systemActor } from '../../src/access/policy.js';
import { configSchema } from '../../src/config/schema.js';
import { openCore, type Core } from '../../src/core.js';
import { repoDir } from '../../src/repos/local-host.js';

export async function coreWithAlice(dir: string, databaseUrl?: string): Promise<Core> {
  const core = await openCore(configSchema.parse({ data: path.join(dir, 'data'), ...(databaseUrl && { databaseUrl }) }));
  try {
    await core.accounts.createUser(systemActor, 'alice');
    await core.repos.createSpace(systemActor, 'alice/main');
  } catch (err) {
    await core.close();
    throw err;
  }
  return core;
}

/**
 * A repository made through the service, with the directory it has on this machine's disk
 * (tests of the node's own modules work there; callers of the service never see it).
 */
export function onDisk<R extends { id: string }>(core: Core, repo: R): R & { path: string } {
  return { ...repo, path: repoDir(core.dataDir, repo.id) };
}
