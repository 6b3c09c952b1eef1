/**
 * A throwaway PostgreSQL cluster for a benchmark, as scripts/test.sh starts one for the tests:
 * `initdb` into a directory of the run, then `postgres` itself on a free port of 127.0.0.1
 * (no Unix socket), trusting local connections. It runs in a process group of its own, which
 * is registered by the postmaster's PID (bench/processes.ts): stopping it sends TERM to the
 * postmaster and its backends together, and KILL to all of them 5 s later if need be.
 *
 * As root, initdb and postgres run as the `postgres` user (PostgreSQL refuses root), created
 * when missing; the binaries are Debian's (/usr/lib/postgresql/<version>/bin), installed with
 * apt-get when missing and root. Settings are PostgreSQL's defaults (fsync on) but for
 * max_connections=200: every gitstratum process keeps a pool.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync } from 'node:fs';
import { chown, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort, run, track, untrack } from './processes.js';
import { treeCpuSeconds } from './proc-stats.js';

export interface Postgres {
  /** The postmaster's PID: its backends are its children. */
  pid: number;
  port: number;
  version: string;
  /** Creates an empty database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** CPU seconds of the postmaster's process tree so far (backends that ended included). */
  cpuSeconds(): number;
}

/** The newest PostgreSQL of Debian's packages, installed when missing and we are root. */
async function binDir(say: (msg: string) => void): Promise<string> {
  const find = () => {
    const root = '/usr/lib/postgresql';
    if (!existsSync(root)) return undefined;
    const versions = readdirSync(root)
      .filter((v) => existsSync(path.join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(a) - Number(b));
    return versions.length > 0 ? path.join(root, versions[versions.length - 1]!, 'bin') : undefined;
  };
  let dir = find();
  if (dir) return dir;
  if (process.getuid?.() !== 0) throw new Error('PostgreSQL is needed (initdb, postgres); install it with: sudo apt-get install -y postgresql');
  say('installing postgresql from Debian\'s packages');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update', '-qq'], { env });
  await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'postgresql'], { env, timeoutMs: 900_000 });
  dir = find();
  if (!dir) throw new Error('initdb still missing after apt-get install postgresql');
  return dir;
}

/** As root: the `postgres` user's uid and gid (the user is created when missing). */
async function postgresUser(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const id = async (flag: string) => Number((await run('id', [flag, 'postgres'], { check: false })).stdout.trim());
  if ((await run('id', ['postgres'], { check: false })).code !== 0) {
    await run('useradd', ['--system', '--home-dir', '/var/lib/postgresql', '--shell', '/bin/sh', 'postgres']);
  }
  return { uid: await id('-u'), gid: await id('-g') };
}

export async function startPostgres(dir: string, env: NodeJS.ProcessEnv, say: (msg: string) => void): Promise<Postgres> {
  const bin = await binDir(say);
  const user = await postgresUser();
  await mkdir(dir, { recursive: true });
  if (user) await chown(dir, user.uid, user.gid);
  const data = path.join(dir, 'data');
  const pgEnv = { PATH: env['PATH'], LANG: 'C' };
  await run(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'], { env: pgEnv, cwd: dir, ...user, timeoutMs: 120_000 });
  const banner = (await run(path.join(bin, 'postgres'), ['--version'], { env: pgEnv })).stdout.trim();
  const version = /\(PostgreSQL\) (\S+)/.exec(banner)?.[1] ?? banner;

  const port = await freePort();
  const logFile = path.join(dir, 'postgres.log');
  const fd = openSync(logFile, 'a');
  if (user) await chown(logFile, user.uid, user.gid);
  const child = spawn(
    path.join(bin, 'postgres'),
    ['-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
    { env: pgEnv, cwd: dir, stdio: ['ignore', fd, fd], detached: true, ...user },
  );
  closeSync(fd);
  const pid = child.pid!;
  track(pid, 'postgres', { group: true });
  let exited = false;
  child.on('exit', () => {
    exited = true;
    untrack(pid);
  });

  const urlOf = (db: string) => `postgres://postgres@127.0.0.1:${port}/${db}`;
  for (const deadline = Date.now() + 60_000; ; await sleep(100)) {
    if (exited) throw new Error(`postgres exited at start: ${(await readFile(logFile, 'utf8')).trim().split('\n').slice(-5).join(' | ')}`);
    if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 60 s; see ${logFile}`);
    const client = new pg.Client({ connectionString: urlOf('postgres') });
    try {
      await client.connect();
      await client.query('select 1');
      break;
    } catch {
      // still starting
    } finally {
      await client.end().catch(() => {});
    }
  }

  return {
    pid,
    port,
    version,
    async createDatabase(name) {
      if (!/^[a-z][a-z0-9_]*$/.test(name)) throw new Error(`not a database name: ${name}`);
      const client = new pg.Client({ connectionString: urlOf('postgres') });
      await client.connect();
      try {
        await client.query(`create database ${name}`);
      } finally {
        await client.end();
      }
      return urlOf(name);
    },
    cpuSeconds: () => treeCpuSeconds([pid]),
  };
}
