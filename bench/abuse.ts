/**
 * `npm run bench:abuse`: does one hostile client hurt everyone else? (issue 9)
 *
 * A well-behaved client clones a small public repository (bare, into memory: goodCycle says
 * why) and pushes one commit to it, in a loop, first with nothing else running (the quiet window), then while each attack runs in
 * turn: 32 stalled upload-pack bodies, 4 anonymous LFS batches of a million `{}` to a private
 * repository, a gzip push-option flood with a write token (of another user), 4 clients fetching a repository of
 * 100,000 refs, and 200 requests/s from one address. For each window it prints the good
 * client's median clone and push wall time against the quiet window's (target ≤ 1.5×),
 * `/healthz` p99 probed every 50 ms on fresh connections, from a process of its own (target ≤ 100 ms), the server's peak
 * RSS (target ≤ 300 MB) and crashes (target 0), and the CPU seconds the server (its process tree,
 * git included) and the attackers used. Each attack runs in a process of its own at niceness 19
 * (bench/abuse-attacker.ts says why). A server that crashed is started again on the
 * same data directory for the next window. The server trusts `X-Forwarded-For` from 127.0.0.1
 * and the good client and the attackers each send their own address (see GOOD_ADDRESS).
 *
 * Options (flags after `npm run bench:abuse --`, or environment):
 *   --seconds N     BENCH_SECONDS     length of each window (default 60)
 *   --refs N        BENCH_REFS        refs of the many-refs repository (default 100000)
 *   --flood-mib N   BENCH_FLOOD_MIB   decoded size of the push-option flood (default 400)
 *   --loose-refs    BENCH_LOOSE_REFS=1 many-refs: fetch the tags while still loose (before maintenance)
 *   --only a,b      BENCH_ONLY        run only these attacks (names as printed)
 *   --attackers-nice N BENCH_ATTACKERS_NICE  the attack processes' niceness (default 19; 0: the same as the good client)
 *   --keep          BENCH_KEEP=1      keep the run directory (.bench/run-abuse-*, server log included)
 *                   BENCH_TIMEOUT_S   whole-run limit (default 3600)
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { forwardedForGitArgs } from './abuse-attacks.js';
import { startAttacker, type AttackSpec, type RunningAttack } from './abuse-attacker.js';
import { startGitstratum, type GitstratumServer } from './gitstratum-server.js';
import { startProbe } from './healthz-probe.js';
import { run, runBench, startRun } from './processes.js';
import { peakRss, resetPeakRss, sampleRss, treeCpuSeconds, waitForTree } from './proc-stats.js';
import { ensureRepo, mediumOfSize } from './repo-generator.js';
import { median, table } from './report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const CLIENT_TIMEOUT_MS = 300_000;
/** Good-client cycles per window at most, whatever the window's length. */
const MAX_CYCLES = 500;
const TARGET = { ratio: 1.5, p99Ms: 100, rssBytes: 300e6 };
/** The server's event-loop delay sampling interval (eventLoopMonitoringPrecision in src/http/metrics.ts). */
const LOOP_LAG_INTERVAL_MS = 100;
/**
 * Every party connects from 127.0.0.1, and git sends no credentials to a public repository,
 * so without this the good client would spend the attackers' per-address budgets (and they
 * its). As behind a load balancer, the server trusts `X-Forwarded-For` from 127.0.0.1 and each
 * party sends its own address (documentation ranges, RFC 5737). No limit is changed.
 */
const GOOD_ADDRESS = '192.0.2.10';
const ATTACKER_ADDRESS = '198.51.100.66';
const SERVE_ARGS = ['--trust-proxy', '127.0.0.1'];

