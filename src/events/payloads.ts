/**
 * What repository events say (docs/webhooks.md has a schema per event). The shapes follow what
 * CI tools already read from GitHub and Gitea: a push names its ref, `before` and `after`, the
 * commits it brought (at most MAX_COMMITS, newest last, each with the paths it added, modified
 * and removed), the pusher and the repository.
 */
import { runGit } from '../git/command.js';
import type { RepoRow } from '../meta/repositories.js';
import type { NewEvent, RepoEventKind } from '../meta/webhooks.js';

export const MAX_COMMITS = 20;
const MAX_PATHS_PER_COMMIT = 1000;
const MAX_MESSAGE_CHARS = 16 * 1024;
const ZERO_OID = /^0+$/;

export interface RepositoryDescriptor {
  id: string;
  name: string;
  full_name: string;
  owner: { name: string; kind: 'user' | 'org' };
  space: string;
  private: boolean;
  visibility: 'public' | 'private';
  default_branch: string;
  clone_url: string | null;
  fork_of: string | null;
}

/** The repository as events describe it; `origin` is the public scheme://host[:port], when known. */
export function describeRepository(repo: RepoRow, origin: string | undefined): RepositoryDescriptor {
  const fullName = `${repo.ownerName}/${repo.spaceName}/${repo.name}`;
  return {
    id: repo.id,
    name: repo.name,
    full_name: fullName,
    owner: { name: repo.ownerName, kind: repo.ownerKind },
    space: repo.spaceName,
    private: repo.visibility === 'private',
    visibility: repo.visibility,
    default_branch: repo.defaultBranch,
    clone_url: origin ? `${origin.replace(/\/+$/, '')}/${fullName}.git` : null,
    fork_of: repo.forkOf,
  };
}

export interface Actor {
  id: string | null;
  name: string;
}

export interface Commit {
  id: string;
  tree_id: string;
  message: string;
  timestamp: string;
  author: { name: string; email: string };
  committer: { name: string; email: string; timestamp: string };
  added: string[];
  modified: string[];
  removed: string[];
}

const FORMAT = '%x1e%H%x1f%T%x1f%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%cI%x1f%B%x1f';

/** Parses `git log -z --name-status --format=FORMAT` output. */
export function parseLog(out: string): Commit[] {
  const commits: Commit[] = [];
  for (const record of out.split('\x1e')) {
    const end = record.lastIndexOf('\x1f');
    if (end < 0) continue;
    const fields = record.slice(0, end).split('\x1f');
    if (fields.length < 9) continue;
    const [id, tree, an, ae, ai, cn, ce, ci] = fields as [string, string, string, string, string, string, string, string];
    const message = fields.slice(8).join('\x1f');
    const commit: Commit = {
      id,
      tree_id: tree,
      message: message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message.replace(/\n+$/, ''),
      timestamp: ai,
      author: { name: an, email: ae },
      committer: { name: cn, email: ce, timestamp: ci },
      added: [],
      modified: [],
      removed: [],
    };
    const tokens = record.slice(end + 1).replace(/^\0?\n?/, '').split('\0');
    for (let i = 0; i + 1 < tokens.length; i += 2) {
      const status = tokens[i]!;
      const path = tokens[i + 1]!;
      const list = status === 'A' ? commit.added : status === 'D' ? commit.removed : commit.modified;
      if (list.length < MAX_PATHS_PER_COMMIT) list.push(path);
    }
    commits.push(commit);
  }
  return commits;
}

export interface RefUpdate {
  oldOid: string;
  newOid: string;
  ref: string;
}

/**
 * The events of one push: per branch or tag updated, a `push`; per one created or deleted,
 * a `branch` or `tag` event besides. Commits are read from the repository (after the push:
 * post-receive), so what a push brought is what it names.
 */
