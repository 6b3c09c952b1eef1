import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { configSchema } from '../config/schema.js';
import { openCore } from '../core.js';
import { appendAudit } from '../meta/audit.js';
import { isDomainError } from '../shared/errors.js';
import { databaseBackends, freshDatabaseUrl, tempDir } from '../../test/e2e/harness.js';
import { parseSince } from './audit-trail.js';
import { systemActor } from './policy.js';

test('--since takes an ISO-8601 time or a duration back from now, and refuses anything else', () => {
  const now = Date.parse('2026-03-10T12:00:00.000Z');
  assert.equal(parseSince('2h', now), '2026-03-10T10:00:00.000Z');
  assert.equal(parseSince('7d', now), '2026-03-03T12:00:00.000Z');
  assert.equal(parseSince('2026-01-31', now), '2026-01-31T00:00:00.000Z');
  assert.equal(parseSince('2026-01-31T12:00:00+01:00', now), '2026-01-31T11:00:00.000Z');
  for (const bad of ['yesterday', '31/01/2026', '2026-13-45', '-2h', '']) {
    assert.throws(() => parseSince(bad, now), (e: unknown) => isDomainError(e) && ['invalid_time', 'invalid_duration'].includes(e.code), bad);
  }
});

for (const backend of databaseBackends()) {
  test(`the audit log reads newest first, filtered, in stable pages on ${backend}`, async (t) => {
    const data = await tempDir('gitstratum-audit-');
    const databaseUrl = backend === 'postgres' ? await freshDatabaseUrl() : undefined;
    const core = await openCore(configSchema.parse({ data, ...(databaseUrl && { databaseUrl }) }));
    t.after(async () => (await core.close(), await rm(data, { recursive: true, force: true })));
    for (let i = 0; i < 7; i++) {
      await appendAudit(core.meta.db, {
        at: `2026-01-0${i + 1}T00:00:00.000Z`,
        actorId: null,
        actorName: i % 2 ? 'Alice' : 'bob',
        action: 'test.event',
        target: `t${i}`,
      });
    }
    const trail = core.auditTrail;
    const first = await trail.list(systemActor, { limit: 3 });
    assert.deepEqual(first.entries.map((e) => e.target), ['t6', 't5', 't4']);
    assert.ok(first.nextCursor);
    // An entry appended between pages does not shift the next page.
    await appendAudit(core.meta.db, { at: '2026-02-01T00:00:00.000Z', actorId: null, actorName: 'bob', action: 'test.event', target: 'late' });
    const second = await trail.list(systemActor, { limit: 3, before: first.nextCursor! });
    assert.deepEqual(second.entries.map((e) => e.target), ['t3', 't2', 't1']);
    const last = await trail.list(systemActor, { limit: 3, before: second.nextCursor! });
    assert.deepEqual(last.entries.map((e) => e.target), ['t0']);
    assert.equal(last.nextCursor, null);

    assert.deepEqual((await trail.list(systemActor, { actor: 'alice' })).entries.map((e) => e.target), ['t5', 't3', 't1']);
    assert.deepEqual((await trail.list(systemActor, { actor: 'bob', since: '2026-01-05' })).entries.map((e) => e.target), ['late', 't6', 't4']);

    for (const [q, code] of [
      [{ before: 'abc' }, 'invalid_cursor'],
      [{ limit: 0 }, 'invalid_limit'],
      [{ since: 'soon' }, 'invalid_time'],
      [{ repo: 'no/such/repo' }, 'repo_not_found'],
    ] as const) {
      const err = await trail.list(systemActor, q).catch((e: unknown) => e);
      assert.ok(isDomainError(err) && err.code === code, `${JSON.stringify(q)}: ${String(err)}`);
    }
    const user = await core.accounts.createUser(systemActor, 'carol');
    const token = await core.accounts.createToken(systemActor, user.name, 'admin');
    const err = await trail.list(await core.accounts.authenticate(token.token)).catch((e: unknown) => e);
    assert.ok(isDomainError(err) && err.code === 'admin_required', String(err));
  });
}
