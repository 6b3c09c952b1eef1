/**
 * The only module that spawns git. Subcommands and flags are constants here; values that
 * come from users go after `--` or as `--flag=value`. The child's environment is built from
 * an allowlist, so nothing from the server's own environment leaks into git by accident.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import os from 'node:os';
import { Readable, Writable } from 'node:stream';
import { spawnFromHelper, type HelperChild } from './spawner.js';

export type GitService = 'upload-pack' | 'receive-pack';

/** Facts the server hands to its own hooks through the child's environment. */
export interface HookContext {
  repoId: string;
  actorId: string | null;
  actorName: string;
  requestId: string;
  socketPath: string;
  /** On a storage node: the shard lease epoch the push runs under (checked before its refs commit). */
  epoch?: number | undefined;
  /** A synchronous replica holds this push's objects before its refs commit (its hooks record both phases). */
  sync?: boolean | undefined;
}

const passthroughEnv = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'TZ', 'GIT_EXEC_PATH', 'GIT_CONFIG_NOSYSTEM', 'GIT_CONFIG_GLOBAL'];

export function gitEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const key of passthroughEnv) {
    const value = process.env[key];
    if (value !== undefined) env[key] = value;
  }
  // Never prompt on a terminal the server doesn't have.
  env['GIT_TERMINAL_PROMPT'] = '0';
  return { ...env, ...extra };
}

export function hookEnv(ctx: HookContext): Record<string, string> {
  return {
    GITSTRATUM_REPO_ID: ctx.repoId,
    GITSTRATUM_ACTOR_ID: ctx.actorId ?? '',
    GITSTRATUM_ACTOR_NAME: ctx.actorName,
    GITSTRATUM_REQUEST_ID: ctx.requestId,
    GITSTRATUM_HOOK_SOCKET: ctx.socketPath,
    ...(ctx.epoch !== undefined && { GITSTRATUM_SHARD_EPOCH: String(ctx.epoch) }),
    ...(ctx.sync && { GITSTRATUM_SYNC: '1' }),
  };
}

/**
 * Keeps only the `version=N` key of a Git-Protocol header (gitprotocol-http: the value is a
 * colon-separated list of key=value pairs). Anything else is dropped, never passed on.
 */
export function gitProtocolValue(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const versions = header
    .split(':')
    .map((p) => /^version=([012])$/.exec(p.trim())?.[1])
    .filter((v): v is string => v !== undefined);
  return versions.length > 0 ? `version=${versions[versions.length - 1]}` : undefined;
}

export interface ServiceOptions {
  service: GitService;
  repoPath: string;
  advertise: boolean;
  /** false: a whole conversation over one pair of pipes (git over SSH), not one HTTP exchange. */
  stateless?: boolean;
  protocol?: string | undefined;
  hook?: HookContext | undefined;
  timeoutMs: number;
  /**
   * How much lower than the server's own CPU priority (added to its niceness, as nice(1) does;
   * at most 19 in all), set right after the process starts,
   * before its request is written, so before git forks pack-objects or index-pack (which
   * inherit it).
   */
  niceness?: number;
  /** git writes its stdout into this existing file (from its start) instead of a pipe; stdout is then empty. */
  stdoutFile?: string | undefined;
}

export interface GitChild {
  stdin: Writable;
  stdout: Readable;
  /** Resolves when the process has exited, with what it wrote to stderr (truncated). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; timedOut: boolean }>;
  kill(signal?: NodeJS.Signals): void;
  readonly pid: number | undefined;
}

const STDERR_LIMIT = 64 * 1024;

/** A started git process as wrap() needs it, whoever started it. */
interface RawChild {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  pid: number | undefined;
  /** Signals it unless it has exited. */
  signal(signal: NodeJS.Signals): void;
  /** When it has exited and its output pipes are closed; `error` when it could not start or its status is unknown. */
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: string | undefined }>;
}

