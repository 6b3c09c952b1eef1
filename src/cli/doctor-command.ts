/**
 * `gitstratum doctor`: the preflight of a node's data directory, database and object store
 * (src/ops/doctor.ts does the checking). It prints a table, or JSON with --json, and exits 1
 * when a check failed. It opens no database through the core: a preflight migrates nothing.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { parseBytes } from '../config/units.js';
import { invalid } from '../shared/errors.js';
import type { DoctorReport, DoctorSettings } from '../ops/doctor.js';
import { common, withSettings } from './program.js';

function minimum(raw: unknown, flag: string, parse: (text: string) => number | undefined, expected: string, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = parse(String(raw));
  if (n === undefined) throw invalid('invalid_argument', `${flag} must be ${expected}, not ${JSON.stringify(raw)}`);
  return n;
}

const wholeNumber = (text: string) => (/^\s*\d+\s*$/.test(text) ? Number(text) : undefined);

/** Columns check, result, detail; then one line with the verdict. */
export function describeReport(report: DoctorReport): string[] {
  const rows = [['check', 'result', 'detail'], ...report.checks.map((c) => [c.name, c.status === 'failed' ? 'FAILED' : c.status, c.detail])];
  const width = (i: number) => Math.max(...rows.map((r) => r[i]!.length));
  const [w0, w1] = [width(0), width(1)];
  const lines = rows.map(([check, result, detail]) => `${check!.padEnd(w0)}  ${result!.padEnd(w1)}  ${detail}`);
  const count = (status: string) => report.checks.filter((c) => c.status === status).length;
  lines.push(`${report.passed ? 'passed' : 'FAILED'}: ${count('ok')} ok, ${count('failed')} failed, ${count('skipped')} skipped (${report.dataDir})`);
  return lines;
}

export function registerDoctorCommand(program: Command): void {
  withSettings(
    common(
      program
        .command('doctor')
        .description(
          "check what this node relies on: the data directory's filesystem (atomic rename, hard links, locking between processes, fsync, free space and inodes, case sensitivity), the database (round trip, clock skew) and the object store (round trip); exits 1 if a check failed",
        )
        .option('--min-free-bytes <size>', 'least free space on the data directory’s filesystem (default 1GiB)')
        .option('--min-free-inodes <n>', 'least free inodes there (default 10000)'),
    ),
  ).action(async (opts: Record<string, unknown>) => {
    const { json, minFreeBytes: rawBytes, minFreeInodes: rawInodes, ...flags } = opts;
    const doctor = await import('../ops/doctor.js');
    const minFreeBytes = minimum(rawBytes, '--min-free-bytes', parseBytes, 'a size such as 1GiB or 500MB, or a number of bytes', doctor.DEFAULT_MIN_FREE_BYTES);
    const minFreeInodes = minimum(rawInodes, '--min-free-inodes', wholeNumber, 'a whole number', doctor.DEFAULT_MIN_FREE_INODES);
    const config = loadConfig(flags);
    const dataDir = path.resolve(config.data);

    let database: DoctorSettings['database'];
    if (config.databaseUrl) {
      const { databaseLocation, openDatabaseProbe } = await import('../meta/probe.js');
      const url = config.databaseUrl;
      database = { location: databaseLocation(url), open: () => openDatabaseProbe(url) };
    }
    // The filesystem store lives in the data directory the filesystem checks cover.
    const store = config.objectStore === 's3' ? await (await import('../app.js')).createObjectStore(config, dataDir) : undefined;
    let report: DoctorReport;
    try {
      report = await doctor.runDoctor({ dataDir, minFreeBytes, minFreeInodes, database, store });
    } finally {
      store?.destroy?.();
    }
    process.stdout.write((json ? JSON.stringify(report, null, 2) : describeReport(report).join('\n')) + '\n');
    if (!report.passed) process.exitCode = 1;
  });
}
