/**
 * JSON schemas of the REST API: Fastify validates requests and serializes responses with
 * them, and @fastify/swagger turns the same schemas into the OpenAPI document, so the
 * document cannot drift from what the server accepts. Shared shapes are registered by `$id`
 * and appear under `components.schemas`. Names are checked loosely here (a safe character
 * set) and exactly by the services (repos/names.ts), which own the rules.
 */
import type { SwaggerOptions } from '@fastify/swagger';

export const API_VERSION = '0.1.0';

const name = (description: string) =>
  ({ type: 'string', minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$', description }) as const;
/** A repository name in a URL may carry the `.git` suffix. */
const repoName = { ...name('repository name (a trailing .git is ignored)'), maxLength: 104 } as const;
const role = { type: 'string', enum: ['read', 'write', 'admin'] } as const;
const timestamp = { type: 'string', format: 'date-time' } as const;
const nullableTimestamp = { type: ['string', 'null'], format: 'date-time' } as const;

export const sharedSchemas = [
  {
    $id: 'Error',
    type: 'object',
    description: 'every error answer of the API',
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        properties: {
          code: { type: 'string', description: 'stable, machine-readable (see docs/api.md)' },
          message: { type: 'string', description: 'short, for people' },
        },
      },
    },
  },
  {
    $id: 'User',
    type: 'object',
    required: ['id', 'name', 'isAdmin'],
    properties: {
      id: { type: 'string' },
      name: { type: 'string' },
      isAdmin: { type: 'boolean' },
      disabledAt: { ...nullableTimestamp, description: 'set while the user is disabled: none of their tokens authenticates' },
    },
  },
  {
    $id: 'Me',
    type: 'object',
    description: 'the user behind the presented token, and what the token may do',
    required: ['id', 'name', 'isAdmin', 'scope', 'tokenId'],
    properties: {
      id: { type: 'string' },
      name: { type: 'string' },
      isAdmin: { type: 'boolean' },
      scope: role,
      tokenId: { type: ['string', 'null'] },
    },
  },
  {
    $id: 'Org',
    type: 'object',
    required: ['id', 'name'],
    properties: {
      id: { type: 'string' },
      name: { type: 'string' },
      createdAt: { ...timestamp, description: 'in listings' },
      members: { type: 'integer', description: 'in listings: how many members it has' },
    },
  },
  {
    $id: 'Member',
    type: 'object',
    required: ['user', 'role'],
    properties: { org: { type: 'string' }, user: { type: 'string' }, role },
  },
  {
    $id: 'Space',
    type: 'object',
    required: ['id', 'owner', 'name', 'createdAt'],
    properties: { id: { type: 'string' }, owner: { type: 'string' }, name: { type: 'string' }, createdAt: timestamp },
  },
  {
    $id: 'Repo',
    type: 'object',
    required: ['id', 'owner', 'space', 'name', 'fullName', 'visibility', 'defaultBranch', 'cloneUrl', 'createdAt', 'updatedAt'],
    properties: {
      id: { type: 'string', description: 'ULID; stays the same across renames and moves' },
      owner: { type: 'string' },
      space: { type: 'string' },
      name: { type: 'string' },
      fullName: { type: 'string', description: 'OWNER/SPACE/REPO' },
      visibility: { type: 'string', enum: ['public', 'private'] },
      defaultBranch: { type: 'string' },
      tags: { type: 'array', items: { type: 'string' }, description: 'present on single-repository answers' },
      enforceLocks: { type: 'boolean', description: 'pushes changing files locked (Git LFS) by another user are refused' },
      lfsLayout: { type: 'string', enum: ['content', 'readable'], description: 'where its Git LFS files are kept (README "Readable LFS layout")' },
      lfsPublishRefs: { type: ['array', 'null'], items: { type: 'string' }, description: 'refs whose pushes publish LFS files; null: the default branch' },
      lfsPublicUrl: { type: ['string', 'null'], description: 'base URL of the published tree (a CDN), if any' },
      usage: { $ref: 'Usage#', description: 'size and quota' },
      cloneUrl: { type: 'string' },
      sshUrl: { type: 'string', description: 'the SSH clone URL, when git over SSH is on' },
      createdAt: timestamp,
      updatedAt: timestamp,
    },
  },
  {
    $id: 'Usage',
    type: 'object',
    description: 'bytes used and the size quota in force (docs/design/quotas.md)',
    required: ['gitBytes', 'lfsBytes', 'usedBytes', 'quotaBytes', 'quotaSource'],
    properties: {
      owner: { type: 'string', description: 'on owner answers' },
      gitBytes: { type: 'integer', description: 'the git object store, as measured after the last push or maintenance run' },
      lfsBytes: { type: 'integer', description: 'Git LFS objects (for an owner, each object once)' },
      usedBytes: { type: 'integer', description: 'gitBytes + lfsBytes' },
      quotaBytes: { type: ['integer', 'null'], description: 'the quota in force; null: no limit' },
      quotaSource: { type: 'string', enum: ['set', 'default'], description: 'set on this repository or owner, or the configured default' },
    },
  },
  {
    $id: 'Token',
    type: 'object',
    required: ['id', 'user', 'scope', 'expiresAt', 'lastUsedAt', 'revokedAt', 'createdAt'],
    properties: {
      id: { type: 'string' },
      user: { type: 'string' },
      scope: role,
      expiresAt: nullableTimestamp,
      lastUsedAt: nullableTimestamp,
      revokedAt: nullableTimestamp,
      createdAt: timestamp,
      name: { type: ['string', 'null'], description: 'a label for people, such as ci-deploy' },
      expired: { type: 'boolean', description: 'past its expiry: it no longer authenticates' },
      parentId: { type: ['string', 'null'], description: 'the token this one was created with; revoking it revokes this one' },
      token: { type: 'string', description: 'the secret; returned once, when the token is created' },
    },
  },
  {
    $id: 'SshKey',
    type: 'object',
    required: ['id', 'user', 'type', 'fingerprint', 'scope', 'createdAt', 'lastUsedAt', 'publicKey'],
    properties: {
      id: { type: 'string' },
      user: { type: 'string' },
      name: { type: ['string', 'null'], description: 'a label for people, such as laptop' },
      type: { type: 'string', description: 'the key algorithm, e.g. ssh-ed25519' },
      fingerprint: { type: 'string', description: 'SHA256:…, as ssh-keygen -l prints it' },
      scope: { type: 'string', enum: ['read', 'write'], description: 'read: a deploy key, it can only fetch' },
      createdAt: timestamp,
      lastUsedAt: nullableTimestamp,
      publicKey: { type: 'string', description: 'the key as a .pub line, without its comment' },
    },
  },
  {
    $id: 'Protection',
    type: 'object',
    description: 'a protected-branch rule: what pushes to the branches matching its pattern may do',
    required: ['pattern', 'allowForcePush', 'allowDeletion', 'pushRole', 'linearHistory', 'createdAt', 'updatedAt'],
    properties: {
      pattern: { type: 'string', description: 'branch name glob without refs/heads/: main, release/* (one segment), hotfix/** (any depth)' },
      allowForcePush: { type: 'boolean', description: 'pushes that are not fast-forwards are allowed' },
      allowDeletion: { type: 'boolean', description: 'matching branches may be deleted' },
      pushRole: { type: 'string', enum: ['write', 'admin'], description: 'who may push: anyone with write access, or repository administrators only' },
      linearHistory: { type: 'boolean', description: 'merge commits are refused' },
      createdAt: timestamp,
      updatedAt: timestamp,
    },
  },
  {
    $id: 'Hook',
    type: 'object',
    description: 'a webhook: the events of its scope, POSTed to its URL (docs/webhooks.md)',
    required: ['id', 'scope', 'url', 'events', 'active', 'hasSecret', 'consecutiveFailures', 'disabledAt', 'disabledReason', 'createdBy', 'createdAt', 'updatedAt'],
    properties: {
      id: { type: 'string' },
      scope: { type: 'string', description: 'OWNER, OWNER/SPACE or OWNER/SPACE/REPO' },
      url: { type: 'string' },
      events: { type: 'array', items: { type: 'string', enum: ['push', 'branch', 'tag', 'repository', 'lock'] } },
      active: { type: 'boolean', description: 'false: turned off (by a person, or after failing too often in a row)' },
      hasSecret: { type: 'boolean', description: 'deliveries carry X-Hub-Signature-256; the secret itself is never shown' },
      consecutiveFailures: { type: 'integer' },
      disabledAt: nullableTimestamp,
      disabledReason: { type: ['string', 'null'] },
      createdBy: { type: 'string' },
      createdAt: timestamp,
      updatedAt: timestamp,
    },
  },
  {
    $id: 'Delivery',
    type: 'object',
    description: 'a delivery of one event to one webhook, with its last attempt',
    required: ['id', 'hookId', 'eventId', 'kind', 'status', 'attempts', 'redeliveryOf', 'requestHeaders', 'requestBody', 'responseStatus', 'responseExcerpt', 'error', 'durationMs', 'createdAt', 'finishedAt'],
    properties: {
      id: { type: 'string' },
      hookId: { type: 'string' },
      eventId: { type: 'integer' },
      kind: { type: 'string' },
      status: { type: 'string', enum: ['pending', 'delivered', 'failed'] },
      attempts: { type: 'integer' },
      redeliveryOf: { type: ['string', 'null'] },
      requestHeaders: { type: ['object', 'null'], additionalProperties: { type: 'string' } },
      requestBody: { type: ['string', 'null'] },
      responseStatus: { type: ['integer', 'null'] },
      responseExcerpt: { type: ['string', 'null'], description: 'the first 4 KiB of the answer' },
      error: { type: ['string', 'null'], description: 'why no answer came (timeout, refused, internal address)' },
      durationMs: { type: ['integer', 'null'] },
      createdAt: timestamp,
      finishedAt: nullableTimestamp,
    },
  },
  {
    $id: 'ReleasedLock',
    type: 'object',
    description: 'a Git LFS lock an administrator released',
    required: ['id', 'repository', 'path'],
    properties: { id: { type: 'string' }, repository: { type: 'string', description: 'OWNER/SPACE/REPO' }, path: { type: 'string' } },
  },
  {
    $id: 'AuditEntry',
    type: 'object',
    required: ['id', 'at', 'actor', 'actorId', 'action', 'target', 'repositoryId', 'details', 'requestId'],
    properties: {
      id: { type: 'integer' },
      at: timestamp,
      actor: { type: 'string', description: 'the acting user\'s name (kept after the user is deleted), `cli` for the local command line' },
      actorId: { type: ['string', 'null'] },
      action: { type: 'string', description: 'such as user.disable, org.member.remove, repo.create, push' },
      target: { type: 'string', description: 'what was acted on: a user, an organization, OWNER/SPACE/REPO' },
      repositoryId: { type: ['string', 'null'] },
      details: { type: 'object', additionalProperties: true },
      requestId: { type: ['string', 'null'], description: 'joins the entry to the request log' },
    },
  },
] as const;

