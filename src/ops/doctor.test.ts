/**
 * `doctor` on a real temporary directory: a normal one passes; a filesystem whose rename,
 * link, O_EXCL create, fsync or names misbehave (the injected `fs`, the only stand-in here)
 * fails the matching check with a clear detail, and the scratch directory is gone every time.
 * The database checks run against the PostgreSQL of `npm test`, the object store check
 * against the filesystem store.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createFsStore } from '../storage/fs-store.js';
import { faulty } from '../storage/faulty-store.js';
import { databaseLocation, openDatabaseProbe } from '../meta/probe.js';
import { nodeFs, type CheckResult, type DoctorFs } from './check.js';
import { checkDatabase, checkObjectStore, clockSkew, defaultDeps, runDoctor, type DoctorDeps, type DoctorReport } from './doctor.js';

const FS_CHECKS = ['atomic-rename', 'hard-links', 'lockfile', 'flock', 'fsync', 'case-sensitive', 'free-space', 'free-inodes'];

async function dataDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(tmpdir(), 'gitstratum-doctor-'));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Small minimums: these tests are about behaviour, not about the free space of the machine running them. */
async function doctor(dir: string, fs: Partial<DoctorFs> = {}, deps: Partial<DoctorDeps> = {}): Promise<DoctorReport> {
  return runDoctor({ dataDir: dir, minFreeBytes: 1, minFreeInodes: 1 }, { ...defaultDeps, ...deps, fs: { ...nodeFs, ...fs } });
}

function check(report: DoctorReport, name: string): CheckResult {
  const found = report.checks.find((c) => c.name === name);
  assert.ok(found, `no ${name} check in ${JSON.stringify(report.checks)}`);
  return found;
}

/** The one failed check is `name`, its detail matches, and every other filesystem check passed. */
function onlyFailure(report: DoctorReport, name: string, detail: RegExp): void {
  assert.equal(report.passed, false);
  assert.match(check(report, name).detail, detail);
  assert.deepEqual(
    report.checks.filter((c) => c.status === 'failed').map((c) => c.name),
    [name],
  );
}

/** Whatever happened, the scratch directory is removed and nothing else is written. */
async function assertClean(dir: string): Promise<void> {
  assert.deepEqual(await fsp.readdir(dir), ['tmp']);
  assert.deepEqual(await fsp.readdir(path.join(dir, 'tmp')), []);
}

const errno = (code: string, message: string) => Object.assign(new Error(`${code}: ${message}`), { code });

test('doctor passes on a normal directory and leaves nothing behind but an empty tmp/', async (t) => {
  const dir = await dataDir(t);
  const report = await doctor(dir);
  assert.equal(report.passed, true, JSON.stringify(report.checks, null, 2));
  assert.deepEqual(
    report.checks.map((c) => c.name),
    [...FS_CHECKS, 'database', 'clock-skew', 'object-store'],
  );
  for (const name of FS_CHECKS.filter((n) => n !== 'flock')) assert.equal(check(report, name).status, 'ok', name);
  // flock(1) is util-linux's; without it the check says so instead of passing.
  const flock = check(report, 'flock');
  if (flock.status === 'skipped') process.stderr.write(`note: ${flock.detail}\n`);
  else assert.equal(flock.status, 'ok', flock.detail);
  for (const name of ['database', 'clock-skew', 'object-store']) assert.equal(check(report, name).status, 'skipped', name);
  await assertClean(dir);
});

test('a rename that fails, keeps the old file or writes part of the new one fails atomic-rename', async (t) => {
  const dir = await dataDir(t);
  const broken: [string, DoctorFs['rename'], RegExp][] = [
    ['throws', async () => Promise.reject(errno('EXDEV', 'cross-device link not permitted, rename')), /renaming over the existing file: EXDEV/],
    ['drops the new file', (from) => fsp.unlink(from), /still holds the old content/],
    [
      'copies half',
      async (from, to) => {
        const bytes = await fsp.readFile(from);
        await fsp.writeFile(to, bytes.subarray(0, bytes.length / 2));
        await fsp.unlink(from);
      },
      /neither the old nor the new content/,
    ],
  ];
  for (const [what, rename, detail] of broken) {
    const report = await doctor(dir, { rename });
    onlyFailure(report, 'atomic-rename', detail);
    assert.equal(check(report, 'atomic-rename').status, 'failed', what);
    await assertClean(dir);
  }
});

