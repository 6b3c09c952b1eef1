/**
 * Issue 9, the local filesystem, each case as it was observed on a server of main: the data
 * directory was readable by every local user (as `nobody`, `git show` read a private
 * repository, and meta.sqlite with its token hashes, LFS objects and metadata backups could be
 * read); with a long data path the hook socket fell back to a predictable
 * `/tmp/gitstratum-<digest>.sock`, so a local user who bound it first kept the server from
 * starting; and with the server unreachable, the hook relay let a push through unchecked.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Git, run, seedAlice, Server, tempDir } from '../e2e/harness.js';
import { randomBytesSeeded, uploadObject } from '../e2e/lfs-fixture.js';

/** Every path under `dir` (itself included) whose mode lets group or others in. */
async function exposed(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (p: string) => {
    const st = await lstat(p);
    if (st.isSymbolicLink()) return;
    if ((st.mode & 0o077) !== 0) out.push(`${(st.mode & 0o777).toString(8)} ${path.relative(dir, p) || '.'}`);
    if (st.isDirectory()) for (const name of await readdir(p)) await walk(path.join(p, name));
  };
  await walk(dir);
  return out;
}

/** A parent every local user may enter, so that only the data directory's own modes protect it. */
async function openParent(): Promise<string> {
  const parent = await tempDir('gitstratum-fs-');
  await chmod(parent, 0o755);
  return parent;
}

const asNobody = (args: string[]) => run('runuser', ['-u', 'nobody', '--', ...args], { env: { PATH: process.env['PATH'], HOME: '/' } });

describe('the data directory is private to the server’s user', () => {
  let parent: string;
  let server: Server;
  let git: Git;
  let repoDir: string;

  before(async () => {
    parent = await openParent();
    // The data directory does not exist yet: the server creates it, and everything in it.
    server = await Server.start({ dataDir: path.join(parent, 'data') });
    git = await Git.create();
    const token = await seedAlice(server);
    await server.cliOk(['repo', 'create', 'alice/main/secret', '--private']);
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2, seed: 3 });
    await git.ok(['push', '-q', server.repoUrl('alice/main/secret.git', token), 'main'], { cwd: work });
    await uploadObject(server, 'alice/main/secret', token, randomBytesSeeded(1000, 5));
    await server.cliOk(['backup-meta']);
    repoDir = (JSON.parse(await server.cliOk(['repo', 'list', '--json'])) as { path: string }[])[0]!.path;
  });
  after(async () => {
    await server?.cleanup();
    await rm(parent, { recursive: true, force: true });
  });

  test('every directory and file under it is owner-only', async () => {
    const names = await readdir(server.dataDir);
    for (const expected of ['meta.sqlite', 'repos', 'objects', 'signing.key', 'hooks', 'run']) assert.ok(names.includes(expected), `${expected} in ${names}`);
    assert.deepEqual(await exposed(server.dataDir), []);
  });

  test('as another local user (nobody), neither a repository nor meta.sqlite can be read', async () => {
    const show = await asNobody(['git', '-c', `safe.directory=*`, '--git-dir', repoDir, 'show', '--stat', 'HEAD']);
    assert.notEqual(show.code, 0, `nobody read the repository:\n${show.stdout}`);
    const meta = await asNobody(['cat', path.join(server.dataDir, 'meta.sqlite')]);
    assert.notEqual(meta.code, 0, 'nobody read meta.sqlite');
    const list = await asNobody(['ls', path.join(server.dataDir, 'objects')]);
    assert.notEqual(list.code, 0, 'nobody listed the objects');
  });

  test('an existing data directory that others can read gets one warning line at start', async () => {
    const dir = path.join(parent, 'shared');
    await mkdir(dir);
    await chmod(dir, 0o755);
    const other = await Server.start({ dataDir: dir });
    try {
      const warnings = other.logs.filter((l) => l.includes('data directory is accessible to other local users'));
      assert.equal(warnings.length, 1, other.logs.join('\n'));
      assert.match(warnings[0]!, /"mode":"0755"/);
    } finally {
      await other.cleanup();
    }
  });
});

describe('the hook socket of a long data path', () => {
  test('is not at a predictable path in the shared temp directory: a squatter there stops nothing', async () => {
    const parent = await openParent();
    const dataDir = path.join(parent, 'a-data-directory-whose-path-is-too-long-for-a-unix-socket'.repeat(2));
    // Where main put it; another local user binds it first.
    const predictable = path.join(tmpdir(), `gitstratum-${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}.sock`);
    const squatter = createServer((s) => {
      s.on('error', () => {});
      s.end('{"code":0}');
    });
    await new Promise<void>((resolve) => squatter.listen(predictable, resolve));
    let server: Server | undefined;
    try {
      server = await Server.start({ dataDir });
      const hook = await readFile(path.join(dataDir, 'hooks', 'pre-receive'), 'utf8');
      const socket = /' pre-receive '([^']+)'/.exec(hook)?.[1];
      assert.ok(socket, hook);
      assert.notEqual(socket, predictable);
      const dir = await lstat(path.dirname(socket));
      assert.ok(dir.isDirectory() && !dir.isSymbolicLink());
      assert.equal(dir.mode & 0o777, 0o700, 'only the server’s user may enter the socket’s directory');
      assert.equal(dir.uid, process.getuid!());
      assert.notEqual(path.dirname(socket), tmpdir());

      // The hooks reach the real server: a push is checked and recorded.
      const token = await seedAlice(server);
      await server.cliOk(['repo', 'create', 'alice/main/r']);
      const git = await Git.create();
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, seed: 4 });
      await git.ok(['push', '-q', server.repoUrl('alice/main/r.git', token), 'main'], { cwd: work });
      await server.stop();
      assert.equal((await lstat(path.dirname(socket)).catch(() => undefined)) === undefined, true, 'its directory is removed at stop');
    } finally {
      squatter.close();
      await server?.cleanup();
      await rm(parent, { recursive: true, force: true });
    }
  });
});

describe('hooks fail closed', () => {
  test('with the server unreachable, pre-receive refuses a push made on the disk, with a message', async () => {
    const server = await Server.start();
    try {
      const token = await seedAlice(server);
      await server.cliOk(['repo', 'create', 'alice/main/r']);
      const git = await Git.create();
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, seed: 6 });
      await git.ok(['push', '-q', server.repoUrl('alice/main/r.git', token), 'main'], { cwd: work });
      const repoDir = (JSON.parse(await server.cliOk(['repo', 'list', '--json'])) as { path: string }[])[0]!.path;
      const before = await git.revParse(repoDir, 'refs/heads/main');
      await server.stop();

      await git.commits(work, 1, { seed: 7 });
      const push = await git.run(['push', repoDir, 'main'], { cwd: work });
      assert.notEqual(push.code, 0, `the push went through unchecked:\n${push.stderr}`);
      assert.match(push.stderr, /gitstratum: the server cannot be reached to check this push; push refused/);
      assert.equal(await git.revParse(repoDir, 'refs/heads/main'), before, 'the ref did not move');
    } finally {
      await server.cleanup();
    }
  });
});
