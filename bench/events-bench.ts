/**
 * `npm run bench:events`: webhooks (issue 13) under a push load. One `gitstratum serve`
 * (default settings, the benchmark's receiver on 127.0.0.1 allowed) with 40 repositories: 20
 * with 3 webhooks each (push events, to one receiver in this process) and 20 without. 1,000
 * pushes of one new commit go to the hooked repositories and 1,000 to the others, interleaved
 * (hooked, plain, hooked, …) and 4 at a time, so both meet the same load, deliveries included.
 *
 * Reported: the delivery latency, from the moment `git push` exits (the push acknowledged) to
 * the receiver getting the delivery, p50 and p99 over the 3,000 deliveries (target p99 ≤ 1 s);
 * deliveries lost and duplicated (target 0 of each: every hook gets every push once); the push
 * latency (the `git push` process's wall time) with hooks against without, median and p99
 * (target: median ≤ 1.05×); and, for every push, when it showed up on a live event stream of
 * the owner (`GET /api/v1/events?owner=alice`). Method: /work/shared/BENCHMARKING.md.
 *
 * Options (flags after `npm run bench:events --`, or environment):
 *   --pushes N   BENCH_PUSHES  pushes to each group (default 1000)
 *   --keep       BENCH_KEEP=1  keep the run directory (.bench/run-events-*)
 */
import http from 'node:http';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startGitstratum } from './gitstratum-server.js';
import { run, runBench, startRun } from './processes.js';
import { median, percentile, table } from './report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const REPOS = 20;
const HOOKS_PER_REPO = 3;
const CONCURRENCY = 4;

function option(flag: string, env: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : process.env[env];
}

