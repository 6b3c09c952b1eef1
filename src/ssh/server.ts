/**
 * Git over SSH (issue 14): a built-in SSH server (the ssh2 library), off unless `sshPort` is
 * set. It authenticates users by their registered public keys (access/ssh-keys.ts) and runs
 * only git's own commands on one repository path (commands.ts), through the same repository
 * service (access policy) and the same repository hosts as Smart HTTP, so a push runs the
 * same hooks, limits, audit and snapshots, and a v2 fetch is answered from the same pack cache
 * entries:
 *
 * - `git-receive-pack`: the advertisement, then the client's commands and pack as one
 *   stateless-RPC exchange whose input stays open (the client waits for its report before it
 *   closes).
 * - `git-upload-pack` with `GIT_PROTOCOL=version=2` (git's default since 2.26): the
 *   capability advertisement, then each command (ls-refs, fetch) as its own stateless-RPC
 *   exchange, cached as over HTTP.
 * - `git-upload-pack` with protocol v0/v1: one whole conversation with `git upload-pack`
 *   where the repository is (repos/host.ts uploadPackSession; at a frontend, both streams
 *   ride one request to the shard's writer); never cached.
 *
 * Everything else (a shell, a PTY, port forwarding, another command, a path outside
 * OWNER/SPACE/REPO) is refused, a command with one line on stderr and exit status 1.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { PassThrough, Readable, type Writable } from 'node:stream';
import type { Connection, PublicKeyAuthContext, ServerChannel } from 'ssh2';
import { ssh2 } from './ssh2.js';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { SshKeys } from '../access/ssh-keys.js';
import { actorId, actorName, anonymous, type Actor } from '../access/policy.js';
import type { RepoService, RepoInfo } from '../repos/service.js';
import type { HostedRepo, HostOf } from '../repos/host.js';
import type { GitResponse } from '../git/smart-http.js';
import type { Signer } from '../lfs/signing.js';
import { FLUSH_PKT, hexLength, pktLine } from '../git/pkt-line.js';
import { gitProtocolValue } from '../git/command.js';
import { isDomainError } from '../shared/errors.js';
import { afterPrefix } from '../shared/streams.js';
import type { Logger } from '../shared/log.js';
import { clientOf, type Budget } from '../http/rate-limit.js';
import { parseCommand, type SshCommand } from './commands.js';
import type { HostKey } from './host-keys.js';
import { fingerprintOf } from './public-key.js';

export interface SshServerOptions {
  hostKeys: HostKey[];
  /** Clients whose key no user registered may read public repositories. */
  anonymousReads: boolean;
  idleTimeoutMs: number;
  maxConnectionMs: number;
  /** Largest v2 command request (maxFetchRequestBytes). */
  maxRequestBytes: number;
}

export interface SshServerDeps {
  /** The clients' budgets, shared with HTTP (http/rate-limit.ts): each SSH command is one git (or LFS) request. */
  budget?: Budget | undefined;
  sshKeys: SshKeys;
  repos: RepoService;
  hostOf: HostOf;
  /** Signs what git-lfs-authenticate hands git-lfs (lfs/signing.ts grants). */
  signer: Pick<Signer, 'grant'>;
  /** scheme://host:port of the HTTP server, for the LFS endpoint git-lfs-authenticate names. */
  httpOrigin: () => string;
  log: Logger;
  registry: Registry;
}

export interface SshServer {
  listen(port: number, host: string): Promise<number>;
  /** Stops accepting; running sessions get up to `graceMs` to finish, then are cut. */
  close(graceMs: number): Promise<void>;
}

type Channel = ServerChannel;

interface Who {
  actor: Actor;
  /** The key's fingerprint, for logs. */
  fingerprint: string;
  /** The registered key's id (none for an anonymous reader). */
  keyId?: string;
}

/** How long an authorization from git-lfs-authenticate lasts. */
const LFS_GRANT_SECONDS = 3600;
/** A connection must authenticate within this long, in at most this many failed tries. */
const LOGIN_GRACE_MS = 60_000;
const MAX_AUTH_TRIES = 6;

