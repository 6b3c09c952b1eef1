import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSigner } from './signing.js';

const oid = 'a'.repeat(64);

test('issue 9: a transfer authorization names the token that obtained it, so it can end with it', async () => {
  const signer = createSigner(randomBytes(32));
  const jwt = await signer.sign({ repo: 'R', op: 'download', oid, size: 3, sub: 'U', tokenId: 'T1' }, 60);
  const claims = await signer.verify(jwt, { repo: 'R', op: 'download', oid });
  assert.equal(claims.sub, 'U');
  assert.equal(claims.tokenId, 'T1');
});

test('an anonymous authorization carries no token', async () => {
  const signer = createSigner(randomBytes(32));
  const jwt = await signer.sign({ repo: 'R', op: 'download', oid, size: 3, sub: null, tokenId: null }, 60);
  const claims = await signer.verify(jwt, { repo: 'R', op: 'download', oid });
  assert.equal(claims.sub, null);
  assert.equal(claims.tokenId, null);
});

test('a grant from git-lfs-authenticate is no transfer authorization, nor the other way round; an expired one says so', async () => {
  const signer = createSigner(randomBytes(32));
  const grant = signer.grant({ repo: 'R', sub: 'U', keyId: 'K', scope: 'read' }, 60);
  assert.deepEqual(await signer.verifyGrant(grant), { repo: 'R', sub: 'U', keyId: 'K', scope: 'read' });
  await assert.rejects(signer.verify(grant, { repo: 'R', op: 'download', oid }), { code: 'transfer_scope' });
  const transfer = await signer.sign({ repo: 'R', op: 'download', oid, size: 3, sub: 'U', tokenId: 'T1' }, 60);
  await assert.rejects(signer.verifyGrant(transfer), { code: 'invalid_token' });
  await assert.rejects(createSigner(randomBytes(32)).verifyGrant(grant), { code: 'invalid_token' });
  await assert.rejects(signer.verifyGrant(signer.grant({ repo: 'R', sub: null, keyId: null, scope: 'read' }, -10)), { code: 'grant_expired' });
});
