/**
 * Pieces of a cluster for end-to-end tests (issue 10): storage nodes and frontends are real
 * `gitstratum serve` processes sharing PostgreSQL, an S3-compatible server and the secret.
 */
import { readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, run, Server } from '../e2e/harness.js';

export const CLUSTER_SECRET = 'cluster-test-secret-0123456789abcdef0123';

export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** `--flag value` pairs as GITSTRATUM_* variables, so every command of the CLI takes them. */
export function asEnv(flags: string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (let i = 0; i < flags.length; i += 2) env[`GITSTRATUM_${flags[i]!.replace(/^--/, '').replace(/-/g, '_').toUpperCase()}`] = flags[i + 1]!;
  return env;
}

export interface StorageNodeOptions {
  /** The cluster's shared settings (database, secret, object store) as environment. */
  shared: NodeJS.ProcessEnv;
  shard: string;
  /** A same-volume standby passes its writer's data directory. */
  dataDir?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  onSpawn?: (pid: number) => void;
}

/** A storage node on a free port; it listens at once, as its shard's writer or as a standby. */
export async function startStorageNode(opts: StorageNodeOptions): Promise<Server> {
  const port = await freePort();
  return Server.start({
    ...(opts.dataDir && { dataDir: opts.dataDir }),
    args: ['--port', String(port), ...(opts.args ?? [])],
    env: { ...opts.shared, ...opts.env, GITSTRATUM_ROLE: 'storage', GITSTRATUM_SHARD: opts.shard, GITSTRATUM_ADVERTISE_URL: `http://127.0.0.1:${port}` },
    ...(opts.onSpawn && { onSpawn: opts.onSpawn }),
  });
}

/** Waits until the node's log says it serves its shard (it took the lease and recovered). */
export async function serving(node: Server, boundMs = 60_000): Promise<void> {
  for (const deadline = Date.now() + boundMs; Date.now() < deadline; await sleep(50)) {
    if (node.logs.some((line) => line.includes('"serving the shard: this node is its writer"'))) return;
    // Its last log lines say why (a failed takeover, a lost lease): CI keeps nothing else of it.
    if (node.process.exitCode !== null) throw new Error(`storage node exited with ${node.process.exitCode}; its last log lines:\n${node.logs.slice(-12).join('\n')}`);
  }
  throw new Error(`the storage node did not start serving its shard; its last log lines:\n${node.logs.slice(-12).join('\n')}`);
}

/** Waits until the process is stopped (state T in /proc), e.g. at a pause point. */
export async function stopped(pid: number, boundMs = 60_000): Promise<void> {
  for (const deadline = Date.now() + boundMs; Date.now() < deadline; await sleep(50)) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (/^\d+ \(.*\) T /.test(stat)) return;
  }
  throw new Error(`process ${pid} did not stop`);
}

/** The admin command line with a frontend's settings (the cluster's database, secret and store). */
export function frontendCli(frontend: () => Server, shared: () => NodeJS.ProcessEnv): (args: string[]) => Promise<string> {
  return async (args) => {
    const r = await run(process.execPath, [BIN, ...args, '--data', frontend().dataDir], { env: { ...process.env, ...shared(), GITSTRATUM_ROLE: 'frontend' } });
    if (r.code !== 0) throw new Error(`gitstratum ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
    return r.stdout;
  };
}

/** User alice and her space alice/main, made through `cli`; returns a write token of hers. */
export async function seedAliceMain(cli: (args: string[]) => Promise<string>): Promise<string> {
  await cli(['user', 'create', 'alice']);
  await cli(['space', 'create', 'alice/main']);
  return (await cli(['token', 'create', 'alice', '--scope', 'write'])).trim().split('\n').pop()!;
}

/**
 * Stops a test cluster, each process by its PID (the harness's handle), the frontend first, and
 * removes what it left: the nodes' data directories (and `extraDirs`), the S3 server.
 */
export async function stopCluster(parts: {
  frontend?: Server | undefined;
  nodes: readonly Server[];
  s3?: { stop(): Promise<void> } | undefined;
  /** How the storage nodes are stopped (default SIGTERM). */
  signal?: NodeJS.Signals;
  extraDirs?: readonly (string | undefined)[];
}): Promise<void> {
  await parts.frontend?.cleanup();
  for (const n of parts.nodes) await n.stop(parts.signal);
  for (const n of parts.nodes) await rm(n.dataDir, { recursive: true, force: true });
  await parts.s3?.stop();
  for (const dir of parts.extraDirs ?? []) if (dir) await rm(dir, { recursive: true, force: true });
}