function ownChild(child: ChildProcessByStdio<Writable, Readable, Readable>): RawChild {
  return {
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    pid: child.pid,
    signal: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    closed: new Promise((resolve) => {
      let spawnError: Error | undefined;
      child.on('error', (err) => {
        spawnError = err;
      });
      child.on('close', (code, signal) => resolve({ code, signal, error: spawnError?.message }));
    }),
  };
}

function helperChild(child: HelperChild): RawChild {
  // Once its exit is known its pid may be reused: never signalled after that.
  let exited = false;
  void child.exit.then(() => {
    exited = true;
    // As Node does for its own children: output nobody listens to is drained, so the pipes
    // close and the exit is reported.
    for (const pipe of [child.stdout, child.stderr]) {
      if (pipe.listenerCount('readable') === 0 && pipe.listenerCount('data') === 0) pipe.resume();
    }
  });
  const closedPipe = (s: Readable) => new Promise<void>((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));
  return {
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    pid: child.pid,
    signal: (signal) => {
      if (exited) return;
      try {
        process.kill(child.pid, signal);
      } catch {
        // exited; its status is on its way
      }
    },
    closed: Promise.all([child.exit, closedPipe(child.stdout), closedPipe(child.stderr)]).then(([exit]) =>
      'error' in exit ? { code: null, signal: null, error: exit.error } : exit,
    ),
  };
}

function wrap(child: RawChild, timeoutMs: number): GitChild {
  let stderr = '';
  let timedOut = false;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (stderr.length < STDERR_LIMIT) stderr += chunk.slice(0, STDERR_LIMIT - stderr.length);
  });
  // A write to a child that died is reported on stdin; the exit status is what matters.
  child.stdin.on('error', () => {});
  const timer = setTimeout(() => {
    timedOut = true;
    child.signal('SIGTERM');
    setTimeout(() => child.signal('SIGKILL'), 5000).unref();
  }, timeoutMs);
  timer.unref();
  const exited = child.closed.then(({ code, signal, error }) => {
    clearTimeout(timer);
    return { code, signal, stderr: error ?? stderr, timedOut };
  });
  return {
    stdin: child.stdin,
    stdout: child.stdout,
    exited,
    pid: child.pid,
    kill: (signal: NodeJS.Signals = 'SIGTERM') => child.signal(signal),
  };
}

/** A git process that could not be started, reported as git failing would be: no output, exit status unknown. */
function notStarted(reason: string): GitChild {
  return {
    stdin: new Writable({ write: (_chunk, _enc, done) => done() }),
    stdout: Readable.from([]),
    exited: Promise.resolve({ code: null, signal: null, stderr: reason, timedOut: false }),
    pid: undefined,
    kill: () => {},
  };
}

/**
 * Starts `git upload-pack` or `git receive-pack` in stateless-RPC mode for one HTTP request,
 * from the git spawner (spawner.ts: a small helper process, so the server's event loop never
 * waits for a fork).
 */
export async function spawnService(opts: ServiceOptions): Promise<GitChild> {
  const args = opts.stateless === false ? [opts.service] : [opts.service, '--stateless-rpc'];
  if (opts.advertise) args.push('--advertise-refs');
  args.push('--', opts.repoPath);
  const extra: Record<string, string> = {};
  if (opts.protocol) extra['GIT_PROTOCOL'] = opts.protocol;
  if (opts.hook) Object.assign(extra, hookEnv(opts.hook));
  let child: HelperChild;
  try {
    child = await spawnFromHelper(args, gitEnv(extra) as Record<string, string>, opts.stdoutFile);
  } catch (err) {
    return notStarted((err as Error).message);
  }
  if ((opts.niceness ?? 0) > 0) {
    try {
      os.setPriority(child.pid, Math.min(19, os.getPriority() + opts.niceness!));
    } catch {
      // gone already: its exit is reported as usual
    }
  }
  return wrap(helperChild(child), opts.timeoutMs);
}

