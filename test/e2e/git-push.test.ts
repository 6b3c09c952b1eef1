/**
 * Pushing with the real git client: branches, tags, deletes, force and atomic pushes, push
 * options, large (chunked) and gzip-encoded request bodies (answered only once they are in),
 * fsck refusals, aborted and concurrent pushes, the push size limit and the audit log. One
 * server for the file (plus one with a small push limit); every scenario creates and pushes
 * its own repository.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { Git, Server, gitEnv, seedAlice, tempDir } from './harness.js';

const ZERO = '0'.repeat(40);

let server: Server;
let git: Git;
let token: string;

before(async () => {
  server = await Server.start();
  token = await seedAlice(server);
  git = await Git.create();
});

after(() => server.cleanup());

interface Fixture {
  name: string;
  work: string;
  /** URL with a write token. */
  url: string;
}

/** A repository on `on` holding `commits` generated commits on main, pushed from `work`. */
async function fixture(name: string, opts: { seed: number; commits?: number; on?: Server; push?: boolean }): Promise<Fixture> {
  const on = opts.on ?? server;
  await on.createRepo(`alice/main/${name}`);
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: opts.commits ?? 2, seed: opts.seed });
  const url = on.repoUrl(`alice/main/${name}.git`, on === server ? token : await on.token('alice', 'write'));
  if (opts.push !== false) await git.ok(['push', '-q', url, 'main'], { cwd: work });
  return { name, work, url };
}

/** The refs the server advertises, as `refname → oid` (peeled tags included as `^{}`). */
async function remoteRefs(url: string): Promise<Map<string, string>> {
  const out = await git.ok(['ls-remote', url]);
  return new Map(
    out
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t').reverse() as [string, string]),
  );
}

/** Where the server keeps a repository on disk (`repo list --json` prints it). */
async function diskPath(on: Server, name: string): Promise<string> {
  const list = JSON.parse(await on.cliOk(['repo', 'list', '--json'])) as { name: string; path: string }[];
  const repo = list.find((r) => r.name === name);
  assert.ok(repo, `repository ${name} is listed`);
  return repo.path;
}

async function assertFsckClean(repoPath: string): Promise<void> {
  const r = await git.run(['--git-dir', repoPath, 'fsck', '--strict', '--no-progress', '--no-dangling']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout + r.stderr, '');
}

/**
 * receive-pack writes an incoming pack to objects/tmp_objdir-incoming-* and removes it when
 * the push fails or lands; one left behind is disk space leaked for good. git may still be
 * finishing when the client has its answer, hence the wait.
 */
async function assertNoQuarantine(repoPath: string): Promise<void> {
  let left: string[] = [];
  for (let i = 0; i < 50; i++) {
    left = (await readdir(path.join(repoPath, 'objects'))).filter((n) => n.startsWith('tmp_objdir-incoming'));
    if (left.length === 0) return;
    await sleep(100);
  }
  assert.deepEqual(left, [], 'quarantine directories left behind');
}

/** Deterministic incompressible bytes (xorshift32), so packs are as large as the files. */
function noise(seed: number, bytes: number): Buffer {
  const words = new Uint32Array(Math.ceil(bytes / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return Buffer.from(words.buffer, 0, bytes);
}

/** Adds `files` files of `size` random bytes under big/ and commits them. */
async function bigCommit(work: string, opts: { seed: number; files: number; size: number }): Promise<string> {
  // Random bytes don't compress; storing them saves zlib's time on both ends.
  await git.ok(['config', 'core.compression', '0'], { cwd: work });
  await mkdir(path.join(work, 'big'), { recursive: true });
  for (let i = 0; i < opts.files; i++) {
    await writeFile(path.join(work, 'big', `blob-${opts.seed}-${i}.bin`), noise(opts.seed * 1000 + i, opts.size));
  }
  await git.ok(['add', 'big'], { cwd: work });
  await git.ok(['commit', '-q', '-m', `big ${opts.seed}`], { cwd: work });
  return git.revParse(work, 'HEAD');
}

/** Writes a commit whose author line has no closing `>`, which fsck calls badEmail. */
async function corruptCommit(work: string): Promise<string> {
  const head = await git.revParse(work, 'HEAD');
  const tree = await git.revParse(work, 'HEAD^{tree}');
  const commit = `tree ${tree}\nparent ${head}\nauthor Broken Author <broken.example.com 1700000000 +0000\ncommitter C <c@example.com> 1700000000 +0000\n\nmalformed author line\n`;
  return (await git.ok(['hash-object', '-t', 'commit', '--literally', '-w', '--stdin'], { cwd: work, input: commit })).trim();
}

/** A receive-pack request body built by hand: ref update commands, a flush, then the pack. */
async function receivePackBody(work: string, commands: string[], packRevs: string, caps = 'report-status'): Promise<Buffer> {
  const pkt = (s: string) => Buffer.from((s.length + 4).toString(16).padStart(4, '0') + s);
  const lines = commands.map((c, i) => pkt(i === 0 ? `${c}\0${caps}\n` : `${c}\n`));
  const pack = await packOf(work, packRevs);
  return Buffer.concat([...lines, Buffer.from('0000'), pack]);
}

async function packOf(work: string, revs: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', ['pack-objects', '--stdout', '--revs', '-q'], { cwd: work, env: gitEnv(git.home) });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`pack-objects exited ${code}`))));
    child.stdin.end(revs);
  });
}

