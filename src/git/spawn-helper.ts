/**
 * The git spawner (see spawner.ts): a small process, forked once by the server, that starts the
 * git processes serving requests and hands their stdin, stdout and stderr pipes to the server
 * over the IPC channel. Its fork of itself is cheap (its memory is small) and blocks no one
 * but itself. Exits when the server does (its channel closes, or its stdin ends).
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import type { SpawnRequest, SpawnerMessage } from './spawner.js';

const send = (m: SpawnerMessage, handle?: import('node:net').Socket) => {
  if (process.connected) process.send!(m, handle as never);
};

process.on('message', (m: SpawnRequest) => {
  let child;
  // stdoutFile: git writes its output into that file itself, from its start (a pack cache
  // entry being made); the server reads the file, so no byte passes through a pipe.
  let out: number | 'pipe' = 'pipe';
  try {
    if (m.stdoutFile) out = openSync(m.stdoutFile, 'r+');
    child = spawn('git', m.args, { env: m.env, stdio: ['pipe', out, 'pipe'], ...(m.cwd !== undefined && { cwd: m.cwd }) });
  } catch (err) {
    send({ id: m.id, error: (err as Error).message });
    return;
  } finally {
    if (typeof out === 'number') closeSync(out);
  }
  child.on('error', (err) => send({ id: m.id, error: err.message }));
  if (child.pid === undefined) return; // the error event says why
  // Handles go one at a time, each after the server acknowledged the last, and until it goes a
  // pipe must not be read here: what was read would be lost with the handle. Node starts reading
  // a child's output pipes at once, resumes them when it exits and destroys its stdin then; so
  // reading is stopped in this same tick (before any read can complete) and the pipes are taken
  // out of the ChildProcess's hands.
  const stdin = child.stdin;
  const stdout = child.stdout;
  const stderr = child.stderr;
  for (const pipe of [stdout, stderr]) {
    if (!pipe) continue;
    const handle = (pipe as unknown as { _handle: { reading: boolean; readStop(): number } })._handle;
    handle.reading = false;
    handle.readStop();
  }
  (child.stdio as unknown as unknown[]).fill(null);
  Object.assign(child, { stdin: null, stdout: null, stderr: null });
  // Sent with the handles closed here afterwards, so git sees EOF when the server ends stdin.
  send({ id: m.id, pid: child.pid, stream: 'stdin' }, stdin as never);
  send({ id: m.id, stream: 'stdout' }, (stdout ?? undefined) as never);
  send({ id: m.id, stream: 'stderr' }, stderr as never);
  child.on('exit', (code, signal) => send({ id: m.id, exit: { code, signal } }));
});
process.on('disconnect', () => process.exit(0));
// Node holds back 'disconnect' while a handle waits for the server's acknowledgement, which a
// killed server never sends: its death also ends stdin, a pipe only the server holds open.
// (This replaced a look at the parent's pid every second: a wake a second, 3 ms of CPU a
// second on machines that charge for waking; bench/README.md.)
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
