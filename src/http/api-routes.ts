/**
 * REST API under /api/v1: the admin CLI's operations over HTTP, described by an OpenAPI 3
 * document at /api/v1/openapi.json. The edge only translates: each route's schema validates
 * the request, the route resolves the actor from the token, calls one service function with
 * the request id (so the audit log can be joined to the request log), and maps the result to
 * the public shape (never a disk path or a shard). The services decide who may do what.
 *
 * The API is its own encapsulated plugin so that @fastify/swagger sees only these routes and
 * unknown paths under the prefix get a JSON 404 rather than the git edge's plain text.
 */
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Accounts } from '../access/accounts.js';
import type { AuditTrail } from '../access/audit-trail.js';
import type { Offboarding } from '../access/offboarding.js';
import type { Actor } from '../access/policy.js';
import type { Role, Visibility } from '../meta/schema.js';
import type { RepoRow, RepoService } from '../repos/service.js';
import type { Quotas, QuotaValue, Usage } from '../repos/quotas.js';
import { parseRepoPath } from '../repos/names.js';
import { invalid, notFound, unauthenticated } from '../shared/errors.js';
import type { SshKeys } from '../access/ssh-keys.js';
import type { ProtectionRule, Protections } from '../repos/protections.js';
import type { HookInput, Webhooks } from '../events/hooks.js';
import type { EventHub } from '../events/stream.js';
import { registerEventStream } from './event-stream.js';
import type { MetaStore } from '../meta/db.js';
import type { ObjectStore } from '../storage/object-store.js';
import { checkLfsSettings, createLfsAdmin, requireVersions } from '../lfs/admin.js';
import { authenticate } from './auth.js';
import { schemas, sharedSchemas, swaggerOptions } from './api-schemas.js';

export const API_PREFIX = '/api/v1';

export interface ApiDeps {
  accounts: Accounts;
  repos: RepoService;
  offboarding: Offboarding;
  auditTrail: AuditTrail;
  quotas: Quotas;
  sshKeys: SshKeys;
  protections: Protections;
  webhooks: Webhooks;
  /** The live event stream's hub (events/stream.ts) and how many streams one client may hold. */
  hub: EventHub;
  maxEventStreams: number;
  meta: MetaStore;
  /** The object store LFS uses: the readable layout is offered only when it keeps versions. */
  lfsStore: ObjectStore;
  /** The SSH server's public URL (sshPublicUrl) or port, when git over SSH is on. */
  ssh?: { publicUrl?: string | undefined; port?: number | undefined } | undefined;
}

interface RepoParams {
  owner: string;
  space: string;
  repo: string;
}

interface RepoPatch {
  name?: string;
  path?: string;
  visibility?: Visibility;
  tags?: string[];
  enforceLocks?: boolean;
  lfsLayout?: 'content' | 'readable';
  lfsPublishRefs?: string[] | null;
  lfsPublicUrl?: string | null;
}

function fullName(r: RepoRow): string {
  return `${r.ownerName}/${r.spaceName}/${r.name}`;
}

