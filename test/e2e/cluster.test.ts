/**
 * Two processes, two roles (issue 10): a storage node holding shard `local` and a stateless
 * frontend in front of it, sharing PostgreSQL and S3. Everything a user does goes through the
 * frontend; the repositories are on the storage node's disk only; the storage node's port
 * serves nothing without the cluster signature. The fewest processes that prove the point.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { BIN, Git, Server, databaseBackends, freshDatabaseUrl, run, tempDir } from './harness.js';
import { startS3, type TestS3 } from '../support/s3.js';
import { asEnv, CLUSTER_SECRET, startStorageNode } from '../support/cluster.js';

const SECRET = CLUSTER_SECRET;

describe('a cluster: one storage node, one frontend', { skip: !databaseBackends().includes('postgres') && 'PostgreSQL not configured' }, () => {
  let s3: TestS3;
  let storage: Server;
  let frontend: Server;
  let shared: NodeJS.ProcessEnv;
  let git: Git;
  let token: string;
  let work: string;

  const cli = async (args: string[]) => {
    const r = await run(process.execPath, [BIN, ...args, '--data', frontend.dataDir], { env: { ...process.env, ...shared, GITSTRATUM_ROLE: 'frontend' } });
    if (r.code !== 0) throw new Error(`gitstratum ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    s3 = await startS3();
    shared = asEnv(['--database-url', await freshDatabaseUrl(), '--cluster-secret', SECRET, ...s3.storeArgs()]);
    storage = await startStorageNode({ shared, shard: 'local', args: ['--maintenance-enabled', 'false'] });
    frontend = await Server.start({ env: { ...shared, GITSTRATUM_ROLE: 'frontend' } });
    git = await Git.create();
    await cli(['user', 'create', 'alice']);
    await cli(['space', 'create', 'alice/main']);
    token = (await cli(['token', 'create', 'alice', '--scope', 'write'])).trim().split('\n').pop()!;
    work = await git.workTree(path.join(await tempDir('gitstratum-cluster-work-'), 'w'), { commits: 3 });
  });

  after(async () => {
    await frontend?.cleanup();
    await storage?.cleanup();
    await s3?.stop();
  });

  test('a repository created through the frontend lives on the storage node; push and clones (v0, v2, shallow) go through the frontend', async () => {
    const created = JSON.parse(await cli(['repo', 'create', 'alice/main/r', '--json'])) as { id: string; shard: string; path: string };
    assert.equal(created.shard, 'local');
    const onNode = path.join(storage.dataDir, 'repos', created.id.slice(0, 2), `${created.id}.git`);
    assert.ok((await stat(onNode)).isDirectory(), 'the repository is on the storage node');
    assert.equal(await stat(path.join(frontend.dataDir, 'repos')).catch(() => undefined), undefined, 'and nothing on the frontend');

    await git.ok(['push', '-q', frontend.repoUrl('alice/main/r.git', token), 'main'], { cwd: work });
    const head = await git.revParse(work, 'main');
    assert.equal((await git.ok(['--git-dir', onNode, 'rev-parse', 'refs/heads/main'])).trim(), head);

    const root = await tempDir('gitstratum-cluster-clones-');
    for (const [name, extra] of [
      ['v0', ['-c', 'protocol.version=0']],
      ['v2', ['-c', 'protocol.version=2']],
      ['shallow', ['-c', 'protocol.version=2']],
    ] as const) {
      const dir = path.join(root, name);
      await git.ok([...extra, 'clone', '-q', ...(name === 'shallow' ? ['--depth', '1'] : []), frontend.repoUrl('alice/main/r.git', token), dir]);
      assert.equal(await git.revParse(dir, 'HEAD'), head, name);
    }
    assert.equal((await git.ok(['rev-list', '--count', 'HEAD'], { cwd: path.join(root, 'shallow') })).trim(), '1');
  });

  test("the storage node's port serves no client: git routes do not exist there, node routes need the signature", async () => {
    const clone = await fetch(new URL('/alice/main/r.git/info/refs?service=git-upload-pack', storage.url));
    assert.equal(clone.status, 404);
    const unsigned = await fetch(new URL('/_node/v1/repos/01JAAAAAAAAAAAAAAAAAAAAAAA', storage.url), { method: 'DELETE' });
    assert.equal(unsigned.status, 401);
    assert.equal(((await unsigned.json()) as { error: { code: string } }).error.code, 'cluster_signature_required');
  });

  test('a role other than all is refused without PostgreSQL, with a message that says why', async () => {
    const r = await run(process.execPath, [BIN, 'serve', '--data', await tempDir('gitstratum-role-'), '--port', '0', '--role', 'frontend', '--cluster-secret', SECRET]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /frontend needs PostgreSQL \(databaseUrl\)/);
  });
});
