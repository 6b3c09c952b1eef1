/**
 * Part 6 of `bench:cluster`: moving a repository between shards under load (issue 11;
 * docs/design/replication.md, "Moving repositories"). One frontend and the writers of two
 * shards, `east` and `west`, each on a data directory of its own; the clone-storm benchmark's
 * `source` repository pushed to `east` through the frontend.
 *
 * `--moves` times, `gitstratum repo move` sends it to the other shard while 2 clients push small
 * commits in a loop to their own branches (keeping a ledger of each one's last acknowledged
 * commit) and 3 clients clone it at depth 1 in a loop, all through the frontend. Per move: how
 * long pushes were paused (the mover's own measure, from the pause's start to the switch) and
 * the whole move; over the run: clones done and failed (target 0), pushes acknowledged and
 * refused (503 during a pause, as designed; any other failure is counted apart), and whether
 * each client's last acknowledged commit is on the shard the repository ends on (target: all).
 *
 * Default settings but the frontend's per-client budgets (off: every client is alice, from
 * 127.0.0.1) and the grace period of old copies (1 s, so each move copies the repository anew). A benchmark, not a test: it prints figures and verdicts, and fails only when
 * something it needs does not happen.
 */
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { partCluster, repoDirOn, repoUrl, SERVING_SHARD, type PartContext, type ServerProcess } from './cluster-processes.js';
import { run, stop } from './processes.js';
import { median, percentile, table } from './report.js';
import type { RepoInfo } from './repo-generator.js';

export interface MoveBenchOptions {
  moves: number;
  source: RepoInfo;
}

export interface MoveBenchResult {
  opts: { moves: number };
  source: RepoInfo;
  moves: { from: string; to: string; pauseSeconds: number; totalSeconds: number; refs: number }[];
  clones: { done: number; failed: number; failures: string[] };
  pushes: { acknowledged: number; refused503: number; otherFailures: number; failures: string[] };
  /** Clients whose last acknowledged commit is not on the final shard's copy. */
  lost: number;
}

const FRONTEND_ARGS = ['--rate-limit-git-requests', '0', '--max-concurrent-git-per-client', '0'];

