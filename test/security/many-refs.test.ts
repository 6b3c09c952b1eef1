/**
 * Availability with many refs (issue 9): a repository with 100,000 loose refs made every fetch
 * read every ref file synchronously (2.1–2.5 s of blocked event loop per request, /healthz up
 * to 15 s with four clients), and nothing ever packed them.
 *
 * Here a repository gets 20,000 loose refs (written straight into it, as a mirror sync or an
 * administrator would; a push of that many refs works the same way but takes far longer),
 * four clients clone it at once while /healthz is polled and another client pushes, and then
 * maintenance after a push packs the refs. The event loop itself is pinned by the unit test
 * in src/git/pack-cache/refs-version.test.ts (loop turns and the main thread's utilization during a read); this test
 * asserts what a user sees, with generous bounds and no timing thresholds.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, seedAlice, tempDir } from '../e2e/harness.js';

const REFS = 20_000;

let server: Server;
let git: Git;
let token: string;

before(async () => {
  // Maintenance as soon as a push lands, so the packing is seen without waiting.
  server = await Server.start({ args: ['--maintenance-delay-seconds', '0'] });
  token = await seedAlice(server);
  git = await Git.create();
});

after(() => server.cleanup());

/** Loose ref files under the repository's refs/ directory. */
async function looseRefs(repoPath: string): Promise<number> {
  const entries = await readdir(path.join(repoPath, 'refs'), { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile() && !e.name.endsWith('.lock')).length;
}

test(`a repository with ${REFS} loose refs: concurrent clones succeed, /healthz and a push are served meanwhile, and maintenance packs the refs`, async () => {
  const created = JSON.parse(await server.cliOk(['repo', 'create', 'alice/main/many', '--json'])) as { path: string };
  const url = server.repoUrl('alice/main/many.git', token);
  const work = await git.workTree(path.join(await tempDir(), 'w'), { commits: 2 });
  await git.ok(['push', '-q', url, 'main'], { cwd: work });
  const head = await git.revParse(work, 'HEAD');

  // fsync off for the setup only: 20,000 fsyncs take minutes on a busy disk.
  const lines = Array.from({ length: REFS }, (_, i) => `create refs/heads/many/b${i} ${head}`).join('\n');
  await git.ok(['-c', 'core.fsync=none', '--git-dir', created.path, 'update-ref', '--stdin'], { input: `${lines}\n` });
  assert.ok((await looseRefs(created.path)) >= REFS);

  let fetching = true;
  const probes: number[] = [];
  const poll = (async () => {
    while (fetching) {
      // Generous: a loaded CI machine may be slow, but a server blocked for good never answers.
      const res = await fetch(new URL('/healthz', server.url), { signal: AbortSignal.timeout(60_000) });
      probes.push(res.status);
      await sleep(50);
    }
  })();
  const clones = Array.from({ length: 4 }, async (_, i) => {
    const dir = path.join(await tempDir(), `clone-${i}`);
    await git.ok(['clone', '-q', '--bare', url, dir]);
    return Number((await git.ok(['--git-dir', dir, 'for-each-ref', '--format=x'])).split('\n').filter(Boolean).length);
  });
  const pusher = (async () => {
    await git.commits(work, 1, { seed: 7 });
    await git.ok(['push', '-q', url, 'main'], { cwd: work });
  })();
  const counts = await Promise.all(clones);
  await pusher;
  fetching = false;
  await poll;

  for (const n of counts) assert.equal(n, REFS + 1, 'every clone has every ref');
  assert.ok(probes.length > 0, '/healthz was asked while the clones ran');
  assert.ok(probes.every((s) => s === 200), `every /healthz answer was 200: ${probes.join(',')}`);

  // The push above notified maintenance (delay 0): it packs the refs.
  for (const deadline = Date.now() + 180_000; (await looseRefs(created.path)) >= 256; await sleep(200)) {
    assert.ok(Date.now() < deadline, `refs still loose: ${await looseRefs(created.path)}`);
  }
  const packed = await readFile(path.join(created.path, 'packed-refs'), 'utf8');
  assert.ok(packed.includes(`refs/heads/many/b${REFS - 1}\n`), 'the refs are in packed-refs');
  const listed = (await git.ok(['ls-remote', url])).split('\n').filter(Boolean);
  assert.equal(listed.length, REFS + 2, 'HEAD and every ref still served');
});
