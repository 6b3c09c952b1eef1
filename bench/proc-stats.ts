/**
 * Reading a process tree's CPU time and memory from /proc (Linux only), as
 * /work/shared/BENCHMARKING.md describes: the CPU of a tree is the sum over its live processes of
 * utime + stime + cutime + cstime (fields 14–17 of /proc/<pid>/stat). A child that exited
 * counts through its parent's cutime/cstime only once the parent has reaped it, so readings
 * are taken when the tree is idle (see `waitForTree`).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime + cutime + cstime, in clock ticks. */
  ticks: number;
  /** utime + stime: the process's own CPU, without its reaped children. */
  own: number;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // exited between listing and reading
  }
  // comm (field 2) may contain spaces and parentheses: the fields we need follow the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const field = (n: number) => Number(rest[n - 3]);
  const own = field(14) + field(15);
  return { pid, ppid: field(4), ticks: own + field(16) + field(17), own };
}

function allProcesses(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat) out.push(stat);
  }
  return out;
}

/** The roots and every live descendant of them. */
export function treeOf(roots: readonly number[]): ProcStat[] {
  const procs = allProcesses();
  const children = new Map<number, ProcStat[]>();
  for (const p of procs) {
    const list = children.get(p.ppid) ?? [];
    list.push(p);
    children.set(p.ppid, list);
  }
  const out: ProcStat[] = [];
  const queue = procs.filter((p) => roots.includes(p.pid));
  while (queue.length > 0) {
    const p = queue.shift()!;
    out.push(p);
    queue.push(...(children.get(p.pid) ?? []));
  }
  return out;
}

export function childPids(pid: number): number[] {
  return allProcesses()
    .filter((p) => p.ppid === pid)
    .map((p) => p.pid);
}

/** CPU seconds burned so far by the trees under `roots` (reaped children included). */
export function treeCpuSeconds(roots: readonly number[]): number {
  return treeOf(roots).reduce((sum, p) => sum + p.ticks, 0) / CLK_TCK;
}

/** CPU seconds of the process's children that it has reaped (cutime + cstime): e.g. the benchmark's own git commands. */
export function reapedChildrenCpuSeconds(pid: number): number {
  const stat = readStat(pid);
  return stat ? (stat.ticks - stat.own) / CLK_TCK : 0;
}

/** The processes' own CPU seconds (utime + stime), without their children's. */
export function ownCpuSeconds(pids: Iterable<number>): number {
  let ticks = 0;
  for (const pid of pids) ticks += readStat(pid)?.own ?? 0;
  return ticks / CLK_TCK;
}

/** gitstratum's git spawner (src/git/spawner.ts): a long-lived helper of every server, never work in progress. */
function isSpawnHelper(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('spawn-helper.js');
  } catch {
    return false;
  }
}

/**
 * Waits until the trees under `roots` hold no process outside `resident` (the long-lived
 * server processes, and gitstratum's git spawner helpers): every git child has exited and been
 * reaped. Bounded by `timeoutMs`.
 */
export async function waitForTree(roots: readonly number[], resident: ReadonlySet<number>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const extra = treeOf(roots).filter((p) => !resident.has(p.pid) && !isSpawnHelper(p.pid));
    if (extra.length === 0) return;
    if (Date.now() > deadline) throw new Error(`server processes still running after ${timeoutMs} ms: ${extra.map((p) => p.pid).join(', ')}`);
    await sleep(20);
  }
}

function statusField(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return match ? Number(match[1]) * 1024 : 0;
}

/** Peak resident set size (VmHWM) in bytes. */
export function peakRss(pid: number): number {
  return statusField(pid, 'VmHWM');
}

/** Current resident set size (VmRSS) in bytes. */
export function currentRss(pid: number): number {
  return statusField(pid, 'VmRSS');
}

/**
 * Resets VmHWM to the current RSS (proc(5), clear_refs value 5, Linux ≥ 4.0), so a peak can
 * be read per scenario rather than per process lifetime. Returns false where not permitted.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Whether the process ignores SIGCHLD (its exited children are then reaped by the kernel, uncounted). */
export function ignoresSigchld(pid: number): boolean {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mask = /^SigIgn:\s+([0-9a-f]+)/m.exec(text)?.[1] ?? '0';
  return (BigInt('0x' + mask) & (1n << 16n)) !== 0n; // SIGCHLD is signal 17: bit 16
}

/** Samples a process's RSS every `intervalMs` until stopped; returns the largest value seen. */
export function sampleRss(pid: number, intervalMs = 100): { stop(): number; samples(): number } {
  let peak = 0;
  let count = 0;
  const take = () => {
    try {
      peak = Math.max(peak, currentRss(pid));
      count++;
    } catch {
      // the process is gone; the caller notices through its own exit handling
    }
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return peak;
    },
    samples: () => count,
  };
}

/**
 * Every `intervalMs`, the processes below `roots` (the roots excluded), by PID with their name
 * (`/proc/<pid>/comm`), until stopped. Short-lived processes may fall between two samples.
 */
export function sampleProcesses(roots: readonly number[], intervalMs = 50): { stop(): Map<number, string> } {
  const seen = new Map<number, string>();
  const take = () => {
    for (const p of treeOf(roots)) {
      if (roots.includes(p.pid) || seen.has(p.pid)) continue;
      let name = '?';
      try {
        name = readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim();
      } catch {
        // already gone
      }
      seen.set(p.pid, name);
    }
  };
  const timer = setInterval(take, intervalMs);
  take();
  return {
    stop() {
      clearInterval(timer);
      take();
      return seen;
    },
  };
}

/** `names` counted: "3 git, 72 node". */
export function countByName(names: Iterable<string>): string {
  const counts = new Map<string, number>();
  for (const n of names) counts.set(n, (counts.get(n) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([name, n]) => `${n} ${name}`).join(', ') || 'none';
}