test('lockfiles that O_EXCL does not protect fail the lockfile check (two processes both create x.lock)', async (t) => {
  const dir = await dataDir(t);
  // As on NFSv2: an exclusive create of a file another process created succeeds.
  const open: DoctorFs['open'] = (file, flags) => fsp.open(file, flags === 'wx' ? 'w' : flags);
  const report = await doctor(dir, { open });
  onlyFailure(report, 'lockfile', /two processes both created x\.lock .*does not honour O_EXCL/);
  await assertClean(dir);
});

test('a lockfile that cannot be taken after its holder released it fails the lockfile check', async (t) => {
  const dir = await dataDir(t);
  const open: DoctorFs['open'] = async (file, flags) => {
    if (flags === 'wx') throw errno('EEXIST', `file already exists, open '${file}'`);
    return fsp.open(file, flags);
  };
  const report = await doctor(dir, { open });
  onlyFailure(report, 'lockfile', /x\.lock could not be created after its holder removed it: EEXIST/);
  await assertClean(dir);
});

test('without flock(1) the flock check is skipped with the reason, and doctor still passes', async (t) => {
  const dir = await dataDir(t);
  const report = await doctor(dir, {}, { findProgram: async () => undefined });
  assert.equal(report.passed, true);
  assert.deepEqual(check(report, 'flock'), {
    name: 'flock',
    status: 'skipped',
    detail: "flock(1) is not installed (util-linux); git's own locking is the lockfile check",
  });
  await assertClean(dir);
});

test('a "hard link" that is a copy fails hard-links', async (t) => {
  const dir = await dataDir(t);
  const report = await doctor(dir, { link: (from, to) => fsp.copyFile(from, to) });
  onlyFailure(report, 'hard-links', /a copy, not a hard link/);
  await assertClean(dir);
});

test('a directory fsync that fails fails the fsync check with the error', async (t) => {
  const dir = await dataDir(t);
  const open: DoctorFs['open'] = async (file, flags) => {
    const handle = await fsp.open(file, flags);
    if (flags !== 'r') return handle;
    return { sync: () => Promise.reject(errno('EINVAL', 'invalid argument, fsync')), close: () => handle.close() };
  };
  const report = await doctor(dir, { open });
  onlyFailure(report, 'fsync', /^fsync of a directory: EINVAL/);
  await assertClean(dir);
});

test('a filesystem that ignores case fails case-sensitive', async (t) => {
  const dir = await dataDir(t);
  // Names folded to lower case, as on a default APFS or NTFS volume.
  const fold = (file: string) => path.join(path.dirname(file), path.basename(file).toLowerCase());
  const report = await doctor(dir, {
    writeFile: (file, data, opts) => fsp.writeFile(fold(file), data, opts),
    readFile: (file) => fsp.readFile(fold(file)),
  });
  onlyFailure(report, 'case-sensitive', /creating A found a: the filesystem ignores case/);
  await assertClean(dir);
});

test('free space or inodes below the minimums fail, naming the flag', async (t) => {
  const dir = await dataDir(t);
  const report = await runDoctor({ dataDir: dir, minFreeBytes: Number.MAX_SAFE_INTEGER, minFreeInodes: Number.MAX_SAFE_INTEGER });
  assert.equal(report.passed, false);
  assert.equal(check(report, 'free-space').status, 'failed');
  assert.match(check(report, 'free-space').detail, /free, below the minimum of .* \(--min-free-bytes\)$/);
  // btrfs and ZFS report no inode count: nothing to run out of.
  if ((await fsp.statfs(dir)).files === 0) assert.equal(check(report, 'free-inodes').status, 'ok');
  else assert.match(check(report, 'free-inodes').detail, /free, below the minimum of 9007199254740991 \(--min-free-inodes\)/);
  await assertClean(dir);
});