/** Any git command, started from the git spawner (see spawnService): for work on a push's path. */
async function spawnHelped(args: string[], timeoutMs: number, env: Record<string, string> = {}): Promise<GitChild> {
  try {
    return wrap(helperChild(await spawnFromHelper(args, gitEnv(env) as Record<string, string>)), timeoutMs);
  } catch (err) {
    return notStarted((err as Error).message);
  }
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export class GitCommandError extends Error {
  override name = 'GitCommandError';
  constructor(
    readonly args: readonly string[],
    readonly result: RunResult,
  ) {
    super(`git ${subcommand(args)} failed (exit ${result.code}): ${result.stderr.trim().split('\n').pop() ?? ''}`);
  }
}

/** The subcommand of a git argv, past the global options (`-c k=v`, `--git-dir DIR`). */
function subcommand(args: readonly string[]): string {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-c' || args[i] === '--git-dir' || args[i] === '-C') i++;
    else if (!args[i]!.startsWith('-')) return args[i]!;
  }
  return args[0] ?? '';
}

/**
 * Runs a short git command to completion and returns its output. For administrative
 * commands with small outputs only (init, config, rev-parse, fsck); never for packs.
 *
 * Started from the git spawner (spawner.ts), as the git serving requests is: some of these run
 * on every push (its events, the repository's size), and Node's own spawn held the server's
 * event loop for the fork of the whole server each time, 5–30 ms (issue 9's abuse benchmark
 * profiled 3 s of it in a minute of pushes).
 */
export async function runGit(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const { code, stdout, stderr } = await runGitBytes(args, opts);
  return { code, stdout: stdout.toString('utf8'), stderr };
}

/**
 * Starts a git command from the spawner and hands over its streams, for output too large to
 * hold (a whole tree, a history): the caller reads stdout as it comes, ends stdin, and checks
 * `exited`. Stopped after 10 minutes, as runGit's commands are.
 */
export async function spawnGit(args: readonly string[], env: Record<string, string> = {}): Promise<GitChild> {
  try {
    return wrap(helperChild(await spawnFromHelper([...args], gitEnv(env) as Record<string, string>, undefined, undefined)), 10 * 60_000);
  } catch (err) {
    return notStarted((err as Error).message);
  }
}

/** Throws what runGit throws when the process `exited` unsuccessfully. */
export async function checkExit(args: readonly string[], child: GitChild): Promise<void> {
  const { code, stderr } = await child.exited;
  if (code !== 0) throw new GitCommandError(args, { code, stdout: '', stderr });
}

export interface RunOptions {
  cwd?: string;
  input?: string;
  env?: Record<string, string>;
  check?: boolean;
}

/** runGit with the output as bytes: for object contents (`cat-file --batch`), which need not be text. */
export async function runGitBytes(args: readonly string[], opts: RunOptions = {}): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  let child: GitChild;
  try {
    child = wrap(helperChild(await spawnFromHelper([...args], gitEnv(opts.env) as Record<string, string>, undefined, opts.cwd)), 10 * 60_000);
  } catch (err) {
    child = notStarted((err as Error).message);
  }
  const chunks: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => chunks.push(c));
  child.stdin.end(opts.input ?? '');
  const { code, stderr } = await child.exited;
  const stdout = Buffer.concat(chunks);
  if (opts.check !== false && code !== 0) throw new GitCommandError(args, { code, stdout: stdout.toString('utf8'), stderr });
  return { code, stdout, stderr };
}

/** `git init --bare` with the given initial branch. */
export async function initBare(repoPath: string, defaultBranch: string): Promise<void> {
  await runGit(['init', '--bare', '--quiet', `--initial-branch=${defaultBranch}`, '--', repoPath]);
}

/** Sets config keys in a repository's own config file. Keys are constants of the caller. */
export async function setConfig(repoPath: string, entries: readonly (readonly [string, string])[]): Promise<void> {
  for (const [key, value] of entries) {
    await runGit(['config', '--file', `${repoPath}/config`, '--', key, value]);
  }
}

