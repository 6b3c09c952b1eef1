import { test } from 'node:test';
import assert from 'node:assert/strict';
import { branchMatches, checkPattern } from './protections.js';

test('a pattern matches branch names as a glob: * within a segment, ** across segments', () => {
  const cases: [string, string, boolean][] = [
    ['main', 'main', true],
    ['main', 'main2', false],
    ['main', 'feature/main', false],
    ['release/*', 'release/1.0', true],
    ['release/*', 'release/1.0/hotfix', false],
    ['release/*', 'release', false],
    ['hotfix/**', 'hotfix/a/b/c', true],
    ['*', 'anything', true],
    ['*', 'a/b', false],
    ['.hidden*', '.hidden-branch', true],
    ['v{1,2}', 'v1', false],
    ['!main', 'other', false],
  ];
  for (const [pattern, branch, expected] of cases) assert.equal(branchMatches(pattern, branch), expected, `${pattern} ~ ${branch}`);
});

test('checkPattern takes branch patterns, drops refs/heads/, and refuses what is no branch name', () => {
  assert.equal(checkPattern('main'), 'main');
  assert.equal(checkPattern('refs/heads/release/*'), 'release/*');
  assert.equal(checkPattern(' hotfix/** '), 'hotfix/**');
  for (const bad of ['', '/main', 'main/', 'a..b', 'a b', 'a:b', 'a~1', 'a^', 'x?', 'y[0]', 'back\\slash', 'a@{1}', 'end.', 'a//b', 'x'.repeat(201)]) {
    assert.throws(() => checkPattern(bad), /not a branch name pattern/, JSON.stringify(bad));
  }
});
