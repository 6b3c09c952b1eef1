import { test } from 'node:test';
import assert from 'node:assert/strict';
import { can, repoPermission, type Actor } from './policy.js';

const alice: Actor = { kind: 'user', userId: 'A', name: 'alice', isAdmin: false, scope: 'admin', tokenId: 't' };
const readToken: Actor = { ...alice, scope: 'read' } as Actor;
const bob: Actor = { kind: 'user', userId: 'B', name: 'bob', isAdmin: false, scope: 'write', tokenId: 't' };
const root: Actor = { kind: 'user', userId: 'R', name: 'root', isAdmin: true, scope: 'admin', tokenId: 't' };

const alicePrivate = { visibility: 'private', ownerId: 'A', ownerKind: 'user' } as const;
const alicePublic = { visibility: 'public', ownerId: 'A', ownerKind: 'user' } as const;

test('owners administer their repositories, others see only public ones', () => {
  assert.equal(repoPermission(alice, alicePrivate), 'admin');
  assert.equal(repoPermission(bob, alicePrivate), 'none');
  assert.equal(repoPermission(bob, alicePublic), 'read');
  assert.equal(repoPermission({ kind: 'anonymous' }, alicePublic), 'read');
  assert.equal(repoPermission({ kind: 'anonymous' }, alicePrivate), 'none');
});

test('a read-scoped token caps an owner at read', () => {
  assert.ok(can(readToken, 'read', alicePrivate));
  assert.ok(!can(readToken, 'write', alicePrivate));
});

test('organization roles grant at most the role, capped by the token', () => {
  const orgRepo = { visibility: 'private', ownerId: 'O', ownerKind: 'org' } as const;
  assert.equal(repoPermission(bob, { ...orgRepo, orgRole: 'read' }), 'read');
  assert.equal(repoPermission(bob, { ...orgRepo, orgRole: 'admin' }), 'write');
  assert.equal(repoPermission(bob, orgRepo), 'none');
});

test('site admins see everything', () => {
  assert.equal(repoPermission(root, alicePrivate), 'admin');
});