interface Options {
  seconds: number;
  refs: number;
  floodMib: number;
  looseRefs: boolean;
  only?: string[];
  attackersNice: number;
  keep: boolean;
  timeoutS: number;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const opts: Options = {
    seconds: Number(env['BENCH_SECONDS'] ?? 60),
    refs: Number(env['BENCH_REFS'] ?? 100_000),
    floodMib: Number(env['BENCH_FLOOD_MIB'] ?? 400),
    keep: env['BENCH_KEEP'] === '1',
    looseRefs: env['BENCH_LOOSE_REFS'] === '1',
    timeoutS: Number(env['BENCH_TIMEOUT_S'] ?? 3600),
    attackersNice: Number(env['BENCH_ATTACKERS_NICE'] ?? 19),
    ...(env['BENCH_ONLY'] && { only: env['BENCH_ONLY'].split(',') }),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') opts.keep = true;
    else if (arg === '--loose-refs') opts.looseRefs = true;
    else if (arg === '--seconds') opts.seconds = Number(argv[++i]);
    else if (arg === '--refs') opts.refs = Number(argv[++i]);
    else if (arg === '--flood-mib') opts.floodMib = Number(argv[++i]);
    else if (arg === '--only') opts.only = (argv[++i] ?? '').split(',');
    else if (arg === '--attackers-nice') opts.attackersNice = Number(argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --seconds N, --refs N, --flood-mib N, --loose-refs, --only a,b, --attackers-nice N, --keep)`);
  }
  const bad = (n: number, min: number, max: number) => !Number.isInteger(n) || n < min || n > max;
  if (bad(opts.seconds, 5, 3600)) throw new Error('--seconds must be an integer from 5 to 3600');
  if (bad(opts.refs, 1, 1_000_000)) throw new Error('--refs must be an integer from 1 to 1000000');
  if (bad(opts.floodMib, 1, 4096)) throw new Error('--flood-mib must be an integer from 1 to 4096');
  if (bad(opts.attackersNice, 0, 19)) throw new Error('--attackers-nice must be an integer from 0 to 19');
  const unknown = opts.only?.filter((name) => !SCENARIOS.some((s) => s.name === name));
  if (unknown?.length) throw new Error(`unknown attack(s) ${unknown.join(', ')} (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

interface Context {
  server: GitstratumServer;
  env: NodeJS.ProcessEnv;
  workDir: string;
  /** Where the good client clones: memory (/dev/shm) where the machine has it, else workDir. */
  clientDir: string;
  source: string;
  head: string;
  opts: Options;
}

/** The attack process's spec without the target, which the context adds. */
type Attacking = AttackSpec extends infer S ? (S extends AttackSpec ? Omit<S, 'url' | 'token' | 'forwardedFor'> : never) : never;

interface Scenario {
  name: AttackSpec['name'];
  /** Untimed preparation, before the attack starts. */
  setup?(ctx: Context): Promise<void>;
  attack(ctx: Context): Attacking;
}

/** The tags of the many-refs repository. */
const manyTags = (n: number) => Array.from({ length: n }, (_, i) => `refs/tags/t${String(i).padStart(7, '0')}`);

const SCENARIOS: Scenario[] = [
  { name: 'stalled-bodies', attack: (ctx) => ({ name: 'stalled-bodies', repo: 'alice/bench/stall', head: ctx.head, clients: 32 }) },
  { name: 'huge-batches', attack: () => ({ name: 'huge-batches', repo: 'alice/bench/private', clients: 4, objects: 1_000_000 }) },
  { name: 'push-option-flood', attack: (ctx) => ({ name: 'push-option-flood', repo: 'mallory/bench/flood', head: ctx.head, floodMib: ctx.opts.floodMib }) },
  {
    name: 'many-refs',
    async setup(ctx) {
      // The state one push of N new tags leaves, once the maintenance that push triggers has
      // run: the tags are written into the server's repository directly (git 2.39's client
      // spends more than 10 minutes of CPU in send-pack matching 100,000 refs before it sends
      // a byte, which measures the client), then one ordinary push through the server triggers
      // its post-push maintenance, which packs them (waited for, bounded). The minutes before
      // that, with N loose refs, are what --loose-refs measures instead.
      const started = Date.now();
      const url = `${ctx.server.authUrl}/alice/bench/many-refs.git`;
      await run('git', ['--git-dir', ctx.source, 'push', '--quiet', url, `${ctx.head}:refs/heads/main`], { env: ctx.env });
      const listed = JSON.parse(await ctx.server.cli('repo', 'list', 'alice/bench', '--json')) as { name: string; path: string }[];
      const dir = listed.find((r) => r.name === 'many-refs')!.path;
      const lines = manyTags(ctx.opts.refs).map((tag) => `create ${tag} ${ctx.head}\n`);
      await run('git', ['--git-dir', dir, 'update-ref', '--stdin'], { env: ctx.env, input: lines.join(''), timeoutMs: 1_800_000 });
      say(`many-refs: wrote ${ctx.opts.refs} loose tags in ${((Date.now() - started) / 1000).toFixed(0)} s`);
      if (ctx.opts.looseRefs) return;
      // A new commit on main: the repository already holds as many refs as maxRefs allows.
      const next = (await run('git', ['--git-dir', ctx.source, 'commit-tree', `${ctx.head}^{tree}`, '-p', ctx.head, '-m', 'after the tags'], { env: ctx.env })).stdout.trim();
      await run('git', ['--git-dir', ctx.source, 'push', '--quiet', url, `${next}:refs/heads/main`], { env: ctx.env, timeoutMs: 600_000 });
      const packedBy = Date.now() + 600_000;
      while ((await readdir(path.join(dir, 'refs', 'tags'))).length > 0) {
        if (Date.now() > packedBy) throw new Error('many-refs: the server did not pack the tags within 10 minutes of the push');
        await sleep(500);
      }
      say(`many-refs: the server's post-push maintenance packed them; ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
    },
    attack: (ctx) => ({ name: 'many-refs', repo: 'alice/bench/many-refs', refs: ctx.opts.refs, head: ctx.head, clients: 4 }),
  },
  { name: 'request-rate', attack: () => ({ name: 'request-rate', repo: 'alice/bench/good', perSecond: 200 }) },
];

interface Window {
  name: string;
  clone: number[];
  push: number[];
  failures: string[];
  healthz: number[];
  healthzFailures: number;
  rss: number;
  crashed: boolean;
  attack: string;
  /** CPU seconds over the window: the server's process tree (git and hooks included), and the attack process's. */
  serverCpu: number;
  attackerCpu: number;
  /** The server's own event-loop delay over the window (p99, max; ms), from its /metrics. */
  loopLag?: { p99: number; max: number } | undefined;
}

/**
 * The server's event-loop delay since the last scrape, from its Prometheus metrics (prom-client
 * resets the histogram on every scrape): what the server itself kept every client waiting,
 * apart from what the machine's scheduler and the probe's own process add to /healthz.
 */
async function scrapeLoopLag(url: string): Promise<{ p99: number; max: number } | undefined> {
  try {
    const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
    // Node's delay monitor reports each interval it timed, its 100 ms sampling interval
    // (src/http/metrics.ts) included: what is left is the delay.
    const value = (name: string) => Number(new RegExp(`^gitstratum_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, 'm').exec(text)?.[1]) * 1000 - LOOP_LAG_INTERVAL_MS;
    const lag = { p99: value('p99'), max: value('max') };
    return Number.isFinite(lag.p99) && Number.isFinite(lag.max) ? lag : undefined;
  } catch {
    return undefined;
  }
}

let cycle = 0;

/**
 * One good-client cycle: a full clone, then a push of one new commit. Wall times in seconds.
 *
 * The clone is bare and, like the push's commit, made in `ctx.clientDir` (memory where the
 * machine has /dev/shm): the server's work is the same as for any full clone (the ref
 * advertisement, `ls-refs`, the whole pack), but the client's own checkout is left out. It wrote
 * the 5 MiB of files to this machine's disk and took two thirds of the clone's wall time (0.14 of
 * 0.21 s): under an attack it measured how much CPU and disk the attack's handling left the
 * *client* on a shared 2-core machine, where in a deployment the client has a machine of its own
 * (and its quiet runs varied by 1.3× between two windows with nothing else running).
 */
async function goodCycle(ctx: Context): Promise<{ clone: number; push: number }> {
  const dir = path.join(ctx.clientDir, `good-${++cycle}.git`);
  try {
    const url = `${ctx.server.authUrl}/alice/bench/good.git`;
    const clone = await run('git', [...forwardedForGitArgs(GOOD_ADDRESS), 'clone', '--bare', '--quiet', url, dir], { env: ctx.env, timeoutMs: CLIENT_TIMEOUT_MS });
    const git = async (args: string[], input?: string, env: NodeJS.ProcessEnv = ctx.env) => (await run('git', ['--git-dir', dir, ...args], { env, ...(input !== undefined && { input }) })).stdout.trim();
    // A commit adding one file, built without a work tree: the same objects `git add` and
    // `git commit` would make.
    const blob = await git(['hash-object', '-w', '--stdin'], `cycle ${cycle}\n`);
    const index = { ...ctx.env, GIT_INDEX_FILE: path.join(dir, 'bench-index') };
    await git(['read-tree', 'HEAD'], undefined, index);
    await git(['update-index', '--add', '--cacheinfo', `100644,${blob},bench-good.txt`], undefined, index);
    const tree = await git(['write-tree'], undefined, index);
    const commit = await git(['commit-tree', tree, '-p', 'HEAD', '-m', `good client, cycle ${cycle}`]);
    const push = await run('git', [...forwardedForGitArgs(GOOD_ADDRESS), '--git-dir', dir, 'push', '--quiet', 'origin', `${commit}:refs/heads/main`], { env: ctx.env, timeoutMs: CLIENT_TIMEOUT_MS });
    return { clone: clone.seconds, push: push.seconds };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function measureWindow(ctx: Context, name: string, attack?: RunningAttack): Promise<Window> {
  const { server } = ctx;
  const pid = server.pid;
  const hwm = resetPeakRss(pid);
  const sampler = sampleRss(pid, 100);
  await scrapeLoopLag(server.url);
  const probe = startProbe(server.url, 50);
  const cpuAtStart = treeCpuSeconds([pid]);
  const w: Window = { name, clone: [], push: [], failures: [], healthz: [], healthzFailures: 0, rss: 0, crashed: false, attack: '', serverCpu: NaN, attackerCpu: NaN };
  const end = Date.now() + ctx.opts.seconds * 1000;
  for (let n = 0; (n === 0 || Date.now() < end) && n < MAX_CYCLES; n++) {
    try {
      const r = await goodCycle(ctx);
      w.clone.push(r.clone);
      w.push.push(r.push);
    } catch (err) {
      // The clone URL carries the token: not printed.
      const message = (err as Error).message.replace(/\/\/[^/@\s]*:[^/@\s]*@/g, '//***@');
      w.failures.push(message.split('\n').slice(0, 2).join(' | ').slice(0, 300));
      await sleep(1000);
    }
  }
  const health = await probe.stop();
  w.healthz = health.latencies;
  w.healthzFailures = health.failures;
  w.crashed = !server.alive();
  if (!w.crashed) w.serverCpu = treeCpuSeconds([pid]) - cpuAtStart;
  if (!w.crashed) w.loopLag = await scrapeLoopLag(server.url);
  w.rss = Math.max(sampler.stop(), hwm && !w.crashed ? peakRss(pid) : 0);
  if (attack) {
    await attack.stop();
    w.attack = attack.summary();
    w.attackerCpu = attack.cpuSeconds();
  }
  return w;
}

/** After an attack: the server answers /healthz and has no git child left (bounded; a leftover is reported, not fatal). */
async function settle(ctx: Context): Promise<void> {
  if (!ctx.server.alive()) return;
  try {
    await waitForTree([ctx.server.pid], new Set([ctx.server.pid]), 120_000);
  } catch (err) {
    say(`warning: ${(err as Error).message}`);
  }
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

function report(windows: Window[], opts: Options): string {
  const quiet = windows[0]!;
  const ratio = (xs: number[], base: number[]) => (xs.length && base.length ? median(xs) / median(base) : NaN);
  const fmt = (n: number, digits: number, suffix = '') => (Number.isFinite(n) ? `${n.toFixed(digits)}${suffix}` : 'n/a');
  const rows = [['window', 'clone s', '× quiet', 'push s', '× quiet', 'good ok/failed', '/healthz p99 ms', 'max ms', 'probes failed', 'loop lag p99/max ms', 'peak RSS MB', 'crashes', 'server CPU s', 'attackers CPU s']];
  const verdicts = [['window', `clone, push ≤ ${TARGET.ratio}×`, `/healthz p99 ≤ ${TARGET.p99Ms} ms`, `peak RSS ≤ ${TARGET.rssBytes / 1e6} MB`, 'crashes = 0']];
  const met = (ok: boolean) => (ok ? 'met' : 'MISSED');
  for (const w of windows) {
    const cloneRatio = ratio(w.clone, quiet.clone);
    const pushRatio = ratio(w.push, quiet.push);
    const p99 = percentile(w.healthz, 99);
    rows.push([
      w.name,
      fmt(median(w.clone), 2),
      fmt(cloneRatio, 2, '×'),
      fmt(median(w.push), 2),
      fmt(pushRatio, 2, '×'),
      `${w.clone.length}/${w.failures.length}`,
      fmt(p99, 0),
      fmt(Math.max(...w.healthz), 0),
      `${w.healthzFailures}/${w.healthz.length}`,
      w.loopLag ? `${fmt(w.loopLag.p99, 0)}/${fmt(w.loopLag.max, 0)}` : 'n/a',
      fmt(w.rss / 1e6, 0),
      w.crashed ? '1' : '0',
      fmt(w.serverCpu, 1),
      w === quiet ? '—' : fmt(w.attackerCpu, 1),
    ]);
    if (w === quiet) continue;
    const ratiosOk = cloneRatio <= TARGET.ratio && pushRatio <= TARGET.ratio && w.failures.length === 0;
    verdicts.push([w.name, met(ratiosOk), met(p99 <= TARGET.p99Ms && w.healthzFailures === 0), met(w.rss <= TARGET.rssBytes), met(!w.crashed)]);
  }
  const out = [
    `abuse: a good client clones alice/bench/good and pushes one commit, in a loop, for ${opts.seconds} s per window (medians); /healthz every 50 ms on a new connection`,
    `  each attack in a process of its own at niceness ${opts.attackersNice}; server CPU: its process tree over the window (git, hooks, the spawner included)`,
    table(rows),
    '',
    'targets (a failed good cycle or probe misses its target)',
    table(verdicts),
    '',
    'attacks',
    ...windows.filter((w) => w.attack).map((w) => `  ${w.name}: ${w.attack}`),
  ];
  const failures = windows.flatMap((w) => w.failures.slice(0, 3).map((f) => `  ${w.name}: ${f}`));
  if (failures.length) out.push('', 'good-client failures (first 3 per window)', ...failures);
  return out.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  await mkdir(CACHE, { recursive: true });
  const { workDir, env, finish } = await startRun(CACHE, 'run-abuse', { keep: opts.keep, timeoutS: opts.timeoutS });
  let clientDir: string | undefined;
  try {
    const gitEnv = { ...env, GIT_AUTHOR_NAME: 'Good Client', GIT_AUTHOR_EMAIL: 'good@example.com', GIT_COMMITTER_NAME: 'Good Client', GIT_COMMITTER_EMAIL: 'good@example.com' };
    const repo = await ensureRepo(mediumOfSize(5), CACHE, env, say);
    const source = path.join(workDir, 'source.git');
    await run('git', ['clone', '--bare', '--quiet', '--no-local', repo.path, source], { env });
    const head = (await run('git', ['--git-dir', source, 'rev-parse', 'refs/heads/main'], { env })).stdout.trim();

    say(`starting gitstratum (default settings but ${SERVE_ARGS.join(' ')})`);
    const server = await startGitstratum(ROOT, path.join(workDir, 'gs'), env, SERVE_ARGS);
    for (const name of ['good', 'stall', 'many-refs']) await server.createRepo(name);
    await server.cli('repo', 'create', 'alice/bench/private', '--private');
    for (const name of ['good', 'stall']) {
      await run('git', ['--git-dir', source, 'push', '--quiet', `${server.authUrl}/alice/bench/${name}.git`, 'refs/heads/main'], { env });
    }
    // The flood pushes as a user of its own: as alice it would spend the good client's budget,
    // which is alice's (and 429 her pushes, as it did), not attack the server.
    await server.cli('user', 'create', 'mallory');
    await server.cli('space', 'create', 'mallory/bench');
    await server.cli('repo', 'create', 'mallory/bench/flood');
    const attackerToken = (await server.cli('token', 'create', 'mallory', '--scope', 'write')).trim().split('\n').pop()!;
    await run('git', ['--git-dir', source, 'push', '--quiet', server.url.replace('://', `://git:${attackerToken}@`) + '/mallory/bench/flood.git', 'refs/heads/main'], { env });
    clientDir = await mkdtemp(path.join(existsSync('/dev/shm') ? '/dev/shm' : workDir, 'gitstratum-bench-abuse-'));
    const ctx: Context = { server, env: gitEnv, workDir, clientDir, source, head, opts };

    // One untimed cycle warms the page cache and the server's clone cache.
    await goodCycle(ctx);
    say(`quiet window (${opts.seconds} s)`);
    const windows = [await measureWindow(ctx, 'quiet')];
    for (const scenario of SCENARIOS.filter((s) => !opts.only || opts.only.includes(s.name))) {
      if (scenario.setup) {
        say(`${scenario.name}: preparing`);
        await scenario.setup(ctx);
      }
      const attack = await startAttacker({ url: server.url, token: attackerToken, forwardedFor: ATTACKER_ADDRESS, ...scenario.attack(ctx) } as AttackSpec, opts.attackersNice);
      say(`${scenario.name}: attack running, ${opts.seconds} s window`);
      const w = await measureWindow(ctx, scenario.name, attack);
      windows.push(w);
      say(`${scenario.name}: ${w.clone.length} good cycles, ${w.failures.length} failed${w.crashed ? '; the server CRASHED, starting it again' : ''}`);
      if (w.crashed) await server.restart();
      await settle(ctx);
    }
    process.stdout.write(report(windows, opts) + '\n');
  } finally {
    if (clientDir) await rm(clientDir, { recursive: true, force: true });
    await finish();
  }
}

runBench(main);