export function createSshServer(opts: SshServerOptions, deps: SshServerDeps): SshServer {
  const { log } = deps;
  const metrics = {
    connections: new Counter({ name: 'gitstratum_ssh_connections_total', help: 'SSH connections accepted', registers: [deps.registry] }),
    open: new Gauge({ name: 'gitstratum_ssh_connections_open', help: 'SSH connections open now', registers: [deps.registry] }),
    auth: new Counter({
      name: 'gitstratum_ssh_authentications_total',
      help: 'SSH public-key authentications, by result (ok, anonymous, unknown_key, bad_signature, refused_method, rate_limited: its address failed too often, error)',
      labelNames: ['result'] as const,
      registers: [deps.registry],
    }),
    commands: new Counter({
      name: 'gitstratum_ssh_commands_total',
      help: 'Commands SSH clients ran, by command and result (ok, failed, refused)',
      labelNames: ['command', 'result'] as const,
      registers: [deps.registry],
    }),
    bytes: new Counter({ name: 'gitstratum_ssh_bytes_total', help: 'Bytes of git traffic over SSH, by direction', labelNames: ['direction'] as const, registers: [deps.registry] }),
  };
  const clients = new Set<Connection>();
  const running = new Set<Promise<unknown>>();

  const server = new (ssh2().Server)({ hostKeys: opts.hostKeys.map((k) => k.private), ident: 'gitstratum' }, (client, info) => {
    metrics.connections.inc();
    metrics.open.inc();
    clients.add(client);
    const connLog = log.child({ client_ip: info.ip, connection: randomUUID().slice(0, 8) });
    let who: Who | undefined;
    // Idle and total bounds: a connection with no traffic while no command runs, or open too
    // long, is closed. A running command is bounded by git's own timeout instead (a large
    // push may pass minutes in index-pack with nothing on the wire).
    const socket = (client as unknown as { _sock?: import('node:net').Socket })._sock;
    let commands = 0;
    const idle = (on: boolean) => socket?.setTimeout(on ? opts.idleTimeoutMs : 0);
    idle(true);
    socket?.on('timeout', () => {
      connLog.info('ssh connection idle too long; closed');
      client.end();
    });
    const total = setTimeout(() => {
      connLog.info('ssh connection open too long; closed');
      client.end();
    }, opts.maxConnectionMs);
    total.unref();
    const connectionClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.on('close', () => {
      clearTimeout(total);
      clients.delete(client);
      metrics.open.dec();
    });
    client.on('error', (err) => connLog.debug({ err }, 'ssh connection error'));

    // As OpenSSH's LoginGraceTime and MaxAuthTries: a client that has not authenticated in
    // time, or is refused too often (each key it offers that no user registered, each bad
    // signature: each costs a key lookup), is disconnected. A connection that ends without
    // authenticating after a refusal spends one failed authentication of its address's budget,
    // shared with bad HTTP credentials; an address that has spent it is disconnected at once.
    let failures = 0;
    const grace = setTimeout(() => {
      if (who) return;
      connLog.info('ssh client did not authenticate in time; closed');
      client.end();
    }, LOGIN_GRACE_MS);
    grace.unref();
    client.on('close', () => {
      clearTimeout(grace);
      if (!who && failures > 0) void deps.budget?.authFailed(info.ip).catch(() => {});
    });
    const blocked = deps.budget?.authBlocked(info.ip).catch(() => undefined);
    let shut = false;
    client.on('authentication', (ctx) => {
      const reject = () => {
        if (++failures >= MAX_AUTH_TRIES) {
          connLog.info({ failures }, 'ssh client failed to authenticate too often; closed');
          client.end();
          return;
        }
        ctx.reject(['publickey']);
      };
      void Promise.resolve(blocked).then((refusal) => {
        if (refusal) {
          if (!shut) {
            shut = true;
            connLog.info({ reason: refusal.message }, 'ssh connection refused');
            metrics.auth.inc({ result: 'rate_limited' });
          }
          client.end();
          return;
        }
        if (ctx.method !== 'publickey') {
          if (ctx.method !== 'none') metrics.auth.inc({ result: 'refused_method' });
          ctx.reject(['publickey']);
          return;
        }
        authenticate(ctx)
          .then((found) => {
            if (!found) return reject();
            if (ctx.signature) {
              who = found;
              connLog.info({ user: actorName(found.actor), key: found.fingerprint }, 'ssh client authenticated');
            }
            ctx.accept();
          })
          .catch((err: unknown) => {
            metrics.auth.inc({ result: 'error' });
            connLog.error({ err }, 'ssh authentication failed');
            reject();
          });
      });
    });

    client.on('ready', () => {
      client.on('session', (accept) => {
        const session = accept();
        let protocol: string | undefined;
        session.on('env', (acceptEnv, rejectEnv, env) => {
          // git sends GIT_PROTOCOL (version=2) this way; nothing else is taken.
          if (env.key === 'GIT_PROTOCOL') {
            protocol = gitProtocolValue(env.val);
            acceptEnv?.();
          } else rejectEnv?.();
        });
        for (const refused of ['pty', 'x11', 'auth-agent', 'subsystem', 'signal', 'window-change'] as const) {
          session.on(refused, (_accept: unknown, reject?: () => void) => reject?.());
        }
        session.on('shell', (acceptShell) => {
          metrics.commands.inc({ command: 'shell', result: 'refused' });
          refuse(acceptShell(), `gitstratum: hi ${who ? actorName(who.actor) : 'there'}; this server runs git only, no shell (git clone ssh://HOST/OWNER/SPACE/REPO.git)`);
        });
        session.on('exec', (acceptExec, _reject, exec) => {
          const channel = acceptExec();
          if (commands++ === 0) idle(false);
          // A command counts as running until its channel is closed both ways (or its
          // connection is gone: ssh2 does not always close a channel whose connection ended),
          // not when git exits: what git wrote last may still wait for the client's window, and
          // ending the connection at shutdown would drop it.
          const closed = Promise.race([new Promise<void>((resolve) => channel.once('close', resolve)), connectionClosed]);
          const done = runCommand(channel, exec.command, protocol, who ?? { actor: anonymous, fingerprint: 'none' }, info.ip, connLog);
          const whole = Promise.all([done, closed]);
          running.add(whole);
          void done.finally(() => {
            if (--commands === 0) idle(true);
          });
          void whole.finally(() => running.delete(whole));
        });
      });
      // No forwarding of any kind.
      client.on('tcpip', (_accept, reject) => reject());
      client.on('openssh.streamlocal', (_accept, reject) => reject());
      client.on('request', (_accept, reject) => reject?.());
    });
  });

  /** The user of the presented key; anonymous for an unknown key when anonymous reads are on. */
  async function authenticate(ctx: PublicKeyAuthContext): Promise<Who | undefined> {
    const fingerprint = fingerprintOf(ctx.key.data);
    // Last use is recorded only once the client has proved it holds the key.
    const found = await deps.sshKeys.authenticate(fingerprint, { proven: Boolean(ctx.signature) });
    const type = ctx.key.data.subarray(4, 4 + ctx.key.data.readUInt32BE(0)).toString('latin1');
    if (!ctx.signature) return found || opts.anonymousReads ? { actor: found?.actor ?? anonymous, fingerprint } : (metrics.auth.inc({ result: 'unknown_key' }), undefined);
    // The client proves it holds the private key: its signature over the session's data.
    const key = ssh2().utils.parseKey(`${type} ${ctx.key.data.toString('base64')}`);
    if (key instanceof Error || Array.isArray(key) || key.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) {
      metrics.auth.inc({ result: 'bad_signature' });
      return undefined;
    }
    if (found) {
      metrics.auth.inc({ result: 'ok' });
      return { actor: found.actor, fingerprint, keyId: found.key.id };
    }
    if (!opts.anonymousReads) {
      metrics.auth.inc({ result: 'unknown_key' });
      return undefined;
    }
    metrics.auth.inc({ result: 'anonymous' });
    return { actor: anonymous, fingerprint };
  }

  async function runCommand(channel: Channel, command: string, protocol: string | undefined, who: Who, address: string, connLog: Logger): Promise<void> {
    // What the client sends, as a stream of its own: whoever reads it may end or destroy it
    // (an async iterator, a pipeline) without closing the channel before its exit status.
    const input = channel.pipe(new PassThrough());
    let cmd: SshCommand;
    try {
      cmd = parseCommand(command);
    } catch (err) {
      metrics.commands.inc({ command: 'unknown', result: 'refused' });
      connLog.info({ command: command.slice(0, 200) }, 'ssh command refused');
      return refuse(channel, `gitstratum: ${isDomainError(err) ? err.message : 'not a git command'}`);
    }
    const name = cmd.kind === 'git' ? `git-${cmd.service}` : 'git-lfs-authenticate';
    const requestId = randomUUID();
    const gone = new AbortController();
    channel.on('close', () => gone.abort());
    const started = performance.now();
    const held: (() => void)[] = [];
    try {
      const budget = deps.budget;
      if (budget) {
        const client = clientOf(who.actor, address);
        const over = await budget.charge(client, cmd.kind === 'git' ? 'git' : 'lfs');
        if (over) throw over;
        const request = budget.holdRequest(client);
        if (!('call' in request)) throw request;
        held.push(request.call);
        if (cmd.kind === 'git') {
          const slot = await budget.holdGit(client, gone.signal);
          if (!('call' in slot)) throw slot;
          held.push(slot.call);
        }
      }
      if (cmd.kind === 'lfs-authenticate') {
        const repo = await deps.repos.resolve(who.actor, cmd.repo, cmd.operation === 'upload' ? 'write' : 'read');
        channel.write(`${JSON.stringify(lfsAuthentication(repo, who))}\n`);
        metrics.commands.inc({ command: name, result: 'ok' });
        connLog.info({ command: name, repository: label(repo), operation: cmd.operation, user: actorName(who.actor), key: who.fingerprint }, 'ssh command finished');
        return finish(channel, 0);
      }
      const repo = await deps.repos.resolve(who.actor, cmd.repo, cmd.service === 'receive-pack' ? 'write' : 'read');
      const host = deps.hostOf(repo);
      const hosted: HostedRepo = { id: repo.id, defaultBranch: repo.defaultBranch, label: label(repo) };
      const pusher = { actorId: actorId(who.actor), actorName: actorName(who.actor), requestId };
      let code = 0;
      if (cmd.service === 'receive-pack') {
        await send(await host.advertiseRefs(hosted, { service: 'receive-pack' }, gone.signal), channel, serviceHeader('receive-pack'));
        const res = await host.statelessRpc(hosted, { service: 'receive-pack', input, open: true, pusher }, gone.signal);
        code = await send(res, channel);
      } else if (protocol === 'version=2') {
        await send(await host.advertiseRefs(hosted, { service: 'upload-pack', protocol }, gone.signal), channel);
        const reader = new PktRequests(input, opts.maxRequestBytes);
        for (;;) {
          const request = await reader.next();
          // A bare flush (or the end of input) ends a v2 session.
          if (!request || request.equals(FLUSH_PKT)) break;
          code = await send(await host.statelessRpc(hosted, { service: 'upload-pack', protocol, input: Readable.from([request]), pusher }, gone.signal), channel);
          if (code !== 0) break;
        }
      } else {
        code = await send(await host.uploadPackSession(hosted, { protocol, input }, gone.signal), channel);
      }
      metrics.commands.inc({ command: name, result: code === 0 ? 'ok' : 'failed' });
      connLog.info({ command: name, repository: label(repo), user: actorName(who.actor), key: who.fingerprint, exit: code, duration_ms: Math.round(performance.now() - started) }, 'ssh command finished');
      finish(channel, code === 0 ? 0 : 1);
    } catch (err) {
      const clientMessage = (err as { clientMessage?: string }).clientMessage;
      metrics.commands.inc({ command: name, result: isDomainError(err) || clientMessage ? 'refused' : 'failed' });
      if (!isDomainError(err) && !clientMessage && !gone.signal.aborted) connLog.error({ err, command: name }, 'ssh command failed');
      else connLog.info({ command: name, user: actorName(who.actor), reason: isDomainError(err) ? err.code : clientMessage }, 'ssh command refused');
      refuse(channel, `gitstratum: ${isDomainError(err) ? err.message : clientMessage ?? 'internal error'}`);
    } finally {
      for (const release of held) release();
    }
  }

  /**
   * git-lfs-authenticate's answer (the hybrid SSH mode of the Git LFS API): the repository's
   * HTTP LFS endpoint and a short-lived authorization for it, which git-lfs uses until
   * `expires_in` and then asks for again.
   */
  function lfsAuthentication(repo: RepoInfo, who: Who) {
    const scope = who.actor.kind === 'user' && who.actor.scope !== 'read' ? 'write' : 'read';
    const token = deps.signer.grant({ repo: repo.id, sub: who.actor.kind === 'user' ? who.actor.userId : null, keyId: who.keyId ?? null, scope }, LFS_GRANT_SECONDS);
    return { href: `${deps.httpOrigin()}/${label(repo)}.git/info/lfs`, header: { Authorization: `Bearer ${token}` }, expires_in: LFS_GRANT_SECONDS };
  }

  /** Streams a git response into the channel (which stays open), without `strip` (which it starts with); git's exit status. */
  async function send(res: GitResponse, channel: Channel, strip?: Buffer): Promise<number> {
    const body = strip ? res.body.compose(afterPrefix(strip, 'the advertisement')) : res.body;
    body.on('data', (chunk: Buffer) => metrics.bytes.inc({ direction: 'out' }, chunk.length));
    body.pipe(channel as unknown as Writable, { end: false });
    // A channel the client closed unpipes the body, which then never ends: stop at either.
    await Promise.race([once(body, 'end').catch(() => undefined), once(channel, 'close')]);
    if (channel.destroyed) body.resume();
    const outcome = await res.done;
    metrics.bytes.inc({ direction: 'in' }, outcome.bytesIn);
    return outcome.code === 0 || !outcome.spawned ? 0 : 1;
  }

  return {
    async listen(port, host) {
      server.listen(port, host);
      await once(server, 'listening');
      return (server.address() as AddressInfo).port;
    },
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const deadline = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([Promise.allSettled([...running]), deadline]);
      for (const c of clients) c.end();
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    },
  };
}

