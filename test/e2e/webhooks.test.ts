/**
 * Webhooks (issue 13) end to end, with real git and a real HTTP receiver started by the test:
 * one signed delivery per matching hook with the push's commits; a receiver that is down gets
 * every event once it is back, in order; redelivery; internal URLs refused; the outbox
 * survives a process killed before it delivered; a server and a worker together never deliver
 * an event twice; a CI-style receiver fetching each pushed commit sees all of a 50-push burst.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, tempDir } from './harness.js';
import { Worker } from '../support/worker.js';
import { HookReceiver, type Received } from '../support/hook-receiver.js';

/** Quick retries, and the test's receiver on 127.0.0.1 allowed. */
const HOOK_ENV = { GITSTRATUM_WEBHOOK_ALLOWED_HOSTS: '127.0.0.1', GITSTRATUM_WEBHOOK_BACKOFF_SECONDS: '1', GITSTRATUM_WEBHOOK_MAX_BACKOFF_SECONDS: '1' };

async function until<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function api(server: Server, token: string) {
  return async (method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const res = await fetch(new URL(`/api/v1${route}`, server.url), {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
}

/** alice, her space alice/main with a private repository `app`, and an admin token. */
async function seedApp(server: Server): Promise<string> {
  await server.createUser('alice');
  await server.createSpace('alice/main');
  await server.createRepo('alice/main/app', { private: true });
  return server.token('alice', 'admin');
}

const eventIds = (rs: Received[]) => rs.map((r) => r.body['delivery'].event_id as number);

test('webhooks: signed deliveries per matching hook, a receiver that was down, redelivery, internal URLs', async (t) => {
  const server = await Server.start({ env: HOOK_ENV });
  t.after(() => server.cleanup());
  const receiver = await HookReceiver.start();
  t.after(() => receiver.close());
  const token = await seedApp(server);
  const call = api(server, token);
  const git = await Git.create();
  const work = await git.workTree(path.join(await tempDir('gitstratum-hooks-'), 'work'), { commits: 3, files: 2 });
  const remote = server.repoUrl('alice/main/app.git', token);

  const create = async (body: Record<string, unknown>) => {
    const res = await call('POST', '/hooks', body);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body as { id: string; hasSecret: boolean };
  };
  const a = await create({ scope: 'alice/main/app', url: `${receiver.url}?hook=a`, secret: 's3cret', events: ['push', 'branch', 'tag'] });
  const b = await create({ scope: 'alice', url: `${receiver.url}?hook=b` });
  const c = await create({ scope: 'alice/main/app', url: `${receiver.url}?hook=c`, events: ['tag'] });
  assert.equal(a.hasSecret, true);
  assert.equal(JSON.stringify((await call('GET', `/hooks/${a.id}`)).body).includes('s3cret'), false, 'the secret is never shown');
  const to = (hook: { id: string }) => receiver.received.filter((r) => r.headers['x-gitstratum-hook-id'] === hook.id);

  await t.test('a push: one signed delivery per matching hook, with its commits', async () => {
    await git.ok(['push', '-q', remote, 'main'], { cwd: work });
    const commits = (await git.ok(['rev-list', '--reverse', 'main'], { cwd: work })).trim().split('\n');
    await until('the deliveries of the push', () => to(a).length >= 2 && to(b).length >= 1);
    // Nothing more arrives: exactly one delivery per hook and event.
    await sleep(500);
    assert.deepEqual(to(a).map((r) => r.headers['x-gitstratum-event']).sort(), ['branch', 'push']);
    assert.deepEqual(to(b).map((r) => r.headers['x-gitstratum-event']), ['push']);
    assert.equal(to(c).length, 0, 'a hook for tags only hears nothing of a branch');

    const push = to(a).find((r) => r.headers['x-gitstratum-event'] === 'push')!;
    const expected = `sha256=${createHmac('sha256', 's3cret').update(push.raw).digest('hex')}`;
    assert.equal(push.headers['x-hub-signature-256'], expected, 'signed with the secret, over the exact body');
    assert.equal(push.headers['x-github-event'], 'push');
    assert.equal(push.headers['x-github-delivery'], push.body['delivery'].id);
    assert.equal(to(b)[0]!.headers['x-hub-signature-256'], undefined, 'a hook without a secret is not signed');
    const p = push.body;
    assert.equal(p['ref'], 'refs/heads/main');
    assert.match(p['before'], /^0{40}$/);
    assert.equal(p['after'], commits.at(-1));
    assert.equal(p['created'], true);
    assert.deepEqual(
      p['commits'].map((x: { id: string }) => x.id),
      commits,
      'every commit the push brought, oldest first',
    );
    assert.equal(p['total_commits'], 3);
    assert.deepEqual(p['commits'][0].added.sort(), ['file-0.txt', 'file-1.txt']);
    assert.equal(p['head_commit'].id, commits.at(-1));
    assert.equal(p['pusher'].name, 'alice');
    assert.equal(p['repository'].full_name, 'alice/main/app');
    assert.equal(p['repository'].private, true);
    assert.equal(p['repository'].clone_url, `${server.url}/alice/main/app.git`);
    const branch = to(a).find((r) => r.headers['x-gitstratum-event'] === 'branch')!;
    assert.deepEqual([branch.body['action'], branch.body['branch'], branch.headers['x-github-event']], ['created', 'main', 'create']);

    await git.ok(['tag', 'v1'], { cwd: work });
    await git.ok(['push', '-q', remote, 'v1'], { cwd: work });
    await until('the tag deliveries', () => to(c).length >= 1 && to(a).length >= 4);
    assert.deepEqual([to(c)[0]!.body['action'], to(c)[0]!.body['tag']], ['created', 'v1']);
  });

  await t.test('a receiver down for a while gets every event once it is back, in order', async () => {
    receiver.down = true;
    const before = to(b).length;
    const pushed: string[] = [];
    for (let i = 0; i < 3; i++) {
      await git.commits(work, 1, { seed: 100 + i });
      await git.ok(['push', '-q', remote, 'main'], { cwd: work });
      pushed.push(await git.revParse(work, 'HEAD'));
    }
    // The first delivery has failed at least once (and the later ones wait behind it).
    await until('a failed attempt', async () => {
      const log = (await call('GET', `/hooks/${b.id}/deliveries`)).body as { status: string; attempts: number; responseStatus: number | null }[];
      return log.some((d) => d.status === 'pending' && d.attempts >= 1 && d.responseStatus === 503);
    });
    assert.equal(to(b).length, before, 'nothing was received while down');
    receiver.down = false;
    await until('the three pushes', () => to(b).length >= before + 3);
    await sleep(300);
    assert.deepEqual(to(b).slice(before).map((r) => r.body['after']), pushed, 'each push once, in the order they were made');
  });

  await t.test('redelivery sends the same event again as a new delivery', async () => {
    const log = (await call('GET', `/hooks/${b.id}/deliveries?limit=1`)).body as { id: string; eventId: number; status: string; requestBody: string }[];
    assert.equal(log[0]!.status, 'delivered');
    assert.ok(log[0]!.requestBody.includes('"event":"push"'), 'the delivery log keeps what was sent');
    const before = to(b).length;
    const again = await call('POST', `/hooks/${b.id}/deliveries/${log[0]!.id}/redeliver`);
    assert.equal(again.status, 202);
    const r = await until('the redelivery', () => to(b)[before]);
    assert.equal(r.body['delivery'].event_id, log[0]!.eventId);
    assert.notEqual(r.body['delivery'].id, log[0]!.id);
    assert.equal((await call('GET', `/hooks/${b.id}/deliveries/${again.body.id}`)).body.redeliveryOf, log[0]!.id);
  });

  await t.test('repository and lock events: created, renamed, visibility changed, forked, deleted; a lock taken and released', async () => {
    const d = await create({ scope: 'alice', url: `${receiver.url}?hook=d`, events: ['repository', 'lock'] });
    const actions = () => to(d).map((r) => `${r.body['event']}:${r.body['action']}:${r.body['repository'].full_name}`);
    assert.equal((await call('POST', '/repos', { owner: 'alice', space: 'main', name: 'lib', visibility: 'private' })).status, 201);
    assert.equal((await call('PATCH', '/repos/alice/main/lib', { name: 'core' })).status, 200);
    assert.equal((await call('PATCH', '/repos/alice/main/core', { visibility: 'public' })).status, 200);
    assert.equal((await call('POST', '/repos/alice/main/core/forks', { owner: 'alice', space: 'main', name: 'core-fork' })).status, 201);
    assert.equal((await call('DELETE', '/repos/alice/main/core-fork')).status, 204);
    const lfs = (method: string, route: string, body: unknown) =>
      fetch(new URL(`/alice/main/app.git/info/lfs/locks${route}`, server.url), {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/vnd.git-lfs+json', accept: 'application/vnd.git-lfs+json' },
        body: JSON.stringify(body),
      });
    const lock = (await (await lfs('POST', '', { path: 'art/logo.psd' })).json()) as { lock: { id: string } };
    assert.equal((await lfs('POST', `/${lock.lock.id}/unlock`, {})).status, 200);
    const expected = [
      'repository:created:alice/main/lib',
      'repository:renamed:alice/main/core',
      'repository:visibility_changed:alice/main/core',
      'repository:created:alice/main/core-fork',
      'repository:forked:alice/main/core',
      'repository:deleted:alice/main/core-fork',
      'lock:created:alice/main/app',
      'lock:released:alice/main/app',
    ];
    await until('the repository and lock events', () => to(d).length >= expected.length);
    // Each repository's events in order; between repositories, any order.
    for (const repo of ['alice/main/core', 'alice/main/core-fork', 'alice/main/app']) {
      assert.deepEqual(actions().filter((a) => a.endsWith(`:${repo}`) || (repo === 'alice/main/core' && a.endsWith(':alice/main/lib'))), expected.filter((a) => a.endsWith(`:${repo}`) || (repo === 'alice/main/core' && a.endsWith(':alice/main/lib'))));
    }
    const renamed = to(d).find((r) => r.body['action'] === 'renamed')!;
    assert.equal(renamed.body['changes'].full_name.from, 'alice/main/lib');
    const locked = to(d).find((r) => r.body['event'] === 'lock')!;
    assert.deepEqual([locked.body['lock'].path, locked.body['lock'].owner.name], ['art/logo.psd', 'alice']);
  });

  await t.test('URLs to internal addresses are refused unless allowed; a test ping reports the answer', async () => {
    for (const url of ['http://10.0.0.5/hook', 'http://169.254.169.254/latest/meta-data', 'http://[::1]:8080/', 'http://192.168.1.1/']) {
      const res = await call('POST', '/hooks', { scope: 'alice', url });
      assert.equal(res.status, 400, url);
      assert.equal(res.body.error.code, 'hook_url_internal', url);
    }
    assert.equal((await call('POST', '/hooks', { scope: 'alice', url: 'ftp://example.com/' })).body.error.code, 'invalid_hook_url');
    const ping = await call('POST', `/hooks/${a.id}/tests`);
    assert.deepEqual([ping.body.ok, ping.body.status, ping.body.response], [true, 200, 'thanks']);
    const pinged = receiver.received.at(-1)!;
    assert.equal(pinged.headers['x-gitstratum-event'], 'ping');
    assert.equal(pinged.headers['x-hub-signature-256'], `sha256=${createHmac('sha256', 's3cret').update(pinged.raw).digest('hex')}`);
  });
});

test('the outbox: a push made while no process delivered, then a crash, is delivered after restart', async (t) => {
  const receiver = await HookReceiver.start();
  t.after(() => receiver.close());
  let server = await Server.start({ env: { ...HOOK_ENV, GITSTRATUM_WEBHOOKS_ENABLED: 'false' } });
  const token = await seedApp(server);
  assert.equal((await api(server, token)('POST', '/hooks', { scope: 'alice/main/app', url: receiver.url })).status, 201);
  const git = await Git.create();
  const work = await git.workTree(path.join(await tempDir('gitstratum-hooks-'), 'work'), { commits: 1 });
  await git.ok(['push', '-q', server.repoUrl('alice/main/app.git', token), 'main'], { cwd: work });
  const exited = once(server.process, 'exit');
  server.process.kill('SIGKILL');
  await exited;
  assert.equal(receiver.received.length, 0);
  server = await Server.start({ dataDir: server.dataDir, env: HOOK_ENV });
  t.after(() => server.cleanup());
  const r = await until('the delivery after the restart', () => receiver.of('push')[0]);
  assert.equal(r.body['after'], await git.revParse(work, 'HEAD'));
});

test('a server and a worker deliver together, never one event twice; a CI receiver sees all of a 50-push burst', async (t) => {
  const server = await Server.start({ env: HOOK_ENV });
  t.after(() => server.cleanup());
  const worker = await Worker.start(server, ['--webhook-allowed-hosts', '127.0.0.1']);
  t.after(() => worker.stop());
  const receiver = await HookReceiver.start();
  t.after(() => receiver.close());
  const token = await seedApp(server);
  assert.equal((await api(server, token)('POST', '/hooks', { scope: 'alice/main/app', url: receiver.url })).status, 201);
  const git = await Git.create();
  const dir = await tempDir('gitstratum-hooks-');
  const work = await git.workTree(path.join(dir, 'work'), { commits: 1 });
  const remote = server.repoUrl('alice/main/app.git', token);
  // The CI job: on each push, fetch the pushed commit from the payload's clone URL.
  const ci = path.join(dir, 'ci.git');
  await git.ok(['init', '-q', '--bare', ci]);
  const fetched = new Set<string>();
  let ciQueue = Promise.resolve();
  receiver.onDelivery = (r) => {
    if (r.headers['x-gitstratum-event'] !== 'push') return;
    const url = new URL(r.body['repository'].clone_url as string);
    url.username = 'ci';
    url.password = token;
    ciQueue = ciQueue.then(async () => {
      await git.ok(['--git-dir', ci, 'fetch', '-q', url.toString(), r.body['after'] as string]);
      await git.ok(['--git-dir', ci, 'cat-file', '-e', `${r.body['after']}^{commit}`]);
      fetched.add(r.body['after'] as string);
    });
  };
  const pushed: string[] = [];
  for (let i = 0; i < 50; i++) {
    await git.commits(work, 1, { seed: 200 + i });
    await git.ok(['push', '-q', remote, 'main'], { cwd: work });
    pushed.push(await git.revParse(work, 'HEAD'));
  }
  await until('every push delivered', () => receiver.of('push').length >= 50, 120_000).catch((err: Error) => {
    throw new Error(`${err.message}: ${receiver.of('push').length} of 50\nserver:\n${server.logs.filter((l) => l.includes('webhook')).slice(-5).join('\n')}\nworker:\n${worker.logs.filter((l) => l.includes('webhook')).slice(-5).join('\n')}`);
  });
  await until('every pushed commit fetched by the CI receiver', () => pushed.every((sha) => fetched.has(sha)), 120_000);
  await sleep(1000);
  const ids = eventIds(receiver.of('push'));
  assert.equal(ids.length, new Set(ids).size, 'no event delivered twice');
  assert.equal(ids.length, 50);
  assert.deepEqual(receiver.of('push').map((r) => r.body['after']), pushed, 'in push order');
});

/** A Server-Sent Events client: the events as they come (id, event, parsed data). */
async function openStream(url: string, headers: Record<string, string>) {
  const controller = new AbortController();
  const res = await fetch(url, { headers, signal: controller.signal });
  const events: { id: number; event: string; data: Record<string, any> }[] = [];
  if (res.ok && res.body) {
    void (async () => {
      let buffer = '';
      const decoder = new TextDecoder();
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true });
          let cut: number;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const fields = Object.fromEntries(block.split('\n').filter((l) => !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trimStart()]));
            if (fields['data'] !== undefined) events.push({ id: Number(fields['id']), event: String(fields['event']), data: JSON.parse(String(fields['data'])) as Record<string, any> });
          }
        }
      } catch {
        /* closed */
      }
    })();
  }
  return { status: res.status, body: res.ok ? undefined : await res.text(), events, close: () => controller.abort() };
}

