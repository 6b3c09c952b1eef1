/**
 * `gitstratum cluster status`: every shard with what it holds, its writer, its standbys, its
 * replicas and their lag, and its snapshot lag (repos/cluster-status.ts decides; this prints). It exits 1 when an active (or non-empty)
 * shard has no live writer, so monitoring can run it as a check.
 */
import type { Command } from 'commander';
import { systemActor } from '../access/policy.js';
import type { ClusterStatus, ShardStatus } from '../repos/cluster-status.js';
import { formatBytes } from '../shared/bytes.js';
import { admin, common } from './program.js';
import { duration } from './shard-commands.js';

const count = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

function writerLine(s: ShardStatus): string {
  const w = s.writer;
  // A draining shard without a writer fails no check (repos/cluster-status.ts), but its repositories are still out of reach.
  if (!w) return s.state === 'active' || s.repositories > 0 ? 'NONE: its repositories cannot be served' : 'none';
  const expiry = w.live ? `expires in ${duration(w.expiresInMs)}` : `EXPIRED ${duration(-w.expiresInMs)} ago`;
  return `${w.holder} at ${w.url}, epoch ${w.epoch}, held for ${duration(w.heldForMs)}, ${expiry}`;
}

function replicaLine(r: ShardStatus['replicas'][number]): string {
  const seen = `seen ${duration(r.lastSeenAgoMs)} ago`;
  const state = r.silent
    ? `SILENT (${seen}): no reads`
    : r.behindRepositories === 0
      ? `up to date, ${seen}`
      : `${count(r.behindRepositories, 'repository', 'repositories')} behind, oldest change ${duration(r.lagMs)} ago, ${seen}`;
  return `${r.url} (${r.mode}, disk ${r.diskId.slice(0, 8)}), ${state}`;
}

function lagLine(s: ShardStatus): string {
  const lag = s.snapshotLag;
  if (lag.dirtyRepositories === 0) return 'every push persisted';
  const age = lag.oldestUnpersistedAgeMs === null ? '' : `, oldest un-persisted change ${duration(lag.oldestUnpersistedAgeMs)} ago`;
  return `${count(lag.dirtyRepositories, 'dirty repository', 'dirty repositories')}${age}`;
}

/** A block per shard, a blank line between them, then the verdict. */
export function describeClusterStatus(status: ClusterStatus): string[] {
  const label = (name: string) => `  ${name.padEnd(10)} `;
  const lines: string[] = [];
  for (const s of status.shards) {
    if (lines.length > 0) lines.push('');
    const holds = `${count(s.repositories, 'repository', 'repositories')}, ${formatBytes(s.gitBytes)}`;
    lines.push(`shard ${s.name}: ${s.state}, ${s.acceptsNew ? 'accepts new' : 'no new'}, ${holds}`);
    lines.push(label('writer') + writerLine(s));
    if (s.standbys.length === 0) lines.push(label('standbys') + 'none');
    for (const n of s.standbys) {
      const seen = `seen ${duration(n.lastSeenAgoMs)} ago`;
      lines.push(label('standby') + `${n.holder} at ${n.url}, ${n.gone ? `gone (${seen})` : seen}`);
    }
    for (const r of s.replicas) lines.push(label('replica') + replicaLine(r));
    lines.push(label('snapshots') + lagLine(s));
  }
  if (lines.length > 0) lines.push('');
  if (status.registeredNodes === 0 && status.shards.every((s) => !s.writer)) {
    lines.push('note: no storage node has registered; a single server (role all) takes no shard lease, so this reports on clusters only');
  }
  lines.push(
    status.healthy
      ? `ok: every shard in use has a live writer (${count(status.registeredNodes, 'storage node', 'storage nodes')} registered)`
      : `NO LIVE WRITER on shard(s) in use: ${status.withoutWriter.join(', ')}`,
  );
  return lines;
}

export function registerClusterCommands(program: Command): void {
  const cluster = program.command('cluster').description('the storage nodes of a cluster (README "Running on several machines")');

  common(
    cluster
      .command('status')
      .description(
        'every shard: state, repositories, git bytes, its writer (lease holder, epoch, lease age), its standbys, its replicas (how far behind) and its snapshot lag; exits 1 when a shard that is active or holds repositories has no live writer',
      )
      .option('--shard-lease-seconds <s>', "the storage nodes' lease lifetime, if not the default (a node unseen for 3 of them is shown as gone)"),
  ).action(
    admin(async (core) => {
      const { clusterStatus } = await import('../repos/cluster-status.js');
      const status = await clusterStatus({ meta: core.meta, shards: core.shards }, systemActor, { leaseMs: core.config.shardLeaseSeconds * 1000 });
      if (!status.healthy) process.exitCode = 1;
      return { text: describeClusterStatus(status), json: status };
    }),
  );
}
