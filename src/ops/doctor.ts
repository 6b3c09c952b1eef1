/**
 * `gitstratum doctor`: the preflight of a node (issue 10). It checks that the data
 * directory's filesystem does what git and gitstratum rely on (filesystem-checks.ts,
 * lock-checks.ts), and, when they are configured, the database (round trip, clock skew) and
 * the object store (a put/get/delete round trip).
 *
 * The filesystem checks work in a scratch directory `<data>/tmp/doctor-<random>`, one
 * subdirectory each, removed afterwards whatever happened. Nothing else is written: no
 * database is opened or migrated, and the object store gets one small object under
 * `doctor/<random>`, deleted again.
 *
 * Each check is a function returning {name, status, detail}; a check that throws where it
 * did not expect to is reported as failed with the error, never as a crash of the rest.
 */
import { randomBytes } from 'node:crypto';
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { objectKey, type ObjectStore } from '../storage/object-store.js';
import type { DatabaseProbe } from '../meta/probe.js';
import { errorText, failed, formatMs, nodeFs, ok, skipped, type CheckResult, type DoctorFs } from './check.js';
import { checkAtomicRename, checkCaseSensitive, checkFsync, checkHardLinks, checkSpace } from './filesystem-checks.js';
import { checkFlock, checkLockfile } from './lock-checks.js';

export type { CheckResult, CheckStatus, DoctorFs } from './check.js';

export const DEFAULT_MIN_FREE_BYTES = 1024 ** 3;
export const DEFAULT_MIN_FREE_INODES = 10_000;
/** Leases are judged by the database's clock, logs and debounce by the host's: they must agree this well. */
export const MAX_CLOCK_SKEW_MS = 1000;
/** Bound of the object store round trip, retries included. */
const STORE_TIMEOUT_MS = 30_000;

export interface DoctorSettings {
  dataDir: string;
  minFreeBytes: number;
  minFreeInodes: number;
  /** PostgreSQL, when configured. SQLite lives in the data directory, on this host's clock. */
  database?: { location: string; open(): Promise<DatabaseProbe> } | undefined;
  /** The object store, when it is not the filesystem store inside the data directory. */
  store?: ObjectStore | undefined;
}

export interface DoctorDeps {
  fs: DoctorFs;
  /** The absolute path of an executable found on PATH, or undefined. */
  findProgram(name: string): Promise<string | undefined>;
  /** This host's clock, milliseconds since the epoch. */
  clock(): number;
  /** The `node` the lock holder runs on. */
  nodePath: string;
}

export const defaultDeps: DoctorDeps = { fs: nodeFs, findProgram: findOnPath, clock: () => Date.now(), nodePath: process.execPath };

export interface DoctorReport {
  passed: boolean;
  dataDir: string;
  checks: CheckResult[];
}

/** The filesystem checks, in the order they are reported. */
const FS_CHECKS = ['atomic-rename', 'hard-links', 'lockfile', 'flock', 'fsync', 'case-sensitive', 'free-space', 'free-inodes'];

export async function runDoctor(settings: DoctorSettings, deps: DoctorDeps = defaultDeps): Promise<DoctorReport> {
  const checks = [...(await filesystemChecks(settings, deps))];
  checks.push(...(settings.database ? await checkDatabase(settings.database, deps.clock) : noDatabase()));
  checks.push(settings.store ? await checkObjectStore(settings.store) : skipped('object-store', 'the filesystem store, inside the data directory checked above'));
  return { passed: checks.every((c) => c.status !== 'failed'), dataDir: settings.dataDir, checks };
}

async function filesystemChecks(settings: DoctorSettings, deps: DoctorDeps): Promise<CheckResult[]> {
  const { fs } = deps;
  const scratch = path.join(settings.dataDir, 'tmp', `doctor-${randomBytes(6).toString('hex')}`);
  try {
    await fs.mkdir(scratch, { recursive: true, mode: 0o700 });
  } catch (err) {
    const detail = `no scratch directory: ${errorText(err)}`;
    return [failed('scratch-directory', `cannot create ${scratch}: ${errorText(err)}`), ...FS_CHECKS.map((name) => skipped(name, detail))];
  }
  const results: CheckResult[] = [];
  try {
    /** Runs one check in its own empty subdirectory; an unexpected throw is its failure. */
    const inScratch = async (name: string, check: (dir: string) => Promise<CheckResult | CheckResult[]>) => {
      const dir = path.join(scratch, name);
      try {
        await fs.mkdir(dir, {});
        results.push(...[await check(dir)].flat());
      } catch (err) {
        results.push(failed(name, errorText(err)));
      }
    };
    await inScratch('atomic-rename', (dir) => checkAtomicRename(fs, dir));
    await inScratch('hard-links', (dir) => checkHardLinks(fs, dir));
    await inScratch('lockfile', (dir) => checkLockfile(fs, dir, deps.nodePath));
    await inScratch('flock', async (dir) => checkFlock(dir, await deps.findProgram('flock')));
    await inScratch('fsync', (dir) => checkFsync(fs, dir));
    await inScratch('case-sensitive', (dir) => checkCaseSensitive(fs, dir));
    results.push(...(await checkSpace(fs, scratch, settings)));
  } finally {
    await fs.rm(scratch, { recursive: true, force: true }).catch((err: unknown) => {
      results.push(failed('clean-up', `cannot remove ${scratch}: ${errorText(err)}`));
    });
  }
  return results;
}