/**
 * Fills a new repository (`target`, which must not exist) with every ref and object of
 * `source` on the same filesystem: `git clone --mirror --local` hardlinks the object files
 * (packs are immutable, so the copies never change under each other) instead of building a
 * pack: 0.01 s instead of 5 s for a 186 MiB repository. Never `--shared` (alternates): the
 * target must not depend on the source, which may be deleted. The clone's `remote.origin`
 * section is removed; the target knows nothing of where it came from.
 */
export async function cloneLocalMirror(source: string, target: string): Promise<void> {
  await runGit(['clone', '--mirror', '--local', '--quiet', '--', source, target]);
  await runGit(['config', '--file', `${target}/config`, '--remove-section', 'remote.origin']);
}

export async function fsck(repoPath: string): Promise<RunResult> {
  return runGit(['--git-dir', repoPath, 'fsck', '--no-progress', '--strict'], { check: false });
}

/** Only that every ref reaches a complete graph (objects themselves checked by index-pack --strict). */
export async function fsckConnectivity(repoPath: string): Promise<RunResult> {
  return runGit(['--git-dir', repoPath, 'fsck', '--no-progress', '--connectivity-only', '--no-dangling'], { check: false });
}

/** All refs as `name → oid`, plus HEAD's symbolic target. */
export async function listRefs(repoPath: string): Promise<Map<string, string>> {
  const { stdout } = await runGit(['--git-dir', repoPath, 'for-each-ref', '--format=%(refname) %(objectname)']);
  const refs = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const [name, oid] = line.split(' ');
    if (name && oid) refs.set(name, oid);
  }
  return refs;
}

export interface BackgroundOptions {
  /** Aborting stops the command and everything it started. */
  signal: AbortSignal;
  /** CPU priority, as nice(1) takes it: 0 (normal) to 19 (lowest). */
  niceness: number;
  /** Called once the command runs, with a function that SIGKILLs its process group (crash tests). */
  onSpawn?: (killGroup: () => void) => void;
}

/**
 * Runs a git command for background work on a repository (maintenance), at lowered CPU
 * priority and in its own process group: `git repack` starts `pack-objects`, which would keep
 * running (and burning CPU) if only its parent were killed. Aborting sends TERM to the group,
 * then KILL after 5 s; the command then rejects with the abort reason.
 *
 * The priority is set by nice(1) before git starts, so every child inherits it; setting it
 * after spawn would race with the children git forks straight away.
 */
export function runBackground(args: readonly string[], opts: BackgroundOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    if (opts.signal.aborted) return reject(opts.signal.reason);
    const child = spawn('nice', ['-n', String(opts.niceness), 'git', ...args], {
      env: gitEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      if (stdout.length < STDERR_LIMIT) stdout += c;
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += c;
    });
    const group = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      group('SIGTERM');
      killTimer = setTimeout(() => group('SIGKILL'), 5000);
      killTimer.unref();
    };
    opts.signal.addEventListener('abort', onAbort, { once: true });
    opts.onSpawn?.(() => group('SIGKILL'));
    let spawnError: Error | undefined;
    child.on('error', (err) => (spawnError = err));
    child.on('close', (code) => {
      opts.signal.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      const result = { code, stdout, stderr: spawnError ? spawnError.message : stderr };
      if (opts.signal.aborted) reject(opts.signal.reason);
      else if (code !== 0) reject(new GitCommandError(args, result));
      else resolve(result);
    });
  });
}

/**
 * Geometric repack with a multi-pack reachability bitmap (docs/design/maintenance.md): packs
 * loose objects and rolls up small packs so that every pack is at least twice the size of the
 * next smaller one, then writes a multi-pack-index and its bitmap over all packs. It never drops
 * an object (only whole packs are combined), so a push landing meanwhile is safe.
 * `repack.updateServerInfo=false`: info/refs serves only the dumb HTTP protocol.
 */