export async function pushEvents(
  repo: RepoRow,
  repoPath: string,
  updates: readonly RefUpdate[],
  pusher: Actor,
  ctx: { origin: string | undefined; requestId: string | null },
): Promise<NewEvent[]> {
  const repository = describeRepository(repo, ctx.origin);
  const where = { ownerId: repo.ownerId, spaceId: repo.spaceId, repositoryId: repo.id };
  const events: NewEvent[] = [];
  const at = new Date().toISOString();
  for (const u of updates) {
    const kind: RepoEventKind | undefined = u.ref.startsWith('refs/heads/') ? 'branch' : u.ref.startsWith('refs/tags/') ? 'tag' : undefined;
    if (!kind) continue;
    const created = ZERO_OID.test(u.oldOid);
    const deleted = ZERO_OID.test(u.newOid);
    const name = u.ref.replace(/^refs\/(heads|tags)\//, '');
    const sender = { id: pusher.id, login: pusher.name };
    let commits: Commit[] = [];
    let total = 0;
    let forced = false;
    if (!deleted) {
      // A new ref's commits are those no other ref had; an update's, those its old tip lacked.
      // Not --all: it takes HEAD too, which may be this very ref.
      const range = created ? [u.newOid, '--not', `--exclude=${u.ref}`, '--glob=refs/*'] : [u.newOid, `^${u.oldOid}`];
      // Few processes, run side by side: a push waits for its post-receive. An update's
      // counts both ways say how many commits it brought and whether it dropped any (forced).
      const [log, counts] = await Promise.all([
        runGit(['--git-dir', repoPath, 'log', '-z', '--no-renames', '--name-status', `--max-count=${MAX_COMMITS}`, `--format=${FORMAT}`, ...range]),
        created ? undefined : runGit(['--git-dir', repoPath, 'rev-list', '--left-right', '--count', `${u.oldOid}...${u.newOid}`]),
      ]);
      commits = parseLog(log.stdout).reverse();
      if (counts) {
        const [dropped, brought] = counts.stdout.trim().split(/\s+/).map(Number);
        total = brought ?? 0;
        forced = (dropped ?? 0) > 0;
      } else {
        total = commits.length < MAX_COMMITS ? commits.length : Number((await runGit(['--git-dir', repoPath, 'rev-list', '--count', ...range])).stdout.trim()) || 0;
      }
    }
    events.push({
      ...where,
      kind: 'push',
      payload: {
        event: 'push',
        ref: u.ref,
        before: u.oldOid,
        after: u.newOid,
        created,
        deleted,
        forced,
        commits,
        total_commits: total,
        head_commit: commits.at(-1) ?? null,
        repository,
        pusher: { name: pusher.name },
        sender,
        request_id: ctx.requestId,
        at,
      },
    });
    if (created || deleted) {
      events.push({
        ...where,
        kind,
        payload: { event: kind, action: created ? 'created' : 'deleted', ref: u.ref, [kind]: name, sha: deleted ? u.oldOid : u.newOid, repository, sender, request_id: ctx.requestId, at },
      });
    }
  }
  return events;
}

/** A repository change as an event: created, renamed, deleted, visibility_changed, forked. */
export function repositoryEvent(repo: RepoRow, action: string, actor: Actor, extra: Record<string, unknown>, origin: string | undefined): NewEvent {
  return {
    ownerId: repo.ownerId,
    spaceId: repo.spaceId,
    repositoryId: repo.id,
    kind: 'repository',
    payload: { event: 'repository', action, ...extra, repository: describeRepository(repo, origin), sender: { id: actor.id, login: actor.name }, at: new Date().toISOString() },
  };
}

/** An LFS lock taken or released. */
export function lockEvent(repo: RepoRow, action: 'created' | 'released', lock: { id: string; path: string; owner: string; lockedAt: string }, actor: Actor, origin: string | undefined): NewEvent {
  return {
    ownerId: repo.ownerId,
    spaceId: repo.spaceId,
    repositoryId: repo.id,
    kind: 'lock',
    payload: { event: 'lock', action, lock: { id: lock.id, path: lock.path, owner: { name: lock.owner }, locked_at: lock.lockedAt }, repository: describeRepository(repo, origin), sender: { id: actor.id, login: actor.name }, at: new Date().toISOString() },
  };
}
