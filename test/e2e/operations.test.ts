/**
 * Running the server: request ids, health and metrics, graceful shutdown under a push, TLS,
 * trusted proxies, configuration validation at start, and the git process limit. Scenarios
 * that need special flags start a server of their own; the rest share one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { BIN, Git, Server, run, tempDir } from './harness.js';
import { keygen, sshAs, sshPortOf } from '../support/ssh.js';
import { systemActor } from '../../src/access/policy.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One pkt-line: a 4-digit hex length that counts itself, then the payload. */
function pktLine(payload: string): string {
  return (Buffer.byteLength(payload) + 4).toString(16).padStart(4, '0') + payload;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Prometheus text of the server's /metrics. */
async function metricsText(server: Server): Promise<string> {
  return (await fetch(`${server.url}/metrics`)).text();
}

/** The value of the first sample of `name` whose labels include all of `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** The server's JSON log line for a request id, once it has been written. */
async function requestLog(server: Server, requestId: string): Promise<Record<string, unknown>> {
  return waitFor(`log line of request ${requestId}`, () => {
    for (const line of server.logs) {
      if (!line.includes(requestId)) continue;
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry['request_id'] === requestId && entry['msg'] === 'request completed') return entry;
    }
    return undefined;
  });
}

/** alice with an admin token, her space `main`, and the given repositories. */
async function provision(server: Server, repos: string[]): Promise<string> {
  await server.createUser('alice');
  const [token] = await Promise.all([
    server.token('alice', 'admin'),
    server.createSpace('alice/main'),
  ]);
  for (const repo of repos) await server.createRepo(`alice/main/${repo}`);
  return token;
}

/** Runs `gitstratum serve …` expecting it to refuse to start. */
async function serveFails(args: string[], env: NodeJS.ProcessEnv = {}) {
  const data = path.join(await tempDir(), 'data');
  const started = Date.now();
  const r = await run(process.execPath, [BIN, 'serve', '--data', data, ...args], {
    env: { ...process.env, ...env },
    // Generous: on a loaded machine loading the server's modules alone can take many seconds;
    // a server that hangs instead of exiting is still caught.
    timeoutMs: 120_000,
  });
  return { ...r, ms: Date.now() - started, created: await readdir(data).then(() => true, () => false) };
}

/**
 * A TCP proxy that forwards client → server bytes slowly (one slice per tick), so a push
 * through it takes a while. `forwarded` counts the bytes passed on so far. Like a reverse
 * proxy with an upstream keep-alive pool, it never closes a server connection itself: when
 * the client leaves, the connection to the server stays open until the server closes it.
 */
class ThrottleProxy {
  forwarded = 0;
  private readonly sockets = new Set<net.Socket>();
  private constructor(private readonly server: net.Server) {}

  static async start(target: URL, slice: number, tickMs: number): Promise<ThrottleProxy> {
    const proxy: ThrottleProxy = new ThrottleProxy(
      net.createServer((client) => {
        const upstream = net.connect(Number(target.port), target.hostname);
        for (const s of [client, upstream]) {
          proxy.sockets.add(s);
          s.on('close', () => proxy.sockets.delete(s));
        }
        client.on('error', () => {});
        upstream.on('error', () => {});
        upstream.on('data', (d: Buffer) => client.destroyed || client.write(d));
        upstream.on('close', () => client.destroy());
        void (async () => {
          try {
            for await (const chunk of client as AsyncIterable<Buffer>) {
              for (let i = 0; i < chunk.length; i += slice) {
                await sleep(tickMs);
                proxy.forwarded += Math.min(slice, chunk.length - i);
                if (!upstream.write(chunk.subarray(i, i + slice))) await once(upstream, 'drain');
              }
            }
          } catch {
            /* the client went away; the server connection stays */
          }
        })();
      }),
    );
    proxy.server.listen(0, '127.0.0.1');
    await once(proxy.server, 'listening');
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

/** Incompressible bytes from a seeded generator (xorshift32), so packs have a known size. */
function noise(bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= bytes; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.writeUInt32LE(x, i);
  }
  return out;
}

/** Whether a TCP connection to the address is refused. */
function refused(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port), u.hostname);
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/** Names of a process's children, from /proc (Linux). */
async function childCommands(pid: number): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const close = stat.lastIndexOf(')');
    if (Number(stat.slice(close + 2).split(' ')[1]) === pid) found.push(stat.slice(stat.indexOf('(') + 1, close));
  }
  return found;
}

