/** REST API under /api/v1 (placeholder until the API lands). */
import type { FastifyInstance } from 'fastify';
import type { Accounts } from '../access/accounts.js';
import type { RepoService } from '../repos/service.js';

export interface ApiDeps {
  accounts: Accounts;
  repos: RepoService;
}

export function registerApiRoutes(_app: FastifyInstance, _deps: ApiDeps): void {}
