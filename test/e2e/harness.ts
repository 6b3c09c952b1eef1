/**
 * End-to-end harness: the real `gitstratum serve` process on a free port with a fresh data
 * directory, the real `git` client with an isolated configuration, and throwaway PostgreSQL
 * databases on the cluster that `npm test` starts. Each scenario builds its own state.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { loadConfig } from '../../src/config/load.js';
import { openCore, type Core } from '../../src/core.js';
import { systemActor } from '../../src/access/policy.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'bin', 'gitstratum.js');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string | Buffer; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    // A child that exits without reading its stdin (git often does) must not fail the test.
    child.stdin.on('error', () => {});
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

export async function tempDir(prefix = 'gitstratum-test-'): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

/** A git environment that ignores the machine's own configuration. */
export function gitEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env['PATH'],
    HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_TERMINAL_PROMPT: '0',
    GIT_AUTHOR_NAME: 'Test Author',
    GIT_AUTHOR_EMAIL: 'author@example.com',
    GIT_COMMITTER_NAME: 'Test Committer',
    GIT_COMMITTER_EMAIL: 'committer@example.com',
    LANG: 'C',
    ...extra,
  };
}

export class Git {
  constructor(readonly home: string) {}

  static async create(): Promise<Git> {
    const home = await tempDir('gitstratum-home-');
    await writeFile(path.join(home, '.gitconfig'), '[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n');
    return new Git(home);
  }

  run(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string | Buffer; timeoutMs?: number } = {}) {
    return run('git', args, { ...opts, env: gitEnv(this.home, opts.env) });
  }

  /** Runs git and fails the test with git's stderr when it exits non-zero. */
  async ok(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string | Buffer } = {}): Promise<string> {
    const r = await this.run(args, opts);
    if (r.code !== 0) throw new Error(`git ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
    return r.stdout;
  }

  /**
   * A work tree with `commits` commits of generated files, deterministic for a seed, on
   * branch main.
   */
  async workTree(dir: string, opts: { commits?: number; files?: number; seed?: number } = {}): Promise<string> {
    await mkdir(dir, { recursive: true });
    await this.ok(['init', '-q', '-b', 'main', dir]);
    await this.commits(dir, opts.commits ?? 3, { files: opts.files ?? 3, seed: opts.seed ?? 1 });
    return dir;
  }

  async commits(dir: string, count: number, opts: { files?: number; seed?: number; prefix?: string } = {}): Promise<void> {
    let state = (opts.seed ?? 1) >>> 0 || 1;
    const rand = () => (state = (state * 1103515245 + 12345) >>> 0);
    for (let i = 0; i < count; i++) {
      for (let f = 0; f < (opts.files ?? 3); f++) {
        const name = path.join(dir, `${opts.prefix ?? 'file'}-${f}.txt`);
        const lines = Array.from({ length: 20 }, () => rand().toString(36)).join('\n');
        await writeFile(name, `${lines}\n`);
      }
      await this.ok(['add', '-A'], { cwd: dir });
      await this.ok(['commit', '-q', '-m', `commit ${i} seed ${opts.seed ?? 1}`], { cwd: dir });
    }
  }

  async revParse(dir: string, rev: string): Promise<string> {
    return (await this.ok(['rev-parse', rev], { cwd: dir })).trim();
  }
}

export interface ServerOptions {
  database?: 'sqlite' | 'postgres';
  env?: NodeJS.ProcessEnv;
  args?: string[];
  /** An existing data directory (a restart); a fresh one when unset. */
  dataDir?: string;
  /** Called with the server's PID as soon as it is spawned (a benchmark registers it for clean-up). */
  onSpawn?: (pid: number) => void;
}

export class Server {
  private constructor(
    readonly dataDir: string,
    readonly url: string,
    readonly process: ChildProcess,
    readonly databaseUrl: string | undefined,
    readonly logs: string[],
  ) {}

  static async start(opts: ServerOptions = {}): Promise<Server> {
    const dataDir = opts.dataDir ?? (await tempDir('gitstratum-data-'));
    const databaseUrl = opts.database === 'postgres' ? await freshDatabaseUrl() : undefined;
    const args = [BIN, 'serve', '--data', dataDir, '--port', '0', ...(databaseUrl ? ['--database-url', databaseUrl] : []), ...(opts.args ?? [])];
    const child = spawn(process.execPath, args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid !== undefined) opts.onSpawn?.(child.pid);
    const logs: string[] = [];
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const url = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        logs.push(line);
        try {
          const entry = JSON.parse(line) as { msg?: string; url?: string };
          if (entry.msg === 'gitstratum listening' && entry.url) resolve(entry.url);
        } catch {
          /* not JSON */
        }
      });
      child.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${stderr}`)));
      setTimeout(() => reject(new Error(`server did not start:\n${stderr}`)), 30_000).unref();
    });
    return new Server(dataDir, url.replace('localhost', '127.0.0.1'), child, databaseUrl, logs);
  }

  /** Runs an admin command against this server's data directory and database. */
  async cli(args: string[]): Promise<RunResult> {
    const extra = ['--data', this.dataDir, ...(this.databaseUrl ? ['--database-url', this.databaseUrl] : [])];
    return run(process.execPath, [BIN, ...args, ...extra]);
  }

  async cliOk(args: string[]): Promise<string> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`gitstratum ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
    return r.stdout;
  }

  /**
   * Runs `fn` on this server's metadata services, opened in the test process as an admin
   * command opens them: fixtures (users, spaces, tokens) without a process per step, which cost
   * 0.5-0.9 s each. The admin commands themselves are tested through the CLI (cli.test.ts).
   */
  async admin<T>(fn: (core: Core) => Promise<T>): Promise<T> {
    const core = await openCore(loadConfig({ data: this.dataDir, ...(this.databaseUrl && { databaseUrl: this.databaseUrl }) }));
    try {
      return await fn(core);
    } finally {
      await core.close();
    }
  }

  /**
   * Creates a repository as `gitstratum repo create` does (in this process, with the command's
   * umask, so its files are as private as the server's) and returns its id and directory.
   */
  async createRepo(repoPath: string, opts: { private?: boolean } = {}): Promise<{ id: string; path: string }> {
    return this.admin(async (core) => {
      const umask = process.umask(0o077);
      try {
        const r = await core.repos.createRepo(systemActor, repoPath, { visibility: opts.private ? 'private' : 'public' });
        return { id: r.id, path: core.repos.location(r) };
      } finally {
        process.umask(umask);
      }
    });
  }

  async createUser(name: string, opts: { admin?: boolean } = {}): Promise<void> {
    await this.admin((core) => core.accounts.createUser(systemActor, name, { admin: opts.admin ?? false }));
  }

  async createSpace(spacePath: string): Promise<void> {
    await this.admin((core) => core.repos.createSpace(systemActor, spacePath));
  }

  async createOrg(name: string): Promise<void> {
    await this.admin((core) => core.accounts.createOrg(systemActor, name));
  }

  async addMember(org: string, user: string, role: 'read' | 'write' | 'admin'): Promise<void> {
    await this.admin((core) => core.accounts.addMember(systemActor, org, user, role));
  }

  /** Creates a token and returns its secret. */
  async token(user: string, scope: 'read' | 'write' | 'admin'): Promise<string> {
    return this.admin(async (core) => (await core.accounts.createToken(systemActor, user, scope, {})).token);
  }

  /** The repository's URL, with the token as password when one is given. */
  repoUrl(repoPath: string, token?: string): string {
    const u = new URL(`/${repoPath}`, this.url);
    if (token) {
      u.username = 'git';
      u.password = token;
    }
    return u.toString();
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return this.process.exitCode;
    const exited = new Promise<number | null>((resolve) => this.process.once('exit', (code) => resolve(code)));
    this.process.kill(signal);
    return exited;
  }

  async cleanup(): Promise<void> {
    await this.stop();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * Waits (at most 5 s) until every response generation the server at `origin` started has been
 * stored in its clone cache or dropped. An entry is committed (two fsyncs, two renames) after
 * git exits, which can be just after the client has its last byte: a test whose next request
 * must be a hit waits for this first.
 */
export async function packCacheSettled(origin: string): Promise<void> {
  const sum = (text: string, name: string, label = '') =>
    text
      .split('\n')
      .filter((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && l.includes(label))
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await sleep(20)) {
    const text = await (await fetch(new URL('/metrics', origin))).text();
    const ended = sum(text, 'gitstratum_pack_cache_stored_total') + sum(text, 'gitstratum_pack_cache_not_stored_total');
    if (ended >= sum(text, 'gitstratum_pack_cache_requests_total', 'result="miss"')) return;
  }
}

/**
 * A new, empty PostgreSQL database on the cluster `npm test` started. Without one, a test
 * that needs it fails in CI and is skipped (with the reason) elsewhere.
 */
export async function freshDatabaseUrl(): Promise<string> {
  const base = process.env['GITSTRATUM_TEST_DATABASE_URL'];
  if (!base) throw new Error('GITSTRATUM_TEST_DATABASE_URL is not set: run the tests with `npm test`, which starts PostgreSQL');
  const name = `gs_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const client = new pg.Client({ connectionString: base });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