export async function repackGeometric(repoPath: string, opts: BackgroundOptions): Promise<void> {
  const args = ['-c', 'repack.updateServerInfo=false', '--git-dir', repoPath, 'repack', '-d', '-q', '--geometric=2', '--write-midx', '--write-bitmap-index'];
  await runBackground(args, opts);
}

/**
 * After a restore: one pack (and a reachability bitmap) instead of one per snapshot of the
 * chain. `-a -d` keeps what the refs reach and drops the rest (objects of refs deleted before
 * the restored snapshot, which older packs still hold).
 */
export async function repackAll(repoPath: string, opts: BackgroundOptions): Promise<void> {
  const args = ['-c', 'repack.updateServerInfo=false', '--git-dir', repoPath, 'repack', '-a', '-d', '-q', '--write-bitmap-index'];
  await runBackground(args, opts);
}

/** Adds the commits not yet in the repository's commit-graph chain as a new layer (merging small layers). */
export async function writeCommitGraph(repoPath: string, opts: BackgroundOptions): Promise<void> {
  await runBackground(['--git-dir', repoPath, 'commit-graph', 'write', '--reachable', '--split', '--no-progress'], opts);
}

/**
 * Moves every loose ref into packed-refs (issue 9): however many refs a repository has, ref
 * reads (upload-pack's advertisement, the pack cache's refs version) then cost one file.
 */
export async function packRefs(repoPath: string, opts: BackgroundOptions): Promise<void> {
  await runBackground(['--git-dir', repoPath, 'pack-refs', '--all', '--prune'], opts);
}

/** How many refs the repository has (loose and packed; HEAD not counted). */
export async function countRefs(repoPath: string): Promise<number> {
  // One byte and a newline per ref: 200 KB of output for 100,000 refs.
  const { stdout } = await runGit(['--git-dir', repoPath, 'for-each-ref', '--format=.']);
  let n = 0;
  for (let i = stdout.indexOf('\n'); i !== -1; i = stdout.indexOf('\n', i + 1)) n++;
  return n;
}

/**
 * Bytes of the repository's object store by `git count-objects -v`: loose objects (`size`)
 * plus packs with their indexes and bitmaps (`size-pack`), as git counts disk use. Garbage
 * and objects of a push still in quarantine are not included.
 */
export async function objectStoreBytes(repoPath: string): Promise<number> {
  const { stdout } = await runGit(['--git-dir', repoPath, 'count-objects', '-v']);
  let kib = 0;
  for (const line of stdout.split('\n')) {
    const [key, value] = line.split(': ');
    if (key === 'size' || key === 'size-pack') kib += Number(value) || 0;
  }
  return kib * 1024;
}

/**
 * Snapshots (docs/design/snapshots.md). Every ref with its object id and, for symbolic refs,
 * its target, read in one `for-each-ref`; HEAD (not listed by for-each-ref) separately.
 */
export async function readRefsForSnapshot(repoPath: string): Promise<{ name: string; oid: string; symref: string }[]> {
  const { stdout } = await runGit(['--git-dir', repoPath, 'for-each-ref', '--format=%(objectname) %(refname) %(symref)']);
  const refs: { name: string; oid: string; symref: string }[] = [];
  for (const line of stdout.split('\n')) {
    const [oid, name, symref] = line.split(' ');
    if (oid && name) refs.push({ name, oid, symref: symref ?? '' });
  }
  return refs;
}

/** HEAD's symbolic target (`refs/heads/main`), or undefined when HEAD is detached. */
export async function symbolicHead(repoPath: string): Promise<string | undefined> {
  const { code, stdout } = await runGit(['--git-dir', repoPath, 'symbolic-ref', '-q', 'HEAD'], { check: false });
  return code === 0 ? stdout.trim() : undefined;
}

/** Points a symbolic ref (HEAD) at `target`. */
export async function setSymbolicRef(repoPath: string, name: string, target: string): Promise<void> {
  await runGit(['--git-dir', repoPath, 'symbolic-ref', '--', name, target]);
}

