/**
 * The hostile clients of `bench:abuse` (issue 9), each as observed against the server: started,
 * left running while the well-behaved client is measured, then stopped. Every one is bounded:
 * a fixed number of clients (or a fixed request rate), loopback only, and stop() ends every
 * socket and child process it opened (children by their process group, through run()).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGzip } from 'node:zlib';

/** The server as the attacks see it; its URL changes when it is restarted after a crash. */
export interface Target {
  url(): string;
  /** A write token of the attackers' own user, `mallory` (the good client is `alice`). */
  token: string;
  /**
   * The attackers' own client address, sent as `X-Forwarded-For` (the server trusts it from
   * 127.0.0.1, as behind a load balancer), so their per-address budgets are not the good
   * client's: every party of the benchmark connects from 127.0.0.1.
   */
  forwardedFor: string;
}

/** `git -c` arguments that make a git command present `address` as its client address. */
export function forwardedForGitArgs(address: string): string[] {
  return ['-c', `http.extraHeader=X-Forwarded-For: ${address}`];
}

export interface Attack {
  /** Ends every client of the attack. */
  stop(): Promise<void>;
  /** What the attack did and what the server answered, in one line. */
  summary(): string;
}

const MiB = 1024 * 1024;
const ZERO_OID = '0'.repeat(40);

/** Counts of outcomes (HTTP statuses, `error`, `closed`), printed as `200×12 503×3`. */
class Tally {
  private readonly counts = new Map<string, number>();
  add(what: string | number): void {
    this.counts.set(String(what), (this.counts.get(String(what)) ?? 0) + 1);
  }
  get total(): number {
    return [...this.counts.values()].reduce((a, b) => a + b, 0);
  }
  toString(): string {
    return this.counts.size === 0 ? 'none' : [...this.counts].sort().map(([k, n]) => `${k}×${n}`).join(' ');
  }
}

function pkt(payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  return Buffer.concat([Buffer.from((body.length + 4).toString(16).padStart(4, '0')), body]);
}
const FLUSH = Buffer.from('0000');

/** A pack with no objects (what git sends when the pushed commit is already on the server). */
function emptyPack(): Buffer {
  const header = Buffer.from([0x50, 0x41, 0x43, 0x4b, 0, 0, 0, 2, 0, 0, 0, 0]); // "PACK", version 2, 0 objects
  return Buffer.concat([header, createHash('sha1').update(header).digest()]);
}

/** One POST after another from each of `clients` until stopped; `post` resolves with the status or `error`. */
function loopClients(clients: number, request: (track: (req: http.ClientRequest) => void) => Promise<string | number>): Attack & { tally: Tally } {
  const tally = new Tally();
  const inFlight = new Set<http.ClientRequest>();
  let stopped = false;
  const track = (req: http.ClientRequest) => {
    inFlight.add(req);
    req.on('close', () => inFlight.delete(req));
  };
  const loops = Array.from({ length: clients }, async () => {
    while (!stopped) {
      const outcome = await request(track);
      if (stopped) break;
      tally.add(outcome);
      // A refused connection (the server is down) must not become a busy loop.
      if (outcome === 'error') await sleep(200);
    }
  });
  return {
    tally,
    async stop() {
      stopped = true;
      for (const req of inFlight) req.destroy();
      await Promise.all(loops);
    },
    summary: () => `${tally.total} requests answered: ${tally}`,
  };
}

function post(url: string, headers: http.OutgoingHttpHeaders, body: Buffer, track: (req: http.ClientRequest) => void): Promise<string | number> {
  return new Promise((resolve) => {
    const req = http.request(url, { method: 'POST', agent: false, headers: { ...headers, 'content-length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 'error'));
      res.on('error', () => resolve('error'));
    });
    req.on('error', () => resolve('error'));
    track(req);
    req.end(body);
  });
}

/**
 * `clients` anonymous upload-pack POSTs that send 73 KB of `want` lines and then nothing, their
 * Content-Length never reached. A connection the server ends is opened again a second later.
 * Resolves once every client has sent its bytes.
 */
export async function stalledBodies(t: Target, repo: string, head: string, clients = 32): Promise<Attack> {
  const wants: Buffer[] = [pkt(`want ${head} multi_ack_detailed side-band-64k ofs-delta\n`)];
  let size = wants[0]!.length;
  while (size < 73 * 1024) {
    wants.push(pkt(`want ${head}\n`));
    size += wants[wants.length - 1]!.length;
  }
  const body = Buffer.concat(wants);
  const answers = new Tally();
  const sockets = new Set<net.Socket>();
  let opened = 0;
  let stopped = false;
  const connect = () =>
    new Promise<void>((resolve) => {
      const url = new URL(t.url());
      const socket = net.connect(Number(url.port), url.hostname);
      sockets.add(socket);
      opened++;
      let answered = false;
      socket.on('data', (d: Buffer) => {
        if (answered) return;
        answered = true;
        answers.add(/^HTTP\/1\.[01] (\d{3})/.exec(d.toString('latin1'))?.[1] ?? 'garbled');
      });
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        if (!answered && !stopped) answers.add('closed');
        resolve();
        if (!stopped) setTimeout(() => void connect(), 1000);
      });
      socket.on('connect', () => {
        socket.write(
          `POST /${repo}.git/git-upload-pack HTTP/1.1\r\nHost: ${url.host}\r\nX-Forwarded-For: ${t.forwardedFor}\r\n` +
            'Content-Type: application/x-git-upload-pack-request\r\nAccept: application/x-git-upload-pack-result\r\n' +
            `Content-Length: ${body.length + MiB}\r\n\r\n`,
        );
        socket.write(body, () => resolve());
      });
    });
  await Promise.all(Array.from({ length: clients }, connect));
  return {
    async stop() {
      stopped = true;
      for (const s of sockets) s.destroy();
    },
    summary: () => `${clients} stalled at a time, ${opened} connections opened; ended by the server: ${answers}`,
  };
}

