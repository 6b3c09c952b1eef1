/**
 * Client budgets as the real clients meet them (src/http/rate-limit.ts): git prints the 429
 * message and fails; git-lfs waits for Retry-After and retries until the push is through; two
 * servers given one Redis spend one budget. Each test starts its own servers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Git, Server, seedAlice, tempDir } from './harness.js';
import { lfsGit } from './lfs-fixture.js';
import { metricValue } from '../support/metrics.js';

/** Anonymous clones of `url` until one fails (at most `max`); returns the failed run. */
async function cloneUntilRefused(git: Git, url: string, max: number) {
  for (let i = 0; i < max; i++) {
    const r = await git.run(['clone', '-q', url, path.join(await tempDir(), `clone-${i}`)]);
    if (r.code !== 0) return { ...r, served: i };
  }
  throw new Error(`${max} clones were all served`);
}

async function publicRepoWithCommits(server: Server, name: string): Promise<Git> {
  const token = await seedAlice(server);
  await server.createRepo(`alice/main/${name}`);
  const git = await Git.create();
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2 });
  await git.ok(['push', '-q', server.repoUrl(`alice/main/${name}.git`, token), 'main'], { cwd: work });
  return git;
}

test('a git clone over the budget of its address fails and prints the 429 message', async (t) => {
  const server = await Server.start({ args: ['--rate-limit-git-requests', '8', '--rate-limit-window-seconds', '600'] });
  t.after(() => server.cleanup());
  const git = await publicRepoWithCommits(server, 'hello');
  const url = server.repoUrl('alice/main/hello.git');

  const refused = await cloneUntilRefused(git, url, 8);
  assert.ok(refused.served >= 1, 'clones within the budget are served');
  // Spent now for the rest of the window: the next clone is refused at its first request,
  // whose text/plain body git shows as `remote:` lines.
  const r = await git.run(['clone', '-q', url, path.join(await tempDir(), 'refused')]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /remote: rate limit exceeded: 8 git requests per 600 s for address 127\.0\.0\.1; retry in \d+ s/, r.stderr);
  assert.match(r.stderr, /429/, r.stderr);
  assert.ok((await metricValue(server.url, 'gitstratum_rate_limited_total', { limit: 'git' })) >= 2);
});

test('git-lfs retries a push refused with 429 after Retry-After, and it goes through', async (t) => {
  // 3 LFS requests per 2 s: a push of 6 objects (batch, 6 uploads, 6 verifies) must wait.
  const server = await Server.start({ args: ['--rate-limit-lfs-requests', '3', '--rate-limit-window-seconds', '2'] });
  t.after(() => server.cleanup());
  const token = await seedAlice(server);
  await server.createRepo('alice/main/assets');
  const git = await lfsGit();
  const work = path.join(await tempDir(), 'work');
  await git.ok(['init', '-q', '-b', 'main', work]);
  await git.ok(['lfs', 'track', '*.bin'], { cwd: work });
  for (let i = 0; i < 6; i++) await writeFile(path.join(work, `f${i}.bin`), randomBytes(2048));
  await git.ok(['add', '-A'], { cwd: work });
  await git.ok(['commit', '-q', '-m', 'assets'], { cwd: work });

  const r = await git.run(['push', server.repoUrl('alice/main/assets.git', token), 'main'], { cwd: work, env: { GIT_TRACE: '1' } });
  assert.equal(r.code, 0, r.stderr);
  // git-lfs saw the refusal, with its message, and came back.
  assert.match(r.stderr, /HTTP: 429/);
  assert.match(r.stderr, /rate limit exceeded: 3 git lfs requests per 2 s/);
  assert.ok((await metricValue(server.url, 'gitstratum_rate_limited_total', { limit: 'lfs' })) >= 1);

  const clone = path.join(await tempDir(), 'clone');
  await git.ok(['clone', '-q', server.repoUrl('alice/main/assets.git', token), clone]);
  assert.equal((await git.ok(['lfs', 'ls-files', '-n'], { cwd: clone })).trim().split('\n').length, 6);
});

test('two servers given the same Redis spend one budget', async (t) => {
  const redisUrl = process.env['GITSTRATUM_TEST_REDIS_URL'];
  if (!redisUrl) {
    if (process.env['CI']) throw new Error('CI requires Redis: GITSTRATUM_TEST_REDIS_URL is not set');
    t.skip('Redis not configured (GITSTRATUM_TEST_REDIS_URL unset; `npm test` starts one)');
    return;
  }
  // A prefix of its own: other tests' budgets in the same Redis are not this test's.
  const args = [
    '--redis-url', redisUrl,
    '--redis-key-prefix', `e2e-${process.pid}-${Date.now()}:`,
    '--rate-limit-git-requests', '6',
    '--rate-limit-api-requests', '4',
    '--rate-limit-window-seconds', '600',
  ];
  const [a, b] = await Promise.all([Server.start({ args }), Server.start({ args })]);
  t.after(() => Promise.all([a.cleanup(), b.cleanup()]));

  const statuses: number[] = [];
  for (const server of [a, b, a, b, a, b]) statuses.push((await fetch(new URL('/api/v1/openapi.json', server.url))).status);
  assert.deepEqual(statuses, [200, 200, 200, 200, 429, 429]);

  // Git: A's clones spend the address's budget, so B refuses a client it has never served.
  const git = await publicRepoWithCommits(a, 'shared');
  await cloneUntilRefused(git, a.repoUrl('alice/main/shared.git'), 6);
  const r = await git.run(['ls-remote', b.repoUrl('alice/main/shared.git')]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /remote: rate limit exceeded: 6 git requests per 600 s for address 127\.0\.0\.1/, r.stderr);
});
