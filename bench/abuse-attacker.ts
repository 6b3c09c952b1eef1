/**
 * One attack of `bench:abuse` in a process of its own, at a lower CPU priority than the server
 * and the good client (niceness 19 by default, `--attackers-nice`). In a real attack the
 * hostile clients' own work (building requests, opening connections, reading answers) runs on
 * their machines; on the benchmark's one machine it would take CPU from the server and the good
 * client alike and measure the attackers' client code, not the server's defences. The server's
 * work for them is not lowered: it is what the windows measure, and each window prints the CPU
 * both sides used.
 *
 * Run as a script (`node abuse-attacker.js SPEC_JSON`) it starts the attack, writes `ready` on
 * stdout once it runs, attacks until its stdin ends (its parent stopped it, or died), then
 * stops every client and prints `{ summary, cpuSeconds }` as JSON. startAttacker() runs it.
 */
import { spawn } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import {
  hugeBatches,
  manyRefsFetches,
  pushOptionFlood,
  pushOptionFloodBody,
  requestRate,
  stalledBodies,
  type Attack,
  type Target,
} from './abuse-attacks.js';

/** What to run, against whom; plain data, since it crosses a process boundary. */
export type AttackSpec = { url: string; token: string; forwardedFor: string; repo: string } & (
  | { name: 'stalled-bodies'; head: string; clients: number }
  | { name: 'huge-batches'; clients: number; objects: number }
  | { name: 'push-option-flood'; head: string; floodMib: number }
  | { name: 'many-refs'; head: string; refs: number; clients: number }
  | { name: 'request-rate'; perSecond: number }
);

export interface RunningAttack extends Attack {
  /** The attack process's CPU seconds (user + system), known once stopped. */
  cpuSeconds(): number;
}

/** Starts the attack process, lowered to `niceness`; resolves once its clients are running. */
export async function startAttacker(spec: AttackSpec, niceness: number): Promise<RunningAttack> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'inherit'] });
  if (child.pid !== undefined) setPriority(child.pid, niceness);
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.startsWith('ready\n')) resolve();
    });
    void exited.then((code) => reject(new Error(`the ${spec.name} attack process exited with ${code} before it was ready`)));
  });
  let result: { summary: string; cpuSeconds: number } | undefined;
  return {
    async stop() {
      child.stdin.end();
      const code = await exited;
      if (code !== 0) throw new Error(`the ${spec.name} attack process exited with ${code}`);
      result = JSON.parse(out.slice('ready\n'.length)) as { summary: string; cpuSeconds: number };
    },
    summary: () => result?.summary ?? 'not stopped',
    cpuSeconds: () => result?.cpuSeconds ?? NaN,
  };
}

async function begin(spec: AttackSpec): Promise<Attack> {
  const target: Target = { url: () => spec.url, token: spec.token, forwardedFor: spec.forwardedFor };
  switch (spec.name) {
    case 'stalled-bodies':
      return stalledBodies(target, spec.repo, spec.head, spec.clients);
    case 'huge-batches':
      return hugeBatches(target, spec.repo, spec.clients, spec.objects);
    case 'push-option-flood': {
      const { body, decoded } = await pushOptionFloodBody(spec.head, spec.floodMib);
      return pushOptionFlood(target, spec.repo, body, decoded);
    }
    case 'many-refs':
      return manyRefsFetches(target, spec.repo, spec.refs, spec.head, spec.clients);
    case 'request-rate':
      return requestRate(target, spec.repo, spec.perSecond);
  }
}

async function main(spec: AttackSpec): Promise<void> {
  const attack = await begin(spec);
  process.stdout.write('ready\n');
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on('end', resolve).on('error', resolve));
  await attack.stop();
  const cpu = process.cpuUsage();
  process.stdout.write(JSON.stringify({ summary: attack.summary(), cpuSeconds: (cpu.user + cpu.system) / 1e6 }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main(JSON.parse(process.argv[2]!) as AttackSpec);
}
