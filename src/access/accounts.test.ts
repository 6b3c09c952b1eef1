import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { tempDir } from '../../test/e2e/harness.js';
import { openMetaStore } from '../meta/db.js';
import { isDomainError } from '../shared/errors.js';
import { createAccounts } from './accounts.js';
import { systemActor, type Actor } from './policy.js';

async function withAccounts(fn: (accounts: ReturnType<typeof createAccounts>) => Promise<void>) {
  const dataDir = await tempDir('gitstratum-accounts-');
  const meta = await openMetaStore({ dataDir });
  try {
    const accounts = createAccounts(meta, { tokenMaxLifetimeDays: 365 });
    await accounts.createUser(systemActor, 'alice');
    await fn(accounts);
  } finally {
    await meta.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const refusal = (p: Promise<unknown>) => p.then(() => 'accepted', (err: unknown) => (isDomainError(err) ? err.code : String(err)));

test('issue 9: a token made with a token is capped at its expiry and scope, and revoking it revokes the whole lineage', () =>
  withAccounts(async (accounts) => {
    const root = await accounts.createToken(systemActor, 'alice', 'write', { expires: '1h' });
    assert.equal(root.parentId, null);
    const asRoot = await accounts.authenticate(root.token);
    const child = await accounts.createToken(asRoot, 'alice', 'read');
    assert.equal(child.parentId, root.id);
    assert.equal(child.expiresAt, root.expiresAt, 'no expiry asked: the parent’s');
    const longer = await accounts.createToken(asRoot, 'alice', 'read', { expires: '300d' });
    assert.equal(longer.expiresAt, root.expiresAt);
    assert.equal(await refusal(accounts.createToken(asRoot, 'alice', 'admin')), 'scope_exceeds_token');
    assert.equal(await refusal(accounts.createToken(asRoot, 'alice', 'read', { expires: '366d' })), 'duration_too_long');
    const grandchild = await accounts.createToken(await accounts.authenticate(child.token), 'alice', 'read');
    assert.equal(grandchild.parentId, child.id);

    await accounts.revokeToken(systemActor, root.id);
    for (const t of [root, child, longer, grandchild]) assert.equal(await refusal(accounts.authenticate(t.token)), 'invalid_token', t.id);
    assert.equal(await refusal(accounts.authenticateTokenId(grandchild.id)), 'invalid_token');
    // A revoked parent makes no more children, even through an actor resolved before it ended.
    assert.equal(await refusal(accounts.createToken(asRoot, 'alice', 'read')), 'invalid_token');
  }));

test('tokens without an expiring parent may be unbounded; authenticateTokenId checks like authenticate', () =>
  withAccounts(async (accounts) => {
    const forever = await accounts.createToken(systemActor, 'alice', 'admin');
    assert.equal(forever.expiresAt, null);
    const actor = (await accounts.authenticateTokenId(forever.id)) as Extract<Actor, { kind: 'user' }>;
    assert.equal(actor.tokenId, forever.id);
    assert.equal(actor.name, 'alice');
    const child = await accounts.createToken(actor, 'alice', 'write');
    assert.equal(child.expiresAt, null);
    assert.equal(await refusal(accounts.authenticateTokenId('01AAAAAAAAAAAAAAAAAAAAAAAA')), 'invalid_token');
  }));
