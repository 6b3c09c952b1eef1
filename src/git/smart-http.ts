/**
 * Smart HTTP semantics (gitprotocol-http) as stream functions with no HTTP types: the ref
 * advertisement and the stateless-RPC exchange of upload-pack and receive-pack. The edge
 * decodes the transport (gzip, headers) and maps the outcome to statuses.
 *
 * Invariants:
 * - Nothing is returned (so no status line is sent) until git has written its first byte or
 *   the request was refused; a refusal therefore always arrives as a clean error status. A
 *   push over HTTP is answered only once its whole body is in (git's early output is held,
 *   up to the response's buffer), so a proxy that streams request bodies keeps forwarding it.
 * - A client that goes away kills an upload-pack at once. A receive-pack whose request is cut
 *   short (client gone, body over the limit, bad gzip) is not killed: its stdin is closed, so
 *   git sees a truncated pack, fails, removes its quarantine and moves no ref. Killing it
 *   instead leaves the quarantine behind: receive-pack's signal handler removes the directory
 *   while its `index-pack` child, which reads the same stdin and is not signalled, is still
 *   writing into it. It is killed only if it lingers. Once the whole request is in, it runs to
 *   completion so a push is never cut during ref updates.
 * - A request takes a git slot only once the first 64 KiB of its body (or all of it) has
 *   arrived: a client that opens a request and stalls costs no git process (issue 9; the edge's
 *   idle timeout ends it). A push's commands and options are checked in those bytes before git
 *   starts, so a push refused for them (most are) costs no git process. Every body is bounded after
 *   decoding, as it streams: a push by `maxPushBytes`, a fetch request by `maxFetchRequestBytes`,
 *   a push's commands and options by `PushCaps`.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DomainError, invalid, unavailable } from '../shared/errors.js';
import { byteLimit, counting, overByteLimit } from '../shared/streams.js';
import { spawnService, type GitChild, type GitService, type HookContext } from './command.js';
import type { Limiter } from './limiter.js';
import { FLUSH_PKT, RequestValidator, pktLine, type PushCaps, type RefUpdate } from './pkt-line.js';
import { bufferRequest, toInputError } from './request-body.js';

/** How long a receive-pack whose input was cut short gets to clean up before it is killed. */
const RECEIVE_PACK_GRACE_MS = 10_000;

/** Request bodies up to this size (decoded) are read whole before git starts; of longer ones, this much. */
export const PREREAD_BYTES = 64 * 1024;

export interface ServiceLimits {
  timeoutMs: number;
  /** CPU priority of the git processes (gitNiceness). */
  niceness: number;
  maxPushBytes: number;
  /** Largest upload-pack request body, after gzip decoding. */
  maxFetchRequestBytes: number;
  push: PushCaps;
}

export interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  timedOut: boolean;
  bytesIn: number;
  bytesOut: number;
  commands: RefUpdate[];
  /** Whether this response ran a git process (false when it was streamed from the pack cache). */
  spawned: boolean;
}

export interface GitResponse {
  /** Bytes to send as the response body. */
  body: Readable;
  /** Settles when git has exited and the slot is released. Never rejects. */
  done: Promise<Outcome>;
  /** A cached response a front proxy sends itself: the URI for X-Accel-Redirect (`body` is empty). */
  handoff?: string;
  /** The whole body, when it is in memory (a small cached answer): sent as it is; `body` streams the same bytes. */
  bytes?: Buffer;
}

/** A response whose whole body is in memory; its stream is made only if someone asks for it. */
export function wholeResponse(bytes: Buffer, done: Promise<Outcome>): GitResponse {
  let body: Readable | undefined;
  return {
    bytes,
    done,
    get body() {
      return (body ??= Readable.from([bytes]));
    },
  };
}

/** Only protocol v0/v1 exist for push; a v2 request for receive-pack falls back to v0. */
function effectiveProtocol(service: GitService, protocol: string | undefined): string | undefined {
  return service === 'receive-pack' && protocol === 'version=2' ? undefined : protocol;
}

async function firstOutput(child: GitChild, failed: Promise<unknown>): Promise<'output' | 'eof' | 'failed'> {
  const readable = new Promise<'output' | 'eof'>((resolve) => {
    child.stdout.once('readable', () => resolve(child.stdout.readableLength > 0 ? 'output' : 'eof'));
  });
  return Promise.race([readable, failed.then(() => 'failed' as const)]);
}

