/**
 * The cluster of issue 10 serving the everyday scenarios, with the fewest processes that prove
 * it: two stateless frontends (A, B) and two shards, `eu-1` and `eu-2`, each a writer and a
 * same-volume standby (six `gitstratum serve` processes), on PostgreSQL and s3rver. `local`
 * is drained; space alice/one is pinned to eu-1 and alice/two to eu-2, so repositories land on
 * both shards.
 *
 * Every scenario runs in two lanes, one per shard, and crosses the frontends: eu-1's
 * repositories are created through A and used through B, eu-2's the other way round. What is
 * checked is what a user notices (git's output and exit code, the bytes of a clone), plus where
 * things are: a repository on its shard's volume only, LFS objects in S3 only. The frontends
 * serve git over SSH too (clones v0 and v2, pushes), through the same hop to the shard.
 *
 * Then: a frontend stopped (SIGTERM) in the middle of a clone (held on a slow link,
 * test/support/slow-link.ts) finishes that clone before it exits, the frontend started in its
 * place serves the next one, and the repository is intact on its shard; `cluster status --json` shows both shards with a live writer and a standby; the storage
 * nodes' port serves no client; a role other than `all` is refused without PostgreSQL.
 *
 * One cluster for the file; each scenario makes its own repositories. Every process is stopped
 * by its PID in `after`; waits are for conditions, with generous bounds.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, Git, Server, databaseBackends, freshDatabaseUrl, run, tempDir } from './harness.js';
import { api, basic, batchOne, filesUnder, lfsGit, randomBytesSeeded, sha256File, writeRandomFile } from './lfs-fixture.js';
import { startS3, type TestS3 } from '../support/s3.js';
import { asEnv, CLUSTER_SECRET, serving, startStorageNode } from '../support/cluster.js';
import { startSlowLink } from '../support/slow-link.js';
import { keygen, sshAs, sshPortOf, type Key } from '../support/ssh.js';
import { createS3Store } from '../../src/storage/s3-store.js';
import { lfsObjectKey, type ObjectStore } from '../../src/storage/object-store.js';
import type { ClusterStatus } from '../../src/repos/cluster-status.js';

/** Shared by every frontend, as docs/deploy.md asks: an LFS transfer signed by one is good at any. */
const SIGNING_SECRET = 'cluster-test-signing-0123456789abcdef0123';
const NODE_ARGS = ['--maintenance-enabled', 'false'];

interface Lane {
  shard: 'eu-1' | 'eu-2';
  space: string;
  /** Index in `frontends` of the one its repositories are created through… */
  create: 0 | 1;
  /** …and of the one they are then used through. */
  use: 0 | 1;
}
const LANES: Lane[] = [
  { shard: 'eu-1', space: 'alice/one', create: 0, use: 1 },
  { shard: 'eu-2', space: 'alice/two', create: 1, use: 0 },
];
const laneName = (l: Lane) => `${l.shard}, created through ${'AB'[l.create]}, used through ${'AB'[l.use]}`;

/**
 * Promise.all that waits for every promise before failing: a `before` that fails must not
 * leave a process still starting after `after` has stopped the others.
 */
