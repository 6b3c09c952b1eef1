/**
 * `gitstratum shard …`: create and list shards, drain them (moving their repositories away),
 * pin spaces to them; and `gitstratum repo move` (repos/shards.ts and repos/moves.ts decide;
 * this prints).
 */
import type { Command } from 'commander';
import type { Core } from '../core.js';
import { createShardLeases } from '../meta/shard-leases.js';
import { createMover, isCluster, type MoveResult } from '../repos/moves.js';
import { systemActor } from '../access/policy.js';
import type { ShardSummary, StateChange } from '../repos/shards.js';
import { formatBytes } from '../shared/bytes.js';
import { invalid } from '../shared/errors.js';
import { admin, common } from './program.js';
const NONE_LEFT = 'warning: no shard accepts new repositories now; creating a repository fails until one does (shard create, shard activate, shard accept-new)';

/** `12 s`, `3 min`, `2.0 h`: a lease age for people (`cluster status` too). */
export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function leaseText(s: ShardSummary): string {
  if (!s.lease) return 'no writer';
  const { holder, epoch, heldForMs, expiresInMs } = s.lease;
  const expiry = expiresInMs > 0 ? `expires in ${duration(expiresInMs)}` : `EXPIRED ${duration(-expiresInMs)} ago`;
  return `writer ${holder} epoch ${epoch} for ${duration(heldForMs)} (${expiry})`;
}

/** One line of `shard list`: name, state, accepts new, repositories, git bytes, writer. */
export function shardLine(s: ShardSummary): string {
  const repos = `${s.repositories} ${s.repositories === 1 ? 'repository' : 'repositories'}`;
  return [s.name, s.state, s.acceptsNew ? 'accepts new' : 'no new', repos, formatBytes(s.gitBytes), leaseText(s)].join('\t');
}

function stateLines(c: StateChange, verb: string): string[] {
  return c.nonePlaceable ? [verb, NONE_LEFT] : [verb];
}

function moverOf(core: Core) {
  return createMover({ meta: core.meta, leases: createShardLeases(core.meta), secret: core.config.clusterSecret });
}

function positive(text: string, flag: string, min = 1): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > 3600) throw invalid('invalid_argument', `${flag} must be a whole number from ${min} to 3600, not ${text}`);
  return n;
}

/** The pause must leave room for the source's quiesce, the last copy round and the switch. */
const pauseMs = (text: string) => positive(text, '--pause-max-seconds', 5) * 1000;

/** One line of a move's result. */
export function moved(r: MoveResult): string {
  if (!r.moved) return `${r.repository} is on shard ${r.to} already`;
  return `moved ${r.repository} from shard ${r.from} to ${r.to}: ${r.refs} refs, pushes paused ${((r.pauseMs ?? 0) / 1000).toFixed(1)} s, ${((r.totalMs ?? 0) / 1000).toFixed(1)} s in all`;
}

