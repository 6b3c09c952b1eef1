/**
 * Backups of the embedded SQLite metadata database to the object store
 * (docs/design/snapshots.md): repositories are in snapshots, and this is the rest (owners,
 * spaces, repository rows, tokens, the snapshot graph itself).
 *
 * A backup is SQLite's online backup API into a temporary file under <data>/tmp, gzip-streamed
 * into the store at `backups/meta/<YYYYMMDDTHHMMSS.sssZ>.sqlite.gz`; only the newest `keep`
 * are kept. A restore streams one back (gunzip) into a temporary file beside meta.sqlite,
 * checks it (`integrity_check`, the migrations table), sets any old meta.sqlite and its WAL
 * files aside (never deleted; a stale WAL must never be replayed onto another database), and
 * renames it into place. It refuses while a server runs on the data directory, and when
 * meta.sqlite exists unless forced. With PostgreSQL both refuse: its own tools do this.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { sqliteFileProblem, type MetaStore } from '../meta/db.js';
import { objectKey, type ObjectStore } from '../storage/object-store.js';
import { serverRunning } from '../git/hooks.js';
import { conflict, invalid, notFound } from '../shared/errors.js';

export const META_BACKUP_PREFIX = 'backups/meta/';
const SUFFIX = '.sqlite.gz';

export interface MetaBackup {
  key: string;
  /** The key's timestamp, as it is written in the key (what `--at` takes). */
  stamp: string;
  at: string;
  size: number;
}

export const postgresBackupMessage =
  'metadata is in PostgreSQL: back it up with PostgreSQL’s own tools (pg_dump, or base backups with WAL archiving)';
export const postgresRestoreMessage =
  'metadata is in PostgreSQL: restore it with PostgreSQL’s own tools (pg_restore or psql for a dump, point-in-time recovery for base backups)';

/** `2026-01-21T08:15:00.123Z` → `20260121T081500.123Z`: sorts by time, valid in a key. */
export function backupStamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '');
}

function stampTime(stamp: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z$/.exec(stamp);
  return m ? new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`) : undefined;
}

/** The backups in the store, oldest first. */
export async function listMetaBackups(store: ObjectStore): Promise<MetaBackup[]> {
  const found: MetaBackup[] = [];
  for await (const o of store.list(META_BACKUP_PREFIX)) {
    const name = o.key.slice(META_BACKUP_PREFIX.length);
    const stamp = name.endsWith(SUFFIX) ? name.slice(0, -SUFFIX.length) : '';
    const at = stampTime(stamp);
    if (at) found.push({ key: o.key, stamp, at: at.toISOString(), size: o.size });
  }
  return found.sort((a, b) => (a.stamp < b.stamp ? -1 : a.stamp > b.stamp ? 1 : 0));
}

export interface MetaBackupDeps {
  meta: MetaStore;
  store: ObjectStore;
  dataDir: string;
}

/** Takes a backup now and removes all but the newest `keep`. */
export async function backupMeta(deps: MetaBackupDeps, opts: { keep: number }): Promise<MetaBackup & { pruned: number }> {
  if (!deps.meta.backupTo) throw invalid('metadata_in_postgres', postgresBackupMessage);
  const tmpDir = path.join(deps.dataDir, 'tmp');
  await mkdir(tmpDir, { recursive: true });
  const tmp = path.join(tmpDir, `meta-backup-${randomBytes(6).toString('hex')}.sqlite`);
  const started = new Date();
  const stamp = backupStamp(started);
  const key = objectKey(`${META_BACKUP_PREFIX}${stamp}${SUFFIX}`);
  try {
    await deps.meta.backupTo(tmp);
    const file = createReadStream(tmp);
    const gzip = createGzip();
    file.on('error', (err) => gzip.destroy(err));
    file.pipe(gzip);
    const { size } = await deps.store.put(key, gzip, { contentType: 'application/gzip' });
    const all = await listMetaBackups(deps.store);
    const old = all.slice(0, Math.max(0, all.length - opts.keep));
    for (const b of old) await deps.store.delete(objectKey(b.key));
    return { key, stamp, at: started.toISOString(), size, pruned: old.length };
  } finally {
    for (const suffix of ['', '-wal', '-shm']) await rm(tmp + suffix, { force: true });
  }
}

/** The backup `at` names: a stamp as listed, or the newest at or before an ISO time; the newest when unset. */
export function chooseBackup(all: readonly MetaBackup[], at: string | undefined): MetaBackup {
  if (all.length === 0) throw notFound('meta_backup_not_found', `no metadata backup under ${META_BACKUP_PREFIX}`);
  if (at === undefined) return all[all.length - 1]!;
  const exact = all.find((b) => b.stamp === at || b.key === at);
  if (exact) return exact;
  const t = new Date(at);
  if (Number.isNaN(t.getTime())) throw invalid('invalid_time', `not a backup timestamp or a time: ${at}`);
  const chosen = all.filter((b) => Date.parse(b.at) <= t.getTime()).pop();
  if (!chosen) throw notFound('meta_backup_not_found', `no metadata backup at or before ${at}`);
  return chosen;
}

export interface RestoredMeta {
  backup: MetaBackup;
  target: string;
  /** Where the replaced meta.sqlite (and its WAL files) went, when there was one. */
  setAside: string[];
}

export async function restoreMeta(
  deps: { store: ObjectStore; dataDir: string },
  opts: { at?: string | undefined; force?: boolean },
): Promise<RestoredMeta> {
  const target = path.join(deps.dataDir, 'meta.sqlite');
  if (await serverRunning(deps.dataDir)) {
    throw conflict('data_dir_in_use', `a gitstratum server is running on ${deps.dataDir}: stop it (and any worker) before restoring its metadata`);
  }
  const exists = (f: string) => stat(f).then(() => true, () => false);
  if ((await exists(target)) && !opts.force) {
    throw conflict('meta_exists', `${target} exists: pass --force to set it aside and restore over it`, { target });
  }
  const backup = chooseBackup(await listMetaBackups(deps.store), opts.at);
  await mkdir(deps.dataDir, { recursive: true });
  const tmp = `${target}.restoring-${randomBytes(6).toString('hex')}`;
  try {
    const { body } = await deps.store.get(objectKey(backup.key));
    await pipeline(body, createGunzip(), createWriteStream(tmp, { flags: 'wx', flush: true }));
    const problem = sqliteFileProblem(tmp);
    if (problem) throw invalid('meta_backup_corrupt', `metadata backup ${backup.stamp} is not usable: ${problem}`, { key: backup.key });
    // The old database and its WAL go aside together (the WAL belongs to that file only).
    const aside = `${target}.before-restore-${backupStamp(new Date())}`;
    const setAside: string[] = [];
    for (const suffix of ['', '-wal', '-shm']) {
      if (!(await exists(target + suffix))) continue;
      await rename(target + suffix, aside + suffix);
      setAside.push(aside + suffix);
    }
    await rename(tmp, target);
    return { backup, target, setAside };
  } finally {
    for (const suffix of ['', '-wal', '-shm']) await rm(tmp + suffix, { force: true });
  }
}
