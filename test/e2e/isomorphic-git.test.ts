/**
 * A second, independent client: isomorphic-git (pure JavaScript, protocol v1 over Smart HTTP,
 * its own pkt-line and pack code, chunked request bodies). It clones a private repository and
 * pushes with a token from onAuth; the real git client then sees its commit.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as isogit from 'isomorphic-git';
import http from 'isomorphic-git/http/node';
import { Git, Server, tempDir } from './harness.js';

let server: Server;
let git: Git;
let tokens: { read: string; write: string };

before(async () => {
  server = await Server.start();
  await server.createUser('alice');
  await server.createSpace('alice/main');
  tokens = { read: await server.token('alice', 'read'), write: await server.token('alice', 'write') };
  git = await Git.create();
});

after(() => server.cleanup());

const author = { name: 'Iso Author', email: 'iso@example.com', timestamp: 1_700_000_000, timezoneOffset: 0 };

test('isomorphic-git clones a private repository and pushes a commit that git then sees', async () => {
  await server.createRepo('alice/main/iso', { private: true });
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 3, seed: 301 });
  await git.ok(['push', '-q', server.repoUrl('alice/main/iso.git', tokens.write), 'main'], { cwd: work });
  const url = server.repoUrl('alice/main/iso.git');

  let asked = 0;
  const onAuth = () => {
    asked++;
    return { username: 'git', password: tokens.write };
  };
  const dir = path.join(await tempDir(), 'iso');
  await isogit.clone({ fs, http, dir, url, onAuth, singleBranch: true, ref: 'main' });
  assert.ok(asked > 0, 'the private repository asked for credentials');
  assert.equal(await isogit.resolveRef({ fs, dir, ref: 'HEAD' }), await git.revParse(work, 'main'));
  assert.equal(await readFile(path.join(dir, 'file-1.txt'), 'utf8'), await readFile(path.join(work, 'file-1.txt'), 'utf8'));

  await writeFile(path.join(dir, 'from-isomorphic-git.txt'), 'written by isomorphic-git\n');
  await isogit.add({ fs, dir, filepath: 'from-isomorphic-git.txt' });
  const oid = await isogit.commit({ fs, dir, message: 'commit from isomorphic-git', author });
  const pushed = await isogit.push({ fs, http, dir, remote: 'origin', ref: 'main', onAuth });
  assert.equal(pushed.ok, true, JSON.stringify(pushed));
  assert.equal(pushed.refs['refs/heads/main']?.ok, true);

  const dest = path.join(await tempDir(), 'git-clone');
  await git.ok(['clone', '-q', server.repoUrl('alice/main/iso.git', tokens.read), dest]);
  assert.equal(await git.revParse(dest, 'HEAD'), oid);
  assert.equal(await git.revParse(dest, 'HEAD~1'), await git.revParse(work, 'main'));
  assert.equal(await readFile(path.join(dest, 'from-isomorphic-git.txt'), 'utf8'), 'written by isomorphic-git\n');
  assert.equal((await git.ok(['log', '-1', '--format=%an <%ae> %s'], { cwd: dest })).trim(), 'Iso Author <iso@example.com> commit from isomorphic-git');
  assert.equal(await git.ok(['fsck', '--strict', '--no-progress'], { cwd: dest }), '');

  // git pushes on top; isomorphic-git fetches and fast-forwards to it.
  await git.commits(dest, 1, { seed: 302, prefix: 'from-git' });
  await git.ok(['push', '-q', server.repoUrl('alice/main/iso.git', tokens.write), 'main'], { cwd: dest });
  await isogit.pull({ fs, http, dir, ref: 'main', singleBranch: true, fastForwardOnly: true, onAuth, author });
  assert.equal(await isogit.resolveRef({ fs, dir, ref: 'HEAD' }), await git.revParse(dest, 'HEAD'));
});

test('isomorphic-git push with a read-only or wrong token is refused and changes nothing', async () => {
  await server.createRepo('alice/main/iso-denied');
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, seed: 311 });
  await git.ok(['push', '-q', server.repoUrl('alice/main/iso-denied.git', tokens.write), 'main'], { cwd: work });
  const url = server.repoUrl('alice/main/iso-denied.git');
  const before = await git.revParse(work, 'main');

  const dir = path.join(await tempDir(), 'iso');
  await isogit.clone({ fs, http, dir, url, singleBranch: true, ref: 'main' });
  await writeFile(path.join(dir, 'denied.txt'), 'should not land\n');
  await isogit.add({ fs, dir, filepath: 'denied.txt' });
  await isogit.commit({ fs, dir, message: 'denied', author });

  // A read-only token is known but not allowed to write (403); an unknown one is not accepted (401).
  for (const [password, status] of [
    [tokens.read, 403],
    ['gst_not-a-real-token', 401],
  ] as const) {
    await assert.rejects(
      isogit.push({ fs, http, dir, remote: 'origin', ref: 'main', onAuth: () => ({ username: 'git', password }) }),
      (err: Error & { data?: { statusCode?: number } }) => {
        assert.equal(err.name, 'HttpError', err.message);
        assert.equal(err.data?.statusCode, status, err.message);
        return true;
      },
    );
  }
  const refs = await isogit.listServerRefs({ http, url, prefix: 'refs/heads/' });
  assert.deepEqual(refs, [{ ref: 'refs/heads/main', oid: before }]);
});
