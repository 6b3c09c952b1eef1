/**
 * `gitstratum doctor` as an operator runs it: a table and exit 0 on a normal directory, exit 1
 * with the failed check named when O_EXCL lockfiles do not exclude (simulated in the doctor
 * process by test/support/no-excl.ts) or free space is short, exit 2 with one line for a bad
 * flag, and the database and object store round trips against the real PostgreSQL and S3
 * server of the tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { BIN, databaseBackends, run, tempDir } from './harness.js';
import { startS3 } from '../support/s3.js';

const FS_CHECKS = ['atomic-rename', 'hard-links', 'lockfile', 'flock', 'fsync', 'case-sensitive', 'free-space', 'free-inodes'];
const NO_EXCL = new URL('../support/no-excl.js', import.meta.url).href;

async function dataDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await tempDir('gitstratum-doctor-');
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The result column of each row of the table, by check. */
function results(stdout: string): Record<string, string> {
  const rows = stdout.trim().split('\n').slice(1, -1);
  return Object.fromEntries(rows.map((row) => row.split(/\s{2,}/).slice(0, 2) as [string, string]));
}

test('doctor passes on a normal data directory: a table, exit 0, nothing left behind', async (t) => {
  const dir = await dataDir(t);
  const r = await run(process.execPath, [BIN, 'doctor', '--data', dir, '--min-free-bytes', '1MiB', '--min-free-inodes', '100']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.stderr, '');
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0]!, /^check\s+result\s+detail$/);
  assert.match(lines.at(-1)!, new RegExp(`^passed: \\d+ ok, 0 failed, \\d+ skipped \\(${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)$`));
  const byCheck = results(r.stdout);
  for (const name of FS_CHECKS.filter((n) => n !== 'flock')) assert.equal(byCheck[name], 'ok', name);
  assert.match(byCheck['flock']!, /^(ok|skipped)$/);
  assert.deepEqual([byCheck['database'], byCheck['clock-skew'], byCheck['object-store']], ['skipped', 'skipped', 'skipped']);
  // No database opened (no meta.sqlite), the scratch directory gone.
  assert.deepEqual(await readdir(dir), ['tmp']);
  assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);

  const json = await run(process.execPath, [BIN, 'doctor', '--data', dir, '--min-free-bytes', '1MiB', '--min-free-inodes', '100', '--json']);
  assert.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as { passed: boolean; dataDir: string; checks: { name: string; status: string; detail: string }[] };
  assert.equal(report.passed, true);
  assert.equal(report.dataDir, dir);
  assert.deepEqual(
    report.checks.map((c) => c.name),
    [...FS_CHECKS, 'database', 'clock-skew', 'object-store'],
  );
});

test('doctor exits 1 naming the lockfile check when O_EXCL does not exclude another process', async (t) => {
  const dir = await dataDir(t);
  const r = await run(process.execPath, ['--import', NO_EXCL, BIN, 'doctor', '--data', dir, '--min-free-bytes', '1MiB', '--min-free-inodes', '100']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^lockfile\s+FAILED\s+two processes both created x\.lock with O_CREAT\|O_EXCL/m);
  assert.match(r.stdout.trim().split('\n').at(-1)!, /^FAILED: \d+ ok, 1 failed, \d+ skipped/);
  assert.deepEqual(results(r.stdout)['atomic-rename'], 'ok');
  assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
});

test('doctor exits 1 when free space is below --min-free-bytes', async (t) => {
  const dir = await dataDir(t);
  const r = await run(process.execPath, [BIN, 'doctor', '--data', dir, '--min-free-bytes', '1000TiB', '--min-free-inodes', '0']);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^free-space\s+FAILED\s+.* free, below the minimum of .* \(--min-free-bytes\)$/m);
});

test('a bad --min-free-bytes or --min-free-inodes is one error line and exit 2', async () => {
  for (const [flag, value, expected] of [
    ['--min-free-bytes', '12 parsecs', 'a size such as 1GiB or 500MB, or a number of bytes'],
    ['--min-free-inodes', '-5', 'a whole number'],
  ]) {
    const r = await run(process.execPath, [BIN, 'doctor', '--data', '/nonexistent/never-created', flag!, value!]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `gitstratum: ${flag} must be ${expected}, not "${value}"\n`);
  }
});

test('with PostgreSQL and S3: the database round trip, clock skew and object store round trip pass', async (t) => {
  if (!databaseBackends().includes('postgres')) return t.skip('PostgreSQL not configured');
  const dir = await dataDir(t);
  const s3 = await startS3();
  t.after(() => s3.stop());
  const args = [BIN, 'doctor', '--data', dir, '--min-free-bytes', '1MiB', '--min-free-inodes', '100', '--json'];
  const r = await run(process.execPath, [...args, '--database-url', process.env['GITSTRATUM_TEST_DATABASE_URL']!, ...s3.storeArgs()]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const checks = (JSON.parse(r.stdout) as { checks: { name: string; status: string; detail: string }[] }).checks;
  const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
  assert.equal(byName['database']!.status, 'ok', byName['database']!.detail);
  assert.equal(byName['clock-skew']!.status, 'ok', byName['clock-skew']!.detail);
  assert.equal(byName['object-store']!.status, 'ok', byName['object-store']!.detail);
  assert.match(byName['object-store']!.detail, / on s3 in /);
  assert.doesNotMatch(r.stdout, /S3RVER/, 'no credentials in the report');
});
