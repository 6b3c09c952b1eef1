/**
 * Starts the git processes that serve requests from a helper process (spawn-helper.ts) instead
 * of from the server itself.
 *
 * Why: Node starts a process with fork() and then waits, on the event loop's thread, until the
 * child has exec'd. fork() copies the page tables of the whole server, so the wait grows with
 * its memory: measured 5 ms at 50 MB, 12 ms at 300 MB, 22 ms at 1 GB on an idle 2-core VM, and
 * 20–30 ms under load, when the child also waits for a CPU. A server answering a burst of
 * fetches spent seconds a minute there, with every client waiting (issue 9's abuse benchmark).
 * The helper is small, and its waits block only itself: the server sends it the argv and
 * environment and receives git's three pipes as handles over the IPC channel, then reads and
 * writes them directly (no copy through the helper), and is told the exit status.
 *
 * If the helper dies, the git processes it started are killed (their status is unknown) and
 * reported as failed; the next request starts a new helper.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';

export interface SpawnRequest {
  id: number;
  args: string[];
  env: Record<string, string>;
  /** An existing file git's stdout is written into, from its first byte (instead of a pipe). */
  stdoutFile?: string | undefined;
  cwd?: string | undefined;
}

export type SpawnerMessage =
  | { id: number; pid?: number; stream: 'stdin' | 'stdout' | 'stderr' }
  | { id: number; exit: { code: number | null; signal: NodeJS.Signals | null } }
  | { id: number; error: string };

/** A git process started by the helper: its pipes, and how it ended. */
export interface HelperChild {
  pid: number;
  stdin: Socket;
  /** Empty and ended when git writes into a file (spawnFromHelper's stdoutFile). */
  stdout: Readable;
  stderr: Socket;
  /** The exit status, or an error when the helper died before reporting it. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: string }>;
}

interface Pending {
  pid?: number;
  streams: { stdin?: Socket; stdout?: Readable; stderr?: Socket };
  started: (child: HelperChild) => void;
  failed: (err: Error) => void;
  exited: (outcome: { code: number | null; signal: NodeJS.Signals | null } | { error: string }) => void;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: string }>;
  ready: boolean;
}

const HELPER = new URL('./spawn-helper.js', import.meta.url);

let helper: ChildProcess | undefined;
const pending = new Map<number, Pending>();
let nextId = 0;

const channelOf = (c: ChildProcess) => c.channel as { ref(): void; unref(): void } | null | undefined;

function ensureHelper(): ChildProcess {
  if (helper) return helper;
  // The helper's stdin is a pipe nobody writes to: the server's death closes it (spawn-helper.ts).
  const child = fork(HELPER, [], { stdio: ['pipe', 'ignore', 'inherit', 'ipc'], serialization: 'json', env: {}, execArgv: [] });
  child.on('message', (m: SpawnerMessage, handle?: Socket) => {
    const p = pending.get(m.id);
    if (!p) {
      handle?.destroy();
      return;
    }
    if ('stream' in m) {
      if (m.pid !== undefined) p.pid = m.pid;
      if (handle && m.stream === 'stdout') p.streams.stdout = handle;
      else if (handle) p.streams[m.stream] = handle;
      // git writes into a file: its stdout message comes without a pipe.
      else if (m.stream === 'stdout') p.streams.stdout = Readable.from([]);
      const { stdin, stdout, stderr } = p.streams;
      if (stdin && stdout && stderr && p.pid !== undefined && !p.ready) {
        p.ready = true;
        p.started({ pid: p.pid, stdin, stdout, stderr, exit: p.exit });
      }
    } else if ('exit' in m) {
      pending.delete(m.id);
      p.exited(m.exit);
    } else {
      pending.delete(m.id);
      p.failed(new Error(`cannot start git: ${m.error}`));
      p.exited({ error: m.error });
    }
  });
  child.on('exit', () => {
    if (helper === child) helper = undefined;
    for (const [id, p] of pending) {
      pending.delete(id);
      if (p.pid !== undefined) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      p.failed(new Error('the git spawner exited'));
      p.exited({ error: 'the git spawner exited before git did' });
    }
  });
  child.on('error', () => {}); // reported by its exit
  // Never what keeps the server running; in-flight git processes keep their pipes open.
  child.unref();
  channelOf(child)?.unref();
  (child.stdin as Socket | null)?.unref();
  helper = child;
  return child;
}

/** Starts `git args…` with exactly `env`, from the helper; its stdout into `stdoutFile` when given. */
export function spawnFromHelper(args: string[], env: Record<string, string>, stdoutFile?: string, cwd?: string): Promise<HelperChild> {
  const id = nextId++;
  let p!: Pending;
  const started = new Promise<HelperChild>((resolve, reject) => {
    let exited!: Pending['exited'];
    const exit = new Promise<Awaited<HelperChild['exit']>>((r) => (exited = r));
    p = { streams: {}, started: resolve, failed: reject, exited, exit, ready: false };
  });
  pending.set(id, p);
  const h = ensureHelper();
  // Referenced while any git it started is running, so an await on it keeps the process alive.
  channelOf(h)?.ref();
  void p.exit.then(() => {
    if (pending.size === 0) channelOf(h)?.unref();
  });
  h.send({ id, args, env, stdoutFile, cwd } satisfies SpawnRequest, (err) => {
    if (!err) return;
    pending.delete(id);
    p.failed(new Error(`cannot reach the git spawner: ${err.message}`));
  });
  return started;
}

/** The helper's pid, if it is running (for operations and tests). */
export function spawnerPid(): number | undefined {
  return helper?.pid;
}