/** `clients` anonymous LFS batch requests of `objects` empty objects (`{}`) each, to a private repository, one after another. */
export function hugeBatches(t: Target, repo: string, clients = 4, objects = 1_000_000): Attack {
  const body = Buffer.from(`{"operation":"download","objects":[${new Array<string>(objects).fill('{}').join(',')}]}`);
  const headers = { 'content-type': 'application/vnd.git-lfs+json', accept: 'application/vnd.git-lfs+json', 'x-forwarded-for': t.forwardedFor };
  const attack = loopClients(clients, (track) => post(`${t.url()}/${repo}.git/info/lfs/objects/batch`, headers, body, track));
  return { ...attack, summary: () => `${clients} clients, ${(body.length / MiB).toFixed(1)} MiB bodies; ${attack.summary()}` };
}

/**
 * A receive-pack request, gzip-encoded, whose body decodes to about `mib` MiB of push-option
 * pkt-lines (each of the 65520-byte maximum) around one ref creation and an empty pack.
 * Built once; deflate's ratio on repeated bytes makes it about a thousandth of that on the wire.
 */
export async function pushOptionFloodBody(head: string, mib: number): Promise<{ body: Buffer; decoded: number }> {
  const gzip = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  gzip.on('data', (c: Buffer) => chunks.push(c));
  const ended = once(gzip, 'end');
  let decoded = 0;
  const write = async (b: Buffer) => {
    decoded += b.length;
    if (!gzip.write(b)) await once(gzip, 'drain');
  };
  await write(pkt(`${ZERO_OID} ${head} refs/heads/flood\0report-status push-options agent=bench-abuse\n`));
  await write(FLUSH);
  const option = pkt('o'.repeat(65516));
  for (let i = Math.ceil((mib * MiB) / option.length); i > 0; i--) await write(option);
  await write(FLUSH);
  await write(emptyPack());
  gzip.end();
  await ended;
  return { body: Buffer.concat(chunks), decoded };
}

/** One client pushing `body` (pushOptionFloodBody) with the write token, again and again. */
export function pushOptionFlood(t: Target, repo: string, body: Buffer, decoded: number): Attack {
  const headers = {
    'content-type': 'application/x-git-receive-pack-request',
    accept: 'application/x-git-receive-pack-result',
    'content-encoding': 'gzip',
    authorization: `Basic ${Buffer.from(`git:${t.token}`).toString('base64')}`,
    'x-forwarded-for': t.forwardedFor,
  };
  const attack = loopClients(1, (track) => post(`${t.url()}/${repo}.git/git-receive-pack`, headers, body, track));
  return {
    ...attack,
    summary: () => `1 client, ${(body.length / 1024).toFixed(0)} KiB on the wire decoding to ${(decoded / MiB).toFixed(0)} MiB; ${attack.summary()}`,
  };
}

/**
 * One HTTP/1.1 request on its own connection (`Connection: close`), the response counted and
 * dropped: resolves with its status (or `error`) and size. `body` goes out exactly as given
 * (already chunk-encoded when the headers say so).
 */
function rawRequest(url: string, head: string, body: Buffer | undefined, track: (s: net.Socket) => () => void): Promise<{ status: string; bytes: number }> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const socket = net.connect(Number(u.port), u.hostname);
    const untrack = track(socket);
    let status = '';
    let bytes = 0;
    socket.on('data', (d: Buffer) => {
      if (!status) status = /^HTTP\/1\.[01] (\d{3})/.exec(d.toString('latin1', 0, 16))?.[1] ?? 'garbled';
      bytes += d.length;
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      untrack();
      resolve({ status: status || 'error', bytes });
    });
    socket.on('connect', () => {
      socket.write(`${head}Host: ${u.host}\r\nConnection: close\r\n\r\n`);
      if (body) socket.write(body);
    });
  });
}

