import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { now, openMetaStore } from './db.js';
import { insertOwner } from './owners.js';
import { insertSpace } from './spaces.js';
import { insertRepository } from './repositories.js';
import { linkObject } from './lfs.js';
import * as pub from './lfs-publish.js';
import { newId } from '../shared/ids.js';

const OID = (c: string) => c.repeat(64);
const update = (n: number) => ({ ref: 'refs/heads/main', oldOid: '0'.repeat(40), newOid: String(n).repeat(40) });

for (const backend of databaseBackends()) {
  test(`LFS publish jobs and publications on ${backend}`, async (t) => {
    const dataDir = await tempDir('gitstratum-publish-');
    const meta = await openMetaStore({ dataDir, databaseUrl: backend === 'postgres' ? await freshDatabaseUrl() : undefined });
    const { db, dialect } = meta;
    t.after(async () => {
      await meta.close();
      await rm(dataDir, { recursive: true, force: true });
    });
    const at = now();
    await insertOwner(db, { id: 'O1', name: 'alice', kind: 'user', createdAt: at });
    await insertSpace(db, { id: 'S1', ownerId: 'O1', name: 'main', createdAt: at });
    for (const id of ['RA', 'RB', 'RC']) await insertRepository(db, { id, spaceId: 'S1', name: id.toLowerCase(), visibility: 'private', defaultBranch: 'main', shard: 'local', createdAt: at });

    await t.test('one running job per repository, oldest first; a lease is held once', async () => {
      const [a1, a2] = await pub.enqueueJobs(db, dialect, 'RA', 'push', [update(1), update(2)], at);
      const [b1] = await pub.enqueueJobs(db, dialect, 'RB', 'push', [update(3)], at);
      // Ten processes claim at once: each due job goes to exactly one of them.
      const claims = await Promise.all(Array.from({ length: 10 }, (_, i) => pub.claimJobs(db, dialect, `h${i}`, 60_000, 10)));
      const claimed = claims.flat().map((j) => j.id).sort();
      assert.deepEqual(claimed, [a1, b1].sort(), "RA's second job waits for its first");
      assert.deepEqual(await pub.claimJobs(db, dialect, 'late', 60_000, 10), []);
      const holderOfA1 = `h${claims.findIndex((c) => c.some((j) => j.id === a1))}`;
      assert.equal(await pub.renewJob(db, dialect, a1!, 'someone-else', 60_000), false);
      assert.equal(await pub.renewJob(db, dialect, a1!, holderOfA1, 60_000), true);
      await pub.finishJob(db, a1!, now(), [{ path: 'x', reason: 'y' }]);
      assert.deepEqual((await pub.claimJobs(db, dialect, 'next', 60_000, 10)).map((j) => [j.id, j.attempts]), [[a2, 1]]);
      // A restarted holder frees what it held: claimable again at once.
      await pub.releaseLeases(db, 'next');
      assert.deepEqual((await pub.claimJobs(db, dialect, 'next', 60_000, 10)).map((j) => [j.id, j.attempts]), [[a2, 2]]);
      assert.deepEqual((await pub.jobsOf(db, 'RA', [a2!])).map((j) => [j.running, j.error]), [[true, null]]);
      await pub.failJob(db, dialect, a2!, 'boom', 60_000, now());
      assert.deepEqual(await pub.claimJobs(db, dialect, 'next', 60_000, 10), [], 'a failed attempt waits for its retry');
      assert.deepEqual((await pub.jobsOf(db, 'RA', [a2!])).map((j) => [j.state, j.running, j.error]), [['pending', false, 'boom']], 'waiting for its retry, not running');
      await pub.cancelPending(db, 'RA', 'cancelled', now());
      const jobs = await pub.jobsOf(db, 'RA');
      assert.deepEqual(jobs.map((j) => [j.state, j.error]), [['done', null], ['failed', 'cancelled']]);
      assert.deepEqual(jobs[0]!.skipped, [{ path: 'x', reason: 'y' }]);
      assert.equal(await pub.countPendingJobs(db), 1, "RB's job is still leased, pending");
    });

    await t.test('publications: the current one per key, readers ranked by repository, fully published objects', async () => {
      const base = { oid: OID('a'), size: 10, path: 'doc.pdf', key: 'files/alice/main/ra/doc.pdf', jobId: 'J1', commitOid: 'c'.repeat(40) };
      const p1 = await pub.beginPublication(db, { ...base, repositoryId: 'RA', publishedAt: '2026-01-01T00:00:00.000Z' });
      assert.equal(await pub.currentPublication(db, 'RA', base.key), undefined, 'a copy under way is no current version');
      await pub.completePublication(db, p1, 'v1', '2026-01-01T00:00:01.000Z');
      const p2 = await pub.beginPublication(db, { ...base, oid: OID('b'), jobId: 'J2', repositoryId: 'RA', publishedAt: '2026-01-02T00:00:00.000Z' });
      await pub.completePublication(db, p2, 'v2', '2026-01-02T00:00:01.000Z');
      assert.equal((await pub.currentPublication(db, 'RA', base.key))?.versionId, 'v2');
      assert.deepEqual([...(await pub.recordedVersions(db, base.key))].sort(), ['v1', 'v2']);
      const p3 = await pub.beginPublication(db, { ...base, key: 'files/alice/main/rb/doc.pdf', jobId: 'J3', repositoryId: 'RB', publishedAt: at });
      await pub.completePublication(db, p3, 'v3', now());
      assert.deepEqual((await pub.publicationsOf(db, OID('a'), ['RB'])).map((p) => p.versionId), ['v3', 'v1'], "the caller's repository first");
      assert.deepEqual((await pub.publicationsOf(db, OID('a'), ['RA'])).map((p) => p.versionId), ['v1', 'v3']);

      // a: linked to RA and RB, both published it; b: linked to RA (published) and RC (not).
      for (const [repo, oid] of [['RA', 'a'], ['RB', 'a'], ['RA', 'b'], ['RC', 'b']] as const) await linkObject(db, { repositoryId: repo, oid: OID(oid), size: 10, createdAt: at });
      assert.deepEqual(await pub.fullyPublished(db, [OID('a'), OID('b'), OID('c')]), [OID('a')]);
      assert.deepEqual((await pub.listPublications(db, 'RA', { limit: 10 })).map((p) => p.versionId), ['v2', 'v1']);
      assert.deepEqual((await pub.listPublications(db, 'RA', { limit: 10, before: p2 })).map((p) => p.versionId), ['v1']);
      // RA deleted: its publications are retired, not lost; b is still linked (by RC), unpublished.
      await db.deleteFrom('projects').where('id', '=', 'RA').execute();
      await db.deleteFrom('repositories').where('id', '=', 'RA').execute();
      assert.deepEqual((await pub.retiredPublications(db, 10)).map((p) => p.versionId).sort(), ['v1', 'v2']);
      assert.deepEqual(await pub.stillNeeded(db, OID('b')), { linked: true, publishedElsewhere: false });
      assert.deepEqual(await pub.stillNeeded(db, OID('a')), { linked: true, publishedElsewhere: true }, "RB's publication of a");
      assert.deepEqual(await pub.fullyPublished(db, [OID('b')]), [], 'a retired publication counts for no one');
      await pub.deletePublication(db, p3);
      assert.equal(newId().length, 26);
    });
  });
}
