/**
 * Starting and stopping the benchmark's processes. Every long-lived process is registered
 * with its PID and stopped by that PID when the benchmark ends, however it ends (normal end,
 * error, SIGINT/SIGTERM, watchdog) — never by name. Short commands run in their own process
 * group with a time limit, so a hung clone is killed with everything it started.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { childPids } from './proc-stats.js';

interface Tracked {
  pid: number;
  name: string;
  /** Extra PIDs to stop first (fcgiwrap's pre-forked workers survive their parent's TERM). */
  alsoStop?: () => number[];
  /** The PID leads its own process group: signal the group. */
  group?: boolean;
}

const tracked: Tracked[] = [];

export function track(pid: number, name: string, opts: { alsoStop?: () => number[]; group?: boolean } = {}): void {
  tracked.push({ pid, name, ...opts });
}

/** Forgets a process that has exited by itself (its PID may be reused later). */
export function untrack(pid: number | undefined): void {
  const i = tracked.findIndex((t) => t.pid === pid);
  if (i >= 0) tracked.splice(i, 1);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Stops one tracked process (and its listed companions): TERM, then KILL after 5 s. */
export async function stop(pid: number): Promise<void> {
  const i = tracked.findIndex((t) => t.pid === pid);
  if (i < 0) return;
  const [t] = tracked.splice(i, 1);
  const pids = [...(t!.alsoStop?.() ?? []), t!.pid];
  const target = (p: number) => (t!.group && p === t!.pid ? -p : p);
  for (const p of pids) signal(target(p), 'SIGTERM');
  const deadline = Date.now() + 5000;
  while (pids.some(alive) && Date.now() < deadline) await sleep(50);
  for (const p of pids.filter(alive)) signal(target(p), 'SIGKILL');
}

export async function stopAll(): Promise<void> {
  for (const t of [...tracked].reverse()) await stop(t.pid);
}

/** Last resort on process exit: synchronous KILL of whatever is still registered. */
function killRemaining(): void {
  for (const t of tracked) {
    for (const p of t.alsoStop?.() ?? []) signal(p, 'SIGKILL');
    signal(t.group ? -t.pid : t.pid, 'SIGKILL');
  }
}

let installed = false;
let interrupted = false;
/** True once a signal asked the benchmark to stop (errors from killed commands are expected then). */
export const wasInterrupted = () => interrupted;
/** Stops everything on exit and on SIGINT/SIGTERM; `onSignal` runs first (e.g. temp cleanup). */
export function installCleanup(onSignal: () => Promise<void>): void {
  if (installed) return;
  installed = true;
  process.on('exit', killRemaining);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      interrupted = true;
      process.stderr.write(`\nbench: ${sig}, stopping started processes\n`);
      void stopAll()
        .then(onSignal)
        .finally(() => process.exit(130));
    });
  }
}

export interface BenchRun {
  /** `<cacheDir>/<prefix>-<time>-<pid>` */
  workDir: string;
  /** The isolated HOME that git sees (clients and servers alike). */
  home: string;
  env: NodeJS.ProcessEnv;
  /** Removes the run directory unless it is to be kept. */
  cleanup(): Promise<void>;
  /** The end of a run, however it ends: stops every started process, then cleanup(). */
  finish(): Promise<void>;
}

/**
 * A benchmark run's directory and git environment: an isolated HOME whose .gitconfig names
 * `main` the default branch and turns automatic gc off, no system config, no prompts. The
 * directory is removed by cleanup() unless `keep`, also on a signal; past `timeoutS` (when
 * given) every started process is stopped, the directory removed, and the benchmark exits 124.
 */
export async function startRun(cacheDir: string, prefix: string, opts: { keep: boolean; timeoutS?: number }): Promise<BenchRun> {
  const workDir = path.join(cacheDir, `${prefix}-${Date.now()}-${process.pid}`);
  const cleanup = async () => {
    if (!opts.keep) await rm(workDir, { recursive: true, force: true });
  };
  installCleanup(cleanup);
  if (opts.timeoutS !== undefined) {
    setTimeout(() => {
      process.stderr.write(`bench: time limit of ${opts.timeoutS} s reached (BENCH_TIMEOUT_S); stopping\n`);
      void stopAll()
        .then(cleanup)
        .finally(() => process.exit(124));
    }, opts.timeoutS * 1000).unref();
  }
  const home = path.join(workDir, 'home');
  await mkdir(home, { recursive: true });
  await writeFile(path.join(home, '.gitconfig'), '[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n');
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'], HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0', LANG: 'C' };
  return { workDir, home, env, cleanup, finish: async () => (await stopAll(), await cleanup()) };
}

/** Runs a benchmark's main; a failure is reported and sets exit code 1, unless a signal stopped the run. */
export function runBench(main: () => Promise<void>): void {
  main().catch((err: Error) => {
    if (wasInterrupted()) return;
    process.stderr.write(`bench: failed: ${err.message}\n`);
    process.exitCode = 1;
  });
}

/** The worker PIDs of a pre-forking parent, read at stop time. */
export const childrenOf = (pid: number) => () => childPids(pid);

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  /** Throw when the command exits non-zero (default true). */
  check?: boolean;
  /** Aborting kills the command's process group; the promise then rejects. */
  signal?: AbortSignal;
  /** Run as this user and group (a root benchmark runs PostgreSQL's initdb as `postgres`). */
  uid?: number;
  gid?: number;
}

/**
 * Runs a command to completion in its own process group; on timeout the whole group is
 * killed (by the group's PID). `seconds` is the wall time from spawn to exit.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 600_000;
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      ...(opts.uid !== undefined && { uid: opts.uid }),
      ...(opts.gid !== undefined && { gid: opts.gid }),
    };
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, spawnOpts);
    const pid = child.pid;
    if (pid !== undefined) track(pid, cmd, { group: true });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-64 * 1024)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (pid !== undefined) signal(-pid, 'SIGKILL');
    }, timeoutMs);
    const abort = () => {
      if (pid !== undefined) signal(-pid, 'SIGKILL');
    };
    opts.signal?.addEventListener('abort', abort, { once: true });
    if (opts.signal?.aborted) abort();
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', abort);
      untrack(pid);
      const result = { code, stdout, stderr, seconds };
      const line = `${cmd} ${args.join(' ')}`.slice(0, 300);
      if (opts.signal?.aborted) reject(new Error(`aborted: ${line}`));
      else if (timedOut) reject(new Error(`timed out after ${timeoutMs / 1000} s: ${line}`));
      else if (code !== 0 && opts.check !== false) reject(new Error(`exit ${code}: ${line}\n${stderr.trim()}`));
      else resolve(result);
    });
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input ?? '');
  });
}

/** An executable on PATH or in the sbin directories (nginx, fcgiwrap live there). */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const dir of dirs.filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A port of 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
