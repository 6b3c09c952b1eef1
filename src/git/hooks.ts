/**
 * Hooks call home (shared/DESIGN.md). gitstratum owns one hooks directory per data
 * directory; every repository points at it through `core.hooksPath`, so repositories carry no
 * copies. Each hook is a two-line shell script that execs the relay, which forwards to the
 * socket server here. The logic stays in TypeScript in the server.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../shared/log.js';
import { conflict, DomainError, isDomainError, type ErrorKind } from '../shared/errors.js';

export const HOOK_NAMES = ['pre-receive', 'post-receive', 'reference-transaction'] as const;
export type HookName = (typeof HOOK_NAMES)[number];
/**
 * What `serve` installs. A storage node adds reference-transaction, whose `prepared` call lets
 * it refuse a push whose shard lease moved before the refs commit (fencing, issue 10); it costs
 * a relay start per ref transaction, so a single server does without it.
 */
export const SERVER_HOOKS: readonly HookName[] = ['pre-receive', 'post-receive'];

/**
 * Shell lines before the relay's start, ending calls the server has no use for. git runs
 * reference-transaction twice per ref transaction (`prepared`, then `committed` or `aborted`),
 * and a push that is not atomic makes one transaction per ref: 36 refs were 74 relay starts
 * of a Node process each (about 0.1 CPU-second apiece), which made a push through a storage
 * node 1.7× as long as on a single server. Only a push's `prepared` is relayed (the fencing
 * check), and its `committed` when a synchronous replica follows the shard (the standby's record,
 * replication/sync.ts); the push's refs version is bumped again at post-receive, once per push.
 */
const HOOK_FILTERS: Partial<Record<HookName, string>> = {
  'reference-transaction':
    '[ -n "$GITSTRATUM_SHARD_EPOCH" ] || exit 0\n' +
    // `committed` only with a synchronous replica: the standby's record of the transaction (meta/sync-refs.ts).
    '[ "$1" = prepared ] || { [ "$1" = committed ] && [ -n "$GITSTRATUM_SYNC" ]; } || exit 0\n',
};

export interface HookCall {
  hook: HookName;
  args: string[];
  stdin: string;
  env: Record<string, string>;
  /** The repository directory git ran the hook in. */
  cwd: string;
}

export interface HookAnswer {
  code: number;
  message?: string;
  /**
   * Stop the git process that ran the hook (the relay kills its parent): for a phase whose exit
   * status git ignores (reference-transaction `committed`), the only way to keep git from
   * reporting success.
   */
  abort?: boolean;
}

export type HookHandler = (call: HookCall) => Promise<HookAnswer>;

/**
 * The same socket carries requests from the admin CLI to the running server, for operations
 * that must take the server's own locks (evicting a repository while requests may arrive).
 */
export type ControlHandler = (args: Record<string, unknown>) => Promise<unknown>;

interface ControlAnswer {
  result?: unknown;
  error?: { kind: ErrorKind; code: string; message: string };
}

/**
 * Where the socket lives. In `<data>/run/` when that path fits in an AF_UNIX address (108 bytes
 * on Linux, 104 on macOS; we keep under 100). For a longer data path, in a directory made by
 * mkdtemp (mode 0700, an unpredictable name) under $XDG_RUNTIME_DIR or the temp directory, its
 * path recorded in `<data>/run/hooks.sock.path` for the CLI and the hooks to find. Never a
 * predictable name in a shared directory: another local user could bind it first and keep the
 * server from starting, or answer the hooks in its place (issue 9).
 */
const RUN_DIR = 'run';
const SOCKET_RECORD = 'hooks.sock.path';

function preferredSocketPath(dataDir: string): string | undefined {
  const preferred = path.join(dataDir, RUN_DIR, 'hooks.sock');
  return preferred.length < 100 ? preferred : undefined;
}

/** The socket of the server running on this data directory, as its clients find it. */
export function hookSocketPath(dataDir: string): string {
  const preferred = preferredSocketPath(dataDir);
  if (preferred) return preferred;
  try {
    return readFileSync(path.join(dataDir, RUN_DIR, SOCKET_RECORD), 'utf8').trim();
  } catch {
    // No server has recorded one: a path nobody listens on, so "not running".
    return path.join(dataDir, RUN_DIR, 'hooks.sock');
  }
}

/**
 * The server's side of hookSocketPath: the path to listen on, with a fresh private directory
 * for a long data path (recorded, replacing a stale record), and whether it made that directory.
 */