function label(repo: RepoInfo): string {
  return `${repo.ownerName}/${repo.spaceName}/${repo.name}`;
}

/** The two lines git-http-backend puts before a v0 advertisement, which SSH has not. */
function serviceHeader(service: 'upload-pack' | 'receive-pack'): Buffer {
  return Buffer.concat([pktLine(`# service=git-${service}\n`), FLUSH_PKT]);
}

function refuse(channel: Channel, message: string): void {
  channel.stderr.write(`${message.replace(/\n/g, ' ')}\n`);
  finish(channel, 1);
}

function finish(channel: Channel, code: number): void {
  if (channel.destroyed) return;
  channel.exit(code);
  channel.end();
}

/**
 * Protocol v2 command requests read off a stream: pkt-lines up to and including a flush-pkt,
 * at most `max` bytes each. Undefined at the end of input.
 */
export class PktRequests {
  /** What has arrived and is not returned yet: `buffered` is a view of `store`'s start. */
  private store = Buffer.alloc(64 * 1024);
  private buffered = this.store.subarray(0, 0);
  private ended = false;
  private readonly iterator: AsyncIterator<Buffer>;

  constructor(input: Readable, private readonly max: number) {
    this.iterator = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  async next(): Promise<Buffer | undefined> {
    let at = 0;
    for (;;) {
      while (at + 4 <= this.buffered.length) {
        const len = hexLength(this.buffered, at);
        if (len === undefined || len === 3) {
          throw Object.assign(new Error('malformed pkt-line'), { clientMessage: 'malformed request: not pkt-lines' });
        }
        if (len === 0) {
          const request = Buffer.from(this.buffered.subarray(0, at + 4));
          this.keep(this.buffered.subarray(at + 4));
          return request;
        }
        const size = len < 4 ? 4 : len;
        if (at + size > this.buffered.length) break;
        at += size;
      }
      if (this.buffered.length > this.max) throw Object.assign(new Error('request too large'), { clientMessage: `request larger than ${this.max} bytes` });
      if (this.ended) {
        if (this.buffered.length > 0) throw Object.assign(new Error('truncated request'), { clientMessage: 'request ends inside a pkt-line' });
        return undefined;
      }
      const next = await this.iterator.next();
      if (next.done) this.ended = true;
      else this.append(next.value);
    }
  }

  /** Appends, doubling the store when full: a long request costs linear copying, not quadratic. */
  private append(chunk: Buffer): void {
    const length = this.buffered.length + chunk.length;
    if (length > this.store.length) {
      const bigger = Buffer.alloc(Math.max(length, this.store.length * 2));
      this.buffered.copy(bigger);
      this.store = bigger;
    }
    chunk.copy(this.store, this.buffered.length);
    this.buffered = this.store.subarray(0, length);
  }

  /** Keeps `rest` (a view of the store) as what is buffered, moved to the store's start. */
  private keep(rest: Buffer): void {
    rest.copy(this.store, 0);
    this.buffered = this.store.subarray(0, rest.length);
  }
}
