/**
 * What this machine charges a process for waking up. On the virtual machines these benchmarks
 * run on (KVM, nested), a process that slept for a while pays on waking for every page it
 * touches, as if its TLB and caches had been emptied meanwhile: measured with a small C
 * program, touching 3,000 pages after a 100 ms sleep cost 0.83 ms of CPU, 0.02 ms without the
 * sleep; an empty wake 0.10 ms. A server pays this on every request that finds it asleep and on
 * every idle timer, so the figure is printed beside the ratios to read them by.
 *
 * Measured in this process, before the servers start: for each sleep length, ROUNDS sleeps,
 * each followed by touching PAGES pages of a buffer faulted in beforehand, and the same touches
 * without sleeping; process CPU (process.cpuUsage) per round.
 */
import { setTimeout as sleep } from 'node:timers/promises';

const PAGES = 3000;
const PAGE = 4096;
const ROUNDS = 20;

export interface WakeCost {
  /** Sleep before each wake, ms. */
  sleepMs: number;
  /** CPU per wake with nothing touched, ms. */
  emptyMs: number;
  /** CPU per wake that then touches PAGES pages, ms. */
  touchMs: number;
}

export async function measureWakeCost(sleeps: readonly number[] = [1, 10, 100]): Promise<{ warmTouchMs: number; wakes: WakeCost[] }> {
  const buf = new Uint8Array(PAGES * PAGE);
  buf.fill(1);
  const touch = () => {
    let sum = 0;
    for (let i = 0; i < buf.length; i += PAGE) sum += buf[i]!;
    return sum;
  };
  const cpuMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  // Warm, and compile the loop before anything is timed.
  for (let i = 0; i < 200; i++) touch();
  let t = cpuMs();
  for (let i = 0; i < ROUNDS; i++) touch();
  const warmTouchMs = (cpuMs() - t) / ROUNDS;

  const wakes: WakeCost[] = [];
  for (const sleepMs of sleeps) {
    t = cpuMs();
    for (let i = 0; i < ROUNDS; i++) await sleep(sleepMs);
    const emptyMs = (cpuMs() - t) / ROUNDS;
    t = cpuMs();
    for (let i = 0; i < ROUNDS; i++) {
      await sleep(sleepMs);
      touch();
    }
    wakes.push({ sleepMs, emptyMs, touchMs: (cpuMs() - t) / ROUNDS });
  }
  return { warmTouchMs, wakes };
}

export function describeWakeCost(cost: { warmTouchMs: number; wakes: WakeCost[] }): string {
  const parts = cost.wakes.map((w) => `after ${w.sleepMs} ms asleep ${w.emptyMs.toFixed(2)} ms (${w.touchMs.toFixed(2)} touching ${PAGES.toLocaleString('en')} pages)`);
  return `a wake of this Node process costs ${parts.join(', ')}; the same pages touched awake: ${cost.warmTouchMs.toFixed(2)} ms`;
}
