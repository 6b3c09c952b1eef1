import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDomainError } from '../shared/errors.js';
import { checkPublicUrl, checkPublishPattern, publicUrl, publishedRef, readableKey } from './layout.js';

const repo = { ownerName: 'acme', spaceName: 'legal', name: 'Contracts' };

test('readableKey: the repository path under the prefix, or why a path cannot be a key', () => {
  assert.deepEqual(readableKey('files', repo, 'documents/contracts/Lease (final) – 2026.pdf'), { key: 'files/acme/legal/Contracts/documents/contracts/Lease (final) – 2026.pdf' });
  for (const bad of ['a\\b.pdf', 'dir/\u0001.pdf', `${'x'.repeat(300)}.pdf`, 'a/../b.pdf']) {
    const r = readableKey('files', repo, bad);
    assert.ok('problem' in r, `${JSON.stringify(bad)} is refused`);
  }
  const long = readableKey('files', repo, Array.from({ length: 8 }, () => 'y'.repeat(200)).join('/'));
  assert.ok('problem' in long, 'a key over 1024 bytes is refused');
});

test('publishedRef: the default branch unless patterns are set; patterns glob full refs', () => {
  assert.equal(publishedRef({ lfsPublishRefs: null, defaultBranch: 'main' }, 'refs/heads/main'), true);
  assert.equal(publishedRef({ lfsPublishRefs: null, defaultBranch: 'main' }, 'refs/heads/feature'), false);
  const patterns = ['release/*', 'refs/tags/v*'].map(checkPublishPattern);
  assert.deepEqual(patterns, ['refs/heads/release/*', 'refs/tags/v*']);
  const repoWith = { lfsPublishRefs: patterns, defaultBranch: 'main' };
  assert.equal(publishedRef(repoWith, 'refs/heads/release/1.0'), true);
  assert.equal(publishedRef(repoWith, 'refs/heads/release/1.0/hotfix'), false, '* stays within a segment');
  assert.equal(publishedRef(repoWith, 'refs/tags/v2'), true);
  assert.equal(publishedRef(repoWith, 'refs/heads/main'), false, 'patterns replace the default branch');
  for (const bad of ['', 'a b', 'refs/heads/x..y', 'main:evil', 'a//b', 'trailing/']) {
    assert.throws(() => checkPublishPattern(bad), (err: unknown) => isDomainError(err) && err.code === 'invalid_pattern', bad);
  }
});

test('public URLs: http(s) bases only; each path segment encoded', () => {
  assert.equal(checkPublicUrl('https://cdn.example.com/files/acme/legal/Contracts/'), 'https://cdn.example.com/files/acme/legal/Contracts');
  assert.equal(checkPublicUrl(null), null);
  assert.equal(checkPublicUrl(''), null);
  for (const bad of ['ftp://x/y', 'https://u:p@x/', 'https://x/?a=1', 'not a url']) {
    assert.throws(() => checkPublicUrl(bad), (err: unknown) => isDomainError(err) && err.code === 'invalid_url', bad);
  }
  assert.equal(publicUrl('https://cdn.example.com/t', 'docs/Lease (final)#1.pdf'), 'https://cdn.example.com/t/docs/Lease%20(final)%231.pdf');
  assert.equal(publicUrl(null, 'a.pdf'), null);
});