async function main(): Promise<void> {
  const pushes = Number(option('--pushes', 'BENCH_PUSHES') ?? 1000);
  const keep = process.argv.includes('--keep') || process.env['BENCH_KEEP'] === '1';
  const benchRun = await startRun(CACHE, 'run-events', { keep, timeoutS: 3600 });
  try {
    // The receiver: when each delivery arrived, by hook and pushed commit.
    const arrivals = new Map<string, number[]>();
    const receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const at = performance.now();
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { after?: string };
        const key = `${new URL(req.url ?? '/', 'http://x').searchParams.get('hook')}:${body.after}`;
        arrivals.set(key, [...(arrivals.get(key) ?? []), at]);
        res.writeHead(200).end();
      });
    });
    receiver.listen(0, '127.0.0.1');
    await once(receiver, 'listening');
    const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`;

    const dataDir = path.join(benchRun.workDir, 'data');
    await mkdir(dataDir, { recursive: true });
    const server = await startGitstratum(ROOT, dataDir, { ...benchRun.env, GITSTRATUM_WEBHOOK_ALLOWED_HOSTS: '127.0.0.1' });
    const admin = (await server.cli('token', 'create', 'alice', '--scope', 'admin')).trim().split('\n').pop()!;
    process.stderr.write(`bench: gitstratum (pid ${server.pid}) at ${server.url}; receiver at ${receiverUrl}\n`);

    // 20 hooked and 20 plain repositories, each with a work tree pushed once (not measured).
    const repos: { name: string; hooked: boolean; work: string; n: number; busy: Promise<void> }[] = [];
    for (const hooked of [true, false]) {
      for (let i = 0; i < REPOS; i++) {
        const name = `${hooked ? 'hooked' : 'plain'}-${i}`;
        await server.createRepo(name);
        if (hooked) {
          for (let h = 0; h < HOOKS_PER_REPO; h++) {
            const res = await fetch(`${server.url}/api/v1/hooks`, {
              method: 'POST',
              headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
              body: JSON.stringify({ scope: `alice/bench/${name}`, url: `${receiverUrl}?hook=${name}-${h}`, secret: `secret-${h}` }),
            });
            if (res.status !== 201) throw new Error(`hook not created: ${res.status} ${await res.text()}`);
          }
        }
        const work = path.join(benchRun.workDir, 'work', name);
        await run('git', ['init', '-q', '-b', 'main', work], { env: benchRun.env });
        await writeFile(path.join(work, 'counter.txt'), '0\n');
        await run('git', ['-C', work, 'add', '-A'], { env: benchRun.env });
        await run('git', ['-C', work, '-c', 'user.name=Bench', '-c', 'user.email=bench@example.com', 'commit', '-q', '-m', 'start'], { env: benchRun.env });
        await run('git', ['-C', work, 'remote', 'add', 'origin', `${server.authUrl}/alice/bench/${name}.git`], { env: benchRun.env });
        await run('git', ['-C', work, 'push', '-q', 'origin', 'main'], { env: benchRun.env });
        repos.push({ name, hooked, work, n: 0, busy: Promise.resolve() });
      }
    }
    // Deliveries of the warm-up pushes are not counted.
    await sleep(3000);
    arrivals.clear();

    // The live event stream of the owner: when each push arrived on it.
    const streamed = new Map<string, number>();
    const streamAbort = new AbortController();
    const stream = await fetch(`${server.url}/api/v1/events?owner=alice`, { headers: { authorization: `Bearer ${admin}` }, signal: streamAbort.signal });
    void (async () => {
      let buffer = '';
      const decoder = new TextDecoder();
      try {
        for await (const chunk of stream.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true });
          let cut: number;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const data = buffer.slice(0, cut).split('\n').find((l) => l.startsWith('data: '));
            buffer = buffer.slice(cut + 2);
            const event = data ? (JSON.parse(data.slice(6)) as { event?: string; after?: string; repository?: { name: string } }) : undefined;
            // By repository too: the hooked and plain repositories' commits are alike, ids included.
            if (event?.event === 'push' && event.after) streamed.set(`${event.repository?.name}:${event.after}`, performance.now());
          }
        }
      } catch {
        /* closed at the end */
      }
    })();

    const hooked = repos.filter((r) => r.hooked);
    const plain = repos.filter((r) => !r.hooked);
    const tasks = Array.from({ length: pushes }, (_, i) => [hooked[i % REPOS]!, plain[i % REPOS]!]).flat();
    const acked = new Map<string, number>();
    /** Every push (both groups): when git push exited, by repository and commit. */
    const pushedAt = new Map<string, number>();
    const latency = { hooked: [] as number[], plain: [] as number[] };
    let next = 0;
    const started = performance.now();
    const worker = async () => {
      for (let t = next++; t < tasks.length; t = next++) {
        const repo = tasks[t]!;
        // One push at a time per repository (its previous one may still run).
        const previous = repo.busy;
        let done!: () => void;
        repo.busy = new Promise((resolve) => (done = resolve));
        await previous;
        try {
          repo.n += 1;
          await writeFile(path.join(repo.work, 'counter.txt'), `${repo.n}\n`);
          await run('git', ['-C', repo.work, '-c', 'user.name=Bench', '-c', 'user.email=bench@example.com', 'commit', '-q', '-am', `push ${repo.n}`], { env: benchRun.env });
          const sha = (await run('git', ['-C', repo.work, 'rev-parse', 'HEAD'], { env: benchRun.env })).stdout.trim();
          const t0 = performance.now();
          await run('git', ['-C', repo.work, 'push', '-q', 'origin', 'main'], { env: benchRun.env });
          const t1 = performance.now();
          (repo.hooked ? latency.hooked : latency.plain).push(t1 - t0);
          if (repo.hooked) for (let h = 0; h < HOOKS_PER_REPO; h++) acked.set(`${repo.name}-${h}:${sha}`, t1);
          pushedAt.set(`${repo.name}:${sha}`, t1);
        } finally {
          done();
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const pushSeconds = (performance.now() - started) / 1000;

    // Every delivery, or 60 s without a new one.
    const expected = acked.size;
    let last = -1;
    let quietSince = performance.now();
    for (;;) {
      const got = [...acked.keys()].filter((k) => arrivals.has(k)).length;
      if (got === expected) break;
      if (got !== last) {
        last = got;
        quietSince = performance.now();
      } else if (performance.now() - quietSince > 60_000) break;
      await sleep(200);
    }
    const delays: number[] = [];
    let lost = 0;
    let duplicated = 0;
    for (const [key, t1] of acked) {
      const times = arrivals.get(key);
      if (!times) {
        lost += 1;
        continue;
      }
      duplicated += times.length - 1;
      delays.push((times[0]! - t1) / 1000);
    }
    const stray = [...arrivals.keys()].filter((k) => !acked.has(k)).length;
    streamAbort.abort();
    const streamDelays = [...pushedAt].flatMap(([key, t1]) => (streamed.has(key) ? [(streamed.get(key)! - t1) / 1000] : []));
    const streamMissing = pushedAt.size - streamDelays.length;
    await server.stop();
    receiver.close();

    const s = (v: number) => `${v.toFixed(3)} s`;
    const ratio = median(latency.hooked) / median(latency.plain);
    const p99 = percentile(delays, 99);
    process.stdout.write(
      [
        `events: ${pushes} pushes to ${REPOS} repositories with ${HOOKS_PER_REPO} webhooks each, interleaved with ${pushes} to ${REPOS} without; ${CONCURRENCY} at a time; ${pushSeconds.toFixed(0)} s of pushing`,
        `  load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; ${os.cpus().length} cores`,
        '',
        table([
          ['measure', 'median', 'p99', 'max'],
          ['delivery latency (push acknowledged → receiver)', s(median(delays)), s(p99), s(Math.max(...delays))],
          ['event stream latency (push acknowledged → SSE client)', s(median(streamDelays)), s(percentile(streamDelays, 99)), s(Math.max(...streamDelays))],
          ['push wall, repositories with 3 hooks', s(median(latency.hooked) / 1000), s(percentile(latency.hooked, 99) / 1000), s(Math.max(...latency.hooked) / 1000)],
          ['push wall, repositories without hooks', s(median(latency.plain) / 1000), s(percentile(latency.plain, 99) / 1000), s(Math.max(...latency.plain) / 1000)],
        ]),
        '',
        `deliveries: ${expected} expected, ${expected - lost} received, ${lost} lost, ${duplicated} duplicated, ${stray} not asked for`,
        `event stream: ${pushedAt.size} pushes, ${streamDelays.length} seen on the owner's stream, ${streamMissing} missing`,
        `push wall with hooks ÷ without (medians): ${ratio.toFixed(3)}×`,
        '(negative latencies: the event arrived before git push exited; post-receive wakes the sender before git answers the client)',
        '',
        `target: delivery latency p99 ≤ 1 s: ${p99.toFixed(3)} s, ${p99 <= 1 ? 'met' : 'MISSED'}`,
        `target: no delivery lost or duplicated: ${lost} lost, ${duplicated} duplicated, ${lost === 0 && duplicated === 0 ? 'met' : 'MISSED'}`,
        `target: push wall with hooks ≤ 1.05× without: ${ratio.toFixed(3)}×, ${ratio <= 1.05 ? 'met' : 'MISSED'}`,
        '',
      ].join('\n'),
    );
  } finally {
    await benchRun.finish();
  }
}

runBench(main);
