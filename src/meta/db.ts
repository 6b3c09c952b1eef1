/**
 * The metadata database handle: SQLite (better-sqlite3, WAL) in the data directory by
 * default, PostgreSQL when a postgres:// URL is configured. Both run the same migrations
 * and the same queries; table modules take a `Db`, which is either the handle or a
 * transaction, so services choose the transaction boundaries.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import SQLite from 'better-sqlite3';
import pg from 'pg';
import { CompiledQuery, Kysely, Migrator, PostgresDialect, SqliteDialect, SqliteDriver, type Compilable, type DatabaseConnection, type SqliteDatabase } from 'kysely';
import type { Database } from './schema.js';
import { migrationProvider } from './migrations.js';
import { unavailable } from '../shared/errors.js';

export type Db = Kysely<Database>;
export type Dialect = 'sqlite' | 'postgres';

export interface MetaStore {
  db: Db;
  dialect: Dialect;
  /** Where it lives, without credentials: for logs and `doctor`. */
  location: string;
  /**
   * SQLite only: an online, consistent copy of the database into `file` (SQLite's backup
   * API: pages copied in steps, writers not blocked). PostgreSQL has its own tools.
   */
  backupTo?(file: string): Promise<void>;
  /**
   * PostgreSQL only: calls `onMessage` with the payload of every `NOTIFY channel` (on a
   * connection of its own, opened again a second after it fails). Resolves, once listening,
   * to a function that stops. Notifications sent while the connection was down are lost:
   * listeners keep a short expiry of what they cache as well. `onState` hears when listening
   * starts (again) and when it stops.
   */
  listen?(channel: string, onMessage: (payload: string) => void, onState?: (listening: boolean) => void): Promise<() => Promise<void>>;
  /**
   * SQLite only: a value that differs after any commit to the database, by this process or
   * another (the CLI, a `gitstratum worker`). SQLite keeps both counters it reads (data_version
   * for other connections' commits, total_changes() for this one's rows): one prepared,
   * synchronous statement, a few microseconds (meta/changes.ts).
   */
  changeMark?(): string;
  close(): Promise<void>;
}

/**
 * SQLite transactions begin IMMEDIATE: the write lock is taken (waiting up to busy_timeout)
 * before the first read. A deferred transaction that reads, then writes after another
 * process (the CLI beside the server, a worker) committed, fails at once with
 * SQLITE_BUSY — busy_timeout cannot help it, since its snapshot is already stale.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  readonly #database: SqliteDatabase;
  constructor(database: SQLite.Database) {
    const cached = withStatementCache(database);
    super({ database: cached });
    this.#database = cached;
  }
  override createDriver(): SqliteDriver {
    return new ImmediateSqliteDriver({ database: this.#database });
  }
}

/**
 * Kysely prepares every query's SQL anew; preparing was 1.2 of 25 CPU-seconds of the main thread
 * under 200 requests a second (each request runs the same few lookups). Statements are kept by
 * their SQL text (up to `max`, then the cache starts over) and reused: the driver runs one query
 * at a time on its one connection, and a statement still busy (an unfinished iteration) is never
 * handed out again.
 */
export function withStatementCache(database: SQLite.Database, max = 500): SqliteDatabase {
  const statements = new Map<string, SQLite.Statement>();
  return {
    close: () => database.close(),
    prepare(sql: string) {
      const known = statements.get(sql);
      if (known && !known.busy) return known;
      const stmt = database.prepare(sql);
      if (statements.size >= max) statements.clear();
      statements.set(sql, stmt);
      return stmt;
    },
  };
}

/**
 * A query built and compiled once per database handle, then run with each call's values.
 * Kysely builds and compiles a query anew on every call: for the lookups every git request
 * makes (its token, its repository), 20-30 µs of CPU each, against 3 µs to run the compiled
 * SQL on SQLite (issue 12). `build` must use each argument untouched, as a value of the query
 * (checked when it is compiled). A transaction is another handle: compiled for each.
 */
export function compiledOnce<A extends string[], R>(build: (db: Db, ...args: A) => Compilable<R>): (db: Db, ...args: A) => Promise<R[]> {
  const compiled = new WeakMap<Db, { query: CompiledQuery<R>; slots: number[] }>();
  return async (db, ...args) => {
    let c = compiled.get(db);
    if (!c) {
      const marks = args.map((_, i) => `\u0000compiledOnce argument ${i}\u0000`) as A;
      const query = build(db, ...marks).compile();
      const slots = query.parameters.map((p) => marks.indexOf(p as string));
      if (marks.some((_, i) => !slots.includes(i))) throw new Error('compiledOnce: an argument is not a value of the query');
      c = { query, slots };
      compiled.set(db, c);
    }
    const { query, slots } = c;
    const parameters = query.parameters.map((p, i) => (slots[i]! >= 0 ? args[slots[i]!] : p));
    return (await db.executeQuery<R>({ ...query, parameters })).rows;
  };
}

export interface OpenOptions {
  dataDir: string;
  databaseUrl?: string | undefined;
}