/** The database backends a metadata test should run against. */
export function databaseBackends(): ('sqlite' | 'postgres')[] {
  if (process.env['GITSTRATUM_TEST_DATABASE_URL']) return ['sqlite', 'postgres'];
  if (process.env['CI']) throw new Error('CI requires PostgreSQL: GITSTRATUM_TEST_DATABASE_URL is not set');
  process.stderr.write('note: PostgreSQL not configured (GITSTRATUM_TEST_DATABASE_URL unset); running SQLite only\n');
  return ['sqlite'];
}

/**
 * The smallest fixture most git scenarios need: user alice, her space alice/main and a write
 * token, made in one opening of the metadata (Server.admin).
 */
export async function seedAlice(server: Server): Promise<string> {
  return server.admin(async (core) => {
    await core.accounts.createUser(systemActor, 'alice', { admin: false });
    await core.repos.createSpace(systemActor, 'alice/main');
    return (await core.accounts.createToken(systemActor, 'alice', 'write', {})).token;
  });
}

/** Standard fixture: users alice (owner), bob (no access), root (site admin), org acme. */
export async function seed(server: Server) {
  return server.admin(async (core) => {
    await core.accounts.createUser(systemActor, 'alice', { admin: false });
    await core.accounts.createUser(systemActor, 'bob', { admin: false });
    await core.accounts.createUser(systemActor, 'root', { admin: true });
    await core.repos.createSpace(systemActor, 'alice/main');
    const token = async (user: string, scope: 'read' | 'write' | 'admin') => (await core.accounts.createToken(systemActor, user, scope, {})).token;
    return {
      alice: { read: await token('alice', 'read'), write: await token('alice', 'write'), admin: await token('alice', 'admin') },
      bob: { write: await token('bob', 'write') },
      root: { admin: await token('root', 'admin') },
    };
  });
}
