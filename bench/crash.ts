/**
 * `npm run bench:crash`: kill -9 trials (issue 16). Concurrent pushers push to their own
 * branches of a few repositories through a real `gitstratum serve` that snapshots and maintains
 * them; at a random moment (0.5–3 s into each trial) the server is killed with SIGKILL and
 * restarted on the same data directory (test/support/crash-trials.ts does the work, the same
 * machinery as the suite's bounded loop). Printed: acknowledged updates, lost (target 0),
 * corrupt repositories (0), pushes refused for a leftover of a crash (0), leftovers after the
 * clean-up (0), and the time from each restart to every repository persisted (p99 ≤ 10 s).
 *
 * Options (flags after `npm run bench:crash --`, or environment):
 *   --trials N      BENCH_TRIALS      kill -9 trials (default 100)
 *   --repos N       BENCH_REPOS       repositories (default 5)
 *   --pushers N     BENCH_PUSHERS     concurrent pushers (default 6)
 *
 * Every server is registered by PID (bench/processes.ts) and stopped by it however the run ends.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { crashTrials } from '../test/support/crash-trials.js';
import { installCleanup, run, runBench, track, untrack } from './processes.js';
import { median, percentile, table } from './report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface Options {
  trials: number;
  repos: number;
  pushers: number;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const opts: Options = {
    trials: Number(env['BENCH_TRIALS'] ?? 100),
    repos: Number(env['BENCH_REPOS'] ?? 5),
    pushers: Number(env['BENCH_PUSHERS'] ?? 6),
  };
  const int = (flag: string, value: string | undefined) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--trials') opts.trials = int(arg, argv[++i]);
    else if (arg === '--repos') opts.repos = int(arg, argv[++i]);
    else if (arg === '--pushers') opts.pushers = int(arg, argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --trials N, --repos N, --pushers N)`);
  }
  for (const [name, v] of Object.entries({ trials: opts.trials, repos: opts.repos, pushers: opts.pushers })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
  }
  return opts;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  installCleanup(async () => {});
  const started = Date.now();
  const loadBefore = os.loadavg()[0]!;
  const head = (await run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])).stdout.trim();
  let current: number | undefined;
  const result = await crashTrials({
    trials: opts.trials,
    repositories: opts.repos,
    pushers: opts.pushers,
    runMs: [500, 3000],
    persistBoundMs: 60_000,
    seed: 16,
    onServer(pid) {
      // The previous server was killed by the trial and has exited: its PID may be reused.
      untrack(current);
      track(pid, 'gitstratum serve');
      current = pid;
    },
    onTrial(n, trial) {
      const bad = trial.lost.length + trial.corrupt.length + trial.leftovers.length;
      process.stderr.write(
        `trial ${n}/${opts.trials}: persisted ${trial.persistMs === undefined ? 'NOT within 60 s' : `${(trial.persistMs / 1000).toFixed(2)} s`} after restart` +
          `${bad > 0 ? `; lost ${trial.lost.length}, corrupt ${trial.corrupt.length}, leftovers ${trial.leftovers.length}: ${[...trial.lost, ...trial.corrupt, ...trial.leftovers].join('; ')}` : ''}\n`,
      );
    },
  });
  untrack(current);

  const persist = result.trials.flatMap((t) => (t.persistMs === undefined ? [] : [t.persistMs / 1000]));
  const late = result.trials.length - persist.length;
  const lost = result.trials.reduce((n, t) => n + t.lost.length, 0);
  const corrupt = result.trials.reduce((n, t) => n + t.corrupt.length, 0);
  const leftovers = result.trials.reduce((n, t) => n + t.leftovers.length, 0);
  const p99 = persist.length > 0 ? percentile(persist, 99) : Number.NaN;
  const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
  const out: string[] = [];
  out.push(
    `crash: gitstratum ${head}; ${os.cpus().length} CPUs, load ${loadBefore.toFixed(2)} at start, ${((Date.now() - started) / 60000).toFixed(1)} min; ` +
      `${opts.trials} kill -9 trials, ${opts.pushers} pushers on ${opts.repos} repositories, snapshots and maintenance on`,
  );
  out.push('');
  out.push(
    table([
      ['measure', 'value', 'target', 'verdict'],
      ['acknowledged ref updates', String(result.acknowledged), '', ''],
      ['  pushes that failed (killed mid-push, server restarting)', String(result.failedPushes), '', ''],
      ['lost acknowledged updates', String(lost), '0', verdict(lost === 0)],
      ['corrupt repositories (fsck after each restart)', String(corrupt), '0', verdict(corrupt === 0)],
      ['pushes refused for a leftover of a crash', String(result.refusedForLeftover.length), '0', verdict(result.refusedForLeftover.length === 0)],
      ['leftovers after the clean-up', String(leftovers), '0', verdict(leftovers === 0)],
      [
        'restart → all repositories persisted, s',
        persist.length > 0 ? `p50 ${median(persist).toFixed(2)}, p99 ${p99.toFixed(2)}, max ${Math.max(...persist).toFixed(2)}` : 'none',
        'p99 ≤ 10',
        verdict(p99 <= 10 && late === 0),
      ],
      ['  trials not persisted within 60 s', String(late), '0', verdict(late === 0)],
    ]),
  );
  if (result.refusedForLeftover.length > 0) out.push('', 'refusals:', ...result.refusedForLeftover.slice(0, 10).map((r) => `  ${r}`));
  process.stdout.write(out.join('\n') + '\n');
}

runBench(main);