const ref = (id: string) => ({ $ref: `${id}#` }) as const;
const listOf = (id: string) => ({ type: 'array', items: ref(id) }) as const;

/** Error answers every route may give; listed so clients see the shape in the document. */
const errors = { '4xx': { description: 'client error', ...ref('Error') }, '5xx': { description: 'server error', ...ref('Error') } };

function object(properties: Record<string, unknown>, required: string[] = []) {
  return { type: 'object', additionalProperties: false, properties, required } as const;
}

const hookScope = { type: 'string', minLength: 1, maxLength: 310, pattern: '^[^/]+(/[^/]+){0,2}$', description: 'OWNER, OWNER/SPACE or OWNER/SPACE/REPO' } as const;
const ulidParam = (what: string) => ({ type: 'string', pattern: '^[0-9A-Z]{26}$', description: what }) as const;
const hookParams = object({ id: ulidParam('webhook id') }, ['id']);
const deliveryParams = object({ id: ulidParam('webhook id'), delivery: ulidParam('delivery id') }, ['id', 'delivery']);
const repoParams = object({ owner: name('owner'), space: name('space name'), repo: repoName }, ['owner', 'space', 'repo']);

export const schemas = {
  whoami: {
    tags: ['users'],
    summary: 'who am I: the user and scope of the presented token',
    response: { 200: { description: 'the caller', ...ref('Me') }, ...errors },
  },
  listUsers: { tags: ['users'], summary: 'list users (site administrator)', response: { 200: { description: 'all users', ...listOf('User') }, ...errors } },
  createUser: {
    tags: ['users'],
    summary: 'create a user (site administrator)',
    body: object({ name: name('user name'), admin: { type: 'boolean', default: false, description: 'make a site administrator' } }, ['name']),
    response: { 201: { description: 'created', ...ref('User') }, ...errors },
  },
  disableUser: {
    tags: ['users'],
    summary: 'disable a user: none of their tokens authenticates until they are enabled again (site administrator)',
    description: 'Git, Git LFS and the API refuse the tokens at once (401 `user_disabled`). `releaseLocks` also deletes every Git LFS lock the user holds.',
    params: object({ user: name('user') }, ['user']),
    body: object({ releaseLocks: { type: 'boolean', default: false, description: "delete the user's Git LFS locks too" } }),
    response: {
      200: {
        description: 'the user, disabled',
        type: 'object',
        required: ['user', 'releasedLocks'],
        properties: { user: ref('User'), releasedLocks: listOf('ReleasedLock') },
      },
      ...errors,
    },
  },
  enableUser: {
    tags: ['users'],
    summary: 'enable a disabled user: their tokens work again (site administrator)',
    params: object({ user: name('user') }, ['user']),
    response: { 200: { description: 'the user', ...ref('User') }, ...errors },
  },
  deleteUser: {
    tags: ['users'],
    summary: 'delete a user with their tokens, memberships, Git LFS locks and empty spaces (site administrator)',
    description: 'Refused (409 `user_owns_repositories`, naming them) while the user owns repositories. The audit log keeps the user\'s name.',
    params: object({ user: name('user') }, ['user']),
    response: { 204: { type: 'null', description: 'deleted' }, ...errors },
  },
  releaseLocks: {
    tags: ['users'],
    summary: "release (delete) a user's Git LFS locks, in one repository or all (site administrator)",
    params: object({ user: name('user') }, ['user']),
    querystring: object({ repo: { type: 'string', maxLength: 310, pattern: '^[^/]+/[^/]+/[^/]+$', description: 'OWNER/SPACE/REPO; all repositories when absent' } }),
    response: {
      200: {
        description: 'the released locks',
        type: 'object',
        required: ['user', 'released'],
        properties: { user: { type: 'string' }, released: listOf('ReleasedLock') },
      },
      ...errors,
    },
  },
  listOrgs: {
    tags: ['orgs'],
    summary: 'list organizations with their member counts',
    response: { 200: { description: 'organizations', ...listOf('Org') }, ...errors },
  },
  createOrg: {
    tags: ['orgs'],
    summary: 'create an organization; its creator becomes its administrator',
    body: object({ name: name('organization name') }, ['name']),
    response: { 201: { description: 'created', ...ref('Org') }, ...errors },
  },
  listMembers: {
    tags: ['orgs'],
    summary: "list an organization's members",
    params: object({ org: name('organization') }, ['org']),
    response: { 200: { description: 'members and their roles', ...listOf('Member') }, ...errors },
  },
  setMember: {
    tags: ['orgs'],
    summary: "add a user to an organization, or change the user's role",
    params: object({ org: name('organization'), user: name('user') }, ['org', 'user']),
    body: object({ role }, ['role']),
    response: { 200: { description: 'the membership as it now stands', ...ref('Member') }, ...errors },
  },
  removeMember: {
    tags: ['orgs'],
    summary: 'remove a user from an organization; their access through it ends with their next request',
    params: object({ org: name('organization'), user: name('user') }, ['org', 'user']),
    response: { 204: { type: 'null', description: 'removed' }, ...errors },
  },
  listAudit: {
    tags: ['audit'],
    summary: 'read the audit log, newest first (site administrator)',
    description: 'Pass `nextCursor` as `before` for the next (older) page; it is null on the last page.',
    querystring: object({
      repo: { type: 'string', maxLength: 310, pattern: '^[^/]+/[^/]+/[^/]+$', description: 'OWNER/SPACE/REPO: entries of this repository' },
      actor: { type: 'string', minLength: 1, maxLength: 100, description: 'entries of this actor (user name, or cli)' },
      since: { type: 'string', minLength: 1, maxLength: 40, description: 'an ISO-8601 time, or a duration back from now such as 2h or 7d' },
      before: { type: 'string', maxLength: 20, description: 'the nextCursor of the previous page' },
      limit: { type: 'integer', minimum: 1, maximum: 1000, default: 50 },
    }),
    response: {
      200: {
        description: 'one page of entries',
        type: 'object',
        required: ['entries', 'nextCursor'],
        properties: { entries: listOf('AuditEntry'), nextCursor: { type: ['string', 'null'] } },
      },
      ...errors,
    },
  },
  listSpaces: {
    tags: ['spaces'],
    summary: 'list spaces, optionally of one owner',
    querystring: object({ owner: name('owner') }),
    response: { 200: { description: 'spaces', ...listOf('Space') }, ...errors },
  },
  createSpace: {
    tags: ['spaces'],
    summary: 'create a space under an owner',
    body: object({ owner: name('owner'), name: name('space name') }, ['owner', 'name']),
    response: { 201: { description: 'created', ...ref('Space') }, ...errors },
  },
  listRepos: {
    tags: ['repos'],
    summary: 'list the repositories the caller can read',
    security: [{ bearer: [] }, { basic: [] }, {}],
    querystring: object({ owner: name('owner'), space: name('space name') }),
    response: { 200: { description: 'readable repositories, without tags', ...listOf('Repo') }, ...errors },
  },
  createRepo: {
    tags: ['repos'],
    summary: 'create an empty repository in a space',
    body: object(
      {
        owner: name('owner'),
        space: name('space name'),
        name: repoName,
        visibility: { type: 'string', enum: ['public', 'private'], default: 'public' },
        lfsLayout: { type: 'string', enum: ['content', 'readable'], default: 'content' },
      },
      ['owner', 'space', 'name'],
    ),
    response: { 201: { description: 'created', ...ref('Repo') }, ...errors },
  },
  forkRepo: {
    tags: ['repos'],
    summary: 'fork a repository into a space',
    description:
      "A new repository with all of the source's refs and objects, in the source's fork network (which shares Git LFS objects). " +
      "Needs read access to the source and the right to create repositories in the target space. `name` defaults to the source's name, " +
      "`visibility` to the source's.",
    params: repoParams,
    body: object(
      { owner: name('owner of the fork'), space: name('space of the fork'), name: repoName, visibility: { type: 'string', enum: ['public', 'private'] } },
      ['owner', 'space'],
    ),
    response: { 201: { description: 'the fork', ...ref('Repo') }, ...errors },
  },
  getRepo: {
    tags: ['repos'],
    summary: 'get one repository',
    security: [{ bearer: [] }, { basic: [] }, {}],
    params: repoParams,
    response: { 200: { description: 'the repository', ...ref('Repo') }, ...errors },
  },
  updateRepo: {
    tags: ['repos'],
    summary: 'rename or move a repository, or change its visibility or tags',
    description:
      'Either `name` (rename within the space) or `path` (OWNER/SPACE/REPO, to move), or any of `visibility`, `tags`, `enforceLocks` and the LFS layout settings ' +
      '(`lfsLayout`, `lfsPublishRefs`, `lfsPublicUrl`; turning the layout readable publishes the history of the published refs in the background); ' +
      'a rename or move is a request of its own. Renames and moves change metadata only.',
    params: repoParams,
    body: {
      ...object({
        name: repoName,
        path: { type: 'string', maxLength: 310, pattern: '^[^/]+/[^/]+/[^/]+$', description: 'OWNER/SPACE/REPO' },
        visibility: { type: 'string', enum: ['public', 'private'] },
        tags: { type: 'array', maxItems: 100, uniqueItems: true, items: { type: 'string', minLength: 1, maxLength: 100 } },
        enforceLocks: { type: 'boolean' },
        lfsLayout: { type: 'string', enum: ['content', 'readable'], description: 'readable needs an object store with versioning' },
        lfsPublishRefs: { type: ['array', 'null'], maxItems: 20, items: { type: 'string', minLength: 1, maxLength: 250 }, description: 'ref patterns (main, release/*, refs/tags/v*); null or []: the default branch' },
        lfsPublicUrl: { type: ['string', 'null'], maxLength: 2000, description: 'base URL of the published tree; null: none' },
      }),
      minProperties: 1,
    },
    response: { 200: { description: 'the repository', ...ref('Repo') }, ...errors },
  },
  listLfsPublished: {
    tags: ['repos'],
    summary: "a repository's published Git LFS files (readable layout)",
    description: 'Each published version, newest first: its path, object id, storage key and version id, the commit that published it, and its public URL when the repository has a public base URL. Page with `before` (the last id seen).',
    params: repoParams,
    querystring: object({ path: { type: 'string', minLength: 1, maxLength: 4096 }, limit: { type: 'integer', minimum: 1, maximum: 1000 }, before: ulidParam('list versions older than this id') }),
    response: {
      200: {
        description: 'published versions',
        type: 'array',
        items: object({
          id: { type: 'string' },
          path: { type: 'string' },
          oid: { type: 'string' },
          size: { type: 'integer' },
          key: { type: 'string' },
          versionId: { type: 'string' },
          commit: { type: 'string' },
          publishedAt: timestamp,
          url: { type: ['string', 'null'] },
        }),
      },
      ...errors,
    },
  },
  listLfsPublishJobs: {
    tags: ['repos'],
    summary: "a repository's Git LFS publish jobs and their progress",
    params: repoParams,
    response: {
      200: {
        description: 'jobs, oldest first (the latest 100)',
        type: 'array',
        items: object({
          id: { type: 'string' },
          ref: { type: 'string' },
          kind: { type: 'string', enum: ['push', 'relayout'] },
          state: { type: 'string', enum: ['pending', 'done', 'failed'] },
          filesTotal: { type: ['integer', 'null'] },
          filesDone: { type: 'integer' },
          bytesDone: { type: 'integer' },
          skipped: { type: 'array', items: object({ path: { type: 'string' }, reason: { type: 'string' } }) },
          error: { type: ['string', 'null'], description: 'the last failure (a pending job with one waits for its retry)' },
          running: { type: 'boolean', description: 'claimed by a server or relayout now' },
          createdAt: timestamp,
          finishedAt: nullableTimestamp,
        }),
      },
      ...errors,
    },
  },
  deleteRepo: {
    tags: ['repos'],
    summary: 'delete a repository and its data',
    params: repoParams,
    response: { 204: { type: 'null', description: 'deleted' }, ...errors },
  },
  setRepoQuota: {
    tags: ['repos'],
    summary: "set a repository's size quota (site administrator)",
    description:
      '`bytes`: the quota in bytes (git objects + LFS objects), 0 for no limit, or null to follow the configured default (`repoQuotaBytes`). ' +
      'A push or LFS upload that would take the repository over it is refused; what is already stored stays.',
    params: repoParams,
    body: object({ bytes: { type: ['integer', 'null'], minimum: 0 } }, ['bytes']),
    response: { 200: { description: 'usage and the quota now in force', ...ref('Usage') }, ...errors },
  },
  getOwnerQuota: {
    tags: ['owners'],
    summary: "an owner's usage (all its repositories) and size quota (site administrator)",
    params: object({ owner: name('user or organization') }, ['owner']),
    response: { 200: { description: 'usage and the quota in force', ...ref('Usage') }, ...errors },
  },
  setOwnerQuota: {
    tags: ['owners'],
    summary: "set the size quota of all of an owner's repositories together (site administrator)",
    description: '`bytes`: the quota in bytes, 0 for no limit, or null to follow the configured default (`ownerQuotaBytes`).',
    params: object({ owner: name('user or organization') }, ['owner']),
    body: object({ bytes: { type: ['integer', 'null'], minimum: 0 } }, ['bytes']),
    response: { 200: { description: 'usage and the quota now in force', ...ref('Usage') }, ...errors },
  },
  listTokens: {
    tags: ['tokens'],
    summary: "list a user's tokens, never their secrets (yourself, or any user as site administrator)",
    params: object({ user: name('user') }, ['user']),
    response: { 200: { description: 'tokens, without secrets', ...listOf('Token') }, ...errors },
  },
  createToken: {
    tags: ['tokens'],
    summary: 'create a token (for yourself, or any user as site administrator); the secret is returned once',
    params: object({ user: name('user') }, ['user']),
    body: object(
      {
        scope: { ...role, description: 'at most the scope of the token making the request' },
        expires: {
          type: 'string',
          maxLength: 20,
          description:
            'lifetime such as 30d, 12h, 90m, at most tokenMaxLifetimeDays; none means no expiry. Never later than the expiry of the token making the request',
        },
        name: { type: 'string', minLength: 1, maxLength: 64, description: 'a label for people, such as ci-deploy' },
      },
      ['scope'],
    ),
    response: { 201: { description: 'created; `token` is the secret', ...ref('Token') }, ...errors },
  },
  listSshKeys: {
    tags: ['ssh keys'],
    summary: "list a user's SSH keys (yourself, or any user as site administrator)",
    params: object({ user: name('user') }, ['user']),
    response: { 200: { description: 'SSH keys', ...listOf('SshKey') }, ...errors },
  },
  addSshKey: {
    tags: ['ssh keys'],
    summary: 'add an SSH public key (to yourself, or any user as site administrator)',
    params: object({ user: name('user') }, ['user']),
    body: object(
      {
        key: { type: 'string', minLength: 1, maxLength: 16384, description: 'the public key, one line as in a .pub file' },
        name: { type: 'string', minLength: 1, maxLength: 64, description: 'a label for people, such as laptop' },
        scope: { type: 'string', enum: ['read', 'write'], description: 'write (the default), or read for a deploy key' },
      },
      ['key'],
    ),
    response: { 201: { description: 'added', ...ref('SshKey') }, ...errors },
  },
  removeSshKey: {
    tags: ['ssh keys'],
    summary: 'remove an SSH key; it stops working at once',
    params: object({ user: name('user'), id: { type: 'string', pattern: '^[0-9A-Za-z]{26}$', description: 'key id' } }, ['user', 'id']),
    response: { 200: { description: 'the removed key', ...ref('SshKey') }, ...errors },
  },
  listProtections: {
    tags: ['repos'],
    summary: "list a repository's protected-branch rules (read access)",
    params: repoParams,
    response: { 200: { description: 'rules, by pattern', ...listOf('Protection') }, ...errors },
  },
  protectBranches: {
    tags: ['repos'],
    summary: 'create or replace the protected-branch rule for a pattern (repository administrators)',
    description:
      'Pushes to matching branches are checked in pre-receive, over HTTP and SSH: no force push and no deletion unless allowed, ' +
      'pushes by administrators only when `pushRole` is admin, no merge commits when `linearHistory`. A refused push changes nothing and is audited.',
    params: repoParams,
    body: object(
      {
        pattern: { type: 'string', minLength: 1, maxLength: 200 },
        allowForcePush: { type: 'boolean', default: false },
        allowDeletion: { type: 'boolean', default: false },
        pushRole: { type: 'string', enum: ['write', 'admin'], default: 'write' },
        linearHistory: { type: 'boolean', default: false },
      },
      ['pattern'],
    ),
    response: { 200: { description: 'the rule now in force', ...ref('Protection') }, ...errors },
  },
  unprotectBranches: {
    tags: ['repos'],
    summary: 'remove the protected-branch rule for a pattern (repository administrators)',
    params: repoParams,
    querystring: object({ pattern: { type: 'string', minLength: 1, maxLength: 200 } }, ['pattern']),
    response: { 204: { type: 'null', description: 'removed' }, ...errors },
  },
  eventStream: {
    tags: ['webhooks'],
    summary: 'the events of a repository, a space or an owner, live, as Server-Sent Events',
    description:
      'Name one of `repo`, `space`, `owner`. Each event: `id:` (send it back as Last-Event-ID to resume after it), `event:` its kind, `data:` the JSON a webhook receives. ' +
      "A repository's stream needs read access; an owner's or a space's carries the events of the repositories the caller can read. A comment line every 15 s keeps the connection alive.",
    querystring: object({
      repo: { type: 'string', maxLength: 310, description: 'OWNER/SPACE/REPO' },
      space: { type: 'string', maxLength: 210, description: 'OWNER/SPACE' },
      owner: { type: 'string', maxLength: 100, description: 'OWNER' },
    }),
  },
  listHooks: {
    tags: ['webhooks'],
    summary: 'list the webhooks set on an owner, a space or a repository (its administrators)',
    querystring: object({ scope: hookScope }, ['scope']),
    response: { 200: { description: 'webhooks', ...listOf('Hook') }, ...errors },
  },
  createHook: {
    tags: ['webhooks'],
    summary: 'create a webhook on an owner, a space or a repository (its administrators)',
    description: 'URLs to loopback, private and link-local addresses are refused (400 hook_url_internal) unless the server allows them (webhookAllowedHosts).',
    body: object(
      {
        scope: hookScope,
        url: { type: 'string', minLength: 1, maxLength: 2000 },
        secret: { type: 'string', maxLength: 256 },
        events: { type: 'array', minItems: 1, maxItems: 5, uniqueItems: true, items: { type: 'string', enum: ['push', 'branch', 'tag', 'repository', 'lock'] } },
        active: { type: 'boolean' },
      },
      ['scope', 'url'],
    ),
    response: { 201: { description: 'created', ...ref('Hook') }, ...errors },
  },
  getHook: {
    tags: ['webhooks'],
    summary: 'one webhook',
    params: hookParams,
    response: { 200: { description: 'the webhook', ...ref('Hook') }, ...errors },
  },
  updateHook: {
    tags: ['webhooks'],
    summary: "change a webhook's URL, secret (\"\" removes it) or events, or turn it on (clearing its failure count) or off",
    params: hookParams,
    body: {
      ...object({
        url: { type: 'string', minLength: 1, maxLength: 2000 },
        secret: { type: 'string', maxLength: 256 },
        events: { type: 'array', minItems: 1, maxItems: 5, uniqueItems: true, items: { type: 'string', enum: ['push', 'branch', 'tag', 'repository', 'lock'] } },
        active: { type: 'boolean' },
      }),
      minProperties: 1,
    },
    response: { 200: { description: 'the webhook', ...ref('Hook') }, ...errors },
  },
  deleteHook: {
    tags: ['webhooks'],
    summary: 'delete a webhook and its delivery log',
    params: hookParams,
    response: { 200: { description: 'the deleted webhook', ...ref('Hook') }, ...errors },
  },
  testHook: {
    tags: ['webhooks'],
    summary: 'send a ping event to the webhook now and report what its receiver answered',
    params: hookParams,
    response: {
      200: {
        description: 'what happened (ok: a 2xx answer)',
        type: 'object',
        required: ['ok', 'status', 'response', 'error', 'durationMs', 'deliveryId'],
        properties: { ok: { type: 'boolean' }, status: { type: ['integer', 'null'] }, response: { type: ['string', 'null'] }, error: { type: ['string', 'null'] }, durationMs: { type: 'integer' }, deliveryId: { type: 'string' } },
      },
      ...errors,
    },
  },
  listDeliveries: {
    tags: ['webhooks'],
    summary: "a webhook's delivery log, newest first",
    params: hookParams,
    querystring: object({ limit: { type: 'integer', minimum: 1, maximum: 200, default: 50 } }),
    response: { 200: { description: 'deliveries', ...listOf('Delivery') }, ...errors },
  },
  getDelivery: {
    tags: ['webhooks'],
    summary: 'one delivery, with the request sent and the answer',
    params: deliveryParams,
    response: { 200: { description: 'the delivery', ...ref('Delivery') }, ...errors },
  },
  redeliver: {
    tags: ['webhooks'],
    summary: "send a delivery's event to the webhook again, as a new delivery",
    params: deliveryParams,
    response: { 202: { description: 'queued', type: 'object', required: ['id', 'redeliveryOf'], properties: { id: { type: 'string' }, redeliveryOf: { type: 'string' } } }, ...errors },
  },
  revokeToken: {
    tags: ['tokens'],
    summary: 'revoke a token',
    params: object({ id: { type: 'string', pattern: '^[0-9A-Za-z]{26}$', description: 'token id' } }, ['id']),
    response: { 200: { description: 'the revoked token', ...ref('Token') }, ...errors },
  },
  openapi: { hide: true },
} as const;