export function registerShardCommands(program: Command, repo: Command): void {
  const shard = program
    .command('shard')
    .description('storage shards: where repositories live (users never see shards)');

  common(
    shard
      .command('create <name>')
      .description('create a shard (1-63 lower-case letters, digits and inner hyphens)')
      .option('--no-new', 'do not place new repositories on it until `shard accept-new NAME on`'),
  ).action(
    admin(async (core, name: string, opts: { new: boolean }) => {
      const s = await core.shards.create(systemActor, name, { acceptsNew: opts.new });
      return { text: `created shard ${s.name} (${s.acceptsNew ? 'accepts new repositories' : 'does not accept new repositories'})`, json: s };
    }),
  );

  common(
    shard
      .command('list')
      .description('list shards: state, whether they accept new repositories, repositories, git bytes, and their writer (lease holder, epoch, age)'),
  ).action(
    admin(async (core) => {
      const list = await core.shards.list(systemActor);
      return { text: list.map(shardLine), json: list };
    }),
  );

  common(
    shard
      .command('drain <name>')
      .description('stop placing new repositories on a shard and move every repository on it to the others (each where placement would put it), then mark it drained')
      .option('--no-move', 'only stop placing new repositories on it; its repositories stay')
      .option('--concurrency <n>', 'repositories moved at a time', '2')
      .option('--pause-max-seconds <n>', "longest a repository's pushes stay paused at the end of its move", '30'),
  ).action(
    admin(async (core, name: string, opts: { move: boolean; concurrency: string; pauseMaxSeconds: string }) => {
      const c = await core.shards.drain(systemActor, name);
      const held = `${c.repositories} ${c.repositories === 1 ? 'repository' : 'repositories'} on it`;
      const verb = c.changed ? `shard ${c.shard} is draining: no new repository is placed on it; ${held}` : `shard ${c.shard} is already ${c.state}; ${held}`;
      // An empty shard of a cluster goes on to the mover, which marks it drained.
      const cluster = isCluster(core.meta.dialect, core.config.clusterSecret);
      if (!opts.move || (c.repositories === 0 && !cluster)) return { text: stateLines(c, verb), json: c };
      process.stderr.write(verb + '\n');
      const drained = await moverOf(core).drain(systemActor, c.shard, {
        concurrency: positive(opts.concurrency, '--concurrency'),
        pauseMaxMs: pauseMs(opts.pauseMaxSeconds),
        onProgress: (done, total, label, r) => process.stderr.write(`[${done}/${total}] ${r instanceof Error ? `FAILED ${label}: ${r.message}` : moved(r)}\n`),
      });
      const lines = [
        `${drained.moved.length} moved, ${drained.failed.length} failed; ${drained.remaining} left on shard ${c.shard}${drained.drained ? ': it is drained' : ' (run drain again to move them)'}`,
      ];
      return { text: lines, json: drained };
    }),
  );

  common(
    repo
      .command('move <owner/space/repo>')
      .description('move a repository to another shard: copied while served, its pushes paused briefly at the end (503 + Retry-After; reads go on), then switched')
      .requiredOption('--to-shard <name>', 'the shard to move it to')
      .option('--pause-max-seconds <n>', 'longest its pushes stay paused; past it the move gives up and they resume', '30'),
  ).action(
    admin(async (core, repoPath: string, opts: { toShard: string; pauseMaxSeconds: string }) => {
      const r = await moverOf(core).move(systemActor, repoPath, opts.toShard, {
        pauseMaxMs: pauseMs(opts.pauseMaxSeconds),
        onStep: (text) => process.stderr.write(text + '\n'),
      });
      return { text: moved(r), json: r };
    }),
  );

  common(shard.command('activate <name>').description('make a draining or drained shard active again, so placement may choose it')).action(
    admin(async (core, name: string) => {
      const c = await core.shards.activate(systemActor, name);
      return { text: stateLines(c, c.changed ? `shard ${c.shard} is active again (it was ${c.from})` : `shard ${c.shard} is already active`), json: c };
    }),
  );

  common(shard.command('accept-new <name> <on|off>').description('whether placement may put new repositories on an active shard')).action(
    admin(async (core, name: string, state: string) => {
      if (state !== 'on' && state !== 'off') throw invalid('invalid_argument', `expected on or off, not ${state}`);
      const r = await core.shards.setAcceptsNew(systemActor, name, state === 'on');
      const verb = `shard ${r.shard} ${r.acceptsNew ? 'accepts' : 'does not accept'} new repositories${r.state === 'active' ? '' : ` (but it is ${r.state})`}`;
      return { text: r.nonePlaceable ? [verb, NONE_LEFT] : verb, json: r };
    }),
  );

  common(
    shard
      .command('sync-missing <name> <accept|refuse>')
      .description("what the shard's writer does with a push while no synchronous replica (--replica sync) is connected: accept it unsynced, or refuse it"),
  ).action(
    admin(async (core, name: string, value: string) => {
      if (value !== 'accept' && value !== 'refuse') throw invalid('invalid_argument', `expected accept or refuse, not ${value}`);
      const r = await core.shards.setSyncMissing(systemActor, name, value);
      const text = r.syncMissing === 'refuse' ? `shard ${r.shard} refuses pushes while no synchronous replica is connected` : `shard ${r.shard} accepts pushes unsynced while no synchronous replica is connected`;
      return { text: r.changed ? text : `${text} (unchanged)`, json: r };
    }),
  );

  common(shard.command('pin <owner/space> <shard>').description("place the space's new repositories only on its pinned shards (this one among them)")).action(
    admin(async (core, spacePath: string, name: string) => {
      const r = await core.shards.pin(systemActor, spacePath, name);
      const lines = [`${r.added ? 'pinned' : 'already pinned'} ${r.space} to shard ${r.shard}; its new repositories go to: ${r.pins.join(', ')}`];
      if (!r.placeable) lines.push(`note: shard ${r.shard} does not accept new repositories now`);
      return { text: lines, json: r };
    }),
  );

  common(shard.command('unpin <owner/space> [shard]').description('remove a pin of the space (all of them without a shard)')).action(
    admin(async (core, spacePath: string, name?: string) => {
      const r = await core.shards.unpin(systemActor, spacePath, name);
      const rest = r.pins.length > 0 ? `its new repositories go to: ${r.pins.join(', ')}` : 'its new repositories may go to any shard';
      return { text: `removed ${r.removed} pin(s) of ${r.space}; ${rest}`, json: r };
    }),
  );

  common(shard.command('pins [owner/space]').description('list the pins of every space, or of one')).action(
    admin(async (core, spacePath?: string) => {
      const list = await core.shards.pins(systemActor, spacePath);
      return { text: list.length > 0 ? list.map((p) => `${p.space}\t${p.shard}`) : 'no pins', json: list };
    }),
  );
}
