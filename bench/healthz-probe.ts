/**
 * `/healthz` probed every `everyMs` on a fresh connection, whatever the previous probe is
 * doing, from a process of its own: the attacks run in the bench's process, and a probe sharing
 * their event loop would add their delays to the server's.
 *
 * Run as a script (`node healthz-probe.js URL EVERY_MS`) it probes until its stdin ends, then
 * waits for the probes still out (10 s at most; those count as failures at their age then)
 * and prints `{ latencies, failures }` as JSON. startProbe() runs it and reads that.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export interface ProbeResult {
  /** Milliseconds, one per probe. */
  latencies: number[];
  failures: number;
}

export function startProbe(url: string, everyMs: number): { stop(): Promise<ProbeResult> } {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), url, String(everyMs)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    async stop() {
      child.stdin.end();
      const code = await exited;
      if (code !== 0) throw new Error(`the /healthz probe exited with ${code}`);
      return JSON.parse(out) as ProbeResult;
    },
  };
}

async function main(url: string, everyMs: number): Promise<void> {
  const latencies: number[] = [];
  let failures = 0;
  const pending = new Map<http.ClientRequest, number>();
  const timer = setInterval(() => {
    const started = performance.now();
    const done = (ok: boolean) => {
      if (!pending.delete(req)) return;
      latencies.push(performance.now() - started);
      if (!ok) failures++;
    };
    const req = http.get(`${url}/healthz`, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode === 200));
    });
    req.on('error', () => done(false));
    pending.set(req, started);
  }, everyMs);
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on('end', resolve).on('error', resolve));
  clearInterval(timer);
  const deadline = Date.now() + 10_000;
  while (pending.size > 0 && Date.now() < deadline) await sleep(50);
  for (const [req, started] of pending) {
    latencies.push(performance.now() - started);
    failures++;
    req.destroy();
  }
  pending.clear();
  process.stdout.write(JSON.stringify({ latencies, failures }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main(process.argv[2]!, Number(process.argv[3]));
}