function noDatabase(): CheckResult[] {
  const why = 'no databaseUrl: metadata in SQLite in the data directory, on this host';
  return [skipped('database', why), skipped('clock-skew', why)];
}

export interface ClockSample {
  /** Host clock when the question was sent. */
  sentMs: number;
  /** Database clock in its answer. */
  dbMs: number;
  /** Host clock when the answer came back. */
  receivedMs: number;
}

/**
 * The database clock minus the host's (positive: the database is ahead), from the sample
 * with the shortest round trip: the database read its clock somewhere within it, so the
 * estimate is off by at most half of it (`uncertaintyMs`), as in NTP.
 */
export function clockSkew(samples: ClockSample[]): { skewMs: number; uncertaintyMs: number } {
  if (samples.length === 0) throw new RangeError('no clock samples');
  const best = samples.reduce((a, b) => (b.receivedMs - b.sentMs < a.receivedMs - a.sentMs ? b : a));
  const half = (best.receivedMs - best.sentMs) / 2;
  return { skewMs: best.dbMs - (best.sentMs + half), uncertaintyMs: half };
}

const CLOCK_SAMPLES = 5;

export async function checkDatabase(database: NonNullable<DoctorSettings['database']>, clock: () => number): Promise<CheckResult[]> {
  let probe: DatabaseProbe;
  try {
    probe = await database.open();
  } catch (err) {
    return [failed('database', `cannot connect to ${database.location}: ${errorText(err)}`), skipped('clock-skew', 'no database connection')];
  }
  try {
    let roundTrip: CheckResult;
    try {
      const start = performance.now();
      await probe.ping();
      roundTrip = ok('database', `select 1 in ${formatMs(performance.now() - start)} (${database.location})`);
    } catch (err) {
      return [failed('database', `select 1 on ${database.location}: ${errorText(err)}`), skipped('clock-skew', 'the database does not answer')];
    }
    const samples: ClockSample[] = [];
    try {
      for (let i = 0; i < CLOCK_SAMPLES; i++) {
        const sentMs = clock();
        const dbMs = await probe.clockMs();
        samples.push({ sentMs, dbMs, receivedMs: clock() });
      }
    } catch (err) {
      return [roundTrip, failed('clock-skew', `reading the database clock: ${errorText(err)}`)];
    }
    const { skewMs, uncertaintyMs } = clockSkew(samples);
    const said = `the database clock is ${formatMs(Math.abs(skewMs))} ${skewMs >= 0 ? 'ahead of' : 'behind'} this host's (±${formatMs(uncertaintyMs)})`;
    const skew =
      Math.abs(skewMs) > MAX_CLOCK_SKEW_MS
        ? failed('clock-skew', `${said}, more than ${formatMs(MAX_CLOCK_SKEW_MS)}: leases follow the database's clock, logs and debounce this host's; synchronize both (NTP)`)
        : ok('clock-skew', `${said}; limit ${formatMs(MAX_CLOCK_SKEW_MS)}`);
    return [roundTrip, skew];
  } finally {
    await probe.close();
  }
}

const SCRATCH_OBJECT_BYTES = 4096;

/** Puts a small object under `doctor/<random>`, reads it back, compares, deletes it and checks it is gone. */
export async function checkObjectStore(store: ObjectStore, timeoutMs = STORE_TIMEOUT_MS): Promise<CheckResult> {
  const name = 'object-store';
  const key = objectKey(`doctor/${randomBytes(8).toString('hex')}`);
  const content = randomBytes(SCRATCH_OBJECT_BYTES);
  let step = 'put';
  let deleted = false;
  const roundTrip = async (): Promise<CheckResult> => {
    const start = performance.now();
    await store.put(key, Readable.from([content]), { size: content.length });
    step = 'get';
    const { body } = await store.get(key);
    const back = await readAtMost(body, content.length + 1);
    if (!back.equals(content)) return failed(name, `${key} read back ${back.length} bytes that differ from the ${content.length} written`);
    step = 'delete';
    await store.delete(key);
    deleted = true;
    step = 'head after delete';
    if (await store.head(key)) return failed(name, `${key} is still there after delete`);
    return ok(name, `put, get and delete of ${content.length} bytes under ${key} on ${store.kind} in ${formatMs(performance.now() - start)}`);
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${formatMs(timeoutMs)}`)), timeoutMs);
    });
    return await Promise.race([roundTrip(), late]);
  } catch (err) {
    return failed(name, `${step} ${key}: ${errorText(err)}`);
  } finally {
    clearTimeout(timer);
    // A put that failed half-way may still have written; deleting an absent key is no error.
    // Bounded too: a store that did not answer may not answer this either.
    if (!deleted) {
      let bound: NodeJS.Timeout | undefined;
      const given = new Promise<void>((resolve) => (bound = setTimeout(resolve, timeoutMs)));
      await Promise.race([store.delete(key).catch(() => {}), given]);
      clearTimeout(bound);
    }
  }
}

/** The stream's bytes, up to `max` (a store answering with more than was written is wrong anyway). */
async function readAtMost(body: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    chunks.push(chunk as Buffer);
    size += (chunk as Buffer).length;
    if (size >= max) {
      body.destroy();
      break;
    }
  }
  return Buffer.concat(chunks);
}

/** Looks `name` up in PATH, as a shell would. */
export async function findOnPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}