function postReceivePack(url: string, body: Buffer, headers: Record<string, string> = {}): Promise<Response> {
  const u = new URL(url);
  const auth = Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64');
  u.username = '';
  u.password = '';
  return fetch(`${u.toString()}/git-receive-pack`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-git-receive-pack-request', Authorization: `Basic ${auth}`, ...headers },
    body: new Uint8Array(body),
  });
}

test('push a new branch', async () => {
  const f = await fixture('new-branch', { seed: 101 });
  await git.ok(['switch', '-q', '-c', 'topic'], { cwd: f.work });
  await git.commits(f.work, 1, { seed: 102, prefix: 'topic' });
  // A client configured for v2 still pushes (push has no v2; the server answers in v0).
  const r = await git.run(['-c', 'protocol.version=2', 'push', f.url, 'topic'], { cwd: f.work });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /\* \[new branch\]\s+topic -> topic/);
  const refs = await remoteRefs(f.url);
  assert.equal(refs.get('refs/heads/topic'), await git.revParse(f.work, 'topic'));
  assert.equal(refs.get('refs/heads/main'), await git.revParse(f.work, 'main'));
});

test('push from a shallow clone', async () => {
  const f = await fixture('shallow-push', { seed: 106, commits: 4 });
  const dest = path.join(await tempDir(), 'shallow');
  await git.ok(['clone', '-q', '--depth', '1', f.url, dest]);
  await git.commits(dest, 2, { seed: 107, prefix: 'shallow' });
  const r = await git.run(['push', 'origin', 'main'], { cwd: dest });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), await git.revParse(dest, 'main'));

  // The server has the whole history, so a full clone is complete and connected.
  const full = path.join(await tempDir(), 'full');
  await git.ok(['clone', '-q', f.url, full]);
  assert.equal((await git.ok(['rev-list', '--count', 'HEAD'], { cwd: full })).trim(), '6');
  await assertFsckClean(await diskPath(server, f.name));
});

test('push an annotated tag', async () => {
  const f = await fixture('annotated-tag', { seed: 111 });
  await git.ok(['tag', '-a', 'v1.0', '-m', 'first release', 'main~1'], { cwd: f.work });
  const r = await git.run(['push', f.url, 'v1.0'], { cwd: f.work });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /\* \[new tag\]\s+v1\.0 -> v1\.0/);
  const refs = await remoteRefs(f.url);
  assert.equal(refs.get('refs/tags/v1.0'), await git.revParse(f.work, 'v1.0'));
  assert.equal(refs.get('refs/tags/v1.0^{}'), await git.revParse(f.work, 'main~1'));

  const dest = path.join(await tempDir(), 'clone');
  await git.ok(['clone', '-q', f.url, dest]);
  assert.equal((await git.ok(['cat-file', '-t', 'v1.0'], { cwd: dest })).trim(), 'tag');
  assert.match(await git.ok(['cat-file', 'tag', 'v1.0'], { cwd: dest }), /first release/);
});

test('delete a branch', async () => {
  const f = await fixture('delete-branch', { seed: 121 });
  await git.ok(['push', '-q', f.url, 'main:refs/heads/doomed'], { cwd: f.work });
  assert.ok((await remoteRefs(f.url)).has('refs/heads/doomed'));
  const r = await git.run(['push', f.url, '--delete', 'doomed'], { cwd: f.work });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /- \[deleted\]\s+doomed/);
  const refs = await remoteRefs(f.url);
  assert.ok(!refs.has('refs/heads/doomed'));
  assert.equal(refs.get('refs/heads/main'), await git.revParse(f.work, 'main'));
});