/** The subset of `oids` present in the repository (`cat-file --batch-check`). */
export async function presentObjects(repoPath: string, oids: readonly string[]): Promise<Set<string>> {
  if (oids.length === 0) return new Set();
  const { stdout } = await runGit(['--git-dir', repoPath, 'cat-file', '--batch-check=%(objectname)'], { input: oids.join('\n') + '\n' });
  return new Set(stdout.split('\n').filter((l) => /^[0-9a-f]{40,64}$/.test(l)));
}

/**
 * `git pack-objects --stdout --revs`: the caller writes the tips (and `^oid` negatives) to
 * stdin and reads a self-contained (never thin) pack from stdout.
 */
export function spawnPackObjects(repoPath: string, timeoutMs: number): GitChild {
  const args = ['--git-dir', repoPath, 'pack-objects', '--stdout', '--revs', '--delta-base-offset', '-q'];
  return wrap(ownChild(spawn('git', args, { env: gitEnv(), stdio: ['pipe', 'pipe', 'pipe'] })), timeoutMs);
}

/**
 * `index-pack --stdin --strict`: besides the pack's checksum and every object's id, each object
 * is checked as `fsck` would (malformed commits, trees, tags) and its links must resolve.
 */
export function spawnIndexPack(repoPath: string, timeoutMs: number): GitChild {
  const args = ['--git-dir', repoPath, 'index-pack', '--stdin', '--strict'];
  return wrap(ownChild(spawn('git', args, { env: gitEnv(), stdio: ['pipe', 'pipe', 'pipe'] })), timeoutMs);
}

/**
 * A self-contained pack of the objects reachable from `tips` and from no ref of the repository
 * (what a ref transaction at `prepared` adds: its refs are not moved yet), as `rev-list
 * --objects … --not --all` piped to `pack-objects`. Undefined when it would exceed `maxBytes`
 * (the caller has the objects fetched instead); a pack of no objects when there are none.
 * `env`: a push's quarantine (GIT_OBJECT_DIRECTORY and its alternates), to pack its objects
 * before receive-pack has moved them into the repository.
 */
export async function packOfNewObjects(repoPath: string, tips: readonly string[], maxBytes: number, env: Record<string, string> = {}): Promise<Buffer | undefined> {
  const [list, pack] = await Promise.all([
    spawnHelped(['--git-dir', repoPath, 'rev-list', '--objects', '--stdin', '--not', '--all'], 60_000, env),
    spawnHelped(['--git-dir', repoPath, 'pack-objects', '--stdout', '--delta-base-offset', '-q'], 60_000, env),
  ]);
  // A process killed (too big) or failed closes its pipe: its exit status says so, not EPIPE.
  for (const pipe of [list.stdin, pack.stdin]) pipe.on('error', () => {});
  list.stdin.end(tips.join('\n') + '\n');
  list.stdout.pipe(pack.stdin);
  const chunks: Buffer[] = [];
  let size = 0;
  let tooBig = false;
  pack.stdout.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxBytes) {
      tooBig = true;
      list.kill('SIGKILL');
      pack.kill('SIGKILL');
    } else chunks.push(chunk);
  });
  const [listed, packed] = await Promise.all([list.exited, pack.exited]);
  if (tooBig) return undefined;
  if (listed.code !== 0) throw new GitCommandError(['rev-list'], { code: listed.code, stdout: '', stderr: listed.stderr });
  if (packed.code !== 0) throw new GitCommandError(['pack-objects'], { code: packed.code, stdout: '', stderr: packed.stderr });
  return Buffer.concat(chunks, size);
}

/** The number of objects a pack says it holds (its header), or undefined when it is no pack. */
export function packObjectCount(pack: Buffer): number | undefined {
  if (pack.length < 12 || pack.toString('latin1', 0, 4) !== 'PACK') return undefined;
  return pack.readUInt32BE(8);
}