export function gitFailure(stderr: string, timedOut: boolean): DomainError {
  if (timedOut) return unavailable('git_timeout', 'git took too long and was stopped');
  const last = stderr.trim().split('\n').filter(Boolean).pop() ?? 'git exited without output';
  return new DomainError('invalid', 'git_failed', last.replace(/^fatal: /, ''));
}

export interface AdvertiseOptions {
  service: GitService;
  /** Identifies the repository to the pack cache; git itself only needs the path. */
  repoId: string;
  repoPath: string;
  protocol?: string | undefined;
  limits: ServiceLimits;
}

/**
 * What the edge calls for a git request. `gitServices(limiter)` runs git for every request;
 * the pack cache (pack-cache/cache.ts) has the same shape and answers from disk when it can.
 */
export interface GitServices {
  advertiseRefs(opts: AdvertiseOptions, signal: AbortSignal): Promise<GitResponse>;
  statelessRpc(opts: RpcOptions, signal: AbortSignal): Promise<GitResponse>;
  /** A whole v0/v1 fetch conversation (git over SSH); never cached. Where git runs in this process only. */
  uploadPackSession?(opts: SessionOptions, signal: AbortSignal): Promise<GitResponse>;
  /** upload-pack writing its answer into a file itself (uploadPackInto). Where git runs in this process only. */
  uploadPackInto?(opts: RpcOptions & { body: Buffer }, file: string, signal: AbortSignal): Promise<{ done: Promise<Outcome> }>;
}

export function gitServices(limiter: Limiter): GitServices {
  return {
    advertiseRefs: (opts, signal) => advertiseRefs(opts, limiter, signal),
    statelessRpc: (opts, signal) => statelessRpc(opts, limiter, signal),
    uploadPackSession: (opts, signal) => uploadPackSession(opts, limiter, signal),
    uploadPackInto: (opts, file, signal) => uploadPackInto(opts, file, limiter, signal),
  };
}

export interface SessionOptions {
  repoPath: string;
  protocol?: string | undefined;
  /** Everything the client sends, for as long as the conversation lasts. */
  input: Readable;
  limits: ServiceLimits;
}

/**
 * A whole protocol v0/v1 fetch over one pair of pipes, as git over SSH has it: `git
 * upload-pack` (not stateless) sends its advertisement, then negotiates and sends the pack as
 * the client's lines arrive. What the client sends is checked as a fetch request is and
 * bounded by maxFetchRequestBytes in all. Ends when git exits; a client that goes away stops it.
 */
export async function uploadPackSession(opts: SessionOptions, limiter: Limiter, signal: AbortSignal): Promise<GitResponse> {
  const release = await limiter.acquire(signal);
  const child = await spawnService({ service: 'upload-pack', repoPath: opts.repoPath, advertise: false, stateless: false, protocol: opts.protocol, timeoutMs: opts.limits.timeoutMs, niceness: opts.limits.niceness });
  const validator = new RequestValidator('upload-pack');
  pipeline(opts.input, validator, byteLimit(opts.limits.maxFetchRequestBytes, 'fetch request'), child.stdin).catch((err: NodeJS.ErrnoException) => {
    // The client went away or sent what no fetch sends: git stops (a fetch changes nothing).
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') child.kill();
  });
  const onAbort = () => child.kill();
  signal.addEventListener('abort', onAbort, { once: true });
  const body = counting();
  const done = finish(child, release, () => validator.bytes, () => body.bytes, () => []);
  done.finally(() => signal.removeEventListener('abort', onAbort));
  endAfterExit(child, body, done);
  return { body, done };
}

/**
 * The ref advertisement for `GET …/info/refs?service=…`. For v0/v1 it is prefixed with the
 * `# service=` line and a flush; a v2 capability advertisement is sent bare, as
 * git-http-backend does.
 */
