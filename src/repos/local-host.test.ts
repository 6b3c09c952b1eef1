import { repoHostContract } from '../../test/support/repo-host-contract.js';
import { scratchLocalHost } from '../../test/support/local-host.js';

repoHostContract('local', async () => {
  const local = await scratchLocalHost();
  return { host: local.host, diskPath: (id) => local.host.repoPath(id), close: local.close };
});