async function settled<T extends readonly unknown[]>(promises: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

interface Shard {
  writer: Server;
  standby: Server;
  /** The writer's data directory, which the standby shares. */
  volume: string;
}

interface Repo {
  fullName: string;
  /** Its directory on its shard's volume. */
  dir: string;
}

describe('a cluster: 2 frontends × 2 shards, each shard a writer and a same-volume standby', { skip: !databaseBackends().includes('postgres') && 'PostgreSQL not configured' }, () => {
  let s3: TestS3;
  let s3View: ObjectStore & { destroy?(): void };
  let shared: NodeJS.ProcessEnv;
  let adminData: string;
  const shards = new Map<string, Shard>();
  /** [A, B]; the restart scenario replaces one. */
  const frontends: Server[] = [];
  /** Every process started, for `after`. */
  const started: Server[] = [];
  let git: Git;
  let scratch: string;
  const tokens = { alice: { read: '', write: '' }, bob: { write: '' } };
  let aliceKey: Key;

  /** An admin command with a frontend's settings (the cluster's database, store and secret). */
  const admin = async (args: string[]) => {
    const r = await run(process.execPath, [BIN, ...args, '--data', adminData], { env: { ...process.env, ...shared, GITSTRATUM_ROLE: 'frontend' } });
    if (r.code !== 0) throw new Error(`gitstratum ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
    return r.stdout;
  };
  const startFrontend = async (dataDir?: string) => {
    const f = await Server.start({ ...(dataDir && { dataDir }), args: ['--ssh-port', '0'], env: { ...shared, GITSTRATUM_ROLE: 'frontend', GITSTRATUM_SIGNING_SECRET: SIGNING_SECRET } });
    started.push(f);
    return f;
  };
  const startShard = async (shard: string): Promise<Shard> => {
    const writer = await startStorageNode({ shared, shard, args: NODE_ARGS });
    started.push(writer);
    await serving(writer);
    const standby = await startStorageNode({ shared, shard, dataDir: writer.dataDir, args: NODE_ARGS });
    started.push(standby);
    return { writer, standby, volume: writer.dataDir };
  };
  const url = (frontend: 0 | 1, repo: Repo, token?: string) => frontends[frontend]!.repoUrl(`${repo.fullName}.git`, token);
  const dirOn = (volume: string, id: string) => path.join(volume, 'repos', id.slice(0, 2), `${id}.git`);
  const exists = (p: string) => stat(p).then(() => true, () => false);

  /** Creates a repository through the lane's creating frontend; it must be on the lane's shard only. */
  const createRepo = async (lane: Lane, name: string, visibility: 'public' | 'private' = 'private'): Promise<Repo> => {
    const [owner, space] = lane.space.split('/');
    const created = await api(frontends[lane.create]!, tokens.alice.write, 'POST', '/repos', { owner, space, name, visibility });
    const id = String(created['id']);
    const repo = { fullName: `${lane.space}/${name}`, dir: dirOn(shards.get(lane.shard)!.volume, id) };
    assert.ok(await exists(repo.dir), `${repo.fullName} is on ${lane.shard}'s volume`);
    for (const [other, s] of shards) if (other !== lane.shard) assert.ok(!(await exists(dirOn(s.volume, id))), `and not on ${other}'s`);
    return repo;
  };
  const onDisk = async (repo: Repo, ref: string) => (await git.ok(['--git-dir', repo.dir, 'rev-parse', '--verify', ref])).trim();
  const fsckClean = async (dir: string) => assert.equal(await git.ok(['fsck', '--no-progress'], { cwd: dir }), '');
  const work = async (name: string) => {
    const dir = path.join(scratch, name);
    await mkdir(dir, { recursive: true });
    return dir;
  };

  before(async () => {
    s3 = await startS3();
    s3View = createS3Store({ endpoint: s3.endpoint, region: s3.region, bucket: s3.bucket, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey });
    shared = asEnv(['--database-url', await freshDatabaseUrl(), '--cluster-secret', CLUSTER_SECRET, ...s3.storeArgs()]);
    adminData = await tempDir('gitstratum-cluster-admin-');
    scratch = await tempDir('gitstratum-cluster-work-');
    git = await lfsGit();
    // The first command migrates the database; the rest may run side by side.
    await admin(['shard', 'create', 'eu-1']);
    await Promise.all([admin(['shard', 'create', 'eu-2']), admin(['shard', 'drain', 'local']), admin(['user', 'create', 'root', '--admin'])]);
    const [eu1, eu2, a, b, rootToken] = await settled([
      startShard('eu-1'),
      startShard('eu-2'),
      startFrontend(),
      startFrontend(),
      admin(['token', 'create', 'root', '--scope', 'admin']).then((out) => out.trim().split('\n').pop()!),
    ] as const);
    shards.set('eu-1', eu1).set('eu-2', eu2);
    frontends.push(a, b);
    // Users, spaces and tokens through frontend A's REST API (a process per admin command is slow).
    for (const name of ['alice', 'bob']) await api(a, rootToken, 'POST', '/users', { name, admin: false });
    for (const lane of LANES) await api(a, rootToken, 'POST', '/spaces', { owner: 'alice', name: lane.space.split('/')[1] });
    const token = async (user: string, scope: string) => String((await api(a, rootToken, 'POST', `/users/${user}/tokens`, { scope }))['token']);
    tokens.alice = { read: await token('alice', 'read'), write: await token('alice', 'write') };
    tokens.bob = { write: await token('bob', 'write') };
    await Promise.all(LANES.map((l) => admin(['shard', 'pin', l.space, l.shard])));
    aliceKey = await keygen(scratch, 'alice');
    await api(a, tokens.alice.write, 'POST', '/users/alice/keys', { key: aliceKey.pub });
  });

  after(async () => {
    // Frontends first, then standbys (so none takes over a writer that is stopping), then writers.
    const standbys = [...shards.values()].map((s) => s.standby);
    const writers = [...shards.values()].map((s) => s.writer);
    const rest = started.filter((s) => !standbys.includes(s) && !writers.includes(s));
    for (const group of [rest, standbys, writers]) await Promise.all(group.map((s) => s.stop()));
    for (const dir of new Set([...started.map((s) => s.dataDir), adminData, scratch, git?.home])) if (dir) await rm(dir, { recursive: true, force: true });
    s3View?.destroy?.();
    await s3?.stop();
  });

  for (const lane of LANES) {
    test(`clone over v0 and v2, shallow and partial (${laneName(lane)})`, async () => {
      const repo = await createRepo(lane, 'clones');
      const src = await git.workTree(await work(`clones-${lane.shard}`), { commits: 4, seed: 10 + lane.create });
      await git.ok(['push', '-q', url(lane.create, repo, tokens.alice.write), 'main', 'main~1:refs/heads/feature'], { cwd: src });
      const [main, feature] = [await git.revParse(src, 'main'), await git.revParse(src, 'main~1')];
      assert.equal(await onDisk(repo, 'refs/heads/main'), main, 'the push is on the shard');
      const from = url(lane.use, repo, tokens.alice.read);

      for (const version of ['0', '2']) {
        const dest = path.join(scratch, `clone-v${version}-${lane.shard}`);
        const r = await git.run(['-c', `protocol.version=${version}`, 'clone', from, dest], { env: { GIT_TRACE_PACKET: '1' } });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(/git< version 2/.test(r.stderr), version === '2', `answered in protocol v${version}`);
        assert.equal(await git.revParse(dest, 'HEAD'), main);
        assert.equal(await git.revParse(dest, 'origin/feature'), feature);
        assert.equal(await readFile(path.join(dest, 'file-0.txt'), 'utf8'), await git.ok(['show', 'main:file-0.txt'], { cwd: src }));
        await fsckClean(dest);
      }

      const shallow = path.join(scratch, `shallow-${lane.shard}`);
      await git.ok(['clone', '-q', '--depth', '1', from, shallow]);
      assert.equal((await git.ok(['rev-list', 'HEAD'], { cwd: shallow })).trim(), main);
      assert.equal((await git.ok(['rev-parse', '--is-shallow-repository'], { cwd: shallow })).trim(), 'true');

      const partial = path.join(scratch, `partial-${lane.shard}`);
      await git.ok(['clone', '-q', '--filter=blob:none', from, partial]);
      const missing = async () => (await git.ok(['rev-list', '--objects', '--missing=print', 'main'], { cwd: partial })).split('\n').filter((l) => l.startsWith('?')).length;
      const before = await missing();
      assert.ok(before > 0, 'the blobs of older commits are left out');
      // Reading an old file fetches its blob, lazily, through the frontend.
      assert.equal(await git.ok(['show', 'main~3:file-0.txt'], { cwd: partial }), await git.ok(['show', 'main~3:file-0.txt'], { cwd: src }));
      assert.equal(await missing(), before - 1);
    });
  }

  for (const lane of LANES) {
    test(`push: a new branch, an update, a delete and an atomic push of two refs (${laneName(lane)})`, async () => {
      const repo = await createRepo(lane, 'pushes');
      const src = await git.workTree(await work(`pushes-${lane.shard}`), { commits: 2, seed: 20 + lane.create });
      const push = async (args: string[]) => {
        const r = await git.run(['push', url(lane.use, repo, tokens.alice.write), ...args], { cwd: src });
        assert.equal(r.code, 0, r.stderr);
        return r.stderr;
      };
      const abbrev = (sha: string) => `${sha.slice(0, 7)}[0-9a-f]*`;

      let out = await push(['main', 'main:refs/heads/topic']);
      assert.match(out, /\* \[new branch\]\s+main -> main/);
      assert.match(out, /\* \[new branch\]\s+main -> topic/);

      const old = await git.revParse(src, 'main');
      await git.commits(src, 1, { seed: 30 + lane.create });
      const next = await git.revParse(src, 'main');
      assert.match(await push(['main']), new RegExp(`${abbrev(old)}\\.\\.${abbrev(next)}\\s+main -> main`));

      assert.match(await push(['--delete', 'topic']), /- \[deleted\]\s+topic/);

      await git.commits(src, 1, { seed: 40 + lane.create });
      out = await push(['--atomic', 'main', 'main~1:refs/heads/release']);
      assert.match(out, new RegExp(`${abbrev(next)}\\.\\.${abbrev(await git.revParse(src, 'main'))}\\s+main -> main`));
      assert.match(out, /\* \[new branch\]\s+main~1 -> release/);

      // Seen through the other frontend, and on the shard's disk.
      const expected = [`${await git.revParse(src, 'main')}\trefs/heads/main`, `${await git.revParse(src, 'main~1')}\trefs/heads/release`];
      const listed = await git.ok(['ls-remote', '--heads', url(lane.create, repo, tokens.alice.read)]);
      assert.deepEqual(listed.trim().split('\n').sort(), expected.sort());
      const local = await git.ok(['--git-dir', repo.dir, 'for-each-ref', '--format=%(objectname)\t%(refname)', 'refs/heads']);
      assert.deepEqual(local.trim().split('\n').sort(), expected.sort());
      assert.equal(await git.ok(['--git-dir', repo.dir, 'fsck', '--no-progress']), '');
    });
  }

  for (const lane of LANES) {
    test(`git over SSH through a frontend: a push, a deletion (answered while git's side is open), clones over v0 and v2 (${laneName(lane)})`, async () => {
      const repo = await createRepo(lane, 'over-ssh');
      const port = sshPortOf(frontends[lane.use]!);
      const as = sshAs(aliceKey, port);
      const sshUrl = `ssh://git@127.0.0.1:${port}/${repo.fullName}.git`;
      const src = await git.workTree(await work(`ssh-${lane.shard}`), { commits: 3, seed: 50 + lane.create });
      await git.ok(['push', '-q', sshUrl, 'main', 'main:refs/heads/topic'], { cwd: src, env: as });
      const main = await git.revParse(src, 'main');
      assert.equal(await onDisk(repo, 'refs/heads/main'), main, 'the push is on the shard');
      // A deletion sends no pack: receive-pack answers while the client still holds its side open.
      await git.ok(['push', '-q', sshUrl, '--delete', 'topic'], { cwd: src, env: as });
      assert.equal(await git.ok(['ls-remote', '--heads', sshUrl], { env: as }), `${main}\trefs/heads/main\n`);

      for (const version of ['0', '2']) {
        const dest = path.join(scratch, `ssh-clone-v${version}-${lane.shard}`);
        const r = await git.run(['-c', `protocol.version=${version}`, 'clone', sshUrl, dest], { env: { ...as, GIT_TRACE_PACKET: '1' } });
        assert.equal(r.code, 0, r.stderr);
        // Over SSH, the trace names the command (clone<), not the HTTP helper (git<).
        assert.equal(/clone< version 2/.test(r.stderr), version === '2', `answered in protocol v${version}`);
        assert.equal(await git.revParse(dest, 'HEAD'), main);
        await fsckClean(dest);
      }
      // An incremental v0 fetch negotiates over several rounds of the same conversation.
      const dest = path.join(scratch, `ssh-clone-v0-${lane.shard}`);
      await git.commits(src, 2, { seed: 60 + lane.create });
      await git.ok(['push', '-q', sshUrl, 'main'], { cwd: src, env: as });
      await git.ok(['-c', 'protocol.version=0', 'pull', '-q', '--ff-only'], { cwd: dest, env: as });
      assert.equal(await git.revParse(dest, 'HEAD'), await git.revParse(src, 'main'));
    });
  }

  for (const lane of LANES) {
    test(`LFS: git lfs push through one frontend stores in S3, git lfs pull through the other (${laneName(lane)})`, async () => {
      const repo = await createRepo(lane, 'assets');
      const src = await work(`lfs-${lane.shard}`);
      await git.ok(['init', '-q', '-b', 'main', src]);
      await git.ok(['lfs', 'track', '*.bin'], { cwd: src });
      await writeFile(path.join(src, 'model.bin'), randomBytesSeeded(1024 * 1024 + 17, 50 + lane.create));
      await writeFile(path.join(src, 'small.bin'), randomBytesSeeded(1024, 60 + lane.create));
      await git.ok(['add', '-A'], { cwd: src });
      await git.ok(['commit', '-q', '-m', 'assets'], { cwd: src });
      await git.ok(['remote', 'add', 'origin', url(lane.use, repo, tokens.alice.write)], { cwd: src });
      await git.ok(['lfs', 'push', 'origin', 'main'], { cwd: src });
      await git.ok(['push', '-q', 'origin', 'main'], { cwd: src });

      const oids = new Map<string, string>();
      for (const line of (await git.ok(['lfs', 'ls-files', '--long'], { cwd: src })).trim().split('\n')) {
        const [oid, , name] = line.split(' ');
        oids.set(name!, oid!);
      }
      assert.deepEqual([...oids.keys()].sort(), ['model.bin', 'small.bin']);
      for (const [name, oid] of oids) assert.ok(await s3View.head(lfsObjectKey(oid)), `${name} is in S3`);
      // Nowhere else: the frontend streamed it to S3; no storage node saw an LFS request.
      for (const dir of [...frontends.map((f) => f.dataDir), ...[...shards.values()].map((s) => s.volume)]) {
        assert.deepEqual(await filesUnder(path.join(dir, 'objects', 'lfs')), [], `no LFS object under ${dir}`);
      }
      for (const s of shards.values()) for (const node of [s.writer, s.standby]) assert.ok(!node.logs.some((l) => l.includes('/info/lfs')));

      const dest = path.join(scratch, `lfs-pull-${lane.shard}`);
      await git.ok(['clone', '-q', url(lane.create, repo, tokens.alice.read), dest], { env: { GIT_LFS_SKIP_SMUDGE: '1' } });
      assert.match(await readFile(path.join(dest, 'model.bin'), 'utf8'), /^version https:\/\/git-lfs\.github\.com\/spec\/v1\n/);
      await git.ok(['lfs', 'pull'], { cwd: dest });
      for (const name of oids.keys()) assert.equal(await sha256File(path.join(dest, name)), await sha256File(path.join(src, name)), name);

      // Behind a load balancer, the batch and the transfer may reach different frontends.
      const oid = oids.get('model.bin')!;
      const obj = await batchOne(frontends[lane.use]!, repo.fullName, tokens.alice.read, 'download', oid, 1024 * 1024 + 17);
      const href = new URL(obj.actions!.download!.href);
      const other = new URL(frontends[lane.create]!.url);
      href.host = other.host;
      const res = await fetch(href, { headers: obj.actions!.download!.header ?? {} });
      assert.equal(res.status, 200);
      assert.equal(Buffer.from(await res.arrayBuffer()).equals(await readFile(path.join(src, 'model.bin'))), true);
    });
  }

  for (const lane of LANES) {
    test(`access: anonymous 401, another user 404, a read token pushing 403, a public repository for all (${laneName(lane)})`, async () => {
      const secret = await createRepo(lane, 'secret', 'private');
      const open = await createRepo(lane, 'open', 'public');
      const src = await git.workTree(await work(`access-${lane.shard}`), { commits: 2, seed: 70 + lane.create });
      for (const repo of [secret, open]) await git.ok(['push', '-q', url(lane.create, repo, tokens.alice.write), 'main'], { cwd: src });
      const main = await git.revParse(src, 'main');
      const infoRefs = (repo: Repo, service: string, token?: string) =>
        fetch(`${url(lane.use, repo)}/info/refs?service=${service}`, { headers: token ? { authorization: basic(token) } : {} });

      // Anonymous, private: asked to sign in; git (with no terminal) says it could not.
      const anonymous = await infoRefs(secret, 'git-upload-pack');
      assert.equal(anonymous.status, 401);
      assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic realm="gitstratum"/);
      let r = await git.run(['ls-remote', url(lane.use, secret)]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /could not read Username for '.*': terminal prompts disabled/);

      // Another user without access: the repository does not exist for him.
      assert.equal((await infoRefs(secret, 'git-upload-pack', tokens.bob.write)).status, 404);
      r = await git.run(['ls-remote', url(lane.use, secret, tokens.bob.write)]);
      assert.notEqual(r.code, 0);
      assert.ok(r.stderr.includes(`remote: repository not found: ${secret.fullName}`), r.stderr);
      assert.match(r.stderr, /fatal: repository '.*' not found/);

      // A read token pushing: 403, with the reason git prints as remote: lines; nothing lands.
      const refused = await infoRefs(secret, 'git-receive-pack', tokens.alice.read);
      assert.equal(refused.status, 403);
      const reason = (await refused.text()).trim();
      assert.match(reason, new RegExp(`has read access to ${secret.fullName}; write access is required`));
      r = await git.run(['push', url(lane.use, secret, tokens.alice.read), 'main:refs/heads/by-reader'], { cwd: src });
      assert.notEqual(r.code, 0);
      assert.ok(r.stderr.includes(`remote: ${reason}`), r.stderr);
      assert.match(r.stderr, /403/);
      assert.equal((await git.ok(['ls-remote', '--heads', url(lane.create, secret, tokens.alice.read)])).trim(), `${main}\trefs/heads/main`);

      // A public repository: anyone clones it.
      const dest = path.join(scratch, `anonymous-${lane.shard}`);
      await git.ok(['clone', '-q', url(lane.use, open), dest]);
      assert.equal(await git.revParse(dest, 'HEAD'), main);
    });
  }

  test('a frontend stopped in the middle of a clone and replaced loses nothing', async () => {
    const lane = LANES[0]!;
    const repo = await createRepo(lane, 'big');
    // 12 MiB that does not compress: more than the kernel buffers between the frontend and
    // the (slow, then held) client, so the frontend is still sending when it is stopped.
    const src = await work('big');
    await git.ok(['init', '-q', '-b', 'main', src]);
    for (let i = 0; i < 12; i++) await writeRandomFile(path.join(src, `blob-${i}.bin`), 1024 * 1024, 80 + i);
    await git.ok(['add', '-A'], { cwd: src });
    await git.ok(['commit', '-q', '-m', 'big'], { cwd: src });
    await git.ok(['push', '-q', url(lane.create, repo, tokens.alice.write), 'main'], { cwd: src });
    const head = await git.revParse(src, 'main');

    const victim = frontends[lane.use]!;
    const link = await startSlowLink(victim.url, { bytesPerSecond: 2 * 1024 * 1024, holdAfter: 1024 * 1024 });
    try {
      const viaLink = new URL(`/${repo.fullName}.git`, link.origin);
      viaLink.username = 'git';
      viaLink.password = tokens.alice.read;
      const during = path.join(scratch, 'clone-during-stop');
      const clone = git.run(['clone', '-q', viaLink.toString(), during], { timeoutMs: 180_000 });
      const outcome = await Promise.race([link.held.then(() => 'held'), clone.then((r) => `clone ended first (exit ${r.code}): ${r.stderr}`)]);
      assert.equal(outcome, 'held', 'the clone is under way when the frontend is stopped');

      /** The victim's log lines (pino JSON) that `match`, as their indexes. */
      const logged = (match: (e: Record<string, unknown>) => boolean) =>
        victim.logs.flatMap((line, i) => {
          try {
            return match(JSON.parse(line) as Record<string, unknown>) ? [i] : [];
          } catch {
            return [];
          }
        });
      // Protocol v2 asks for the refs with a POST to git-upload-pack too: the fetch is the next one.
      const uploadPacks = () => logged((e) => e['msg'] === 'request completed' && e['method'] === 'POST' && String(e['url']).endsWith('/git-upload-pack'));
      const finishedBefore = uploadPacks().length;
      const exited = victim.stop();
      let stopping: number | undefined;
      for (const deadline = Date.now() + 30_000; (stopping = logged((e) => e['msg'] === 'shutting down')[0]) === undefined; await sleep(20)) {
        if (Date.now() > deadline) assert.fail('the frontend never started shutting down');
      }
      link.release();
      const [r, code] = await Promise.all([clone, exited]);
      // What happens: the graceful shutdown stops accepting requests but lets the one in
      // flight finish (within shutdownTimeoutSeconds), so the clone completes and the frontend
      // exits 0 after it.
      assert.equal(r.code, 0, r.stderr);
      assert.equal(code, 0);
      const fetches = uploadPacks();
      assert.equal(fetches.length, finishedBefore + 1, 'one more fetch completed');
      assert.ok(fetches.at(-1)! > stopping, 'the pack was still being sent when the frontend was told to stop');
      assert.equal(await git.revParse(during, 'HEAD'), head);
      await fsckClean(during);
    } finally {
      await link.close();
    }

    // A new frontend in its place (the same data directory, a new port) serves the next clone.
    frontends[lane.use] = await startFrontend(victim.dataDir);
    const next = path.join(scratch, 'clone-after-restart');
    await git.ok(['clone', '-q', url(lane.use, repo, tokens.alice.read), next]);
    assert.equal(await git.revParse(next, 'HEAD'), head);
    for (let i = 0; i < 12; i++) assert.equal(await sha256File(path.join(next, `blob-${i}.bin`)), await sha256File(path.join(src, `blob-${i}.bin`)));
    // And nothing was lost on the storage node.
    assert.equal(await onDisk(repo, 'refs/heads/main'), head);
    assert.equal(await git.ok(['--git-dir', repo.dir, 'fsck', '--no-progress']), '');
  });

  test('cluster status --json: both shards with a live writer and one standby each; exit 0', async () => {
    for (const lane of LANES) await createRepo(lane, 'counted');
    const status = async () => {
      const r = await run(process.execPath, [BIN, 'cluster', 'status', '--json', '--data', adminData], { env: { ...process.env, ...shared, GITSTRATUM_ROLE: 'frontend' } });
      return { code: r.code, stderr: r.stderr, json: r.code === 0 || r.code === 1 ? (JSON.parse(r.stdout) as ClusterStatus) : undefined };
    };
    // A standby registers on its first try for the lease, one lease period at most after its start.
    let s = await status();
    for (const deadline = Date.now() + 60_000; s.json?.shards.some((x) => x.name !== 'local' && x.standbys.length === 0) && Date.now() < deadline; await sleep(250)) s = await status();
    assert.equal(s.code, 0, s.stderr);
    const json = s.json!;
    assert.equal(json.healthy, true);
    assert.deepEqual(json.withoutWriter, []);
    const bare = (u: string) => u.replace(/\/$/, '');
    for (const [name, shard] of shards) {
      const row = json.shards.find((x) => x.name === name)!;
      assert.equal(row.state, 'active');
      assert.ok(row.repositories >= 1, `${name} holds repositories`);
      assert.equal(row.writer?.url, bare(shard.writer.url));
      assert.equal(row.writer?.live, true);
      assert.deepEqual(row.standbys.map((x) => [x.url, x.gone]), [[bare(shard.standby.url), false]]);
    }
    const local = json.shards.find((x) => x.name === 'local')!;
    assert.deepEqual([local.state, local.repositories, local.writer], ['drained', 0, null]);
  });

  test("the storage nodes' port serves no client: git routes do not exist there, node routes need the signature", async () => {
    for (const s of shards.values()) {
      for (const node of [s.writer, s.standby]) {
        const clone = await fetch(new URL('/alice/one/clones.git/info/refs?service=git-upload-pack', node.url));
        assert.equal(clone.status, 404);
        const unsigned = await fetch(new URL('/_node/v1/repos/01JAAAAAAAAAAAAAAAAAAAAAAA', node.url), { method: 'DELETE' });
        assert.equal(unsigned.status, 401);
        assert.equal(((await unsigned.json()) as { error: { code: string } }).error.code, 'cluster_signature_required');
      }
    }
  });

  test('a role other than all is refused without PostgreSQL, with a message that says why', async () => {
    const r = await run(process.execPath, [BIN, 'serve', '--data', await work('role'), '--port', '0', '--role', 'frontend', '--cluster-secret', CLUSTER_SECRET]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /frontend needs PostgreSQL \(databaseUrl\)/);
  });
});