/**
 * Whether every object reachable from `tips` is in the repository (the walk stops at its refs).
 * This and the two above run from the git spawner: they are on a push's path, where a fork of
 * the server would stall its event loop.
 */
export async function objectsConnected(repoPath: string, tips: readonly string[]): Promise<boolean> {
  if (tips.length === 0) return true;
  const child = await spawnHelped(['--git-dir', repoPath, 'rev-list', '--objects', '--quiet', '--stdin', '--not', '--all'], 60_000);
  child.stdin.on('error', () => {});
  child.stdout.resume();
  child.stdin.end(tips.join('\n') + '\n');
  return (await child.exited).code === 0;
}

/** Installs `pack` (index-pack --stdin --strict: every object checked as fsck would). */
export async function installPack(repoPath: string, pack: Buffer): Promise<void> {
  const child = await spawnHelped(['--git-dir', repoPath, 'index-pack', '--stdin', '--strict'], 60_000);
  child.stdin.on('error', () => {});
  child.stdout.resume();
  child.stdin.end(pack);
  const { code, stderr } = await child.exited;
  if (code !== 0) throw new GitCommandError(['index-pack'], { code, stdout: '', stderr });
}

/** Applies `update-ref --stdin` instructions (a start/…/commit transaction) in one run. */
export async function updateRefsTransaction(repoPath: string, instructions: string): Promise<void> {
  await runGit(['--git-dir', repoPath, 'update-ref', '--stdin'], { input: instructions });
}

/**
 * Settings for one git run, as `GIT_CONFIG_COUNT`/`_KEY_n`/`_VALUE_n` in its environment: unlike
 * `-c` on the command line, which every local user can read in /proc, the environment of a
 * process is its owner's only (an authorization header travels this way).
 */
export type GitSettings = readonly (readonly [key: string, value: string])[];

function settingsEnv(settings: GitSettings): Record<string, string> {
  const env: Record<string, string> = { GIT_CONFIG_COUNT: String(settings.length) };
  settings.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  return env;
}

/**
 * The refs another repository advertises (`git ls-remote --symref`, protocol v2): each direct
 * ref's object id, and HEAD's target when it is symbolic. Peeled tag lines (`^{}`) are not refs.
 */
export async function lsRemote(url: string, settings: GitSettings = []): Promise<{ refs: Map<string, string>; head: string | undefined }> {
  const { stdout } = await runGit(['-c', 'protocol.version=2', 'ls-remote', '--symref', '--', url], { env: settingsEnv(settings) });
  const refs = new Map<string, string>();
  let head: string | undefined;
  for (const line of stdout.split('\n')) {
    const symref = /^ref: (refs\/\S+)\tHEAD$/.exec(line);
    if (symref) head = symref[1];
    const direct = /^([0-9a-f]{40,64})\t(refs\/\S+)$/.exec(line);
    if (direct && !direct[2]!.endsWith('^{}')) refs.set(direct[2]!, direct[1]!);
  }
  return { refs, head };
}

/**
 * Fetches the objects reachable from `oids`, and nothing else: no ref is written, nor
 * FETCH_HEAD. Every object received is checked as fsck would (`fetch.fsckObjects`): a malformed
 * or corrupt object fails the fetch, and its pack is not kept.
 */
export async function fetchObjects(repoPath: string, url: string, oids: readonly string[], settings: GitSettings = []): Promise<void> {
  if (oids.length === 0) return;
  const args = ['-c', 'protocol.version=2', '-c', 'fetch.fsckObjects=true', '-c', 'gc.auto=0', '-c', 'maintenance.auto=false', '--git-dir', repoPath];
  // The object ids go on stdin: 100,000 of them would overflow the argument list.
  await runGit([...args, 'fetch', '--quiet', '--no-tags', '--no-write-fetch-head', '--no-recurse-submodules', '--stdin', '--', url], {
    input: oids.join('\n') + '\n',
    env: settingsEnv(settings),
  });
}