test('a non-fast-forward push is rejected without force and lands with + or --force', async () => {
  const f = await fixture('force-push', { seed: 131 });
  const original = await git.revParse(f.work, 'main');
  await git.ok(['commit', '-q', '--amend', '-m', 'rewritten'], { cwd: f.work });
  const rewritten = await git.revParse(f.work, 'main');

  const rejected = await git.run(['push', f.url, 'main'], { cwd: f.work });
  assert.equal(rejected.code, 1);
  assert.match(rejected.stderr, /! \[rejected\]\s+main -> main \(non-fast-forward\)/);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), original);

  const plus = await git.run(['push', f.url, '+main'], { cwd: f.work });
  assert.equal(plus.code, 0, plus.stderr);
  assert.match(plus.stderr, /\+ \S+\.\.\.\S+ main -> main \(forced update\)/);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), rewritten);

  await git.ok(['commit', '-q', '--amend', '-m', 'rewritten again'], { cwd: f.work });
  const forced = await git.run(['push', '--force', f.url, 'main'], { cwd: f.work });
  assert.equal(forced.code, 0, forced.stderr);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), await git.revParse(f.work, 'main'));
});

test('an --atomic push with one rejected ref applies nothing', async () => {
  const f = await fixture('atomic', { seed: 141 });
  await git.ok(['push', '-q', f.url, 'main:refs/heads/other'], { cwd: f.work });
  const before = await remoteRefs(f.url);

  // main fast-forwards; other is rewound to a commit that is not a descendant.
  await git.commits(f.work, 1, { seed: 142 });
  const r = await git.run(['push', '--atomic', f.url, 'main', 'main~2:refs/heads/other'], { cwd: f.work });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /! \[rejected\]\s+main~2 -> other \(non-fast-forward\)/);
  assert.match(r.stderr, /! \[rejected\]\s+main -> main \(atomic push failed\)/);
  assert.deepEqual(await remoteRefs(f.url), before);

  // The same on the server's side: a request whose second command names a stale old value
  // is refused as a whole by receive-pack's transaction.
  const next = await git.revParse(f.work, 'main');
  const body = await receivePackBody(
    f.work,
    [`${before.get('refs/heads/main')} ${next} refs/heads/main`, `${next} ${next} refs/heads/other`],
    `${next}\n^${before.get('refs/heads/main')}\n`,
    'report-status atomic',
  );
  const res = await postReceivePack(f.url, body);
  assert.equal(res.status, 200);
  const report = await res.text();
  assert.match(report, /ng refs\/heads\/other/);
  assert.match(report, /ng refs\/heads\/main/);
  assert.deepEqual(await remoteRefs(f.url), before);
});

test('push options are accepted', async () => {
  const f = await fixture('push-options', { seed: 151 });
  await git.commits(f.work, 1, { seed: 152 });
  const r = await git.run(['push', '-o', 'ci.skip', '-o', 'merge_request.title=a title with spaces', f.url, 'main'], { cwd: f.work });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), await git.revParse(f.work, 'main'));

  // Options with a delete-only push (no pack follows the options).
  await git.ok(['push', '-q', f.url, 'main:refs/heads/tmp'], { cwd: f.work });
  await git.ok(['push', '-q', '-o', 'ci.skip', f.url, '--delete', 'tmp'], { cwd: f.work });
  assert.ok(!(await remoteRefs(f.url)).has('refs/heads/tmp'));
});

test('a 20 MB push sent in chunks lands', async () => {
  const f = await fixture('large-push', { seed: 161 });
  const head = await bigCommit(f.work, { seed: 161, files: 10, size: 2 * 1024 * 1024 });
  // A small postBuffer makes git stream the pack with chunked transfer encoding.
  const r = await git.run(['-c', 'http.postBuffer=65536', 'push', f.url, 'main'], {
    cwd: f.work,
    env: { GIT_TRACE_CURL: '1', GIT_TRACE_CURL_NO_DATA: '1' },
  });
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  assert.match(r.stderr, /Send header: Transfer-Encoding: chunked/);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), head);

  const dest = path.join(await tempDir(), 'clone');
  await git.ok(['clone', '-q', '--no-checkout', f.url, dest]);
  assert.equal(
    (await git.ok(['rev-parse', 'HEAD:big/blob-161-9.bin'], { cwd: dest })).trim(),
    (await git.ok(['rev-parse', 'HEAD:big/blob-161-9.bin'], { cwd: f.work })).trim(),
  );
});

