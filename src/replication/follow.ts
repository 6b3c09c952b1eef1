/**
 * One round of a replica following its writer (issue 11; docs/design/replication.md): make a
 * repository's refs exactly the writer's, objects first, refs in one transaction.
 *
 * 1. The writer's refs and HEAD, as it advertises them (`ls-remote`).
 * 2. The objects of every ref that differs, fetched by id and checked as fsck would; a bad
 *    object fails the round before any ref moves. Skipped when every object they reach is
 *    here already (a synchronous replica was sent them at the push).
 * 3. Every change at once (`update-ref --stdin`, one transaction): creations, updates (forced
 *    rewinds included: the writer's refs are the truth), deletions; each checked against the
 *    value this round read, so a concurrent change of the replica's refs fails the round rather
 *    than being overwritten unseen. Then HEAD, when the writer's default branch changed.
 *
 * A round interrupted anywhere leaves the replica's refs as they were or as the writer's were
 * at step 1; objects fetched without their refs are unreachable and harmless. The caller reads
 * the repository's generation before calling (the writer bumps it before acknowledging a
 * push), so what a round applies is at least as new as the generation it records.
 */
import { fetchObjects, lsRemote, objectsConnected, readRefsForSnapshot, setSymbolicRef, symbolicHead, updateRefsTransaction, type GitSettings } from '../git/command.js';

export interface RefChange {
  ref: string;
  /** Absent: the ref is created. */
  old?: string;
  /** Absent: the ref is deleted. */
  new?: string;
}

/** What the replica must do to `local` to make its refs equal to `remote`, sorted by ref name. */
export function refChanges(local: ReadonlyMap<string, string>, remote: ReadonlyMap<string, string>): RefChange[] {
  const changes: RefChange[] = [];
  for (const [ref, oid] of remote) {
    const old = local.get(ref);
    if (old === undefined) changes.push({ ref, new: oid });
    else if (old !== oid) changes.push({ ref, old, new: oid });
  }
  for (const [ref, old] of local) if (!remote.has(ref)) changes.push({ ref, old });
  return changes.sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
}

/** The `update-ref --stdin` transaction for `changes`, each checked against its old value. */
export function refTransaction(changes: readonly RefChange[]): string {
  const lines = ['start'];
  for (const c of changes) {
    if (c.new === undefined) lines.push(`delete ${c.ref} ${c.old}`);
    else if (c.old === undefined) lines.push(`create ${c.ref} ${c.new}`);
    else lines.push(`update ${c.ref} ${c.new} ${c.old}`);
  }
  lines.push('prepare', 'commit', '');
  return lines.join('\n');
}

export interface FollowResult {
  changes: RefChange[];
  /** HEAD's new target, when it moved. */
  head?: string;
  /** The writer's refs as applied. */
  refs: Map<string, string>;
}

/**
 * One round for the repository at `repoPath` from the writer's copy at `url` (any URL git
 * fetches from). `settings` are git settings for the round (the authorization header).
 * `mayHoldObjects`: a synchronous replica, which usually holds a push's objects already (the
 * writer sent them before the refs committed), so it checks before fetching; for any other
 * copy that check would be one more git process a round, nearly always answered no.
 */
export async function followOnce(repoPath: string, url: string, settings: GitSettings = [], mayHoldObjects = false): Promise<FollowResult> {
  const remote = await lsRemote(url, settings);
  const local = new Map<string, string>();
  for (const r of await readRefsForSnapshot(repoPath)) if (!r.symref) local.set(r.name, r.oid);
  const changes = refChanges(local, remote.refs);
  const wanted = [...new Set(changes.flatMap((c) => (c.new ? [c.new] : [])))];
  // No fetch when the objects are here: it would cost the writer an upload-pack.
  if (wanted.length > 0 && !(mayHoldObjects && (await objectsConnected(repoPath, wanted)))) await fetchObjects(repoPath, url, wanted, settings);
  if (changes.length > 0) await updateRefsTransaction(repoPath, refTransaction(changes));
  const result: FollowResult = { changes, refs: remote.refs };
  if (remote.head && remote.head !== (await symbolicHead(repoPath))) {
    await setSymbolicRef(repoPath, 'HEAD', remote.head);
    result.head = remote.head;
  }
  return result;
}
