/**
 * The whole HTTP edge in process, for `inject()` tests that need every route (the fuzzing of
 * test/security/): createApp on a fresh data directory with SQLite, never listening, with
 * alice, her space alice/main, a public and a private repository and tokens.
 */
import path from 'node:path';
import { systemActor } from '../../src/access/policy.js';
import { createApp, type App } from '../../src/app.js';
import { configSchema, type ConfigInput } from '../../src/config/schema.js';
import { createLogger } from '../../src/shared/log.js';

export interface AppFixture {
  app: App;
  /** alice's tokens by scope. */
  tokens: { read: string; write: string; admin: string };
  /** Repository paths (owner/space/name) alice owns. */
  publicRepo: string;
  privateRepo: string;
}

export async function appWithAlice(dir: string, config: Partial<ConfigInput> = {}): Promise<AppFixture> {
  const parsed = configSchema.parse({
    data: path.join(dir, 'data'),
    snapshotsEnabled: false,
    maintenanceEnabled: false,
    metaBackupIntervalSeconds: 0,
    // The fuzzing fires tens of thousands of requests from one address: budgets would turn
    // most of them into 429s and test nothing. Budgets have their own tests.
    rateLimitGitRequests: 0,
    rateLimitLfsRequests: 0,
    rateLimitApiRequests: 0,
    rateLimitAuthFailures: 0,
    ...config,
  });
  const app = await createApp(parsed, createLogger('silent'));
  try {
    await app.core.accounts.createUser(systemActor, 'alice');
    await app.core.repos.createSpace(systemActor, 'alice/main');
    await app.core.repos.createRepo(systemActor, 'alice/main/open', { visibility: 'public' });
    await app.core.repos.createRepo(systemActor, 'alice/main/secret', { visibility: 'private' });
    const token = async (scope: 'read' | 'write' | 'admin') => (await app.core.accounts.createToken(systemActor, 'alice', scope)).token;
    const tokens = { read: await token('read'), write: await token('write'), admin: await token('admin') };
    await app.http.ready();
    return { app, tokens, publicRepo: 'alice/main/open', privateRepo: 'alice/main/secret' };
  } catch (err) {
    await app.close();
    throw err;
  }
}
