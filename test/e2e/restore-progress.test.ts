/**
 * The restore progress bar, seen as a user sees it: on a terminal (util-linux `script` gives
 * the command a pseudo-terminal) a bar that ends at 100 % with the rate; in a pipe, nothing on
 * stderr for a short restore.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { BIN, Git, run, Server, seedAlice, tempDir } from './harness.js';

let server: Server;
let git: Git;

before(async () => {
  server = await Server.start({ args: ['--maintenance-enabled', 'false', '--snapshots-enabled', 'false'] });
  const token = await seedAlice(server);
  git = await Git.create();
  await server.createRepo('alice/main/big');
  const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1 });
  await writeFile(path.join(work, 'noise.bin'), randomBytes(3 * 1024 * 1024));
  await git.ok(['add', '-A'], { cwd: work });
  await git.ok(['commit', '-q', '-m', 'noise'], { cwd: work });
  await git.ok(['push', '-q', server.repoUrl('alice/main/big.git', token), 'main'], { cwd: work });
  await server.cliOk(['snapshot', 'create', 'alice/main/big']);
});
after(() => server?.cleanup());

const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

test('restore on a terminal draws a progress bar that ends at 100 % with the rate', async () => {
  const to = path.join(await tempDir(), 'big.git');
  const cmd = [process.execPath, BIN, 'restore', 'alice/main/big', '--to', to, '--data', server.dataDir].map(sh).join(' ');
  const r = await run('script', ['-qec', cmd, '/dev/null']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /\ralice\/main\/big \[#{20}\] 100% 3\.\d MiB\/3\.\d MiB [\d.]+ [KMG]?i?B\/s/);
  assert.match(r.stdout, /restored alice\/main\/big from snapshot/);
});

test('restore into a pipe prints no progress for a short restore', async () => {
  const to = path.join(await tempDir(), 'big.git');
  const r = await server.cli(['restore', 'alice/main/big', '--to', to]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
});