export async function openMetaStore(opts: OpenOptions): Promise<MetaStore> {
  let store: MetaStore;
  if (opts.databaseUrl) {
    const url = new URL(opts.databaseUrl);
    await reachPostgres(opts.databaseUrl, url);
    const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: 10 });
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    const databaseUrl = opts.databaseUrl;
    store = {
      db,
      dialect: 'postgres',
      location: `postgres://${url.host}${url.pathname}`,
      listen: (channel, onMessage, onState) => listenPostgres(databaseUrl, channel, onMessage, onState),
      close: () => db.destroy(),
    };
  } else {
    mkdirSync(opts.dataDir, { recursive: true });
    const file = path.join(opts.dataDir, 'meta.sqlite');
    let sqlite: SQLite.Database | undefined;
    try {
      sqlite = new SQLite(file);
      // The first statement is where a file that is not a database fails.
      sqlite.pragma('journal_mode = WAL');
      sqlite.pragma('synchronous = NORMAL');
      sqlite.pragma('foreign_keys = ON');
      // The CLI and the server may write at once; wait for the lock instead of failing.
      sqlite.pragma('busy_timeout = 5000');
    } catch (err) {
      sqlite?.close();
      throw unavailable('database_unavailable', `cannot open the SQLite database ${file}: ${(err as Error).message}`, { file });
    }
    const db = new Kysely<Database>({ dialect: new ImmediateSqliteDialect(sqlite) });
    const mark = sqlite.prepare('select data_version as v, total_changes() as c from pragma_data_version').raw();
    store = {
      db,
      dialect: 'sqlite',
      location: file,
      backupTo: async (dest) => void (await sqlite.backup(dest)),
      changeMark: () => (mark.get() as unknown[]).join(':'),
      close: () => db.destroy(),
    };
  }
  try {
    await migrate(store);
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}

async function listenPostgres(databaseUrl: string, channel: string, onMessage: (payload: string) => void, onState?: (listening: boolean) => void): Promise<() => Promise<void>> {
  if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`not a channel name: ${channel}`);
  let client: pg.Client | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;
  const connect = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: databaseUrl });
    let failed = false;
    // A connection that drops, or a reconnection that fails, tries again a second later.
    const fail = () => {
      if (failed) return;
      failed = true;
      c.end().catch(() => {});
      if (client === c) {
        client = undefined;
        onState?.(false);
      }
      if (!closed) retry = setTimeout(() => void connect().catch(() => {}), 1000).unref();
    };
    c.on('notification', (m) => m.channel === channel && onMessage(m.payload ?? ''));
    c.on('error', fail);
    try {
      await c.connect();
      await c.query(`listen ${channel}`);
    } catch (err) {
      fail();
      throw err;
    }
    if (closed) return void c.end().catch(() => {});
    client = c;
    onState?.(true);
  };
  try {
    await connect();
  } catch (err) {
    closed = true;
    clearTimeout(retry);
    throw err;
  }
  return async () => {
    closed = true;
    clearTimeout(retry);
    await client?.end().catch(() => {});
  };
}

/**
 * One connection before the pool is made, so an unreachable server, a wrong password or a
 * missing database stops the start with one line naming the setting and the host (never the
 * password) instead of a driver stack trace from the first migration. The pool itself has no
 * connect timeout (it would also bound waits for a busy pool); this probe does.
 */
async function reachPostgres(connectionString: string, url: URL): Promise<void> {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 30_000 });
  // A server that goes away after connecting must not crash the process through 'error'.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    const database = decodeURIComponent(url.pathname.slice(1)) || '(default)';
    throw unavailable(
      'database_unavailable',
      `cannot connect to databaseUrl host ${url.host || '(default)'}, database ${database}: ${describe(err)}`,
      { host: url.host, database },
    );
  } finally {
    await client.end().catch(() => {});
  }
}

/** A driver error in a few words; a refused connection to a name with several addresses is an AggregateError with no message. */
function describe(err: unknown): string {
  const e = err as Error & { code?: string; errors?: unknown[] };
  if (e.message) return e.message;
  if (e.errors?.length) return describe(e.errors[0]);
  return e.code ?? String(err);
}

export async function migrate(store: MetaStore): Promise<void> {
  const migrator = new Migrator({
    db: store.db,
    provider: migrationProvider(store.dialect),
    migrationTableName: 'schema_migrations',
    migrationLockTableName: 'schema_migrations_lock',
  });
  const { error } = await migrator.migrateToLatest();
  if (error) throw error;
}

/** True when a driver error is a unique-constraint violation, on either engine. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** The database's error for a row naming a parent that does not exist (a foreign key), on either engine. */
export function isForeignKeyViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '23503' || code === 'SQLITE_CONSTRAINT_FOREIGNKEY';
}

export function now(): string {
  return new Date().toISOString();
}

/**
 * Why `file` is not a usable gitstratum SQLite database (undefined when it is): it must open,
 * pass `PRAGMA integrity_check` and hold the migrations table. Not opened read-only: a read-only
 * open of a WAL database may fail for want of its -shm file; a clean close removes the WAL files.
 */
export function sqliteFileProblem(file: string): string | undefined {
  let sqlite: SQLite.Database | undefined;
  try {
    sqlite = new SQLite(file, { fileMustExist: true });
    const check = sqlite.pragma('integrity_check', { simple: true });
    if (check !== 'ok') return `integrity check: ${String(check)}`;
    const migrations = sqlite.prepare("select count(*) as n from sqlite_master where type = 'table' and name = 'schema_migrations'").get() as { n: number };
    if (migrations.n !== 1) return 'not a gitstratum database (no schema_migrations table)';
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    sqlite?.close();
  }
}

/**
 * Runs `fn` on `items` in chunks of 500: an `in (…)` list stays well under SQLite's and
 * PostgreSQL's limits on bound parameters however many items a request names.
 */
export async function inChunks<T>(items: readonly T[], fn: (chunk: T[]) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += 500) await fn(items.slice(i, i + 500));
}