test('a data directory that cannot be created fails, and the filesystem checks are skipped', async (t) => {
  const dir = await dataDir(t);
  await fsp.writeFile(path.join(dir, 'file'), '');
  const report = await doctor(path.join(dir, 'file', 'data'));
  assert.equal(report.passed, false);
  assert.match(check(report, 'scratch-directory').detail, /^cannot create .*: ENOTDIR/);
  for (const name of FS_CHECKS) assert.equal(check(report, name).status, 'skipped', name);
});

test('a check that throws where it did not expect to is that check failing, and the scratch directory still goes', async (t) => {
  const dir = await dataDir(t);
  const report = await doctor(dir, { stat: () => Promise.reject(errno('EIO', 'i/o error, stat')) });
  onlyFailure(report, 'hard-links', /^reading the link count: EIO/);
  await assertClean(dir);
});

test('clock skew is read from the sample with the shortest round trip', () => {
  assert.deepEqual(
    clockSkew([
      { sentMs: 1000, dbMs: 9000, receivedMs: 1400 },
      { sentMs: 2000, dbMs: 3505, receivedMs: 2010 },
      { sentMs: 3000, dbMs: 3000, receivedMs: 3300 },
    ]),
    { skewMs: 1500, uncertaintyMs: 5 },
  );
  assert.equal(clockSkew([{ sentMs: 100, dbMs: 50, receivedMs: 100 }]).skewMs, -50);
});

test('a database that cannot be reached fails the database check and skips clock-skew', async () => {
  const port = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
  const url = `postgres://doctor:secret@127.0.0.1:${port}/gitstratum`;
  const [database, skew] = await checkDatabase({ location: databaseLocation(url), open: () => openDatabaseProbe(url) }, Date.now);
  assert.equal(database!.status, 'failed');
  assert.match(database!.detail, new RegExp(`^cannot connect to postgres://127\\.0\\.0\\.1:${port}/gitstratum: .*ECONNREFUSED`));
  assert.doesNotMatch(database!.detail, /secret/);
  assert.equal(skew!.status, 'skipped');
});

const pgUrl = process.env['GITSTRATUM_TEST_DATABASE_URL'];
if (!pgUrl && process.env['CI']) throw new Error('CI requires PostgreSQL: GITSTRATUM_TEST_DATABASE_URL is not set');
const needsPg = pgUrl ? false : 'PostgreSQL not configured (GITSTRATUM_TEST_DATABASE_URL unset): run with scripts/test.sh';

test('against PostgreSQL: select 1 and the clock pass; a host clock 5 s behind fails clock-skew', { skip: needsPg }, async () => {
  const database = { location: databaseLocation(pgUrl!), open: () => openDatabaseProbe(pgUrl!) };
  const [roundTrip, skew] = await checkDatabase(database, Date.now);
  assert.equal(roundTrip!.status, 'ok', roundTrip!.detail);
  assert.match(roundTrip!.detail, /^select 1 in .* ms \(postgres:\/\//);
  assert.equal(skew!.status, 'ok', skew!.detail);

  // The same database, with this host's clock set back: the database is then 5 s ahead.
  const [, late] = await checkDatabase(database, () => Date.now() - 5000);
  assert.equal(late!.status, 'failed');
  assert.match(late!.detail, /^the database clock is \d\.\d s ahead of this host's .*more than 1\.0 s/);
});

test('the object store round trip passes on a working store and leaves no object behind', async (t) => {
  const dir = await dataDir(t);
  const store = createFsStore(dir);
  const result = await checkObjectStore(store);
  assert.equal(result.status, 'ok', result.detail);
  assert.match(result.detail, /^put, get and delete of 4096 bytes under doctor\/[0-9a-f]{16} on filesystem in /);
  for await (const o of store.list('doctor/')) assert.fail(`left behind: ${o.key}`);
});

test('an object store whose get fails fails the round trip, and the object is still deleted', async (t) => {
  const dir = await dataDir(t);
  const store = createFsStore(dir);
  const result = await checkObjectStore(faulty(store, { failGets: 1 }));
  assert.equal(result.status, 'failed');
  assert.match(result.detail, /^get doctor\/[0-9a-f]{16}: injected object store fault$/);
  for await (const o of store.list('doctor/')) assert.fail(`left behind: ${o.key}`);
});
