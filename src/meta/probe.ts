/**
 * A look at the PostgreSQL server for `gitstratum doctor`: is it reachable, how long does a
 * trivial statement take, what time is it there. One connection of its own, with no pool
 * and no migrations: a preflight changes nothing in the database it checks.
 */
import pg from 'pg';

export interface DatabaseProbe {
  /** Runs `select 1`. */
  ping(): Promise<void>;
  /** The database's clock in milliseconds since the epoch: clock_timestamp(), not the transaction's start. */
  clockMs(): Promise<number>;
  close(): Promise<void>;
}

/** `postgres://host:port/db`, without credentials: for messages. */
export function databaseLocation(databaseUrl: string): string {
  const url = new URL(databaseUrl);
  return `postgres://${url.host}${url.pathname}`;
}

/** Connects, or rejects with the driver's error; every statement is bounded by `timeoutMs`. */
export async function openDatabaseProbe(databaseUrl: string, timeoutMs = 10_000): Promise<DatabaseProbe> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  // A server that goes away after connecting must not crash the process through 'error'.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  return {
    ping: async () => void (await client.query('select 1')),
    clockMs: async () => {
      const { rows } = await client.query<{ ms: number }>('select (extract(epoch from clock_timestamp()) * 1000)::float8 as ms');
      return rows[0]!.ms;
    },
    close: () => client.end().catch(() => {}),
  };
}