/**
 * `clients` clients fetching every tag of `repo` (the many-refs repository), again and again,
 * as a git 2.39 client with an empty repository sends it over protocol v2: the capability
 * advertisement, `ls-refs` of refs/tags/ (the whole advertisement, 100,000 refs), then `fetch`
 * with one `want` per tag, each pkt-line its own HTTP chunk (as git streams a large request),
 * and the pack. The requests are made here rather than by git: on these machines a git client
 * storing 100,000 refs spends 1.5 of the 2 cores in the kernel (page faults, stat calls), which
 * neither `nice` nor SCHED_IDLE holds back, and would measure the client, not the server. The
 * server sees the same requests either way.
 */
export async function manyRefsFetches(t: Target, repo: string, refs: number, oid: string, clients = 4): Promise<Attack> {
  const base = `${t.url()}/${repo}.git`;
  const common = `X-Forwarded-For: ${t.forwardedFor}\r\nGit-Protocol: version=2\r\nUser-Agent: git/2.39.5\r\n`;
  const post = `Content-Type: application/x-git-upload-pack-request\r\nAccept: application/x-git-upload-pack-result\r\n`;
  const caps = [pkt('agent=git/2.39.5\n'), pkt('object-format=sha1\n'), Buffer.from('0001')];
  const lsRefs = Buffer.concat([pkt('command=ls-refs\n'), ...caps, pkt('peel\n'), pkt('symrefs\n'), pkt('unborn\n'), pkt('ref-prefix refs/tags/\n'), FLUSH]);
  const fetchLines = [pkt('command=fetch\n'), ...caps, pkt('thin-pack\n'), pkt('no-progress\n'), pkt('ofs-delta\n'), ...Array.from({ length: refs }, () => pkt(`want ${oid}\n`)), pkt('done\n'), FLUSH];
  const chunked = Buffer.concat([...fetchLines.flatMap((l) => [Buffer.from(`${l.length.toString(16)}\r\n`), l, Buffer.from('\r\n')]), Buffer.from('0\r\n\r\n')]);
  const tally = new Tally();
  const seconds: number[] = [];
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => (sockets.add(s), () => sockets.delete(s));
  let stopped = false;
  const loops = Array.from({ length: clients }, async () => {
    while (!stopped) {
      const started = performance.now();
      const steps = [
        await rawRequest(`${base}/info/refs?service=git-upload-pack`, `GET /${repo}.git/info/refs?service=git-upload-pack HTTP/1.1\r\n${common}`, undefined, track),
      ];
      if (!stopped && steps[0]!.status === '200') {
        steps.push(await rawRequest(base, `POST /${repo}.git/git-upload-pack HTTP/1.1\r\n${common}${post}Content-Length: ${lsRefs.length}\r\n`, lsRefs, track));
      }
      if (!stopped && steps[1]?.status === '200') {
        steps.push(await rawRequest(base, `POST /${repo}.git/git-upload-pack HTTP/1.1\r\n${common}${post}Transfer-Encoding: chunked\r\n`, chunked, track));
      }
      if (stopped) break;
      const failed = steps.find((s) => s.status !== '200');
      tally.add(failed ? failed.status : 'ok');
      if (failed) await sleep(200);
      else seconds.push((performance.now() - started) / 1000);
    }
  });
  return {
    async stop() {
      stopped = true;
      for (const s of sockets) s.destroy();
      await Promise.all(loops);
    },
    summary: () => {
      const sorted = [...seconds].sort((a, b) => a - b);
      const median = sorted.length ? `${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} s` : 'n/a';
      return `${clients} clients, ${refs} wants per fetch (${(chunked.length / MiB).toFixed(1)} MiB, ${fetchLines.length} chunks); fetches ${tally}, median ${median}`;
    },
  };
}

/**
 * `perSecond` anonymous GETs of a repository's ref advertisement from one address, on a fixed
 * schedule whatever the answers (at most 2000 waiting; beyond that a due request is skipped).
 */
export function requestRate(t: Target, repo: string, perSecond = 200): Attack {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const tally = new Tally();
  const inFlight = new Set<http.ClientRequest>();
  let sent = 0;
  let skipped = 0;
  const started = performance.now();
  const send = () => {
    const req = http.get(`${t.url()}/${repo}.git/info/refs?service=git-upload-pack`, { agent, headers: { 'x-forwarded-for': t.forwardedFor } }, (res) => {
      res.resume();
      res.on('end', () => tally.add(res.statusCode ?? 'error'));
    });
    req.on('error', () => tally.add('error'));
    inFlight.add(req);
    req.on('close', () => inFlight.delete(req));
  };
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * perSecond);
    for (; sent < due; sent++) {
      if (inFlight.size >= 2000) skipped++;
      else send();
    }
  }, 10);
  return {
    async stop() {
      clearInterval(timer);
      for (const req of inFlight) req.destroy();
      agent.destroy();
    },
    summary: () => `${perSecond}/s: ${sent} due, ${skipped} skipped (2000 waiting); answers ${tally}`,
  };
}
