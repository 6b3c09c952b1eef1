/**
 * Node's floor for sending a cached clone to git clients, measured on the machine the benchmark
 * runs on: a bare node:http server, in a process of its own, that passes a request it has not
 * seen to gitstratum and keeps the answer, then answers the same request again from that file
 * with the reads gitstratum's hit path makes (1 MiB, two buffers reused, the next read while the
 * last write drains). No framework, authentication, logging, metrics or timers: what is left is
 * Node's file-to-socket copy at the pace of a git client. A request is the same when its method,
 * path, Git-Protocol header and body are; nothing else is checked (a benchmark instrument, never
 * a server).
 *
 * Started by bench:clone-storm (startHitFloor); run directly only as its child:
 *   node hit-floor.js <upstream origin> <directory for the recorded answers>
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { openSync, read, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { READ_CHUNK as CHUNK } from '../src/git/pack-cache/growing-file.js';
import { stop, track } from './processes.js';

/** Recorded answers larger than this are refused (the benchmark's responses are ~100 MB). */
const MAX_RECORDED = 2 * 1024 * 1024 * 1024;

export interface HitFloor {
  pid: number;
  /** `repoUrl` (a gitstratum repository URL, credentials included) pointed at the floor. */
  url: string;
  /** Bytes answered from recorded files so far. */
  replayedBytes(): Promise<number>;
  stop(): Promise<void>;
}

/** Starts the floor in front of the gitstratum serving `repoUrl`. */
export async function startHitFloor(repoUrl: string, dir: string, env: NodeJS.ProcessEnv): Promise<HitFloor> {
  const upstream = new URL(repoUrl);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), upstream.origin, dir], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = child.pid!;
  track(pid, 'hit floor');
  const port = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\d+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`hit floor exited at start (${code})`)));
  });
  const url = new URL(repoUrl);
  url.port = port;
  const base = `http://127.0.0.1:${port}`;
  return {
    pid,
    url: url.toString(),
    replayedBytes: async () => Number(await (await fetch(`${base}/-/replayed-bytes`)).text()),
    stop: () => stop(pid),
  };
}

interface Recorded {
  fd: number;
  length: number;
  type: string;
}

function serve(upstream: string, dir: string): void {
  const recorded = new Map<string, Recorded>();
  let replayed = 0;
  let files = 0;

  const replay = async (res: http.ServerResponse, r: Recorded) => {
    res.writeHead(200, { 'Content-Type': r.type, 'Cache-Control': 'no-cache' });
    const buffers = [Buffer.allocUnsafeSlow(CHUNK), Buffer.allocUnsafeSlow(CHUNK)];
    const writes: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
    let position = 0;
    for (let i = 0; position < r.length; i ^= 1) {
      await writes[i];
      const buffer = buffers[i]!;
      const n = await new Promise<number>((resolve, reject) =>
        read(r.fd, buffer, 0, Math.min(CHUNK, r.length - position), position, (err, got) => (err ? reject(err) : resolve(got))),
      );
      if (n === 0) throw new Error('recorded answer shorter than recorded');
      position += n;
      replayed += n;
      const chunk = n === CHUNK ? buffer : buffer.subarray(0, n);
      writes[i] = new Promise<void>((resolve) => res.write(chunk, () => resolve()));
    }
    await Promise.all(writes);
    res.end();
  };

  const pass = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse, key: string) => {
    const headers = { ...req.headers, host: new URL(upstream).host };
    const out = http.request(`${upstream}${req.url}`, { method: req.method, headers }, (answer) => {
      const chunks: Buffer[] = [];
      let size = 0;
      answer.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_RECORDED) answer.destroy(new Error('answer too large to record'));
        else chunks.push(c);
      });
      answer.on('error', () => res.destroy());
      answer.on('end', () => {
        const all = Buffer.concat(chunks);
        if (answer.statusCode === 200) {
          const file = path.join(dir, `answer-${files++}`);
          writeFileSync(file, all);
          recorded.set(key, { fd: openSync(file, 'r'), length: all.length, type: String(answer.headers['content-type'] ?? 'application/octet-stream') });
        }
        const back: http.OutgoingHttpHeaders = { ...answer.headers, 'content-length': all.length };
        for (const hop of ['transfer-encoding', 'connection', 'keep-alive']) delete back[hop];
        res.writeHead(answer.statusCode ?? 502, back);
        res.end(all);
      });
    });
    out.on('error', () => res.destroy());
    out.end(body);
  };

  const server = http.createServer((req, res) => {
    if (req.url === '/-/replayed-bytes') {
      res.end(String(replayed));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const key = createHash('sha256').update(`${req.method} ${req.url} ${req.headers['git-protocol'] ?? ''}\n`).update(body).digest('hex');
      const r = recorded.get(key);
      if (r) replay(res, r).catch(() => res.destroy());
      else pass(req, body, res, key);
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(`hit floor listening on ${typeof address === 'object' && address ? address.port : '?'}\n`);
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) serve(process.argv[2]!, process.argv[3]!);
