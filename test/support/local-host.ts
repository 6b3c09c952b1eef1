/**
 * A LocalRepoHost that serves git on a scratch data directory, with plain git (no pack cache),
 * nothing evicted and no hook server: what the RepoHost contract and the node routes run on.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Limiter } from '../../src/git/limiter.js';
import { DEFAULT_PUSH_CAPS } from '../../src/git/pkt-line.js';
import { gitServices } from '../../src/git/smart-http.js';
import { LocalRepoHost } from '../../src/repos/local-host.js';

export async function scratchLocalHost(): Promise<{ host: LocalRepoHost; dataDir: string; close(): Promise<void> }> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'gitstratum-host-'));
  const host = new LocalRepoHost(dataDir, {
    git: gitServices(new Limiter({ maxRunning: 4, maxQueue: 16, queueTimeoutMs: 30_000 })),
    limits: { timeoutMs: 120_000, niceness: 0, maxPushBytes: 64 * 1024 * 1024, maxFetchRequestBytes: 1024 * 1024, push: DEFAULT_PUSH_CAPS },
    hookSocket: () => path.join(dataDir, 'no-hooks.sock'),
    residency: { acquire: async () => () => {} },
  });
  return { host, dataDir, close: () => rm(dataDir, { recursive: true, force: true }) };
}
