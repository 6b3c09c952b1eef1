/**
 * gitstratum as a benchmark subject: `gitstratum serve` on a free port of 127.0.0.1 with a
 * fresh data directory and its default settings (log level info included: logging is part
 * of what a real server pays), plus the admin CLI to create the user, space, repositories
 * and token. The server is one Node process; its git children are its own children.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, stop, track } from './processes.js';

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
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, [bin, 'serve', '--data', dataDir, '--port', '0', '--host', '127.0.0.1', ...serveArgs], {
    env,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const pid = child.pid!;
  track(pid, 'gitstratum serve');
  let exited = false;
  child.on('exit', () => (exited = true));

  // The listening line carries the URL (the port was chosen by the OS).
  let url: string | undefined;
  const deadline = Date.now() + 30_000;
  while (!url) {
    if (exited) throw new Error(`gitstratum exited at start; see ${logFile}`);
    if (Date.now() > deadline) throw new Error(`gitstratum did not log "gitstratum listening" within 30 s; see ${logFile}`);
    await sleep(50);
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      if (!line.includes('gitstratum listening')) continue;
      url = (JSON.parse(line) as { url: string }).url.replace('localhost', '127.0.0.1');
    }
  }
  const authUrl = url.replace('://', `://git:${token}@`);

  return {
    pid,
    url,
    authUrl,
    token,
    dataDir,
    async createRepo(name) {
      const out = await cli('repo', 'create', `alice/bench/${name}`, '--json');
      return (JSON.parse(out) as { path: string }).path;
    },
    stop: () => stop(pid),
  };
}
