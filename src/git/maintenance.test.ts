import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createMaintenanceMetrics, MaintenanceScheduler, type MaintenanceSettings, type MaintenanceTarget } from './maintenance.js';

/** A logger whose lines the test can read. */
function capturingLog() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

interface Run {
  repoId: string;
  start: number;
  end?: number;
}

/** A task that records its runs and takes `ms` (or until aborted); `fail` makes it throw. */
function recordingTask(opts: { ms?: number; fail?: (repoId: string) => boolean; ignoreAbort?: boolean } = {}) {
  const runs: Run[] = [];
  let active = 0;
  let maxActive = 0;
  const task = async ({ repoId }: MaintenanceTarget, signal: AbortSignal) => {
    const run: Run = { repoId, start: Date.now() };
    runs.push(run);
    active++;
    maxActive = Math.max(maxActive, active);
    try {
      await sleep(opts.ms ?? 20, undefined, { signal });
      if (opts.fail?.(repoId)) throw new Error('git repack failed (exit 128): fatal: bad object');
    } finally {
      active--;
      run.end = Date.now();
    }
  };
  return { task, runs, maxActive: () => maxActive };
}

const settings = (over: Partial<MaintenanceSettings> = {}): MaintenanceSettings => ({
  concurrency: 1,
  delayMs: 40,
  maxDelayMs: 10_000,
  timeoutMs: 10_000,
  ...over,
});

async function counterValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const value = (metric?.values as { labels: Record<string, string>; value: number }[] | undefined)?.find((v) =>
    Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  );
  return value?.value ?? 0;
}

test('a burst of pushes costs one run, started the delay after the last push', async () => {
  const { task, runs } = recordingTask();
  const scheduler = new MaintenanceScheduler(settings({ delayMs: 60 }), { log: capturingLog().log, task });
  scheduler.notify('r1', '/repos/r1.git');
  await sleep(30);
  scheduler.notify('r1', '/repos/r1.git');
  await sleep(30);
  const last = Date.now();
  scheduler.notify('r1', '/repos/r1.git');
  assert.equal(scheduler.pendingCount, 1);
  await scheduler.idle();
  assert.equal(runs.length, 1);
  assert.ok(runs[0]!.start - last >= 55, `ran ${runs[0]!.start - last} ms after the last push`);
});

test('pushes without pause postpone a run by at most maxDelayMs', async () => {
  const { task, runs } = recordingTask();
  const scheduler = new MaintenanceScheduler(settings({ delayMs: 50, maxDelayMs: 120 }), { log: capturingLog().log, task });
  const first = Date.now();
  for (let i = 0; i < 15 && runs.length === 0; i++) {
    scheduler.notify('r1', '/repos/r1.git');
    await sleep(20);
  }
  assert.equal(runs.length, 1, 'the run started while pushes kept coming');
  assert.ok(runs[0]!.start - first < 200, `started ${runs[0]!.start - first} ms after the first push`);
  await scheduler.close();
});

test('at most `concurrency` repositories are maintained at once, all of them eventually', async () => {
  for (const concurrency of [1, 2]) {
    const { task, runs, maxActive } = recordingTask({ ms: 30 });
    const scheduler = new MaintenanceScheduler(settings({ concurrency, delayMs: 0 }), { log: capturingLog().log, task });
    for (const id of ['a', 'b', 'c', 'd']) scheduler.notify(id, `/repos/${id}.git`);
    await scheduler.idle();
    assert.deepEqual(runs.map((r) => r.repoId).sort(), ['a', 'b', 'c', 'd']);
    assert.equal(maxActive(), concurrency);
  }
});

test('a push during a run causes one more run after it, never an overlapping one', async () => {
  const { task, runs, maxActive } = recordingTask({ ms: 60 });
  const scheduler = new MaintenanceScheduler(settings({ concurrency: 4, delayMs: 0 }), { log: capturingLog().log, task });
  scheduler.notify('r1', '/repos/r1.git');
  await sleep(20);
  assert.equal(scheduler.runningCount, 1);
  scheduler.notify('r1', '/repos/r1.git');
  scheduler.notify('r1', '/repos/r1.git');
  assert.equal(scheduler.pendingCount, 1);
  await scheduler.idle();
  assert.equal(runs.length, 2);
  assert.equal(maxActive(), 1);
  assert.ok(runs[1]!.start >= runs[0]!.end!, 'the second run started after the first ended');
});

test('a failure is logged once and counted, and the next push tries again', async () => {
  const { log, lines } = capturingLog();
  const registry = new Registry();
  const metrics = createMaintenanceMetrics(registry);
  let failing = true;
  const { task, runs } = recordingTask({ fail: () => failing });
  const scheduler = new MaintenanceScheduler(settings({ delayMs: 0 }), { log, metrics, task });
  scheduler.notify('r1', '/repos/r1.git');
  await scheduler.idle();
  const failures = lines.filter((l) => l['msg'] === 'repository maintenance failed');
  assert.equal(failures.length, 1);
  assert.equal(failures[0]!['repo_id'], 'r1');
  assert.equal(failures[0]!['result'], 'failed');
  assert.match(String(failures[0]!['err']), /bad object/);
  assert.equal(await counterValue(registry, 'gitstratum_maintenance_runs_total', { result: 'failed' }), 1);

  failing = false;
  scheduler.notify('r1', '/repos/r1.git');
  await scheduler.idle();
  assert.equal(runs.length, 2);
  assert.equal(await counterValue(registry, 'gitstratum_maintenance_runs_total', { result: 'ok' }), 1);
  const pending = (await registry.getSingleMetricAsString('gitstratum_maintenance_pending')).trim().split('\n').pop();
  assert.equal(pending, 'gitstratum_maintenance_pending 0');
});

test('a run over the time limit is aborted and counted as a timeout', async () => {
  const { log, lines } = capturingLog();
  const registry = new Registry();
  const metrics = createMaintenanceMetrics(registry);
  const { task } = recordingTask({ ms: 5000 });
  const scheduler = new MaintenanceScheduler(settings({ delayMs: 0, timeoutMs: 50 }), { log, metrics, task });
  const started = Date.now();
  scheduler.notify('r1', '/repos/r1.git');
  await scheduler.idle();
  assert.ok(Date.now() - started < 1000);
  assert.equal(await counterValue(registry, 'gitstratum_maintenance_runs_total', { result: 'timeout' }), 1);
  assert.equal(lines.filter((l) => l['result'] === 'timeout').length, 1);
});

test('close() aborts running maintenance, drops waiting maintenance, and ignores later pushes', async () => {
  const { log, lines } = capturingLog();
  const { task, runs } = recordingTask({ ms: 5000 });
  const scheduler = new MaintenanceScheduler(settings({ delayMs: 0 }), { log, task });
  scheduler.notify('running', '/repos/running.git');
  await sleep(20);
  scheduler.notify('waiting', '/repos/waiting.git');
  const started = Date.now();
  await scheduler.close();
  assert.ok(Date.now() - started < 1000, 'close() did not wait for the run to finish by itself');
  assert.equal(scheduler.runningCount, 0);
  scheduler.notify('later', '/repos/later.git');
  await sleep(30);
  assert.deepEqual(runs.map((r) => r.repoId), ['running']);
  assert.equal(lines.filter((l) => l['msg'] === 'repository maintenance failed').length, 0, 'an abort at close is not a failure');
});