/** The public shape of a repository. `tags` only where the service loaded them. */
/** `ssh`: where SSH clients clone from, when git over SSH is on. */
function repoView(req: FastifyRequest, r: RepoRow & { tags?: string[] }, withTags: boolean, usage?: Usage, ssh?: string) {
  return {
    id: r.id,
    owner: r.ownerName,
    space: r.spaceName,
    name: r.name,
    fullName: fullName(r),
    visibility: r.visibility,
    defaultBranch: r.defaultBranch,
    enforceLocks: r.enforceLocks,
    lfsLayout: r.lfsLayout,
    lfsPublishRefs: r.lfsPublishRefs,
    lfsPublicUrl: r.lfsPublicUrl,
    ...(withTags && { tags: r.tags ?? [] }),
    ...(usage && { usage: usageView(usage) }),
    cloneUrl: `${req.protocol}://${req.host}/${fullName(r)}.git`,
    ...(ssh && { sshUrl: `${ssh}/${fullName(r)}.git` }),
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}

function usageView(u: Usage) {
  return { gitBytes: u.gitBytes, lfsBytes: u.lfsBytes, usedBytes: u.usedBytes, quotaBytes: u.quotaBytes, quotaSource: u.quotaSource };
}

/** `{ "bytes": N }` sets a quota (0: no limit); `{ "bytes": null }` goes back to the configured default. */
function quotaValue(body: { bytes: number | null }): QuotaValue {
  return body.bytes === null ? 'default' : body.bytes;
}

function repoPathOf(p: RepoParams): string {
  return `${p.owner}/${p.space}/${p.repo}`;
}

export function registerApiRoutes(app: FastifyInstance, deps: ApiDeps): void {
  app.register(async (api) => apiPlugin(api, deps), { prefix: API_PREFIX });
}

async function apiPlugin(api: FastifyInstance, deps: ApiDeps): Promise<void> {
  const { accounts, repos, offboarding, auditTrail, quotas, sshKeys, protections, webhooks } = deps;
  const { ssh } = deps;
  // The configured URL, else this host on the SSH port.
  const sshOrigin = (req: FastifyRequest) => ssh?.publicUrl ?? (ssh?.port ? `ssh://git@${req.hostname}:${ssh.port}` : undefined);
  const view = (req: FastifyRequest, r: RepoRow & { tags?: string[] }, withTags: boolean, usage?: Usage) => repoView(req, r, withTags, usage, sshOrigin(req));
  const lfsAdmin = createLfsAdmin({ meta: deps.meta, repos, store: deps.lfsStore });
  const usageOf = async (id: string) => (await quotas.repoUsages([id])).get(id);
  // Registered before any route so that its onRoute hook sees them all.
  await api.register(swagger, swaggerOptions);
  for (const schema of sharedSchemas) api.addSchema(schema);

  // authenticate() answers once per request: the budget hook, the check before the body and
  // the handler share one token lookup.
  const actorOf = (req: FastifyRequest): Promise<Actor> => authenticate(accounts, req);
  const audit = (req: FastifyRequest) => ({ requestId: String(req.id) });

  // Bodies cost nothing before the caller is known (issue 9): bad credentials are refused, and
  // an anonymous body too (every route that takes one changes something and needs a user),
  // before a byte is read. Only JSON is parsed (415 otherwise: no text/plain from a
  // cross-site form), within the server's bodyLimit (maxJsonBodyBytes).
  api.removeContentTypeParser('text/plain');
  api.addHook('preParsing', async (req, reply, payload) => {
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (!hasBody) return payload;
    try {
      const actor = await actorOf(req);
      if (actor.kind !== 'user') throw unauthenticated('auth_required', 'authentication required');
    } catch (err) {
      reply.header('Connection', 'close');
      throw err;
    }
    return payload;
  });

  api.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: 'route_not_found', message: `no such endpoint: ${req.method} ${req.url.split('?')[0]}` } }),
  );

  api.get('/openapi.json', { schema: schemas.openapi }, async () => api.swagger());

  api.get('/user', { schema: schemas.whoami }, async (req) => {
    const actor = await actorOf(req);
    if (actor.kind !== 'user') throw unauthenticated('auth_required', 'authentication required');
    return { id: actor.userId, name: actor.name, isAdmin: actor.isAdmin, scope: actor.scope, tokenId: actor.tokenId };
  });

  api.get('/users', { schema: schemas.listUsers }, async (req) => accounts.listUsers(await actorOf(req)));

  api.post<{ Body: { name: string; admin: boolean } }>('/users', { schema: schemas.createUser }, async (req, reply) => {
    const user = await accounts.createUser(await actorOf(req), req.body.name, { admin: req.body.admin, ...audit(req) });
    return reply.code(201).send(user);
  });

  api.post<{ Params: { user: string }; Body: { releaseLocks?: boolean } | undefined }>(
    '/users/:user/disable',
    // The body is optional: `POST …/disable` with none means no options.
    { schema: schemas.disableUser, preValidation: async (req) => void (req.body ??= {}) },
    async (req) => offboarding.disable(await actorOf(req), req.params.user, { releaseLocks: req.body?.releaseLocks ?? false, ...audit(req) }),
  );

  api.post<{ Params: { user: string } }>('/users/:user/enable', { schema: schemas.enableUser }, async (req) =>
    offboarding.enable(await actorOf(req), req.params.user, audit(req)),
  );

  api.delete<{ Params: { user: string } }>('/users/:user', { schema: schemas.deleteUser }, async (req, reply) => {
    await offboarding.delete(await actorOf(req), req.params.user, audit(req));
    return reply.code(204).send();
  });

  api.delete<{ Params: { user: string }; Querystring: { repo?: string } }>('/users/:user/locks', { schema: schemas.releaseLocks }, async (req) =>
    offboarding.releaseLocks(await actorOf(req), req.params.user, { repo: req.query.repo, ...audit(req) }),
  );

  api.get('/orgs', { schema: schemas.listOrgs }, async (req) => accounts.listOrgs(await actorOf(req)));

  api.post<{ Body: { name: string } }>('/orgs', { schema: schemas.createOrg }, async (req, reply) => {
    const org = await accounts.createOrg(await actorOf(req), req.body.name, audit(req));
    return reply.code(201).send(org);
  });

  api.get<{ Params: { org: string } }>('/orgs/:org/members', { schema: schemas.listMembers }, async (req) =>
    accounts.listMembers(await actorOf(req), req.params.org),
  );

  api.put<{ Params: { org: string; user: string }; Body: { role: Role } }>(
    '/orgs/:org/members/:user',
    { schema: schemas.setMember },
    async (req) => accounts.addMember(await actorOf(req), req.params.org, req.params.user, req.body.role, audit(req)),
  );

  api.delete<{ Params: { org: string; user: string } }>('/orgs/:org/members/:user', { schema: schemas.removeMember }, async (req, reply) => {
    await accounts.removeMember(await actorOf(req), req.params.org, req.params.user, audit(req));
    return reply.code(204).send();
  });

  api.get<{ Querystring: { repo?: string; actor?: string; since?: string; before?: string; limit?: number } }>(
    '/audit',
    { schema: schemas.listAudit },
    async (req) => auditTrail.list(await actorOf(req), req.query),
  );

  api.get<{ Querystring: { owner?: string } }>('/spaces', { schema: schemas.listSpaces }, async (req) => {
    const list = await repos.listSpaces(await actorOf(req), req.query.owner);
    return list.map((s) => ({ id: s.id, owner: s.ownerName, name: s.name, createdAt: s.createdAt }));
  });

  api.post<{ Body: { owner: string; name: string } }>('/spaces', { schema: schemas.createSpace }, async (req, reply) => {
    const space = await repos.createSpace(await actorOf(req), `${req.body.owner}/${req.body.name}`, audit(req));
    return reply.code(201).send(space);
  });

  api.get<{ Querystring: { owner?: string; space?: string } }>('/repos', { schema: schemas.listRepos }, async (req) => {
    const { owner, space } = req.query;
    const list = await repos.listRepos(await actorOf(req), { ...(owner && { owner }), ...(space && { space }) });
    // listRepos does not load tags; leave them out rather than report an empty list.
    const usages = await quotas.repoUsages(list.map((r) => r.id));
    return list.map((r) => view(req, r, false, usages.get(r.id)));
  });

  api.post<{ Body: { owner: string; space: string; name: string; visibility: Visibility; lfsLayout?: 'content' | 'readable' } }>(
    '/repos',
    { schema: schemas.createRepo },
    async (req, reply) => {
      const { owner, space, name, visibility, lfsLayout } = req.body;
      const actor = await actorOf(req);
      // The store is asked only for a caller who may create here (anonymous callers learn nothing of it).
      if (lfsLayout === 'readable') {
        await repos.resolveScope(actor, `${owner}/${space}`, 'write');
        await requireVersions(deps.lfsStore);
      }
      const repo = await repos.createRepo(actor, `${owner}/${space}/${name}`, { visibility, ...(lfsLayout && { lfsLayout }), ...audit(req) });
      return reply.code(201).send(view(req, repo, true));
    },
  );

  api.post<{ Params: RepoParams; Body: { owner: string; space: string; name?: string; visibility?: Visibility } }>(
    '/repos/:owner/:space/:repo/forks',
    { schema: schemas.forkRepo },
    async (req, reply) => {
      const { owner, space, name, visibility } = req.body;
      // Without a name the fork takes the source's (a `.git` suffix in the URL is not part of it).
      const target = `${owner}/${space}/${name ?? parseRepoPath(repoPathOf(req.params)).repo}`;
      const repo = await repos.forkRepo(await actorOf(req), repoPathOf(req.params), target, { ...(visibility && { visibility }), ...audit(req) });
      return reply.code(201).send(view(req, repo, true));
    },
  );

  api.get<{ Params: RepoParams }>('/repos/:owner/:space/:repo', { schema: schemas.getRepo }, async (req) => {
    const where = parseRepoPath(repoPathOf(req.params));
    const repo = await repos.resolve(await actorOf(req), where, 'read');
    return view(req, repo, true, await usageOf(repo.id));
  });

  api.put<{ Params: RepoParams; Body: { bytes: number | null } }>('/repos/:owner/:space/:repo/quota', { schema: schemas.setRepoQuota }, async (req) =>
    usageView(await quotas.setRepoQuota(await actorOf(req), repoPathOf(req.params), quotaValue(req.body), audit(req))),
  );

  api.get<{ Params: RepoParams }>('/repos/:owner/:space/:repo/protections', { schema: schemas.listProtections }, async (req) =>
    protections.list(await actorOf(req), repoPathOf(req.params)),
  );

  api.put<{ Params: RepoParams; Body: ProtectionRule }>('/repos/:owner/:space/:repo/protections', { schema: schemas.protectBranches }, async (req) =>
    protections.protect(await actorOf(req), repoPathOf(req.params), req.body, audit(req)),
  );

  api.delete<{ Params: RepoParams; Querystring: { pattern: string } }>('/repos/:owner/:space/:repo/protections', { schema: schemas.unprotectBranches }, async (req, reply) => {
    await protections.unprotect(await actorOf(req), repoPathOf(req.params), req.query.pattern, audit(req));
    return reply.code(204).send();
  });

  registerEventStream(api, schemas.eventStream, { hub: deps.hub, repos, actorOf, maxStreams: deps.maxEventStreams });

  api.get<{ Querystring: { scope: string } }>('/hooks', { schema: schemas.listHooks }, async (req) => webhooks.list(await actorOf(req), req.query.scope));

  api.post<{ Body: HookInput & { scope: string } }>('/hooks', { schema: schemas.createHook }, async (req, reply) => {
    const { scope, ...input } = req.body;
    return reply.code(201).send(await webhooks.create(await actorOf(req), scope, input, audit(req)));
  });

  api.get<{ Params: { id: string } }>('/hooks/:id', { schema: schemas.getHook }, async (req) => webhooks.get(await actorOf(req), req.params.id));

  api.patch<{ Params: { id: string }; Body: Partial<HookInput> }>('/hooks/:id', { schema: schemas.updateHook }, async (req) =>
    webhooks.update(await actorOf(req), req.params.id, req.body, audit(req)),
  );

  api.delete<{ Params: { id: string } }>('/hooks/:id', { schema: schemas.deleteHook }, async (req) => webhooks.remove(await actorOf(req), req.params.id, audit(req)));

  api.post<{ Params: { id: string } }>('/hooks/:id/tests', { schema: schemas.testHook }, async (req) => webhooks.test(await actorOf(req), req.params.id));

  api.get<{ Params: { id: string }; Querystring: { limit?: number } }>('/hooks/:id/deliveries', { schema: schemas.listDeliveries }, async (req) =>
    webhooks.deliveries(await actorOf(req), req.params.id, req.query.limit),
  );

  api.get<{ Params: { id: string; delivery: string } }>('/hooks/:id/deliveries/:delivery', { schema: schemas.getDelivery }, async (req) =>
    webhooks.delivery(await actorOf(req), req.params.id, req.params.delivery),
  );

  api.post<{ Params: { id: string; delivery: string } }>('/hooks/:id/deliveries/:delivery/redeliver', { schema: schemas.redeliver }, async (req, reply) =>
    reply.code(202).send(await webhooks.redeliver(await actorOf(req), req.params.id, req.params.delivery, audit(req))),
  );

  api.get<{ Params: { owner: string } }>('/owners/:owner/quota', { schema: schemas.getOwnerQuota }, async (req) => {
    const u = await quotas.ownerUsage(await actorOf(req), req.params.owner);
    return { owner: u.owner, ...usageView(u) };
  });

  api.put<{ Params: { owner: string }; Body: { bytes: number | null } }>('/owners/:owner/quota', { schema: schemas.setOwnerQuota }, async (req) => {
    const u = await quotas.setOwnerQuota(await actorOf(req), req.params.owner, quotaValue(req.body), audit(req));
    return { owner: u.owner, ...usageView(u) };
  });

  api.patch<{ Params: RepoParams; Body: RepoPatch }>('/repos/:owner/:space/:repo', { schema: schemas.updateRepo }, async (req) => {
    const { name, path, visibility, tags, enforceLocks, lfsLayout, lfsPublishRefs, lfsPublicUrl } = req.body;
    const lfsInput = { lfsLayout, lfsPublishRefs, lfsPublicUrl };
    const lfsChanged = lfsLayout !== undefined || lfsPublishRefs !== undefined || lfsPublicUrl !== undefined;
    const target = name ?? path;
    const actor = await actorOf(req);
    const from = repoPathOf(req.params);
    if (target !== undefined) {
      // Rename and settings are separate service operations, each one transaction; taking
      // them one request at a time keeps every request all-or-nothing.
      if (name !== undefined && path !== undefined) throw invalid('invalid_request', 'give either name or path, not both');
      if (visibility !== undefined || tags !== undefined || enforceLocks !== undefined || lfsChanged) {
        throw invalid('invalid_request', 'rename or move in a request of its own, without visibility or tags');
      }
      return view(req, await repos.renameRepo(actor, from, target, audit(req)), true);
    }
    // Checked (the store probed) only for the repository's administrators.
    if (lfsChanged) await repos.resolve(actor, parseRepoPath(from), 'admin');
    const lfs = lfsChanged ? await checkLfsSettings(deps.lfsStore, lfsInput) : {};
    const change = { ...(visibility && { visibility }), ...(tags && { tags }), ...(enforceLocks !== undefined && { enforceLocks }), ...lfs };
    return view(req, await repos.updateRepo(actor, from, change, audit(req)), true);
  });

  api.get<{ Params: RepoParams; Querystring: { path?: string; limit?: number; before?: string } }>('/repos/:owner/:space/:repo/lfs/published', { schema: schemas.listLfsPublished }, async (req) =>
    lfsAdmin.published(await actorOf(req), repoPathOf(req.params), req.query),
  );

  api.get<{ Params: RepoParams }>('/repos/:owner/:space/:repo/lfs/publish-jobs', { schema: schemas.listLfsPublishJobs }, async (req) => lfsAdmin.jobs(await actorOf(req), repoPathOf(req.params)));

  api.delete<{ Params: RepoParams }>('/repos/:owner/:space/:repo', { schema: schemas.deleteRepo }, async (req, reply) => {
    await repos.deleteRepo(await actorOf(req), repoPathOf(req.params), audit(req));
    return reply.code(204).send();
  });

  api.get<{ Params: { user: string } }>('/users/:user/tokens', { schema: schemas.listTokens }, async (req) =>
    accounts.listTokens(await actorOf(req), req.params.user),
  );

  api.post<{ Params: { user: string }; Body: { scope: Role; expires?: string; name?: string } }>(
    '/users/:user/tokens',
    { schema: schemas.createToken },
    async (req, reply) => {
      const token = await accounts.createToken(await actorOf(req), req.params.user, req.body.scope, {
        expires: req.body.expires,
        name: req.body.name,
        ...audit(req),
      });
      return reply.code(201).header('Cache-Control', 'no-store').send(token);
    },
  );

  api.delete<{ Params: { id: string } }>('/tokens/:id', { schema: schemas.revokeToken }, async (req) =>
    accounts.revokeToken(await actorOf(req), req.params.id, audit(req)),
  );

  api.get<{ Params: { user: string } }>('/users/:user/keys', { schema: schemas.listSshKeys }, async (req) => sshKeys.list(await actorOf(req), req.params.user));

  api.post<{ Params: { user: string }; Body: { key: string; name?: string; scope?: string } }>('/users/:user/keys', { schema: schemas.addSshKey }, async (req, reply) => {
    const key = await sshKeys.add(await actorOf(req), req.params.user, req.body.key, { name: req.body.name, scope: req.body.scope, ...audit(req) });
    return reply.code(201).send(key);
  });

  api.delete<{ Params: { user: string; id: string } }>('/users/:user/keys/:id', { schema: schemas.removeSshKey }, async (req) => {
    const actor = await actorOf(req);
    // The key must be this user's: the URL names whose key is meant.
    const mine = (await sshKeys.list(actor, req.params.user)).some((k) => k.id === req.params.id);
    if (!mine) throw notFound('ssh_key_not_found', `SSH key '${req.params.id}' not found`, { id: req.params.id });
    return sshKeys.remove(actor, req.params.id, audit(req));
  });
}
