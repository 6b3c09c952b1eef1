/**
 * Where a new repository goes (docs/design/shards.md, "Placement"). `chooseShard` is the
 * policy, a pure function over what each shard holds: among the shards that are active and
 * accept new repositories (restricted to the space's pins when it has any), the one with the
 * fewest git bytes, then the fewest repositories, then the first by name, so the choice is
 * deterministic. A fork is not placed: it goes to its source's shard, since a fork network
 * shares objects on one filesystem (repos/service.ts).
 *
 * Placement is decided before the repository's directory is made (the shard decides which
 * host makes it) and is not serialized with other creations: concurrent creations may pick
 * the same shard, and a creation racing `shard drain` may still land on the shard being
 * drained, which the mover of issue 11 handles like any other repository there.
 */
import type { Db } from '../meta/db.js';
import { listShardLoads, spacePins, type ShardLoad } from '../meta/shards.js';
import { unavailable } from '../shared/errors.js';

export type { ShardLoad };

export interface PlacementRequest {
  /** The shards the space is pinned to; empty: any shard. */
  pins: readonly string[];
  /** OWNER/SPACE, for the error message. */
  space: string;
}

/** Whether placement may choose the shard at all. */
export function acceptsNewRepositories(shard: Pick<ShardLoad, 'state' | 'acceptsNew'>): boolean {
  return shard.state === 'active' && shard.acceptsNew;
}

export function chooseShard(shards: readonly ShardLoad[], request: PlacementRequest): string {
  const pinned = new Set(request.pins);
  const candidates = shards.filter((s) => acceptsNewRepositories(s) && (pinned.size === 0 || pinned.has(s.name)));
  const best = candidates.reduce<ShardLoad | undefined>((a, b) => (a === undefined || lighter(b, a) ? b : a), undefined);
  if (best) return best.name;
  const pins = [...pinned].sort();
  throw unavailable(
    'no_shard_available',
    pins.length > 0
      ? `no shard that space ${request.space} is pinned to (${pins.join(', ')}) accepts new repositories`
      : 'no shard accepts new repositories',
    { space: request.space, pins },
  );
}

/** Whether `a` should be chosen over `b`: fewer bytes, then fewer repositories, then the smaller name. */
function lighter(a: ShardLoad, b: ShardLoad): boolean {
  if (a.gitBytes !== b.gitBytes) return a.gitBytes < b.gitBytes;
  if (a.repositories !== b.repositories) return a.repositories < b.repositories;
  return a.name < b.name;
}

/** The shard for a new (not forked) repository in the space, by the current loads and pins. */
export async function placeNewRepository(db: Db, space: { id: string; ownerName: string; name: string }): Promise<string> {
  const [shards, pins] = await Promise.all([listShardLoads(db), spacePins(db, space.id)]);
  return chooseShard(shards, { pins, space: `${space.ownerName}/${space.name}` });
}
