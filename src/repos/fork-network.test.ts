import { test } from 'node:test';
import assert from 'node:assert/strict';
import { networkHeir } from './fork-network.js';
import type { RepoRow } from './service.js';

function repo(id: string, ownerId: string, visibility: 'public' | 'private'): RepoRow {
  return {
    id,
    spaceId: 's',
    spaceName: 'main',
    ownerId,
    ownerName: ownerId,
    ownerKind: 'user',
    name: id,
    visibility,
    defaultBranch: 'main',
    shard: 'local',
    enforceLocks: true,
    lfsLayout: 'content',
    lfsPublishRefs: null,
    lfsPublicUrl: null,
    forkOf: null,
    forkNetwork: 'A',
    createdAt: '',
    updatedAt: '',
  };
}

test('a deleted public repository hands its LFS links to the oldest other member', () => {
  const gone = repo('A', 'alice', 'public');
  assert.equal(networkHeir(gone, [gone, repo('B', 'bob', 'public'), repo('C', 'alice', 'private')])?.id, 'B');
  assert.equal(networkHeir(gone, [gone]), undefined);
});

test('issue 9: a deleted private repository hands its links only to a private member with the same readers', () => {
  const gone = repo('A', 'alice', 'private');
  // Bob's public fork would give everyone what only alice's readers could download.
  assert.equal(networkHeir(gone, [gone, repo('B', 'bob', 'public'), repo('C', 'bob', 'private')]), undefined);
  assert.equal(networkHeir(gone, [gone, repo('B', 'bob', 'public'), repo('D', 'alice', 'public'), repo('E', 'alice', 'private')])?.id, 'E');
});