export const swaggerOptions: SwaggerOptions = {
  // Name shared schemas in components.schemas by their $id rather than def-0, def-1, ...
  refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json['$id'] === 'string' ? json['$id'] : `def-${i}`) },
  openapi: {
    openapi: '3.0.3',
    info: {
      title: 'gitstratum REST API',
      version: API_VERSION,
      description:
        'Administration of users, organizations, spaces, repositories and access tokens. ' +
        'Authenticate with an access token: `Authorization: Bearer <token>`, or HTTP Basic with the token as the password.',
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'an access token' },
        basic: { type: 'http', scheme: 'basic', description: 'any user name, an access token as the password' },
      },
    },
    security: [{ bearer: [] }, { basic: [] }],
    tags: [
      { name: 'users', description: 'users and the caller' },
      { name: 'orgs', description: 'organizations and their members' },
      { name: 'spaces', description: 'groups of repositories under one owner' },
      { name: 'repos', description: 'repositories' },
      { name: 'owners', description: 'users and organizations as owners of repositories: size quotas' },
      { name: 'tokens', description: 'access tokens' },
      { name: 'audit', description: 'the audit log' },
      { name: 'ssh keys', description: "users' SSH public keys (git over SSH)" },
      { name: 'webhooks', description: 'webhooks and their delivery logs (docs/webhooks.md)' },
    ],
  },
};