async function claimSocketPath(dataDir: string): Promise<{ socketPath: string; ownDir: boolean }> {
  const runDir = path.join(dataDir, RUN_DIR);
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  const preferred = preferredSocketPath(dataDir);
  if (preferred) return { socketPath: preferred, ownDir: false };
  const recorded = hookSocketPath(dataDir);
  if (await socketAnswers(recorded)) throw dataDirInUse(recorded);
  if (recorded !== path.join(runDir, 'hooks.sock') && path.basename(path.dirname(recorded)).startsWith('gitstratum-')) {
    // A stale directory of an earlier run (its record lives in our own 0700 run directory).
    await rm(path.dirname(recorded), { recursive: true, force: true });
  }
  const base = process.env['XDG_RUNTIME_DIR'] && path.isAbsolute(process.env['XDG_RUNTIME_DIR']) ? process.env['XDG_RUNTIME_DIR'] : tmpdir();
  const dir = await mkdtemp(path.join(base, 'gitstratum-'));
  const socketPath = path.join(dir, 'hooks.sock');
  if (socketPath.length >= 100) throw new Error(`no short directory for the hook socket: ${socketPath} is too long for AF_UNIX`);
  await writeFile(path.join(runDir, SOCKET_RECORD + '.tmp'), socketPath + '\n', { mode: 0o600 });
  await rename(path.join(runDir, SOCKET_RECORD + '.tmp'), path.join(runDir, SOCKET_RECORD));
  return { socketPath, ownDir: true };
}

function dataDirInUse(socketPath: string) {
  return conflict('data_dir_in_use', `another gitstratum server is running on this data directory (its hook socket ${socketPath} answers)`);
}

export function hooksDir(dataDir: string): string {
  return path.join(dataDir, 'hooks');
}

/** Which program relays a hook call: Perl's starts in about a tenth of Node's CPU time. */
export type RelayKind = 'perl' | 'node';

let perlRelays: Promise<boolean> | undefined;
/** Whether `perl` runs here with the core modules hook-relay.pl loads (asked once per process). */
function perlCanRelay(): Promise<boolean> {
  perlRelays ??= new Promise((resolve) => {
    // The relay itself, asked to check it compiles: it needs nothing but Perl.
    execFile('perl', ['-c', relayPath('perl')], { timeout: 10_000 }, (err) => resolve(!err));
  });
  return perlRelays;
}

/**
 * Writes the hook scripts (again at every start, so they follow the installed program). Each
 * execs a relay: hook-relay.pl where Perl can run it (git's own packages depend on Perl), else
 * hook-relay.js; `relay` chooses one (the tests run both).
 */
export async function installHooks(dataDir: string, socket: string, names: readonly HookName[] = SERVER_HOOKS, relay?: RelayKind): Promise<RelayKind> {
  const dir = hooksDir(dataDir);
  await mkdir(dir, { recursive: true });
  const kind = relay ?? ((await perlCanRelay()) ? 'perl' : 'node');
  // PERL_BADLANG=0: a LANG this host has no locale for would print Perl's warning to the pusher.
  const run = kind === 'perl' ? `PERL_BADLANG=0 exec perl ${sh(relayPath('perl'))}` : `exec ${sh(process.execPath)} ${sh(relayPath('node'))}`;
  for (const name of HOOK_NAMES.filter((n) => !names.includes(n))) await rm(path.join(dir, name), { force: true });
  for (const name of names) {
    const file = path.join(dir, name);
    const script = `#!/bin/sh\n# Installed by gitstratum: relays to the server. Rewritten at every start.\n${HOOK_FILTERS[name] ?? ''}${run} ${name} ${sh(socket)} "$@"\n`;
    // Write then rename, so a push running during a restart never sees a half-written hook.
    await writeFile(file + '.tmp', script, { mode: 0o755 });
    await rename(file + '.tmp', file);
  }
  return kind;
}

/** The relay program beside this file (dist/src/git or dist/bundle: the build copies the Perl one to both). */
export function relayPath(kind: RelayKind): string {
  return fileURLToPath(new URL(kind === 'perl' ? './hook-relay.pl' : './hook-relay.js', import.meta.url));
}

