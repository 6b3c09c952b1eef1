import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { lenientPointerOid, lfsFilesAt, lfsFilesChanged, parsePointer, reachableLfsOids } from './pointers.js';

const pointer = (oid: string, size: number, extra = '') => Buffer.from(`version https://git-lfs.github.com/spec/v1\n${extra}oid sha256:${oid}\nsize ${size}\n`);
const oidOf = (text: string) => createHash('sha256').update(text).digest('hex');

test('parsePointer: a pointer gives its oid and size; anything else is not one', () => {
  const oid = oidOf('a');
  assert.deepEqual(parsePointer(pointer(oid, 12345)), { oid, size: 12345 });
  assert.deepEqual(parsePointer(pointer(oid, 0)), { oid, size: 0 });
  // Extension lines sort before oid (ext-0-…).
  assert.deepEqual(parsePointer(pointer(oid, 7, 'ext-0-foo sha256:' + oidOf('x') + '\n')), { oid, size: 7 });
  const refused = [
    Buffer.from(''),
    Buffer.from('hello\n'),
    pointer(oid, 1).subarray(0, -1), // no final newline
    Buffer.from(`version https://git-lfs.github.com/spec/v1\nsize 1\noid sha256:${oid}\n`), // keys out of order
    Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid.toUpperCase()}\nsize 1\n`),
    Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize -1\n`),
    Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize 01\n`),
    Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\n`), // no size
    Buffer.concat([pointer(oid, 1), Buffer.alloc(1100, 0x61)]), // too large to be a pointer
  ];
  for (const blob of refused) assert.equal(parsePointer(blob), undefined, JSON.stringify(blob.toString('latin1').slice(0, 80)));
});

test('lenientPointerOid: what git-lfs would still read as a pointer keeps its object alive', () => {
  const oid = oidOf('a');
  for (const text of [
    `version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize 1\n`,
    `version https://git-lfs.github.com/spec/v1\r\noid sha256:${oid}\r\nsize 1\r\n`,
    `version https://hawser.github.com/spec/v1\noid sha256:${oid}\nsize 01`,
    `version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize 1\n\n`,
  ]) {
    assert.equal(lenientPointerOid(Buffer.from(text)), oid, JSON.stringify(text));
    assert.equal(parsePointer(Buffer.from(text)) === undefined || text.endsWith('size 1\n'), true);
  }
  assert.equal(lenientPointerOid(Buffer.from(`a text that mentions oid sha256:${oid.slice(1)}\n`)), undefined);
});

test('LFS files of a tree, of a change and of all history, read with git', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-pointers-'));
  try {
    const work = path.join(dir, 'work');
    const git = (...args: string[]) =>
      execFileSync('git', args, { cwd: work, env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: dir, GIT_AUTHOR_NAME: 'a', GIT_AUTHOR_EMAIL: 'a@x', GIT_COMMITTER_NAME: 'a', GIT_COMMITTER_EMAIL: 'a@x' } }).toString();
    await mkdir(path.join(work, 'docs'), { recursive: true });
    git('init', '-q', '-b', 'main');
    const [a, b, c] = [oidOf('a'), oidOf('b'), oidOf('c')];
    await writeFile(path.join(work, 'docs', 'Lease (final).pdf'), pointer(a, 10));
    await writeFile(path.join(work, 'café.bin'), pointer(b, 20));
    await writeFile(path.join(work, 'README'), 'not a pointer\n');
    await writeFile(path.join(work, 'big.txt'), 'x'.repeat(5000));
    git('add', '-A');
    git('commit', '-q', '-m', 'one');
    const one = git('rev-parse', 'HEAD').trim();
    await writeFile(path.join(work, 'café.bin'), pointer(c, 30));
    git('mv', 'docs/Lease (final).pdf', 'docs/renamed.pdf');
    git('commit', '-q', '-am', 'two');
    const two = git('rev-parse', 'HEAD').trim();
    const gitDir = path.join(work, '.git');

    const byPath = (files: { path: string; oid: string; size: number }[]) => files.sort((x, y) => (x.path < y.path ? -1 : 1));
    assert.deepEqual(byPath((await lfsFilesAt(gitDir, one)).files), [
      { path: 'café.bin', oid: b, size: 20 },
      { path: 'docs/Lease (final).pdf', oid: a, size: 10 },
    ]);
    // The rename is the new path; the deletion of the old one is not listed.
    assert.deepEqual(byPath((await lfsFilesChanged(gitDir, one, two)).files), [
      { path: 'café.bin', oid: c, size: 30 },
      { path: 'docs/renamed.pdf', oid: a, size: 10 },
    ]);
    assert.deepEqual([...(await reachableLfsOids(gitDir))].sort(), [a, b, c].sort());
    // Limits: reading stops, and says so.
    const capped = await lfsFilesAt(gitDir, one, { maxEntries: 100, maxFiles: 2 }); // README and café.bin: pointer-sized blobs
    assert.deepEqual([capped.files.length, capped.truncated], [1, true]);
    const few = await lfsFilesAt(gitDir, one, { maxEntries: 2, maxFiles: 100 });
    assert.equal(few.truncated, true);
    assert.equal((await lfsFilesAt(gitDir, two)).truncated, false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
