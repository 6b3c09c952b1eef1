/**
 * `gitstratum worker`: the background jobs (the snapshot worker and the scheduled jobs of
 * background.ts) without the HTTP server, for an operator who runs them apart from `serve`
 * (which then has `snapshotsEnabled` false). It needs the same database and object store as
 * the server and the repositories' directories (the same --data on the storage node). Several
 * workers may run at once: snapshot jobs take a lease per repository in SQL.
 *
 * SIGTERM/SIGINT abort the job in flight (its upload leaves no object, no row, and the
 * repository dirty), release its lease and exit 0. With `metricsPort` set it serves /metrics.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { collectProcessMetrics } from './http/metrics.js';
import type { Config } from './config/schema.js';
import { ConfigError } from './config/load.js';
import { createLogger } from './shared/log.js';
import { openCore, warnIfExposed } from './core.js';
import { createObjectStore } from './app.js';
import { createBackground } from './background.js';
import { stopOnSignals } from './shared/shutdown.js';

export async function work(config: Config): Promise<void> {
  const log = createLogger(config.logLevel);
  const core = await openCore(config);
  const store = await createObjectStore(config, core.dataDir);
  const registry = new Registry();
  collectProcessMetrics(registry);
  const background = createBackground(config, { core, store, registry, log }, { snapshots: true });

  let metricsServer: Server | undefined;
  let metricsUrl: string | undefined;
  if (config.metricsPort !== undefined) {
    metricsServer = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
          (err: unknown) => {
            log.error({ err }, 'metrics failed');
            res.writeHead(500).end();
          },
        );
      } else if (req.method === 'GET' && req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else {
        res.writeHead(404).end();
      }
    });
    try {
      await new Promise<void>((resolve, reject) => {
        metricsServer!.once('error', reject);
        metricsServer!.listen(config.metricsPort, config.host, () => resolve());
      });
    } catch (err) {
      store.destroy?.();
      await core.close();
      throw new ConfigError(`cannot listen on ${config.host}:${config.metricsPort}: ${(err as Error).message}`);
    }
    const { port } = metricsServer.address() as AddressInfo;
    metricsUrl = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}/metrics`;
  }

  background.start();
  log.info({ data: core.dataDir, database: core.meta.location, metrics: metricsUrl ?? null }, 'gitstratum worker started');
  warnIfExposed(core, log);

  stopOnSignals(log, config.shutdownTimeoutSeconds, 'worker stopping', {
    starting: () => ({}),
    inFlight: () => ({ fields: {}, message: 'shutdown bound reached; exiting with a job in flight' }),
    close: async () => {
      await background.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
      store.destroy?.();
      await core.close();
    },
  });
}
