/**
 * gitstratum as a benchmark subject: `gitstratum serve` on a free port of 127.0.0.1 with a
 * fresh data directory and its default settings (log level info included: logging is part
 * of what a real server pays), plus the admin CLI to create the user, space, repositories
 * and token. The server is one Node process; its git children are its own children.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, stop, track, untrack } from './processes.js';

export interface GitstratumServer {
  pid: number;
  /** Base URL with the token's credentials, e.g. http://git:TOKEN@127.0.0.1:PORT */
  authUrl: string;
  url: string;
  /** The write-scoped access token of `alice`. */
  token: string;
  dataDir: string;
  /** Creates `alice/bench/<name>` and returns its directory on disk. */
  createRepo(name: string): Promise<string>;
  /** Runs the admin CLI on the server's data directory; returns its stdout. */
  cli(...args: string[]): Promise<string>;
  /** False once the server process has exited (crashed, when the benchmark did not stop it). */
  alive(): boolean;
  /** Starts the server again on the same data directory (after a crash); pid, url and authUrl change. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** `serveArgs`: extra `gitstratum serve` flags (settings), after the defaults above. */
export async function startGitstratum(root: string, dataDir: string, env: NodeJS.ProcessEnv, serveArgs: readonly string[] = []): Promise<GitstratumServer> {
  const bin = path.join(root, 'bin', 'gitstratum.js');
  const cli = async (...args: string[]) => (await run(process.execPath, [bin, ...args, '--data', dataDir], { env, timeoutMs: 60_000 })).stdout;

  await cli('user', 'create', 'alice');
  await cli('space', 'create', 'alice/bench');
  const token = (await cli('token', 'create', 'alice', '--scope', 'write')).trim().split('\n').pop()!;

  const logFile = path.join(dataDir, 'server.log');
  // BENCH_SERVER_NODE_ARGS: Node flags for the server only (e.g. --cpu-prof), space-separated.
  const nodeArgs = (process.env['BENCH_SERVER_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  const serve = async () => {
    // Only the lines written by this start are searched for its URL.
    const from = existsSync(logFile) ? statSync(logFile).size : 0;
    const fd = openSync(logFile, 'a');
    const child = spawn(process.execPath, [...nodeArgs, bin, 'serve', '--data', dataDir, '--port', '0', '--host', '127.0.0.1', ...serveArgs], {
      env,
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    const pid = child.pid!;
    track(pid, 'gitstratum serve');
    const state = { pid, exited: false };
    child.on('exit', () => {
      state.exited = true;
      untrack(pid);
    });

    // The listening line carries the URL (the port was chosen by the OS).
    let url: string | undefined;
    const deadline = Date.now() + 30_000;
    while (!url) {
      if (state.exited) throw new Error(`gitstratum exited at start; see ${logFile}`);
      if (Date.now() > deadline) throw new Error(`gitstratum did not log "gitstratum listening" within 30 s; see ${logFile}`);
      await sleep(50);
      for (const line of readFileSync(logFile, 'utf8').slice(from).split('\n')) {
        if (!line.includes('gitstratum listening')) continue;
        url = (JSON.parse(line) as { url: string }).url.replace('localhost', '127.0.0.1');
      }
    }
    return { state, url, authUrl: url.replace('://', `://git:${token}@`) };
  };
  let current = await serve();

  return {
    get pid() {
      return current.state.pid;
    },
    get url() {
      return current.url;
    },
    get authUrl() {
      return current.authUrl;
    },
    token,
    dataDir,
    async createRepo(name) {
      const out = await cli('repo', 'create', `alice/bench/${name}`, '--json');
      return (JSON.parse(out) as { path: string }).path;
    },
    cli,
    alive: () => !current.state.exited,
    async restart() {
      await stop(current.state.pid);
      current = await serve();
    },
    stop: () => stop(current.state.pid),
  };
}