test('a gzip-encoded receive-pack request is decoded; a corrupt one is refused', async () => {
  const f = await fixture('gzip-push', { seed: 171 });
  const base = await git.revParse(f.work, 'main');
  await git.commits(f.work, 1, { seed: 172 });
  const next = await git.revParse(f.work, 'main');
  const body = await receivePackBody(f.work, [`${ZERO} ${next} refs/heads/gz`], `${next}\n^${base}\n`);

  const res = await postReceivePack(f.url, gzipSync(body), { 'Content-Encoding': 'gzip' });
  assert.equal(res.status, 200);
  const report = await res.text();
  assert.match(report, /unpack ok/);
  assert.match(report, /ok refs\/heads\/gz/);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/gz'), next);

  const bad = await postReceivePack(f.url, Buffer.concat([gzipSync(body).subarray(0, 40), Buffer.from('not gzip at all')]), {
    'Content-Encoding': 'gzip',
  });
  assert.equal(bad.status, 400);
  assert.match(await bad.text(), /gzip/);
  assert.deepEqual([...(await remoteRefs(f.url)).keys()].sort(), ['HEAD', 'refs/heads/gz', 'refs/heads/main']);
  await assertNoQuarantine(await diskPath(server, f.name));
});

test('a corrupt commit is refused by fsck with remote: lines and changes nothing', async () => {
  const f = await fixture('fsck', { seed: 181 });
  const head = await git.revParse(f.work, 'main');
  const bad = await corruptCommit(f.work);

  const r = await git.run(['push', f.url, `${bad}:refs/heads/main`], { cwd: f.work });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`remote: error: object ${bad}: \\w+: .*`));
  assert.match(r.stderr, /\[remote rejected\] .*main \(unpacker error\)/);
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), head);
  await assertFsckClean(await diskPath(server, f.name));
  await assertNoQuarantine(await diskPath(server, f.name));
});

test('a push aborted mid-stream changes nothing and the next push works', async () => {
  const f = await fixture('aborted-push', { seed: 191 });
  const before = await remoteRefs(f.url);
  await bigCommit(f.work, { seed: 191, files: 10, size: 1024 * 1024 });

  // The client (git and its helpers, one process group) dies once part of the pack is out.
  const child = spawn('git', ['-c', 'http.postBuffer=65536', 'push', '--progress', f.url, 'main'], {
    cwd: f.work,
    env: gitEnv(git.home),
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, signal) => resolve(signal)));
  let stderr = '';
  let killed = false;
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    const pct = [...stderr.matchAll(/Writing objects:\s+(\d+)%/g)].pop()?.[1];
    if (!killed && pct !== undefined && Number(pct) >= 10) {
      killed = true;
      process.kill(-child.pid!, 'SIGKILL');
    }
  });
  await exited;
  assert.ok(killed, `git was killed mid-push (it finished first:\n${stderr.slice(-500)})`);

  const repoPath = await diskPath(server, f.name);
  // The server notices the disconnect, stops receive-pack, and its quarantine goes away.
  await assertNoQuarantine(repoPath);
  assert.deepEqual(await remoteRefs(f.url), before);
  await assertFsckClean(repoPath);

  const r = await git.run(['push', f.url, 'main'], { cwd: f.work });
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), await git.revParse(f.work, 'main'));
  await assertFsckClean(repoPath);
});

