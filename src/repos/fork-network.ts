/**
 * What a fork network shares, and with whom. Members of a network share LFS objects (issue 3):
 * an object uploaded to one member downloads through the others without a new upload. Sharing
 * never widens who may read an object (issue 9): through any member, a caller gets the objects
 * linked to the members they can read themselves, so a public fork never serves what was
 * uploaded only to a private source.
 */
import type { Action } from '../access/policy.js';
import type { RepoRow } from '../meta/repositories.js';

/** `repo` and the members of its network the caller holds at least read on (`held`), by id. */
export async function readableMembers(repo: RepoRow, network: RepoRow[], held: (member: RepoRow) => Promise<Action | 'none'>): Promise<string[]> {
  const ids = [repo.id];
  for (const member of network) {
    if (member.id !== repo.id && (await held(member)) !== 'none') ids.push(member.id);
  }
  return ids;
}

/**
 * Who inherits the LFS links of `gone`, a repository being deleted, so that its fork network
 * keeps what it could download through it: the oldest other member whose readers could all
 * read `gone` too. If `gone` is public, anyone qualifies. If it is private, only a private
 * member of the same owner (the same readers, since access follows owner and visibility);
 * without one, what was uploaded only to `gone` is downloadable nowhere else afterwards, and
 * the forks' users upload it again (`git lfs push --all`).
 */
export function networkHeir(gone: RepoRow, network: RepoRow[]): RepoRow | undefined {
  const others = network.filter((m) => m.id !== gone.id);
  if (gone.visibility === 'public') return others[0];
  return others.find((m) => m.visibility === 'private' && m.ownerId === gone.ownerId);
}
