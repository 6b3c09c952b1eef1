/**
 * The remote host passes the RepoHost contract against a storage node's routes on a real
 * socket (the thing under test is the HTTP hop: streaming, trailers, errors, signatures).
 */
import Fastify from 'fastify';
import { registerNodeRoutes } from '../http/node-routes.js';
import { repoHostContract } from '../../test/support/repo-host-contract.js';
import { scratchLocalHost } from '../../test/support/local-host.js';
import { RemoteRepoHost } from './remote-host.js';

const SECRET = 'contract-cluster-secret-0123456789abcdef';

repoHostContract('remote', async () => {
  const local = await scratchLocalHost();
  const node = Fastify();
  registerNodeRoutes(node, { host: local.host, secret: SECRET });
  const url = await node.listen({ host: '127.0.0.1', port: 0 });
  const remote = new RemoteRepoHost({ url, secret: SECRET });
  return {
    host: remote,
    diskPath: (id) => local.host.repoPath(id),
    async close() {
      await remote.close();
      await node.close();
      await local.close();
    },
  };
});
