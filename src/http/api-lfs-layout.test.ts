/**
 * The readable LFS layout's settings through the REST API, in process with `inject()`: the
 * layout refused on a store without versions (an s3rver bucket) with a message that says what
 * to do, checked patterns and URLs, and turning the layout on queueing the relayout job.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { systemActor } from '../access/policy.js';
import { apiApp, injectApi } from '../../test/support/inject-api.js';
import { startS3 } from '../../test/support/s3.js';
import { createS3Store } from '../storage/s3-store.js';

test('LFS layout settings', async (t) => {
  const { app, core } = await apiApp(t);
  const api = injectApi(app);
  await core.accounts.createUser(systemActor, 'alice');
  await core.repos.createSpace(systemActor, 'alice/main');
  const alice = (await core.accounts.createToken(systemActor, 'alice', 'admin')).token;
  await core.repos.createRepo(systemActor, 'alice/main/docs', { visibility: 'private' });

  await t.test('readable on the filesystem store: set, shown, and its history queued for publishing', async () => {
    const r = await api('PATCH', '/repos/alice/main/docs', alice, { lfsLayout: 'readable', lfsPublishRefs: ['main', 'refs/tags/v*'], lfsPublicUrl: 'https://cdn.example.com/docs/' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual([r.body.lfsLayout, r.body.lfsPublishRefs, r.body.lfsPublicUrl], ['readable', ['refs/heads/main', 'refs/tags/v*'], 'https://cdn.example.com/docs']);
    const jobs = await api('GET', '/repos/alice/main/docs/lfs/publish-jobs', alice);
    assert.deepEqual(jobs.body.map((j: { kind: string; state: string }) => [j.kind, j.state]), [['relayout', 'pending']]);
    assert.deepEqual((await api('GET', '/repos/alice/main/docs/lfs/published', alice)).body, []);
    // Setting it again queues nothing more.
    await api('PATCH', '/repos/alice/main/docs', alice, { lfsLayout: 'readable' });
    assert.equal((await api('GET', '/repos/alice/main/docs/lfs/publish-jobs', alice)).body.length, 1);
  });

  await t.test('bad patterns and URLs are refused and change nothing', async () => {
    const pattern = await api('PATCH', '/repos/alice/main/docs', alice, { lfsPublishRefs: ['main', 'bad..name'] });
    assert.deepEqual([pattern.status, pattern.body.error.code], [400, 'invalid_pattern']);
    const url = await api('PATCH', '/repos/alice/main/docs', alice, { lfsPublicUrl: 'ftp://cdn.example.com/' });
    assert.deepEqual([url.status, url.body.error.code], [400, 'invalid_url']);
    const now = await api('GET', '/repos/alice/main/docs', alice);
    assert.deepEqual([now.body.lfsPublishRefs, now.body.lfsPublicUrl], [['refs/heads/main', 'refs/tags/v*'], 'https://cdn.example.com/docs']);
  });

  await t.test('set back to content, its pending publishing is cancelled', async () => {
    const r = await api('PATCH', '/repos/alice/main/docs', alice, { lfsLayout: 'content' });
    assert.equal(r.body.lfsLayout, 'content');
    const jobs = await api('GET', '/repos/alice/main/docs/lfs/publish-jobs', alice);
    assert.deepEqual(jobs.body.map((j: { state: string; error: string }) => [j.state, j.error]), [['failed', 'cancelled: the repository was set to the content layout']]);
  });

  await t.test('a bucket without versioning is refused for the readable layout, saying how to turn it on', async (t2) => {
    const s3 = await startS3();
    const store = createS3Store({ ...s3, forcePathStyle: true });
    t2.after(async () => {
      store.destroy();
      await s3.stop();
    });
    const { app: app2, core: core2 } = await apiApp(t2, { lfsStore: store });
    const api2 = injectApi(app2);
    await core2.accounts.createUser(systemActor, 'bob');
    await core2.repos.createSpace(systemActor, 'bob/main');
    const bob = (await core2.accounts.createToken(systemActor, 'bob', 'admin')).token;
    const anonymous = await api2('POST', '/repos', undefined, { owner: 'bob', space: 'main', name: 'docs', lfsLayout: 'readable' });
    assert.equal(anonymous.status, 401, 'the store is asked only for a caller who may create here');
    const created = await api2('POST', '/repos', bob, { owner: 'bob', space: 'main', name: 'docs', lfsLayout: 'readable' });
    assert.equal(created.status, 400);
    assert.equal(created.body.error.code, 'versioning_disabled');
    assert.match(created.body.error.message, /turn on versioning for its bucket/);
    assert.equal((await api2('GET', '/repos/bob/main/docs', bob)).status, 404, 'nothing was created');
    await api2('POST', '/repos', bob, { owner: 'bob', space: 'main', name: 'docs' });
    assert.equal((await api2('PATCH', '/repos/bob/main/docs', undefined, { lfsLayout: 'readable' })).status, 401);
    const patched = await api2('PATCH', '/repos/bob/main/docs', bob, { lfsLayout: 'readable' });
    assert.deepEqual([patched.status, patched.body.error.code], [400, 'versioning_disabled']);
    assert.equal((await api2('GET', '/repos/bob/main/docs', bob)).body.lfsLayout, 'content');
  });
});