export async function advertiseRefs(opts: AdvertiseOptions, limiter: Limiter, signal?: AbortSignal): Promise<GitResponse> {
  const protocol = effectiveProtocol(opts.service, opts.protocol);
  const release = await limiter.acquire(signal);
  const child = await spawnService({ service: opts.service, repoPath: opts.repoPath, advertise: true, protocol, timeoutMs: opts.limits.timeoutMs, niceness: opts.limits.niceness });
  child.stdin.end();
  const onAbort = () => child.kill();
  signal?.addEventListener('abort', onAbort, { once: true });
  const body = counting();
  const done = finish(child, release, () => 0, () => body.bytes, () => []);
  done.finally(() => signal?.removeEventListener('abort', onAbort));
  const first = await firstOutput(child, new Promise(() => {}));
  if (first === 'eof') {
    const outcome = await done;
    if (outcome.code !== 0) throw gitFailure(outcome.stderr, outcome.timedOut);
  }
  if (protocol !== 'version=2' || opts.service !== 'upload-pack') {
    body.write(pktLine(`# service=git-${opts.service}\n`));
    body.write(FLUSH_PKT);
  }
  endAfterExit(child, body, done);
  return { body, done };
}

export interface RpcOptions {
  service: GitService;
  /** Identifies the repository to the pack cache; git itself only needs the path. */
  repoId: string;
  repoPath: string;
  protocol?: string | undefined;
  /** The request body as received. */
  input: Readable;
  /**
   * The input stays open until the answer has been read (git over SSH, where a push's client
   * waits for its report before it closes): nothing waits for the body's end or its first
   * 64 KiB before git starts, only for its first bytes.
   */
  open?: boolean | undefined;
  /** Removes the transport encoding (gzip), if any; runs inside the same pipeline. */
  decoder?: NodeJS.ReadWriteStream | undefined;
  hook?: HookContext;
  limits: ServiceLimits;
}

