/**
 * Who may do what, as a pure function. An actor's permission on a repository is the
 * smaller of what the user holds (owner, organization role, site admin) and what the
 * token's scope allows. Public repositories grant read to everyone, anonymous included.
 */
import type { Role, Visibility } from '../meta/schema.js';
import { forbidden, unauthenticated } from '../shared/errors.js';

export type Action = 'read' | 'write' | 'admin';

export type Actor =
  | { kind: 'anonymous' }
  | { kind: 'user'; userId: string; name: string; isAdmin: boolean; scope: Role; tokenId: string | null }
  /** The local command line: whoever can open the data directory is the operator. */
  | { kind: 'system'; name: string };

export const anonymous: Actor = { kind: 'anonymous' };
export const systemActor: Actor = { kind: 'system', name: 'cli' };

const rank: Record<Action | 'none', number> = { none: 0, read: 1, write: 2, admin: 3 };

export interface RepoAccessFacts {
  visibility: Visibility;
  ownerId: string;
  ownerKind: 'user' | 'org';
  /** The actor's role in the owning organization, if the owner is one and the actor a member. */
  orgRole?: Role | undefined;
}

/** The highest action the actor may take on the repository, or 'none'. */
export function repoPermission(actor: Actor, repo: RepoAccessFacts): Action | 'none' {
  const publicFloor: Action | 'none' = repo.visibility === 'public' ? 'read' : 'none';
  if (actor.kind === 'system') return 'admin';
  if (actor.kind === 'anonymous') return publicFloor;
  let held: Action | 'none' = publicFloor;
  if (actor.isAdmin) held = 'admin';
  else if (repo.ownerKind === 'user' && repo.ownerId === actor.userId) held = 'admin';
  else if (repo.ownerKind === 'org' && repo.orgRole) held = max(held, repo.orgRole);
  // The token caps what the user holds, except that a public repository stays readable.
  return max(min(held, actor.scope), publicFloor);
}

/** Site-wide administration (users, quotas) needs the local command line or a site administrator's admin-scope token. */
export function requireSiteAdmin(actor: Actor): void {
  if (actor.kind === 'system') return;
  if (actor.kind === 'anonymous') throw unauthenticated('auth_required', 'authentication required');
  if (!actor.isAdmin || actor.scope !== 'admin') throw forbidden('admin_required', 'site administrator token required');
}

export function can(actor: Actor, action: Action, repo: RepoAccessFacts): boolean {
  return rank[repoPermission(actor, repo)] >= rank[action];
}

/** Whether the actor may administer an owner (create spaces and repositories under it). */
export function ownerPermission(
  actor: Actor,
  owner: { id: string; kind: 'user' | 'org' },
  orgRole?: Role,
): Action | 'none' {
  if (actor.kind === 'system') return 'admin';
  if (actor.kind === 'anonymous') return 'none';
  let held: Action | 'none' = 'none';
  if (actor.isAdmin) held = 'admin';
  else if (owner.kind === 'user' && owner.id === actor.userId) held = 'admin';
  else if (owner.kind === 'org' && orgRole) held = orgRole;
  return min(held, actor.scope);
}

export function atLeast(have: Action | 'none', need: Action): boolean {
  return rank[have] >= rank[need];
}

function min(a: Action | 'none', b: Action | 'none'): Action | 'none' {
  return rank[a] <= rank[b] ? a : b;
}

function max(a: Action | 'none', b: Action | 'none'): Action | 'none' {
  return rank[a] >= rank[b] ? a : b;
}

export function actorName(actor: Actor): string {
  return actor.kind === 'anonymous' ? 'anonymous' : actor.name;
}

export function actorId(actor: Actor): string | null {
  return actor.kind === 'user' ? actor.userId : null;
}