test('the event stream: a push shows up live, a stream resumes from Last-Event-ID, and only readers may listen', async (t) => {
  const server = await Server.start({ env: { GITSTRATUM_MAX_EVENT_STREAMS_PER_CLIENT: '2' } });
  t.after(() => server.cleanup());
  const token = await seedApp(server);
  await server.createRepo('alice/main/open');
  await server.createUser('bob');
  const bob = await server.token('bob', 'read');
  const git = await Git.create();
  const work = await git.workTree(path.join(await tempDir('gitstratum-sse-'), 'work'), { commits: 1 });
  const stream = (query: string, as?: string, last?: number) =>
    openStream(`${server.url}/api/v1/events?${query}`, { ...(as && { authorization: `Bearer ${as}` }), ...(last !== undefined && { 'last-event-id': String(last) }) });
  const push = async (repo: string) => {
    await git.commits(work, 1, { seed: Math.floor(Math.random() * 1e9) });
    await git.ok(['push', '-q', '--force', server.repoUrl(`alice/main/${repo}.git`, token), 'HEAD:main'], { cwd: work });
    return git.revParse(work, 'HEAD');
  };

  const live = await stream('repo=alice/main/app', token);
  assert.equal(live.status, 200);
  const first = await push('app');
  const seen = await until('the push on the stream', () => live.events.find((e) => e.event === 'push' && e.data['after'] === first));
  assert.equal(seen.data['repository'].full_name, 'alice/main/app');
  live.close();

  // Two more pushes while nobody listens; resuming after the first gives both, in order.
  const later = [await push('app'), await push('app')];
  const resumed = await stream('repo=alice/main/app', token, seen.id);
  await until('the missed pushes', () => resumed.events.filter((e) => e.event === 'push').length >= 2);
  assert.deepEqual(resumed.events.filter((e) => e.event === 'push').map((e) => e.data['after']), later);
  assert.ok(resumed.events.every((e) => e.id > seen.id));

  // Private: anonymous 401, another user 404; an owner's stream shows another user the public repository only.
  assert.equal((await stream('repo=alice/main/app')).status, 401);
  assert.equal((await stream('repo=alice/main/app', bob)).status, 404);
  assert.equal((await stream('repo=alice/main', token)).status, 400);
  const owner = await stream('owner=alice', bob);
  assert.equal(owner.status, 200);
  const secret = await push('app');
  const open = await push('open');
  await until('the public push on the owner stream', () => owner.events.find((e) => e.data['after'] === open));
  await until('the private push on the repository stream', () => resumed.events.find((e) => e.data['after'] === secret));
  assert.equal(owner.events.some((e) => e.data['after'] === secret), false, "bob does not see the private repository's push");

  // Two streams per client here: a third is refused.
  const third = await stream('owner=alice', bob);
  const extra = await stream('repo=alice/main/open', bob);
  assert.equal(third.status, 200);
  assert.equal(extra.status, 429);
  for (const s of [resumed, owner, third]) s.close();

  // With every stream gone, a new one without Last-Event-ID starts at the newest event: the
  // next push is the first thing it sees.
  await sleep(500);
  const fresh = await stream('repo=alice/main/app', token);
  const newest = await push('app');
  await until('the newest push on a fresh stream', () => fresh.events.find((e) => e.data['after'] === newest));
  assert.deepEqual(fresh.events.filter((e) => e.event === 'push').map((e) => e.data['after']), [newest]);
  fresh.close();
});
