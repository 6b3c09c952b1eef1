/**
 * The program behind every hook gitstratum installs. It does nothing itself: it sends the
 * hook's name, arguments, stdin and context to the running server over a local socket and
 * relays the answer (exit code and messages, which git shows the pusher as `remote:` lines).
 * Kept dependency-free so that its start-up, paid on every push, stays small.
 *
 * argv: <hook name> <default socket path> [hook arguments…]
 */
import { connect } from 'node:net';

const [hook = '', defaultSocket = '', ...args] = process.argv.slice(2);
// In pre-receive the pushed objects are still in quarantine; the server needs these to see them.
const QUARANTINE = ['GIT_QUARANTINE_PATH', 'GIT_OBJECT_DIRECTORY', 'GIT_ALTERNATE_OBJECT_DIRECTORIES'];
const socketPath = process.env['GITSTRATUM_HOOK_SOCKET'] || defaultSocket;

/**
 * No server answered (it is down, or git was run by hand on the disk). Hooks fail closed:
 * pre-receive refuses the push, since nobody could enforce locks, write the audit log or mark
 * the repository for its snapshot. post-receive runs after the refs moved and cannot undo
 * them; it says what was skipped and lets git finish.
 */
function unanswered(): never {
  if (hook === 'reference-transaction') {
    // Only a push of a storage node (its epoch in the environment) must be refused before its
    // refs commit; git run by hand, maintenance and restores go on.
    if (args[0] === 'prepared' && process.env['GITSTRATUM_SHARD_EPOCH']) {
      process.stderr.write('gitstratum: the storage node that received this push is gone; push not applied, retry it\n');
      process.exit(1);
    }
    process.exit(0);
  }
  if (hook === 'pre-receive') {
    process.stderr.write('gitstratum: the server cannot be reached to check this push; push refused (is gitstratum running?)\n');
    process.exit(1);
  }
  process.stderr.write(`gitstratum: the server cannot be reached; ${hook} skipped (no audit entry or snapshot mark for this push)\n`);
  process.exit(0);
}

const stdinChunks: Buffer[] = [];
process.stdin.on('data', (c: Buffer) => stdinChunks.push(c));
process.stdin.on('end', () => {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && (k.startsWith('GITSTRATUM_') || k.startsWith('GIT_PUSH_OPTION') || QUARANTINE.includes(k))) env[k] = v;
  }
  const request = JSON.stringify({ hook, args, stdin: Buffer.concat(stdinChunks).toString('utf8'), env, cwd: process.cwd() });
  const socket = connect(socketPath);
  let answer = '';
  socket.setEncoding('utf8');
  socket.on('connect', () => socket.end(request + '\n'));
  socket.on('data', (d: string) => (answer += d));
  socket.on('error', () => unanswered());
  socket.on('end', () => {
    let parsed: { code: number; message?: string; abort?: boolean };
    try {
      parsed = JSON.parse(answer) as { code: number; message?: string; abort?: boolean };
    } catch {
      unanswered();
      return;
    }
    if (parsed.message) process.stderr.write(parsed.message.endsWith('\n') ? parsed.message : parsed.message + '\n');
    // The server could not record a committed transaction: git ignores this hook's status there,
    // so the git process that ran it (its parent) is stopped before it reports the push as done.
    if (parsed.abort && process.ppid > 1) process.kill(process.ppid, 'SIGKILL');
    process.exit(parsed.code);
  });
});