/** `POST …/git-upload-pack` and `POST …/git-receive-pack`. */
export async function statelessRpc(opts: RpcOptions, limiter: Limiter, signal: AbortSignal): Promise<GitResponse> {
  // A small body whole, or the start of a large one; only then a slot.
  const early = await bufferRequest(opts.input, opts.decoder, opts.open ? 1 : PREREAD_BYTES, signal);
  const request = early.complete ? Readable.from([early.bytes]) : early.stream;
  const refused = precheck(opts.service, early.complete ? [early.bytes] : early.head, opts.limits.push);
  if (refused) {
    if (!early.complete) request.destroy();
    const bytesIn = early.complete ? early.bytes.length : early.head.reduce((n, b) => n + b.length, 0);
    const done = Promise.resolve<Outcome>({ code: null, signal: null, stderr: '', timedOut: false, bytesIn, bytesOut: 0, commands: [], spawned: false });
    const refusal = sidebandRefusal(opts.service, refused.error, refused.capabilities);
    if (refusal) return { body: refusal, done };
    throw refused.error;
  }
  const release = await limiter.acquire(signal);
  const child = await spawnService({
    service: opts.service,
    repoPath: opts.repoPath,
    advertise: false,
    protocol: effectiveProtocol(opts.service, opts.protocol),
    hook: opts.hook,
    timeoutMs: opts.limits.timeoutMs,
    niceness: opts.limits.niceness,
  });
  const validator = new RequestValidator(opts.service, opts.limits.push);
  const stages: NodeJS.ReadWriteStream[] = [
    validator,
    opts.service === 'receive-pack' ? byteLimit(opts.limits.maxPushBytes, 'push') : byteLimit(opts.limits.maxFetchRequestBytes, 'fetch request'),
  ];

  let inputDone = false;
  let inputError: Error | undefined;
  let inputSettled!: () => void;
  const inputOver = new Promise<void>((resolve) => (inputSettled = resolve));
  const input = new AbortController();
  // Stops git after its input was cut short; see the module comment for why receive-pack
  // gets EOF rather than a signal.
  const stop = () => {
    if (opts.service === 'upload-pack') {
      child.kill();
      return;
    }
    child.stdin.destroy();
    // Cleared as soon as git exits: the timer's closure holds this whole request (decoder,
    // validator, parsed push options), and a client repeating a refused push would otherwise
    // keep RECEIVE_PACK_GRACE_MS worth of requests alive (issue 9: 2 GB under a flood).
    const grace = setTimeout(() => child.kill(), RECEIVE_PACK_GRACE_MS);
    grace.unref();
    void child.exited.then(() => clearTimeout(grace));
  };
  const inputFailed = pipeline([request, ...stages, child.stdin] as unknown as [Readable, ...NodeJS.ReadWriteStream[]], {
    signal: input.signal,
  })
    .then(() => {
      inputDone = true;
      inputSettled();
      return new Promise<never>(() => {});
    })
    .catch((err: Error) => {
      inputSettled();
      // git closing its stdin early (it read all it needed) is not a client error.
      const code = (err as NodeJS.ErrnoException).code;
      if (!input.signal.aborted && (code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED')) {
        inputDone = true;
        return new Promise<never>(() => {});
      }
      inputError = input.signal.aborted ? invalid('client_gone', 'client closed the request before it was complete') : toInputError(err);
      stop();
      return inputError;
    });

  const onAbort = () => {
    if (opts.service === 'upload-pack') child.kill();
    else if (!inputDone) input.abort();
    else {
      // The push is complete and git is updating refs: let it finish, and keep reading its
      // answer (nobody else will) so a large report can't block it before post-receive.
      child.stdout.unpipe();
      child.stdout.resume();
    }
  };
  signal.addEventListener('abort', onAbort, { once: true });
  const body = counting();
  const done = finish(child, release, () => validator.bytes, () => body.bytes, () => validator.commands);
  done.finally(() => signal.removeEventListener('abort', onAbort));

  const first = await firstOutput(child, inputFailed);
  if (first === 'failed') {
    // Nobody reads git's answer now; keep a full pipe from holding it up.
    child.stdout.removeAllListeners('readable');
    child.stdout.resume();
    await done;
    const refusal = sidebandRefusal(opts.service, inputError!, validator.capabilities);
    if (refusal) return { body: refusal, done };
    throw inputError!;
  }
  if (first === 'eof') {
    const outcome = await done;
    if (inputError) {
      const refusal = sidebandRefusal(opts.service, inputError, validator.capabilities);
      if (refusal) return { body: refusal, done };
      throw inputError;
    }
    if (outcome.code !== 0) {
      const refusal = hookRefusal(opts.service, outcome.stderr, validator.capabilities);
      if (refusal) return { body: refusal, done };
      throw gitFailure(outcome.stderr, outcome.timedOut);
    }
  }
  endAfterExit(child, body, done);
  // A push's answer starts only once its whole body is in, held meanwhile in the response's
  // buffer: receive-pack writes while the pack still arrives (fsck warnings, as git/git's old
  // tags without a tagger give), and a proxy that streams request bodies (nginx with
  // `proxy_request_buffering off`) stops forwarding the body once the answer has begun. The push
  // then stalled until the body idle timeout cut it. Over SSH the client waits for the report
  // before it ends its input, so nothing is held there.
  if (opts.service === 'receive-pack' && !opts.open) await heldUntilBodyIn(child, inputOver, done);
  return { body, done };
}

/**
 * Resolves once the request body is all in (or failed), git has exited, or git's answer has
 * filled the response's buffer (`counting()`: 1 MiB, and as much again before git is held up).
 * Past that the answer goes out early rather than stop git: a git that cannot write stops
 * reading its input too, and the push would wait for itself.
 */
function heldUntilBodyIn(child: GitChild, inputOver: Promise<void>, done: Promise<unknown>): Promise<void> {
  let full!: () => void;
  const filled = new Promise<void>((resolve) => (full = resolve));
  child.stdout.once('pause', full);
  return Promise.race([inputOver, done, filled]).then(() => {
    child.stdout.off('pause', full);
  });
}

/**
 * `git upload-pack` for one request whose body is whole in memory, writing its answer straight
 * into `file` (a pack cache entry being made; pack-cache/flight.ts), not into a pipe: no byte
 * of it passes through this process on its way to the disk (issue 12). The body is checked as
 * statelessRpc checks one (framing, then the fetch request bound) before a slot is taken.
 * Resolves once git runs with its request written, with its outcome to come; stopping `signal`
 * stops git.
 */
export async function uploadPackInto(opts: RpcOptions & { body: Buffer }, file: string, limiter: Limiter, signal: AbortSignal): Promise<{ done: Promise<Outcome> }> {
  const refusal = validateWhole(opts.body, opts.limits.push);
  if (refusal) throw refusal;
  const over = overByteLimit(opts.body.length, opts.limits.maxFetchRequestBytes, 'fetch request');
  if (over) throw over;
  const release = await limiter.acquire(signal);
  const child = await spawnService({
    service: 'upload-pack',
    repoPath: opts.repoPath,
    advertise: false,
    protocol: opts.protocol,
    timeoutMs: opts.limits.timeoutMs,
    niceness: opts.limits.niceness,
    stdoutFile: file,
  });
  const stop = () => child.kill();
  signal.addEventListener('abort', stop, { once: true });
  if (signal.aborted) stop();
  child.stdin.end(opts.body);
  const done = finish(child, release, () => opts.body.length, () => 0, () => []);
  void done.finally(() => signal.removeEventListener('abort', stop));
  return { done };
}

/** A whole upload-pack request body checked as the validator checks a streamed one, its end included. */
function validateWhole(body: Buffer, caps: PushCaps): DomainError | undefined {
  const validator = new RequestValidator('upload-pack', caps);
  let error: Error | null | undefined;
  validator._transform(body, 'buffer' as BufferEncoding, (err) => (error = err));
  if (!error) validator._flush((err) => (error = err));
  validator.destroy();
  if (!error) return undefined;
  return error instanceof DomainError ? error : invalid('invalid_request', error.message);
}

/**
 * The start of a request body, checked before git starts: the refusal a validator finds in it
 * (a malformed pkt-line, a push over its caps), with the capabilities read by then. Bytes that
 * end mid-line are no error here: the rest is checked as it streams to git.
 */
function precheck(service: GitService, head: readonly Buffer[], caps: PushCaps): { error: DomainError; capabilities: string[] } | undefined {
  const validator = new RequestValidator(service, caps);
  let error: Error | null | undefined;
  for (const chunk of head) {
    validator._transform(chunk, 'buffer' as BufferEncoding, (err) => (error = err));
    if (error) break;
  }
  validator.destroy();
  return error instanceof DomainError ? { error, capabilities: validator.capabilities } : undefined;
}

/** Refusals of a push's command section (pkt-line.ts PushCaps), which come before its pack. */
const COMMAND_REFUSALS = new Set(['too_many_ref_updates', 'too_many_push_options', 'push_options_too_large', 'push_commands_too_large']);

/**
 * git prints nothing of the body of a failed POST (only "RPC failed; HTTP 413"), but prints a
 * side-band error (band 3) as `remote: …` and stops. So a push refused for its commands or
 * options is answered that way to a client that asked for side-band, which every git push
 * over HTTP does. A push over maxPushBytes keeps its 413: it may be refused mid-pack, and
 * git reports a status it gets while still sending more reliably than a 200.
 */
function sidebandRefusal(service: GitService, err: Error, capabilities: string[]): Readable | undefined {
  if (service !== 'receive-pack' || !(err instanceof DomainError) || !COMMAND_REFUSALS.has(err.code)) return undefined;
  return sidebandError(err.message, capabilities);
}

/** A side-band error (band 3), which git prints as `remote: …` and stops; undefined if the client asked for no side-band. */
function sidebandError(text: string, capabilities: string[]): Readable | undefined {
  if (!capabilities.includes('side-band-64k') && !capabilities.includes('side-band')) return undefined;
  return Readable.from([pktLine(Buffer.concat([Buffer.from([3]), Buffer.from(`${text.slice(0, 4000)}\n`)])), FLUSH_PKT]);
}

/**
 * A push our reference-transaction hook refused (a deposed writer, a shard that needs its
 * synchronous replica): git 2.39's receive-pack then dies before it writes a byte, with the
 * hook's lines on its stderr, not in the side-band, so git would show only "HTTP 400". The
 * hook's own lines (`gitstratum: …`) go to the client as a side-band error instead.
 */
function hookRefusal(service: GitService, stderr: string, capabilities: string[]): Readable | undefined {
  const lines = stderr.split('\n').filter((l) => l.startsWith('gitstratum: '));
  if (service !== 'receive-pack' || lines.length === 0) return undefined;
  return sidebandError(lines.join('\n'), capabilities);
}

/**
 * Streams git's output into `body`, ending it only once git has exited and its slot is back
 * in the limiter: a client that sends its next request as soon as this response ends (git's
 * info/refs → POST) must find the slot free, or a small limit answers it 503.
 */
function endAfterExit(child: GitChild, body: NodeJS.WritableStream, done: Promise<unknown>): void {
  child.stdout.pipe(body, { end: false });
  void done.then(() => body.end());
}

async function finish(
  child: GitChild,
  release: () => void,
  bytesIn: () => number,
  bytesOut: () => number,
  commands: () => RefUpdate[],
): Promise<Outcome> {
  const { code, signal, stderr, timedOut } = await child.exited;
  release();
  return { code, signal, stderr, timedOut, bytesIn: bytesIn(), bytesOut: bytesOut(), commands: commands(), spawned: true };
}
