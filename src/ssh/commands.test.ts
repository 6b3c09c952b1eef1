/**
 * What SSH clients may run: git's commands as git quotes them, git-lfs-authenticate, and
 * nothing else; paths are three validated names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { parseCommand, splitWords } from './commands.js';
import { PktRequests } from './server.js';

test('commands as git and git-lfs send them are understood', () => {
  assert.deepEqual(parseCommand("git-upload-pack '/alice/main/app.git'"), {
    kind: 'git',
    service: 'upload-pack',
    repo: { owner: 'alice', space: 'main', repo: 'app' },
    path: '/alice/main/app.git',
  });
  assert.equal((parseCommand("git-receive-pack 'alice/main/app.git'") as { service: string }).service, 'receive-pack');
  assert.equal((parseCommand('git upload-pack alice/main/app') as { service: string }).service, 'upload-pack');
  assert.deepEqual(parseCommand('git-lfs-authenticate alice/main/app.git download'), {
    kind: 'lfs-authenticate',
    operation: 'download',
    repo: { owner: 'alice', space: 'main', repo: 'app' },
    path: 'alice/main/app.git',
  });
  // git's sq_quote of a quote inside a word.
  assert.deepEqual(splitWords("a 'b'\\''c' d"), ['a', "b'c", 'd']);
});

test('anything else is refused with its reason', () => {
  for (const [command, code] of [
    ['sh', 'unknown_command'],
    ['git-upload-archive alice/main/app', 'unknown_command'],
    ["git-upload-pack '../../etc'", 'invalid_path'],
    ["git-upload-pack 'alice/main/app/../../x'", 'invalid_path'],
    ["git-upload-pack 'alice/main'", 'invalid_path'],
    ['git-upload-pack "alice/main/app"', 'unknown_command'],
    ["git-upload-pack 'alice/main/app", 'unknown_command'],
    ['git-upload-pack alice/main/app extra', 'unknown_command'],
    ['git-lfs-authenticate alice/main/app delete', 'unknown_command'],
    ['', 'unknown_command'],
    [`git-upload-pack ${'a'.repeat(2000)}`, 'unknown_command'],
  ] as const) {
    assert.throws(() => parseCommand(command), { code }, command);
  }
});

test('v2 requests are read one at a time up to their flush, bounded, and the end of input ends them', async () => {
  const first = '0014command=ls-refs\n0000';
  const second = '0012command=fetch\n00010009done\n0000';
  // Split anywhere: the reader joins what arrives.
  const bytes = Buffer.from(first + second);
  const reader = new PktRequests(Readable.from([bytes.subarray(0, 7), bytes.subarray(7, 30), bytes.subarray(30)]), 1024);
  assert.equal((await reader.next())?.toString(), first);
  assert.equal((await reader.next())?.toString(), second);
  assert.equal(await reader.next(), undefined);
  await assert.rejects(new PktRequests(Readable.from([Buffer.from('zzzz')]), 1024).next(), /malformed/);
  await assert.rejects(new PktRequests(Readable.from([Buffer.from(`0104${'x'.repeat(256)}`)]), 100).next(), /too large/);
  await assert.rejects(new PktRequests(Readable.from([Buffer.from('0014comm')]), 1024).next(), /truncated/);
});