describe('operations', { concurrency: true }, () => {
  let server: Server;
  let token: string;
  let git: Git;

  before(async () => {
    server = await Server.start();
    token = await provision(server, ['metrics']);
    git = await Git.create();
  });
  after(() => server?.cleanup());

  test('X-Request-Id is echoed and logged; one is generated when absent', async () => {
    const given = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'ops-test.given-1' } });
    assert.equal(given.headers.get('x-request-id'), 'ops-test.given-1');
    const entry = await requestLog(server, 'ops-test.given-1');
    assert.equal(entry['status'], 200);
    assert.equal(entry['route'], '/healthz');
    assert.equal(entry['client_ip'], '127.0.0.1');

    // A git request carries it too.
    const refs = await fetch(`${server.url}/alice/main/metrics.git/info/refs?service=git-upload-pack`, {
      headers: { 'x-request-id': 'ops-test.git-2' },
    });
    assert.equal(refs.headers.get('x-request-id'), 'ops-test.git-2');
    await refs.arrayBuffer();
    assert.equal((await requestLog(server, 'ops-test.git-2'))['route'], '/:owner/:space/:repo/info/refs');

    const odd: Record<string, string>[] = [{}, { 'x-request-id': 'has spaces and "quotes"' }, { 'x-request-id': 'x'.repeat(200) }];
    for (const headers of odd) {
      const res = await fetch(`${server.url}/healthz`, { headers });
      const id = res.headers.get('x-request-id') ?? '';
      assert.match(id, /^[0-9A-HJKMNP-TV-Z]{26}$/, 'a ULID');
      assert.equal((await requestLog(server, id))['status'], 200);
    }
  });

  test('/healthz and /readyz answer 200', async () => {
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready' });
  });

  test('/metrics counts requests, latency, git processes and bytes after a clone', async () => {
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2 });
    await git.ok(['push', server.repoUrl('alice/main/metrics.git', token), 'main'], { cwd: work });
    await git.ok(['clone', '-q', server.repoUrl('alice/main/metrics.git'), path.join(await tempDir(), 'clone')]);
    const res = await fetch(`${server.url}/metrics`);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    await res.arrayBuffer();
    // Git counters are added when git exits (and a pack cache entry settles), which can be just
    // after the client has its last byte: wait for them rather than read them at once.
    const text = await waitFor('the git counters of the clone', async () => {
      const t = await metricsText(server);
      const settled =
        (sample(t, 'gitstratum_git_bytes_total', { service: 'upload-pack', direction: 'out' }) ?? 0) > 1000 &&
        (sample(t, 'gitstratum_git_bytes_total', { service: 'receive-pack', direction: 'in' }) ?? 0) > 1000 &&
        sample(t, 'gitstratum_git_processes_running') === 0;
      return settled ? t : undefined;
    });
    const refs = { route: '/:owner/:space/:repo/info/refs', method: 'GET', status: '200' };
    assert.ok((sample(text, 'gitstratum_http_requests_total', refs) ?? 0) >= 2, 'info/refs for the push and the clone');
    const uploads = { route: '/:owner/:space/:repo/git-upload-pack', method: 'POST', status: '200' };
    assert.ok((sample(text, 'gitstratum_http_requests_total', uploads) ?? 0) >= 1);
    assert.ok((sample(text, 'gitstratum_http_request_duration_seconds_count', { route: uploads.route, method: 'POST' }) ?? 0) >= 1);
    assert.notEqual(sample(text, 'gitstratum_http_request_duration_seconds_bucket', { route: uploads.route, le: '+Inf' }), undefined);
    assert.equal(sample(text, 'gitstratum_git_processes_running'), 0);
    assert.equal(sample(text, 'gitstratum_git_processes_queued'), 0);
    assert.ok((sample(text, 'gitstratum_git_bytes_total', { service: 'upload-pack', direction: 'out' }) ?? 0) > 1000);
    assert.ok((sample(text, 'gitstratum_git_bytes_total', { service: 'receive-pack', direction: 'in' }) ?? 0) > 1000);
  });

  for (const transport of ['http', 'ssh'] as const) {
    test(`SIGTERM lets an in-flight push finish, refuses new connections, then exits 0 (${transport})`, async (t) => {
      // A bound short enough that a shutdown stuck on a connection fails the test (exit 1).
      const own = await Server.start({ args: transport === 'ssh' ? ['--ssh-port', '0'] : [], env: { GITSTRATUM_SHUTDOWN_TIMEOUT_SECONDS: '15' } });
      t.after(() => own.cleanup());
      const ownToken = await provision(own, ['big']);
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1, files: 1 });
      await writeFile(path.join(work, 'blob.bin'), noise(1536 * 1024, 7));
      await git.ok(['add', 'blob.bin'], { cwd: work });
      await git.ok(['commit', '-q', '-m', 'a large incompressible file'], { cwd: work });
      const head = await git.revParse(work, 'HEAD');

      // About 800 kB/s: the 1.5 MB pack takes about two seconds to arrive.
      const listening = transport === 'ssh' ? `http://127.0.0.1:${sshPortOf(own)}` : own.url;
      const proxy = await ThrottleProxy.start(new URL(listening), 16 * 1024, 20);
      t.after(() => proxy.close());
      let url: string;
      let env: NodeJS.ProcessEnv = {};
      if (transport === 'ssh') {
        const key = await keygen(await tempDir(), 'alice');
        await own.admin((core) => core.sshKeys.add(systemActor, 'alice', key.pub));
        const port = new URL(proxy.url).port;
        url = `ssh://git@127.0.0.1:${port}/alice/main/big.git`;
        env = sshAs(key, Number(port));
      } else {
        const u = new URL('/alice/main/big.git', proxy.url);
        u.username = 'git';
        u.password = ownToken;
        url = u.toString();
      }
      let pushDone = false;
      const push = git.run(['push', url, 'main'], { cwd: work, env }).finally(() => (pushDone = true));

      await waitFor('the pack to be under way', () => proxy.forwarded > 256 * 1024, 30_000);
      const exited = once(own.process, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      own.process.kill('SIGTERM');
      await waitFor('the listening socket to close', () => refused(listening));
      assert.equal(pushDone, false, 'new connections were refused while the push was still running');

      const pushed = await push;
      assert.equal(pushed.code, 0, pushed.stderr + own.logs.slice(-12).join('\n'));
      // The proxy keeps its server connection after git has gone: the server must close it.
      const [code, signal] = await exited;
      assert.equal(signal, null);
      assert.equal(code, 0, own.logs.slice(-3).join('\n'));
      assert.ok(own.logs.some((l) => l.includes('"msg":"stopped"')), 'logged a clean stop');

      // The push is on disk, complete.
      const [repo] = JSON.parse(await own.cliOk(['repo', 'list', '--json'])) as { path: string }[];
      assert.equal((await git.ok(['--git-dir', repo!.path, 'rev-parse', 'refs/heads/main'])).trim(), head);
      await git.ok(['--git-dir', repo!.path, 'fsck', '--strict']);
    });
  }

  test('HTTPS with --tls-cert and --tls-key', async (t) => {
    const dir = await tempDir();
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    const made = await run('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', key, '-out', cert,
    ]);
    assert.equal(made.code, 0, `openssl is needed for this test:\n${made.stderr}`);
    const own = await Server.start({ args: ['--tls-cert', cert, '--tls-key', key] });
    t.after(() => own.cleanup());
    assert.match(own.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const ownToken = await provision(own, ['secure']);

    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2 });
    const tls = ['-c', `http.sslCAInfo=${cert}`];
    await git.ok([...tls, 'push', own.repoUrl('alice/main/secure.git', ownToken), 'main'], { cwd: work });
    const dest = path.join(await tempDir(), 'clone');
    await git.ok([...tls, 'clone', '-q', own.repoUrl('alice/main/secure.git'), dest]);
    assert.equal(await git.revParse(dest, 'HEAD'), await git.revParse(work, 'HEAD'));

    // Verification is real: without the certificate git refuses the server.
    const unverified = await git.run(['ls-remote', own.repoUrl('alice/main/secure.git')]);
    assert.notEqual(unverified.code, 0);
    assert.match(unverified.stderr, /certificate|SSL|TLS/i);

    const status = await new Promise<number>((resolve, reject) =>
      https.get(`${own.url}/healthz`, { ca: [readFileSync(cert, 'utf8')] }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject),
    );
    assert.equal(status, 200);
    const entry = await waitFor('an https log line', () =>
      own.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['route'] === '/healthz'),
    );
    assert.equal(entry['protocol'], 'https');
  });

  test('--trust-proxy true takes the client address from X-Forwarded-For; the default does not', async (t) => {
    const own = await Server.start({ args: ['--trust-proxy', 'true'] });
    t.after(() => own.cleanup());
    const headers = { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https' };
    await fetch(`${own.url}/healthz`, { headers: { ...headers, 'x-request-id': 'ops-trusted' } });
    const trusted = await requestLog(own, 'ops-trusted');
    assert.equal(trusted['client_ip'], '203.0.113.7');
    assert.equal(trusted['protocol'], 'https');

    await fetch(`${server.url}/healthz`, { headers: { ...headers, 'x-request-id': 'ops-untrusted' } });
    const untrusted = await requestLog(server, 'ops-untrusted');
    assert.equal(untrusted['client_ip'], '127.0.0.1');
    assert.equal(untrusted['protocol'], 'http');
  });

  test('bad configuration stops the server at start with the setting and its source', async () => {
    const dir = await tempDir();
    const unknownKey = path.join(dir, 'unknown.json');
    await writeFile(unknownKey, JSON.stringify({ port: 0, prot: 8080 }));
    const notJson = path.join(dir, 'broken.json');
    await writeFile(notJson, '{"port": 0,');
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [['--port', '70000'], {}, /invalid port \(from flag --port\)/],
      [['--port', '0'], { GITSTRATUM_GIT_MAX_PROCESSES: 'abc' }, /invalid gitMaxProcesses \(from environment variable GITSTRATUM_GIT_MAX_PROCESSES\)/],
      [['--config', unknownKey], {}, new RegExp(`unknown setting\\(s\\) prot in config file ${unknownKey}`)],
      [['--config', notJson], {}, new RegExp(`cannot read config file ${notJson}`)],
      [['--port', '0', '--tls-cert', path.join(dir, 'cert.pem')], {}, /invalid tlsCert \(from flag --tls-cert\): needs tlsKey/],
      [['--port', '0', '--tls-key', path.join(dir, 'key.pem')], {}, /invalid tlsKey \(from flag --tls-key\): needs tlsCert/],
      [['--port', '0', '--log-level', 'loud'], {}, /invalid logLevel \(from flag --log-level\)/],
      [['--port', '0', '--tls-cert', path.join(dir, 'none.pem'), '--tls-key', notJson], {}, /cannot read tlsCert .*none\.pem: ENOENT/],
      [['--port', '0', '--tls-cert', notJson, '--tls-key', notJson], {}, /cannot use tlsCert .*broken\.json with tlsKey/],
      [['--port', '0'], { GITSTRATUM_OBJECT_STORE: 's3' }, /invalid s3Bucket \(not set\)/],
    ];
    const results = await Promise.all(cases.map(([args, env]) => serveFails(args, env)));
    results.forEach((r, i) => {
      const [args, env, message] = cases[i]!;
      const what = `serve ${args.join(' ')} ${JSON.stringify(env)}: exit ${r.code} after ${r.ms} ms\n${r.stderr}`;
      assert.equal(r.code, 2, what);
      assert.match(r.stderr, /^gitstratum: configuration error:/, what);
      assert.match(r.stderr, message, what);
      assert.equal(r.created, false, `${what}\nthe data directory was created`);
    });
  });

  test('a port already in use stops the server at once instead of leaving it hanging', async () => {
    const port = new URL(server.url).port;
    const r = await serveFails(['--port', port]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    // The running server was not disturbed.
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
  });

  test('a JSON config file is honoured, below the environment and flags', async (t) => {
    const dir = await tempDir();
    const fromFile = path.join(dir, 'data-from-file');
    const fromEnv = path.join(dir, 'data-from-env');
    const file = path.join(dir, 'gitstratum.json');
    await writeFile(file, JSON.stringify({ port: 0, data: fromFile, trustProxy: 'true', logLevel: 'debug' }));
    const child = spawn(process.execPath, [BIN, 'serve', '--config', file, '--log-level', 'info'], {
      env: { ...process.env, GITSTRATUM_DATA: fromEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.after(() => child.kill('SIGKILL'));
    const lines: string[] = [];
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
    const listening = await waitFor(
      'the server to listen',
      () => {
        if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}:\n${stderr}`);
        return lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['msg'] === 'gitstratum listening');
      },
      30_000,
    );
    assert.equal(listening['data'], fromEnv, 'the environment beats the file');
    const url = String(listening['url']).replace('localhost', '127.0.0.1');
    assert.doesNotMatch(url, /:8080$/, 'port 0 from the file');
    await fetch(`${url}/healthz`, { headers: { 'x-forwarded-for': '198.51.100.9', 'x-request-id': 'ops-file' } });
    const entry = await waitFor('the request log line', () =>
      lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['request_id'] === 'ops-file'),
    );
    assert.equal(entry['client_ip'], '198.51.100.9', 'trustProxy from the file');
    assert.ok(!lines.some((l) => l.includes('"level":"debug"')), 'the flag beats the file');
    child.kill('SIGTERM');
    assert.deepEqual(await once(child, 'exit'), [0, null]);
  });

  test('over the git process limit a clone gets 503 with Retry-After; a client that leaves frees its slot', async (t) => {
    const own = await Server.start({ args: ['--git-max-processes', '1'], env: { GITSTRATUM_GIT_MAX_QUEUE: '0' } });
    let slow: http.ClientRequest | undefined;
    // However the test ends, the stalled request must go first, or it holds up the shutdown.
    t.after(async () => {
      slow?.destroy();
      await own.cleanup();
    });
    await provision(own, ['busy']);
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 1 });
    // Straight into the bare repository: over HTTP, with a queue of 0, a client's second
    // request can find the slot of its first not yet given back (see the report on
    // smart-http.ts), and setting up is not what this test is about.
    const [bare] = JSON.parse(await own.cliOk(['repo', 'list', '--json'])) as { path: string }[];
    await git.ok(['push', '-q', bare!.path, 'main'], { cwd: work });

    // An upload-pack request whose body never finishes: git waits for it, holding the slot.
    // It is large (many `have` lines and no flush after them) because the pack cache reads a
    // small request whole, to key it, before any git runs.
    const head = await git.revParse(work, 'HEAD');
    const haves = Array.from({ length: 6000 }, (_, i) => pktLine(`have ${i.toString(16).padStart(40, '0')}\n`));
    slow = http.request(`${own.url}/alice/main/busy.git/git-upload-pack`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-git-upload-pack-request', 'transfer-encoding': 'chunked' },
    });
    slow.on('error', () => {});
    slow.write(pktLine(`want ${head}\n`) + '0000' + haves.join(''));
    const busy = await fetch(`${own.url}/alice/main/busy.git/info/refs?service=git-upload-pack`);
    assert.equal(busy.status, 503);
    assert.match(busy.headers.get('retry-after') ?? '', /^\d+$/);
    assert.match(await busy.text(), /server busy/);
    const dest = path.join(await tempDir(), 'clone');
    const refused503 = await git.run(['clone', '-q', own.repoUrl('alice/main/busy.git'), dest]);
    assert.notEqual(refused503.code, 0);
    assert.match(refused503.stderr, /remote: server busy/);
    assert.match(refused503.stderr, /503/);

    slow.destroy();
    await waitFor('the slot to be released', async () => sample(await metricsText(own), 'gitstratum_git_processes_running') === 0);
    await waitFor('the git child to exit', async () => !(await childCommands(own.process.pid!)).some((c) => c.startsWith('git')));
    // One request (protocol v0 ls-remote is just the advertisement) now gets the slot.
    const refs = await git.ok(['-c', 'protocol.version=0', 'ls-remote', own.repoUrl('alice/main/busy.git'), 'main']);
    assert.equal(refs, `${head}\trefs/heads/main\n`);
  });
});
