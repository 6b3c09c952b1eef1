/**
 * Issue 9, availability: one address sending 200 requests a second (anonymous, or spraying
 * random tokens) is refused with 429 once its budget is spent, while the server stays up,
 * its health endpoint keeps answering, and another user — even one behind the same address —
 * clones as usual. On code without client budgets every one of those requests is served.
 *
 * The attacker's address comes from X-Forwarded-For (the server trusts the proxy), so the
 * well-behaved clients on 127.0.0.1 are a different address.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, seed, tempDir } from '../e2e/harness.js';
import { metricValue } from '../support/metrics.js';

const ATTACKER = '203.0.113.66';
/** A second attacker address, spraying random tokens. */
const SPRAYER = '203.0.113.67';

/** `count` requests at about `perSecond`, at most 32 in flight; the statuses, in order. */
async function flood(count: number, perSecond: number, send: (i: number) => Promise<number>): Promise<number[]> {
  const statuses: number[] = new Array(count);
  const inFlight = new Set<Promise<void>>();
  for (let i = 0; i < count; i++) {
    while (inFlight.size >= 32) await Promise.race(inFlight);
    const p: Promise<void> = send(i).then(
      (status) => void (statuses[i] = status),
      () => void (statuses[i] = 0),
    );
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    await sleep(1000 / perSecond);
  }
  await Promise.all(inFlight);
  return statuses;
}

function basic(token: string): string {
  return `Basic ${Buffer.from(`git:${token}`).toString('base64')}`;
}

test('200 requests/s from one address get 429; the server stays up and another user is unaffected', async (t) => {
  const server = await Server.start({
    args: ['--trust-proxy', 'true', '--rate-limit-git-requests', '60', '--rate-limit-auth-failures', '20', '--rate-limit-window-seconds', '600'],
  });
  t.after(() => server.cleanup());
  const tokens = await seed(server);
  await server.cliOk(['repo', 'create', 'alice/main/target']);
  const git = await Git.create();
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2 });
  await git.ok(['push', '-q', server.repoUrl('alice/main/target.git', tokens.alice.write), 'main'], { cwd: work });
  const refs = new URL('/alice/main/target.git/info/refs?service=git-upload-pack', server.url);

  // Health is polled all along; every answer must be 200.
  let polling = true;
  const health: number[] = [];
  const poller = (async () => {
    while (polling) {
      health.push(await fetch(new URL('/healthz', server.url)).then((r) => r.status, () => 0));
      await sleep(50);
    }
  })();

  // Anonymous: the address's git budget. Random tokens: the address's auth-failure budget.
  const anonymous = await flood(200, 200, () => fetch(refs, { headers: { 'x-forwarded-for': ATTACKER } }).then(async (r) => (await r.arrayBuffer(), r.status)));
  const sprayed = await flood(200, 200, (i) =>
    fetch(refs, { headers: { 'x-forwarded-for': SPRAYER, authorization: basic(`gst_guess${i}`) } }).then(async (r) => (await r.arrayBuffer(), r.status)),
  );

  // Meanwhile and after: bob clones (another user, another address), and so does alice from
  // the attacker's own address, sending her token up front as a CI job would.
  const bobClone = git.run(['clone', '-q', server.repoUrl('alice/main/target.git', tokens.bob.write), path.join(await tempDir(), 'bob')]);
  const alice = await git.run([
    '-c', `http.extraHeader=X-Forwarded-For: ${ATTACKER}`,
    '-c', `http.extraHeader=Authorization: ${basic(tokens.alice.read)}`,
    'clone', '-q', server.repoUrl('alice/main/target.git'), path.join(await tempDir(), 'alice'),
  ]);
  polling = false;
  await poller;

  assert.ok(anonymous.every((s) => s === 200 || s === 429), `anonymous statuses: ${[...new Set(anonymous)]}`);
  assert.ok(anonymous.filter((s) => s === 200).length <= 60, 'no more than the budget was served');
  assert.ok(anonymous.filter((s) => s === 429).length >= 140, 'the rest was refused');
  assert.ok(sprayed.every((s) => s === 401 || s === 429), `sprayed statuses: ${[...new Set(sprayed)]}`);
  assert.ok(sprayed.filter((s) => s === 401).length <= 20, 'at most the auth-failure budget of tokens was even looked up');
  assert.ok(sprayed.filter((s) => s === 429).length >= 180, 'the rest was refused');
  assert.equal(server.process.exitCode, null, 'the server is still running');
  assert.ok(health.length > 0 && health.every((s) => s === 200), `health answers: ${[...new Set(health)]}`);
  assert.equal((await bobClone).code, 0, (await bobClone).stderr);
  assert.equal(alice.code, 0, alice.stderr);
  assert.ok((await metricValue(server.url, 'gitstratum_rate_limited_total', { limit: 'git' })) >= 140);
  assert.ok((await metricValue(server.url, 'gitstratum_rate_limited_total', { limit: 'auth_failures' })) >= 1);
});
