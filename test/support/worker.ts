/** A `gitstratum worker` process on a server's data directory and database, for tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { BIN, type Server } from '../e2e/harness.js';

export class Worker {
  private constructor(
    readonly process: ChildProcess,
    readonly metricsUrl: string,
    readonly logs: string[],
  ) {}

  static async start(server: Server, args: string[] = []): Promise<Worker> {
    const all = [BIN, 'worker', '--data', server.dataDir, '--metrics-port', '0', ...(server.databaseUrl ? ['--database-url', server.databaseUrl] : []), ...args];
    const child = spawn(process.execPath, all, { stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: string[] = [];
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        logs.push(line);
        try {
          const entry = JSON.parse(line) as { msg?: string; metrics?: string };
          if (entry.msg === 'gitstratum worker started' && entry.metrics) resolve(entry.metrics);
        } catch {
          /* not JSON */
        }
      });
      child.on('exit', (code) => reject(new Error(`worker exited with ${code}:\n${stderr}`)));
      setTimeout(() => reject(new Error(`worker did not start:\n${stderr}`)), 30_000).unref();
    });
    return new Worker(child, url, logs);
  }

  async metric(name: string): Promise<number> {
    const text = await (await fetch(this.metricsUrl)).text();
    const line = text.split('\n').find((l) => l.startsWith(name + ' '));
    // A labelled counter never incremented has no line: zero.
    return line ? Number(line.split(' ').pop()) : 0;
  }

  async stop(): Promise<number | null> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return this.process.exitCode;
    const exited = new Promise<number | null>((resolve) => this.process.once('exit', (code) => resolve(code)));
    this.process.kill('SIGTERM');
    return exited;
  }
}