test('ten concurrent pushes to one branch: only fast-forwards land, none is lost', async () => {
  const f = await fixture('concurrent', { seed: 201 });
  const base = await git.revParse(f.work, 'main');
  const clones = await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const dir = path.join(await tempDir(), `clone-${i}`);
      await git.ok(['clone', '-q', f.url, dir]);
      await writeFile(path.join(dir, `pusher-${i}.txt`), `pusher ${i}\n`);
      await git.ok(['add', '.'], { cwd: dir });
      await git.ok(['commit', '-q', '-m', `pusher ${i}`], { cwd: dir });
      return dir;
    }),
  );

  const first = await Promise.all(clones.map((dir) => git.run(['push', 'origin', 'main'], { cwd: dir })));
  const winners = first.flatMap((r, i) => (r.code === 0 ? [i] : []));
  assert.equal(winners.length, 1, first.map((r) => r.stderr).join('\n'));
  for (const [i, r] of first.entries()) {
    if (i !== winners[0]) assert.match(r.stderr, /\[(remote )?rejected\]/);
  }
  const winner = clones[winners[0]!]!;
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), await git.revParse(winner, 'main'));

  // Everyone else rebases and retries until their push is acknowledged.
  const acknowledged = new Map<number, string>([[winners[0]!, await git.revParse(winner, 'main')]]);
  let pushes = 1;
  await Promise.all(
    clones.map(async (dir, i) => {
      for (let attempt = 0; !acknowledged.has(i); attempt++) {
        assert.ok(attempt < 20, `pusher ${i} never got its push in`);
        await git.ok(['pull', '-q', '--rebase', 'origin', 'main'], { cwd: dir });
        const r = await git.run(['push', 'origin', 'main'], { cwd: dir });
        if (r.code === 0) {
          pushes++;
          acknowledged.set(i, await git.revParse(dir, 'main'));
        } else {
          assert.match(r.stderr, /\[(remote )?rejected\]/);
        }
      }
    }),
  );

  const final = await remoteRefs(f.url);
  const dest = path.join(await tempDir(), 'final');
  await git.ok(['clone', '-q', f.url, dest]);
  const history = new Set((await git.ok(['rev-list', 'HEAD'], { cwd: dest })).split('\n').filter(Boolean));
  assert.ok(history.has(base));
  for (const [i, oid] of acknowledged) assert.ok(history.has(oid), `pusher ${i}'s acknowledged ${oid} is in the history`);
  assert.equal(history.size, 2 + 10);
  assert.ok([...acknowledged.values()].includes(final.get('refs/heads/main')!), 'main is at an acknowledged commit');
  await assertFsckClean(await diskPath(server, f.name));

  // One audit row per acknowledged push (plus the fixture's first push), none for rejected ones.
  const rows = auditRows(server, `alice/main/${f.name}`);
  assert.equal(rows.length, 1 + pushes);
});

test('a push over --max-push-bytes gets 413 and changes nothing', async (t) => {
  const small = await Server.start({ args: ['--max-push-bytes', '100000'] });
  t.after(() => small.cleanup());
  await small.createUser('alice');
  await small.createSpace('alice/main');
  const f = await fixture('limited', { seed: 211, on: small });
  const before = await remoteRefs(f.url);
  await bigCommit(f.work, { seed: 211, files: 1, size: 300_000 });

  // Content-Length known up front (body under postBuffer) and chunked (body over it).
  for (const postBuffer of [1024 * 1024, 16 * 1024]) {
    const r = await git.run(['-c', `http.postBuffer=${postBuffer}`, 'push', f.url, 'main'], { cwd: f.work });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /413/, `postBuffer ${postBuffer}: ${r.stderr}`);
    assert.deepEqual(await remoteRefs(f.url), before);
    await assertNoQuarantine(await diskPath(small, f.name));
  }

  // Under the limit, pushes still work.
  await git.ok(['reset', '-q', '--hard', 'HEAD~1'], { cwd: f.work });
  await git.commits(f.work, 1, { seed: 212 });
  await git.ok(['push', '-q', f.url, 'main'], { cwd: f.work });
  assert.equal((await remoteRefs(f.url)).get('refs/heads/main'), await git.revParse(f.work, 'main'));
  await assertFsckClean(await diskPath(small, f.name));
});

interface AuditRow {
  actor_name: string;
  action: string;
  target: string;
  details: string;
  request_id: string | null;
}

