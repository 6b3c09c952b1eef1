/**
 * `gitstratum shard …` against a running server's data: shards are created, listed with what
 * they hold, a space is pinned, new repositories are placed by load and pins, and a drained
 * shard gets no new repository while its repositories keep working under the same URLs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, tempDir } from './harness.js';

interface ShardJson {
  name: string;
  state: string;
  acceptsNew: boolean;
  placeable: boolean;
  repositories: number;
  gitBytes: number;
  lease: unknown;
}

let server: Server;

before(async () => {
  server = await Server.start();
});
after(() => server?.cleanup());

async function json<T>(args: string[]): Promise<T> {
  return JSON.parse(await server.cliOk([...args, '--json'])) as T;
}

const placed = async (repoPath: string) => (await json<{ shard: string }>(['repo', 'create', repoPath])).shard;
const shardsByName = async () => new Map((await json<ShardJson[]>(['shard', 'list'])).map((s) => [s.name, s]));

test('shards: create, pin a space, placement by load and pins, drain; users never see shards', async () => {
  await server.createUser('alice');
  await server.createSpace('alice/main');
  await server.createSpace('alice/games');
  const token = await server.token('alice', 'write');

  assert.equal(await server.cliOk(['shard', 'create', 'a']), 'created shard a (accepts new repositories)\n');
  assert.equal(await server.cliOk(['shard', 'create', 'b']), 'created shard b (accepts new repositories)\n');
  const c = await json<ShardJson>(['shard', 'create', 'c', '--no-new']);
  assert.deepEqual([c.name, c.state, c.acceptsNew, c.placeable], ['c', 'active', false, false]);
  assert.equal(await server.cliOk(['shard', 'accept-new', 'local', 'off']), 'shard local does not accept new repositories\n');
  assert.deepEqual(
    (await server.cliOk(['shard', 'list'])).trimEnd().split('\n'),
    [
      'a\tactive\taccepts new\t0 repositories\t0 B\tno writer',
      'b\tactive\taccepts new\t0 repositories\t0 B\tno writer',
      'c\tactive\tno new\t0 repositories\t0 B\tno writer',
      'local\tactive\tno new\t0 repositories\t0 B\tno writer',
    ],
  );

  // Equal shards: the first by name. Once it holds bytes, the next repository goes to the other.
  assert.equal(await placed('alice/main/one'), 'a');
  const git = await Git.create();
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2 });
  await git.ok(['push', server.repoUrl('alice/main/one.git', token), 'main'], { cwd: work });
  for (const deadline = Date.now() + 15_000; ((await shardsByName()).get('a')?.gitBytes ?? 0) === 0; await sleep(100)) {
    if (Date.now() > deadline) throw new Error('the push was never measured');
  }
  assert.equal(await placed('alice/main/two'), 'b');

  // A pinned space goes to its pin, however loaded.
  assert.equal(await server.cliOk(['shard', 'pin', 'alice/games', 'a']), 'pinned alice/games to shard a; its new repositories go to: a\n');
  assert.equal(await server.cliOk(['shard', 'pins']), 'alice/games\ta\n');
  assert.equal(await placed('alice/games/g1'), 'a');

  // Drain a without moving: no new repository goes there, pinned or not. (Moving needs a
  // cluster: test/e2e/moves.test.ts.)
  const drain = await server.cliOk(['shard', 'drain', 'a', '--no-move']);
  assert.equal(drain, 'shard a is draining: no new repository is placed on it; 2 repositories on it\n');
  const moving = await server.cli(['shard', 'drain', 'a']);
  assert.equal(moving.code, 1);
  assert.match(moving.stderr, /moving repositories needs a cluster: PostgreSQL/);
  assert.equal(await placed('alice/main/three'), 'b');
  const refused = await server.cli(['repo', 'create', 'alice/games/g2']);
  assert.equal(refused.code, 1, refused.stderr);
  assert.equal(refused.stderr, 'gitstratum: no shard that space alice/games is pinned to (a) accepts new repositories\n');
  const shards = await shardsByName();
  assert.deepEqual(
    [...shards.values()].map((s) => [s.name, s.state, s.placeable, s.repositories]),
    [
      ['a', 'draining', false, 2],
      ['b', 'active', true, 2],
      ['c', 'active', false, 0],
      ['local', 'active', false, 0],
    ],
  );
  assert.ok(shards.get('a')!.gitBytes > 0);

  // Its repositories still serve under their URLs.
  assert.match(await git.ok(['ls-remote', server.repoUrl('alice/main/one.git')]), /\trefs\/heads\/main\n/);

  // Unpinned, the space's repositories go wherever placement says.
  assert.equal(await server.cliOk(['shard', 'unpin', 'alice/games']), 'removed 1 pin(s) of alice/games; its new repositories may go to any shard\n');
  assert.equal(await placed('alice/games/g2'), 'b');

  // Draining the last shard that takes new repositories warns.
  const last = await server.cliOk(['shard', 'drain', 'b', '--no-move']);
  assert.match(last, /^shard b is draining: .*\nwarning: no shard accepts new repositories now; creating a repository fails until one does/);
  const none = await server.cli(['repo', 'create', 'alice/main/four']);
  assert.equal(none.stderr, 'gitstratum: no shard accepts new repositories\n');
  assert.equal(await server.cliOk(['shard', 'activate', 'b']), 'shard b is active again (it was draining)\n');
});

test('shard commands refuse bad input with one clear line', async () => {
  const cases: [string[], number, RegExp][] = [
    [['shard', 'create', 'Bad_Name'], 2, /^gitstratum: shard name must be 1-63 lower-case letters, digits and inner hyphens\n$/],
    [['shard', 'create', 'local'], 1, /^gitstratum: shard already exists: local\n$/],
    [['shard', 'drain', 'nope'], 1, /^gitstratum: shard not found: nope\n$/],
    [['shard', 'accept-new', 'local', 'maybe'], 2, /^gitstratum: expected on or off, not maybe\n$/],
    [['shard', 'pin', 'nobody/space', 'local'], 1, /^gitstratum: space not found: nobody\/space\n$/],
    [['shard', 'pin', 'not-a-space-path', 'local'], 2, /^gitstratum: space path must be OWNER\/SPACE\n$/],
  ];
  const results = await Promise.all(cases.map(([args]) => server.cli(args)));
  results.forEach((r, i) => {
    const [args, code, stderr] = cases[i]!;
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, stderr);
    assert.equal(r.stdout, '');
  });
  const help = await server.cliOk(['shard', 'drain', '--help']);
  assert.match(help, /move every repository on it/);
  assert.match(help, /--no-move/);
});