export async function moveBench(ctx: PartContext, opts: MoveBenchOptions): Promise<MoveBenchResult> {
  const { env, say } = ctx;
  const clientEnv = { ...env, GIT_AUTHOR_NAME: 'Bench', GIT_AUTHOR_EMAIL: 'bench@example.com', GIT_COMMITTER_NAME: 'Bench', GIT_COMMITTER_EMAIL: 'bench@example.com' };
  const started: ServerProcess[] = [];
  try {
    say('move: writers of shards east and west, a frontend');
    const c = await partCluster(ctx, 'move');
    await c.cli('shard', 'create', 'east');
    await c.cli('shard', 'create', 'west', '--no-new');
    const nodes = new Map<string, ServerProcess>();
    for (const shard of ['east', 'west']) {
      // The old copy goes a second after each switch, so every move copies the repository
      // anew (from its snapshot and the source writer) rather than refreshing the copy left by
      // the move before.
      const n = await c.startStorageNode({ shard, dataDir: path.join(ctx.dir, shard), args: ['--move-grace-seconds', '1'] });
      started.push(n);
      nodes.set(shard, n);
    }
    await Promise.all([...nodes.values()].map((n) => n.waitForLog(SERVING_SHARD)));
    const frontend = await c.startFrontend(FRONTEND_ARGS);
    started.push(frontend);
    const token = await c.bootstrap();
    const id = await c.createRepo('moved');
    const url = repoUrl(frontend.url, token, 'moved');
    const shardOf = async () => (JSON.parse(await c.cli('repo', 'list', 'alice/bench', '--json')) as { name: string; shard: string }[]).find((r) => r.name === 'moved')!.shard;
    if ((await shardOf()) !== 'east') throw new Error('move: the repository was not placed on east');
    say(`move: pushing source (${(opts.source.packBytes / 1048576).toFixed(1)} MiB of pack)`);
    await run('git', ['--git-dir', opts.source.path, 'push', '--quiet', url, '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*'], { env: clientEnv, timeoutMs: 600_000 });

    let running = true;
    const result: MoveBenchResult = {
      opts: { moves: opts.moves },
      source: opts.source,
      moves: [],
      clones: { done: 0, failed: 0, failures: [] },
      pushes: { acknowledged: 0, refused503: 0, otherFailures: 0, failures: [] },
      lost: 0,
    };
    const last = new Map<string, string>();
    const pusher = async (p: number) => {
      const dir = path.join(ctx.dir, `pusher-${p}`);
      await mkdir(dir, { recursive: true });
      await run('git', ['-C', dir, 'init', '-q', '-b', 'main'], { env: clientEnv });
      const ref = `refs/heads/load-${p}`;
      for (let n = 1; running; n++) {
        await writeFile(path.join(dir, 'change.txt'), `${ref} ${n}\n`);
        await run('git', ['-C', dir, 'add', 'change.txt'], { env: clientEnv });
        await run('git', ['-C', dir, 'commit', '-q', '-m', `change ${n}`], { env: clientEnv });
        const sha = (await run('git', ['-C', dir, 'rev-parse', 'HEAD'], { env: clientEnv })).stdout.trim();
        const r = await run('git', ['-C', dir, 'push', '--quiet', url, `HEAD:${ref}`], { env: clientEnv, check: false, timeoutMs: 120_000 });
        if (r.code === 0) {
          last.set(ref, sha);
          result.pushes.acknowledged++;
        } else {
          if (/\b503\b/.test(r.stderr)) result.pushes.refused503++;
          else {
            result.pushes.otherFailures++;
            result.pushes.failures.push(r.stderr.trim().slice(0, 300));
          }
          await sleep(250);
        }
      }
    };
    const cloner = async (k: number) => {
      for (let n = 0; running; n++) {
        const dir = path.join(ctx.dir, `clone-${k}-${n}`);
        const r = await run('git', ['clone', '--quiet', '--depth', '1', '--no-checkout', url, dir], { env: clientEnv, check: false, timeoutMs: 300_000 });
        if (r.code === 0) result.clones.done++;
        else {
          result.clones.failed++;
          result.clones.failures.push(r.stderr.trim().slice(0, 300));
        }
        await rm(dir, { recursive: true, force: true });
      }
    };
    const load = [pusher(1), pusher(2), cloner(1), cloner(2), cloner(3)];
    try {
      for (let i = 1; i <= opts.moves; i++) {
        // Load before each move: acknowledged pushes since the last one.
        const before = result.pushes.acknowledged;
        for (const deadline = Date.now() + 60_000; result.pushes.acknowledged < before + 4 && Date.now() < deadline; ) await sleep(50);
        const from = await shardOf();
        const to = from === 'east' ? 'west' : 'east';
        const out = JSON.parse(await c.cli('repo', 'move', 'alice/bench/moved', '--to-shard', to, '--json')) as { moved: boolean; pauseMs: number; totalMs: number; refs: number };
        if (!out.moved) throw new Error(`move ${i}: not moved`);
        result.moves.push({ from, to, pauseSeconds: out.pauseMs / 1000, totalSeconds: out.totalMs / 1000, refs: out.refs });
        // The old copy gone first, so the next move copies anew.
        for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
          if (!(await stat(repoDirOn(nodes.get(from)!.dataDir, id)).catch(() => undefined))) break;
        }
        say(`move ${i}/${opts.moves}: ${from} → ${to}, pushes paused ${(out.pauseMs / 1000).toFixed(2)} s, ${(out.totalMs / 1000).toFixed(2)} s in all; clones ${result.clones.done} done, ${result.clones.failed} failed`);
      }
    } finally {
      running = false;
      await Promise.all(load);
    }
    const final = await shardOf();
    const dir = repoDirOn(nodes.get(final)!.dataDir, id);
    for (const [ref, sha] of last) {
      const ok = await run('git', ['--git-dir', dir, 'merge-base', '--is-ancestor', sha, ref], { env, check: false });
      if (ok.code !== 0) result.lost++;
    }
    return result;
  } finally {
    for (const p of [...started].reverse()) await stop(p.pid);
  }
}

export function moveReport(r: MoveBenchResult): string[] {
  const f = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
  const pause = r.moves.map((m) => m.pauseSeconds);
  const total = r.moves.map((m) => m.totalSeconds);
  return [
    `6. moving a repository between shards under load: ${r.moves.length} moves of \`source\` (${(r.source.packBytes / 1048576).toFixed(1)} MiB of pack) between the writers of east and west,`,
    '   each under 2 clients pushing small commits and 3 cloning at depth 1 in loops, through one frontend',
    table([
      ['measure', 'p50', 'p99', 'max'],
      ['pushes paused, s (pause start to switch)', f(median(pause)), f(percentile(pause, 99)), f(Math.max(...pause))],
      ['whole move, s', f(median(total)), f(percentile(total, 99)), f(Math.max(...total))],
    ]),
    table([
      ['measure', 'value', 'target', 'verdict'],
      ['clones done / failed', `${r.clones.done} / ${r.clones.failed}`, '0 failed', r.clones.failed === 0 ? 'met' : 'MISSED'],
      ['pushes acknowledged / refused with 503 / failed otherwise', `${r.pushes.acknowledged} / ${r.pushes.refused503} / ${r.pushes.otherFailures}`, 'only 503', r.pushes.otherFailures === 0 ? 'met' : 'MISSED'],
      ["clients' last acknowledged commits missing on the final shard", String(r.lost), '0', r.lost === 0 ? 'met' : 'MISSED'],
    ]),
    ...[...r.clones.failures, ...r.pushes.failures].slice(0, 5).map((x) => `   failure: ${x.replace(/\n/g, ' | ')}`),
  ];
}