function auditRows(on: Server, target: string): AuditRow[] {
  const db = new Database(path.join(on.dataDir, 'meta.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare(`select actor_name, action, target, details, request_id from audit_log where action = 'push' and target = ? order by id`)
      .all(target) as AuditRow[];
  } finally {
    db.close();
  }
}

test('the audit log records each push with its actor and ref updates', async () => {
  const f = await fixture('audited', { seed: 221 });
  const first = await git.revParse(f.work, 'main');
  await git.commits(f.work, 1, { seed: 222 });
  const second = await git.revParse(f.work, 'main');
  await git.ok(['push', '-q', f.url, 'main', 'main:refs/heads/copy'], { cwd: f.work });

  const rows = auditRows(server, `alice/main/${f.name}`);
  assert.equal(rows.length, 2);
  assert.ok(rows.every((r) => r.actor_name === 'alice' && r.request_id));
  assert.deepEqual(JSON.parse(rows[0]!.details), { refs: [{ ref: 'refs/heads/main', old: ZERO, new: first }] });
  const refs = (JSON.parse(rows[1]!.details) as { refs: { ref: string; old: string; new: string }[] }).refs;
  assert.deepEqual(
    refs.sort((a, b) => a.ref.localeCompare(b.ref)),
    [
      { ref: 'refs/heads/copy', old: ZERO, new: second },
      { ref: 'refs/heads/main', old: first, new: second },
    ],
  );

  // A push the server refuses leaves no row.
  const bad = await corruptCommit(f.work);
  assert.notEqual((await git.run(['push', f.url, `${bad}:refs/heads/main`], { cwd: f.work })).code, 0);
  assert.equal(auditRows(server, `alice/main/${f.name}`).length, 2);
});

test('a push is answered only once its whole body is in, though git writes while the pack arrives', async () => {
  // receive-pack reports fsck warnings (a tag without a tagger, as git/git's oldest tags are)
  // while the pack still streams in. Answered at once, a proxy that streams request bodies
  // (nginx, proxy_request_buffering off) stopped forwarding the rest, and pushing git/git
  // through it hung until the body idle timeout cut it. A byte-counting relay between git and
  // the server records how much of the push had gone through when the answer began. Over 100
  // objects, so git checks them as they arrive (index-pack; unpack-objects checks at the end),
  // and 40 MiB of incompressible blobs after the tag keep the body coming well after it.
  const { work, url } = await fixture('early-answer', { seed: 91, push: false });
  for (let i = 0; i < 150; i++) await writeFile(path.join(work, `small-${i}.txt`), `small file ${i}\n`);
  for (let i = 0; i < 40; i++) await writeFile(path.join(work, `blob-${i}.bin`), randomBytes(1024 * 1024));
  await git.ok(['add', '.'], { cwd: work });
  await git.ok(['commit', '-q', '-m', 'blobs'], { cwd: work });
  const head = await git.revParse(work, 'main');
  const tag = (await git.ok(['hash-object', '-t', 'tag', '-w', '--literally', '--stdin'], { cwd: work, input: `object ${head}\ntype commit\ntag v0-untagged\n\nno tagger\n` })).trim();
  await git.ok(['update-ref', 'refs/tags/v0-untagged', tag], { cwd: work });

  const upstream = new URL(server.url);
  const seen = { sent: 0, pushStartedAt: -1, sentAtAnswer: -1 };
  const relay = createServer((client) => {
    const target = connect(Number(upstream.port), upstream.hostname);
    // Watched on their way through; pipe() keeps each direction's flow control.
    client.on('data', (d: Buffer) => {
      if (seen.pushStartedAt < 0 && /^POST \S+git-receive-pack[^]*transfer-encoding: chunked/im.test(d.toString('latin1'))) seen.pushStartedAt = seen.sent;
      seen.sent += d.length;
    });
    target.on('data', () => {
      if (seen.pushStartedAt >= 0 && seen.sentAtAnswer < 0) seen.sentAtAnswer = seen.sent;
    });
    client.pipe(target).pipe(client);
    client.on('error', () => target.destroy());
    target.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  try {
    const viaRelay = new URL(url);
    viaRelay.port = String((relay.address() as AddressInfo).port);
    const pushed = await git.run(['push', viaRelay.toString(), 'main', 'refs/tags/v0-untagged'], { cwd: work });
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.match(pushed.stderr, /missingTaggerEntry/, 'git warned about the tag');
    assert.ok(seen.pushStartedAt >= 0, 'the push went through the relay as one chunked request');
    assert.ok(seen.sent - seen.pushStartedAt > 40 * 1024 * 1024, 'the pack went through the relay');
    assert.equal(seen.sentAtAnswer, seen.sent, `the answer began after ${seen.sentAtAnswer - seen.pushStartedAt} of the push's ${seen.sent - seen.pushStartedAt} bytes`);
  } finally {
    relay.close();
  }
  const refs = await remoteRefs(url);
  assert.equal(refs.get('refs/heads/main'), head);
  assert.equal(refs.get('refs/tags/v0-untagged'), tag);
});