function sh(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export class HookServer {
  private server: Server | undefined;
  private readonly handlers = new Map<HookName, HookHandler[]>();
  private readonly controls = new Map<string, ControlHandler>();
  private path: string;
  private ownDir = false;

  constructor(
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {
    this.path = hookSocketPath(dataDir);
  }

  /** Where the socket is; final once listen() has resolved. */
  get socketPath(): string {
    return this.path;
  }

  on(hook: HookName, handler: HookHandler): void {
    const list = this.handlers.get(hook) ?? [];
    list.push(handler);
    this.handlers.set(hook, list);
  }

  onControl(name: string, handler: ControlHandler): void {
    this.controls.set(name, handler);
  }

  /**
   * `shared`: several storage nodes of one shard may see this data directory (same-volume
   * standbys); the shard lease, not the socket, says which one writes. The socket then lives in
   * a private directory of this process, so git processes a deposed writer left running can
   * never reach the new writer's hooks (they find no one and fail closed).
   */
  async listen(opts: { shared?: boolean } = {}): Promise<void> {
    if (opts.shared) {
      const base = process.env['XDG_RUNTIME_DIR'] && path.isAbsolute(process.env['XDG_RUNTIME_DIR']) ? process.env['XDG_RUNTIME_DIR'] : tmpdir();
      this.path = path.join(await mkdtemp(path.join(base, 'gitstratum-')), 'hooks.sock');
      this.ownDir = true;
    } else {
      // A shard has one writer: if another server answers on this data directory's socket,
      // refuse to start rather than steal its hooks. A socket nobody answers is stale.
      ({ socketPath: this.path, ownDir: this.ownDir } = await claimSocketPath(this.dataDir));
      if (await socketAnswers(this.socketPath)) throw dataDirInUse(this.socketPath);
      await rm(this.socketPath, { force: true });
    }
    // Half-open: the relay ends its side after the request and still reads our answer.
    this.server = createServer({ allowHalfOpen: true }, (socket) => {
      let input = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (input += d));
      socket.on('error', () => {});
      socket.on('end', () => {
        this.dispatch(input)
          .catch((err: Error): HookAnswer => {
            this.log.error({ err }, 'hook failed');
            return { code: 1, message: 'gitstratum: internal error in hook' };
          })
          .then((answer) => socket.end(JSON.stringify(answer)));
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.socketPath, () => resolve());
    });
  }

  private async dispatch(input: string): Promise<HookAnswer | ControlAnswer> {
    const call = JSON.parse(input) as HookCall | { control: string; args?: Record<string, unknown> };
    if ('control' in call) return this.control(call.control, call.args ?? {});
    const messages: string[] = [];
    for (const handler of this.handlers.get(call.hook) ?? []) {
      const answer = await handler(call);
      if (answer.message) messages.push(answer.message);
      if (answer.code !== 0 || answer.abort) return { code: answer.code, message: messages.join('\n'), ...(answer.abort && { abort: true }) };
    }
    return { code: 0, ...(messages.length > 0 && { message: messages.join('\n') }) };
  }

  private async control(name: string, args: Record<string, unknown>): Promise<ControlAnswer> {
    const handler = this.controls.get(name);
    if (!handler) return { error: { kind: 'invalid', code: 'invalid_argument', message: `the server does not offer ${name}` } };
    try {
      return { result: (await handler(args)) ?? null };
    } catch (err) {
      if (isDomainError(err)) return { error: { kind: err.kind, code: err.code, message: err.message } };
      this.log.error({ err, control: name }, 'control request failed');
      return { error: { kind: 'unavailable', code: 'internal_error', message: `${name} failed in the server: ${(err as Error).message}` } };
    }
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.ownDir ? path.dirname(this.socketPath) : this.socketPath, { recursive: true, force: true });
  }
}

/**
 * Asks the server listening on `socketPath` to run a control operation. Resolves undefined when
 * no server answers (none running); a refusal comes back as the server's DomainError.
 */
export function callServer(socketPath: string, control: string, args: Record<string, unknown>): Promise<{ result: unknown } | undefined> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let connected = false;
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
      socket.end(JSON.stringify({ control, args }));
    });
    socket.on('data', (d: string) => (answer += d));
    socket.on('error', (err) => (connected ? reject(err) : resolve(undefined)));
    socket.on('end', () => {
      let parsed: ControlAnswer;
      try {
        parsed = JSON.parse(answer) as ControlAnswer;
      } catch {
        reject(new Error(`the server gave no answer to ${control}`));
        return;
      }
      if (parsed.error) reject(new DomainError(parsed.error.kind, parsed.error.code, parsed.error.message));
      else resolve({ result: parsed.result });
    });
  });
}

/** True when a server is running on this data directory (its hook socket answers). */
export function serverRunning(dataDir: string): Promise<boolean> {
  return socketAnswers(hookSocketPath(dataDir));
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/** The repository id a hook ran for: from the server's context, else from the directory name. */
export function hookRepoId(call: HookCall): string | undefined {
  const fromEnv = call.env['GITSTRATUM_REPO_ID'];
  if (fromEnv) return fromEnv;
  const m = /([0-9A-HJKMNP-TV-Z]{26})\.git$/.exec(call.cwd);
  return m?.[1];
}

/** Parses the `<old> <new> <ref>` lines that pre-receive and post-receive get on stdin. */
export function parseRefLines(stdin: string): { oldOid: string; newOid: string; ref: string }[] {
  return stdin
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [oldOid = '', newOid = '', ref = ''] = line.split(' ');
      return { oldOid, newOid, ref };
    });
}
