import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRepoPath, validateName } from './names.js';

test('accepts ordinary names and strips a .git suffix from repositories', () => {
  assert.equal(validateName('owner', 'alice'), 'alice');
  assert.equal(validateName('repository', 'web-app.git'), 'web-app');
  assert.deepEqual(parseRepoPath('acme/tools/ci.git'), { owner: 'acme', space: 'tools', repo: 'ci' });
});

test('refuses traversal, odd characters and reserved names', () => {
  for (const bad of ['..', 'a..b', '.hidden', 'a/b', 'spa ce', 'x.lock', '', 'a'.repeat(101), 'naïve']) {
    assert.throws(() => validateName('space', bad), { kind: 'invalid' }, bad);
  }
  assert.throws(() => validateName('owner', 'api'), { code: 'reserved_name' });
  assert.throws(() => parseRepoPath('acme/tools'), { code: 'invalid_path' });
});
