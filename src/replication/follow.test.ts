/**
 * A replica's round (replication/follow.ts) with real git: the replica's refs end exactly as
 * the writer's (creations, updates, forced rewinds, deletions, HEAD), and a corrupt object from
 * the writer moves no ref.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Git, tempDir } from '../../test/e2e/harness.js';
import { fsck, initBare, readRefsForSnapshot, symbolicHead } from '../git/command.js';
import { followOnce, refChanges, refTransaction } from './follow.js';

const oid = (n: number) => n.toString(16).padStart(40, 'a');

test('refChanges: creations, updates and deletions, by ref name', () => {
  const local = new Map([
    ['refs/heads/main', oid(1)],
    ['refs/heads/gone', oid(2)],
    ['refs/tags/v1', oid(3)],
  ]);
  const remote = new Map([
    ['refs/heads/main', oid(4)],
    ['refs/heads/new', oid(5)],
    ['refs/tags/v1', oid(3)],
  ]);
  assert.deepEqual(refChanges(local, remote), [
    { ref: 'refs/heads/gone', old: oid(2) },
    { ref: 'refs/heads/main', old: oid(1), new: oid(4) },
    { ref: 'refs/heads/new', new: oid(5) },
  ]);
  assert.deepEqual(refChanges(remote, remote), []);
});

test('refTransaction: one transaction, every change checked against the value read', () => {
  const text = refTransaction([
    { ref: 'refs/heads/gone', old: oid(2) },
    { ref: 'refs/heads/main', old: oid(1), new: oid(4) },
    { ref: 'refs/heads/new', new: oid(5) },
  ]);
  assert.equal(text, ['start', `delete refs/heads/gone ${oid(2)}`, `update refs/heads/main ${oid(4)} ${oid(1)}`, `create refs/heads/new ${oid(5)}`, 'prepare', 'commit', ''].join('\n'));
});

async function refsOf(repo: string): Promise<Record<string, string>> {
  return Object.fromEntries((await readRefsForSnapshot(repo)).map((r) => [r.name, r.oid]));
}

/** An empty writer and replica, a work tree of `commits` commits, and the writer's URL; removed after `run`. */
async function withPair(commits: number, run: (p: { git: Git; writer: string; replica: string; work: string; url: string }) => Promise<void>): Promise<void> {
  const dir = await tempDir('gitstratum-follow-');
  const git = await Git.create();
  try {
    const writer = path.join(dir, 'writer.git');
    const replica = path.join(dir, 'replica.git');
    await initBare(writer, 'main');
    await initBare(replica, 'main');
    const work = await git.workTree(path.join(dir, 'work'), { commits });
    await run({ git, writer, replica, work, url: pathToFileURL(writer).href });
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(git.home, { recursive: true, force: true });
  }
}

test('a replica follows its writer exactly: new refs, a forced rewind, a deletion, a new default branch', () =>
  withPair(3, async ({ git, writer, replica, work, url }) => {
    await git.ok(['push', '-q', writer, 'main', 'main~1:refs/heads/topic'], { cwd: work });
    await git.ok(['tag', '-a', '-m', 'release', 'v1', 'main~2'], { cwd: work });
    await git.ok(['push', '-q', writer, 'v1'], { cwd: work });

    const first = await followOnce(replica, url);
    assert.equal(first.changes.length, 3);
    assert.deepEqual(await refsOf(replica), await refsOf(writer));
    assert.equal((await fsck(replica)).code, 0);
    assert.deepEqual((await followOnce(replica, url)).changes, [], 'nothing to do once equal');

    const before = await refsOf(writer);
    await git.ok(['push', '-q', '--force', writer, 'main~2:refs/heads/main', ':refs/heads/topic', 'main:refs/heads/next'], { cwd: work });
    await git.ok(['--git-dir', writer, 'symbolic-ref', 'HEAD', 'refs/heads/next']);
    const second = await followOnce(replica, url);
    assert.deepEqual(second.changes, [
      { ref: 'refs/heads/main', old: before['refs/heads/main'], new: await git.revParse(work, 'main~2') },
      { ref: 'refs/heads/next', new: before['refs/heads/main'] },
      { ref: 'refs/heads/topic', old: before['refs/heads/topic'] },
    ]);
    assert.equal(second.head, 'refs/heads/next');
    assert.deepEqual(await refsOf(replica), await refsOf(writer));
    assert.equal(await symbolicHead(replica), 'refs/heads/next');
  }));

test('a corrupt object from the writer is refused, and no ref moves', () =>
  withPair(1, async ({ git, writer, replica, work, url }) => {
    await git.ok(['push', '-q', writer, 'main'], { cwd: work });
    await followOnce(replica, url);
    const held = await refsOf(replica);

    // A commit whose author line is malformed, as a compromised writer might send.
    const tree = await git.ok(['--git-dir', writer, 'rev-parse', 'main^{tree}']);
    const bad = `tree ${tree.trim()}\nparent ${held['refs/heads/main']}\nauthor nobody <broken 1 +0000\ncommitter x <x@y> 1 +0000\n\nbad\n`;
    const badOid = (await git.ok(['--git-dir', writer, 'hash-object', '-t', 'commit', '--literally', '-w', '--stdin'], { input: bad })).trim();
    await git.ok(['--git-dir', writer, 'update-ref', 'refs/heads/main', badOid]);
    await git.ok(['--git-dir', writer, 'update-ref', 'refs/heads/other', held['refs/heads/main']!]);

    await assert.rejects(followOnce(replica, url), /fetch failed/);
    assert.deepEqual(await refsOf(replica), held, 'no ref moved, not even the good one');
    const present = await git.run(['--git-dir', replica, 'cat-file', '-e', badOid]);
    assert.notEqual(present.code, 0, 'the bad object was not kept');
  }));
