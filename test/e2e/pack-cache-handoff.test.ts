/**
 * Cache hits handed to a front proxy (packCacheAccelRedirect): a real nginx in front of the
 * server, an `internal` location over <data>/cache/entries/, and the real git client cloning
 * through nginx. A hit is then answered by gitstratum with X-Accel-Redirect and no body, and
 * nginx sends the entry file itself.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Git, packCacheSettled, Server, seedAlice, tempDir } from './harness.js';
import { startNginx, type Nginx } from '../support/nginx.js';

const PREFIX = '/_gitstratum/cache/';
let server: Server;
let nginx: Nginx;
let git: Git;
let token: string;

before(async () => {
  server = await Server.start({ args: ['--pack-cache-accel-redirect', PREFIX, '--maintenance-enabled', 'false'] });
  token = await seedAlice(server);
  git = await Git.create();
  const upstream = new URL(server.url);
  nginx = await startNginx(
    await tempDir('gitstratum-nginx-'),
    `    location ${PREFIX} {
      internal;
      sendfile on;
      alias ${path.join(server.dataDir, 'cache', 'entries')}/;
    }
    location / {
      proxy_pass http://${upstream.host};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
    }`,
  );
});

after(async () => {
  await nginx?.stop();
  await server?.cleanup();
});

async function handoffs(): Promise<number> {
  const text = await (await fetch(new URL('/metrics', server.url))).text();
  const line = text.split('\n').find((l) => l.startsWith('gitstratum_pack_cache_handoffs_total '));
  return Number(line?.split(' ').pop() ?? 0);
}

function viaNginx(repo: string, auth?: string): string {
  const u = new URL(`/${repo}`, nginx.url);
  if (auth) {
    u.username = 'git';
    u.password = auth;
  }
  return u.toString();
}

test('behind nginx, repeated clones are sent by nginx from the cache files, byte-exact and never stale', async () => {
  await server.createRepo('alice/main/handoff');
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 4, files: 5, seed: 31 });
  await git.ok(['push', '-q', viaNginx('alice/main/handoff.git', token), 'main'], { cwd: work });
  const url = viaNginx('alice/main/handoff.git', token);

  const clone = async (args: string[] = []) => {
    const dest = path.join(await tempDir(), 'clone');
    await git.ok(['clone', '-q', ...args, url, dest]);
    await packCacheSettled(server.url);
    assert.deepEqual((await git.ok(['fsck', '--no-progress'], { cwd: dest })).trim(), '');
    return dest;
  };

  const first = await clone();
  const before = await handoffs();
  for (const args of [[], ['-c', 'protocol.version=2'], ['--depth', '1']]) {
    const dest = await clone(args);
    assert.equal(await git.revParse(dest, 'HEAD'), await git.revParse(work, 'main'));
  }
  assert.equal(await git.revParse(first, 'HEAD'), await git.revParse(work, 'main'));
  // The second full clone's three requests were hits handed to nginx; the shallow clone's
  // fetch was a miss (another request), streamed by Node.
  assert.ok((await handoffs()) - before >= 5, 'hits were handed off');

  // A push through nginx, then a clone: the new commit, not a stale handed-off answer.
  await git.commits(work, 1, { seed: 32 });
  await git.ok(['push', '-q', url, 'main'], { cwd: work });
  const afterPush = await clone();
  assert.equal(await git.revParse(afterPush, 'HEAD'), await git.revParse(work, 'main'));
  const again = await clone();
  assert.equal(await git.revParse(again, 'HEAD'), await git.revParse(work, 'main'));
  assert.doesNotMatch(await nginx.errorLog(), /\[(error|crit)\]/, 'nginx found every file it was handed');
});

test('without the proxy in front, a hand-off names the entry and sends no body of its own', async () => {
  await server.createRepo('alice/main/direct');
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, seed: 33 });
  await git.ok(['push', '-q', server.repoUrl('alice/main/direct.git', token), 'main'], { cwd: work });
  const url = new URL('/alice/main/direct.git/info/refs?service=git-upload-pack', server.url);
  const headers = { authorization: `Basic ${Buffer.from(`git:${token}`).toString('base64')}`, 'git-protocol': 'version=2' };
  const miss = await fetch(url, { headers });
  assert.equal(miss.headers.get('x-accel-redirect'), null, 'a miss is streamed by Node');
  assert.ok((await miss.arrayBuffer()).byteLength > 0);
  // The miss is stored once git has exited, just after its response ended: ask until it is a hit.
  let hit = await fetch(url, { headers });
  for (let i = 0; i < 50 && !hit.headers.get('x-accel-redirect'); i++) {
    await hit.arrayBuffer();
    await new Promise((r) => setTimeout(r, 100));
    hit = await fetch(url, { headers });
  }
  assert.equal(hit.status, 200);
  assert.equal(hit.headers.get('content-type'), 'application/x-git-upload-pack-advertisement');
  assert.match(hit.headers.get('x-accel-redirect') ?? '', new RegExp(`^${PREFIX}[0-9a-f]{2}/[0-9a-f]{64}$`));
  assert.equal((await hit.arrayBuffer()).byteLength, 0);
});
