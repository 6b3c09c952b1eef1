/**
 * The processes of a benchmarked cluster (README "Running on several machines"): storage nodes
 * (`--role storage`, a shard, an advertise URL), frontends (`--role frontend`) and the admin
 * command line with a frontend's settings, all sharing one PostgreSQL database, the cluster
 * secret and a prefix of the S3 server's bucket. Each `gitstratum serve` runs on 127.0.0.1 with
 * a log file of its own, is registered by PID as it is spawned (bench/processes.ts) and stopped
 * by it; a storage node can also be killed with SIGKILL, which is what a failover trial does.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, run, stop, track, untrack } from './processes.js';

/** 32 characters or more, the same on every process of a cluster. */
const CLUSTER_SECRET = 'bench-cluster-secret-0123456789abcdef0123';

/** The log line a storage node writes once it holds its shard's lease and serves it. */
export const SERVING_SHARD = 'serving the shard: this node is its writer';

export interface ServerProcess {
  name: string;
  pid: number;
  /** Where it listens (a storage node: its advertise URL). */
  url: string;
  dataDir: string;
  logFile: string;
  exited(): boolean;
  /** The first log line (pino JSON) whose `msg` is `msg`, waited for up to `timeoutMs`. */
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGKILL, at once (the caller waits for nothing: the process dies with it). */
  kill9(): void;
  stop(): Promise<void>;
}

function logLines(file: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut by a kill
    }
  }
  return out;
}

/** `gitstratum serve` with `args` and `env`, logging to `logFile`; resolves once it listens. */
export async function spawnServer(root: string, opts: { name: string; dataDir: string; env: NodeJS.ProcessEnv; args: string[]; logFile: string }): Promise<ServerProcess> {
  // Private, as gitstratum wants its data directory (it warns otherwise).
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const fd = openSync(opts.logFile, 'a');
  const child = spawn(process.execPath, [path.join(root, 'bin', 'gitstratum.js'), 'serve', '--data', opts.dataDir, '--host', '127.0.0.1', ...opts.args], {
    env: opts.env,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const pid = child.pid!;
  track(pid, opts.name);
  let exited = false;
  child.on('exit', () => {
    exited = true;
    untrack(pid);
  });
  const waitForLog = async (msg: string, timeoutMs = 60_000) => {
    for (const deadline = Date.now() + timeoutMs; ; await sleep(25)) {
      const found = logLines(opts.logFile).find((l) => l['msg'] === msg);
      if (found) return found;
      if (exited) throw new Error(`${opts.name} exited before logging "${msg}"; see ${opts.logFile}`);
      if (Date.now() > deadline) throw new Error(`${opts.name} did not log "${msg}" within ${timeoutMs / 1000} s; see ${opts.logFile}`);
    }
  };
  const listening = await waitForLog('gitstratum listening', 60_000);
  return {
    name: opts.name,
    pid,
    url: String(listening['url']).replace('localhost', '127.0.0.1').replace(/\/$/, ''),
    dataDir: opts.dataDir,
    logFile: opts.logFile,
    exited: () => exited,
    waitForLog,
    kill9: () => process.kill(pid, 'SIGKILL'),
    stop: () => stop(pid),
  };
}

export interface Cluster {
  /** Environment of every process of the cluster (the benchmark's git environment, the database, the secret, the store). */
  env: NodeJS.ProcessEnv;
  /** The admin command line with a frontend's settings; returns its stdout. */
  cli(...args: string[]): Promise<string>;
  /** A storage node of `shard` on `dataDir` (a same-volume standby passes its writer's). */
  startStorageNode(opts: { shard?: string; dataDir: string; args?: string[] }): Promise<ServerProcess>;
  startFrontend(args?: string[]): Promise<ServerProcess>;
  /** User alice, space alice/bench and a write token of hers (once the shard has a writer). */
  bootstrap(): Promise<string>;
  /** Creates alice/bench/<name> through the cluster; returns its id. */
  createRepo(name: string): Promise<string>;
}

/** A cluster's settings; its processes live in `dir` (data directories and logs). */
export function cluster(root: string, dir: string, env: NodeJS.ProcessEnv): Cluster {
  const bin = path.join(root, 'bin', 'gitstratum.js');
  const adminDir = path.join(dir, 'admin');
  let count = 0;
  const cli = async (...args: string[]) => {
    await mkdir(adminDir, { recursive: true });
    return (await run(process.execPath, [bin, ...args, '--data', adminDir], { env: { ...env, GITSTRATUM_ROLE: 'frontend' }, timeoutMs: 120_000 })).stdout;
  };
  return {
    env,
    cli,
    async startStorageNode(opts) {
      const n = ++count;
      const port = await freePort();
      const shard = opts.shard ?? 'local';
      return spawnServer(root, {
        name: `storage node ${n} (${shard})`,
        dataDir: opts.dataDir,
        env: { ...env, GITSTRATUM_ROLE: 'storage', GITSTRATUM_SHARD: shard, GITSTRATUM_ADVERTISE_URL: `http://127.0.0.1:${port}` },
        args: ['--port', String(port), ...(opts.args ?? [])],
        logFile: path.join(dir, `node-${n}.log`),
      });
    },
    async startFrontend(args = []) {
      const n = ++count;
      return spawnServer(root, {
        name: `frontend ${n}`,
        dataDir: path.join(dir, `frontend-${n}`),
        env: { ...env, GITSTRATUM_ROLE: 'frontend' },
        args: ['--port', '0', ...args],
        logFile: path.join(dir, `frontend-${n}.log`),
      });
    },
    async bootstrap() {
      await cli('user', 'create', 'alice');
      await cli('space', 'create', 'alice/bench');
      return (await cli('token', 'create', 'alice', '--scope', 'write')).trim().split('\n').pop()!;
    },
    async createRepo(name) {
      return (JSON.parse(await cli('repo', 'create', `alice/bench/${name}`, '--json')) as { id: string }).id;
    },
  };
}

/** The settings every process of a cluster shares: its database, the secret, its part of the object store. */
export function clusterEnv(base: NodeJS.ProcessEnv, databaseUrl: string, storeEnv: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...base, ...storeEnv, GITSTRATUM_DATABASE_URL: databaseUrl, GITSTRATUM_CLUSTER_SECRET: CLUSTER_SECRET };
}

/** A repository's directory on a storage node's volume. */
export const repoDirOn = (volume: string, id: string) => path.join(volume, 'repos', id.slice(0, 2), `${id}.git`);

/** `http://git:TOKEN@host:port/alice/bench/<repo>.git` */
export function repoUrl(base: string, token: string, repo: string): string {
  const u = new URL(`/alice/bench/${repo}.git`, base);
  u.username = 'git';
  u.password = token;
  return u.toString();
}

/** What each part of `bench:cluster` is given: the run's git environment and the shared servers. */
export interface PartContext {
  root: string;
  /** The part's own directory (data directories, logs, client work trees). */
  dir: string;
  /** The git clients' environment (isolated HOME), which the servers get too. */
  env: NodeJS.ProcessEnv;
  /** Creates the part's database on the run's PostgreSQL; returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** gitstratum's object store settings for a prefix of the run's S3 bucket. */
  storeEnv(prefix: string): NodeJS.ProcessEnv;
  say(msg: string): void;
}

/** A cluster of its own for part `name`: a fresh database and the bucket prefix `<name>/`. */
export async function partCluster(ctx: PartContext, name: string): Promise<Cluster> {
  const url = await ctx.createDatabase(name);
  return cluster(ctx.root, ctx.dir, clusterEnv(ctx.env, url, ctx.storeEnv(`${name}/`)));
}
