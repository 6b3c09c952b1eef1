/**
 * `gitstratum serve`: load configuration, build the app, listen, and stop cleanly on
 * SIGTERM/SIGINT: stop accepting, let in-flight requests (pushes above all) finish within
 * the shutdown bound, then exit.
 */
import type { Config } from './config/schema.js';
import { createLogger } from './shared/log.js';
import { createApp } from './app.js';
import { warnIfExposed } from './core.js';
import { loadTls } from './http/server.js';
import { ConfigError } from './config/load.js';
import { stopOnSignals } from './shared/shutdown.js';

export async function serve(config: Config): Promise<void> {
  // Unusable TLS files stop the start before anything is opened.
  if (config.tlsCert && config.tlsKey) loadTls(config.tlsCert, config.tlsKey);
  const log = createLogger(config.logLevel);
  const app = await createApp(config, log);
  let url: string;
  try {
    url = await app.listen();
  } catch (err) {
    // Without this the open database and hook socket kept a server that never listened
    // alive, and a supervisor saw a hung process instead of a failed one.
    await app.close().catch(() => {});
    const code = (err as NodeJS.ErrnoException).code;
    // A host that does not resolve is a bad setting as much as a port in use.
    if (code && ['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EINVAL'].includes(code)) {
      throw new ConfigError(`cannot listen on ${config.host}:${config.port}: ${(err as Error).message}`);
    }
    throw err;
  }
  log.info({ url, data: app.core.dataDir, database: app.core.meta.location }, 'gitstratum listening');
  warnIfExposed(app.core, log);

  const stop = stopOnSignals(log, config.shutdownTimeoutSeconds, 'shutting down', {
    starting: () => ({ running_git: app.limiter.runningCount, bound_s: config.shutdownTimeoutSeconds }),
    inFlight: () => ({ fields: { running_git: app.limiter.runningCount }, message: 'shutdown bound reached; exiting with requests in flight' }),
    close: () => app.close(),
  });
  // EX_TEMPFAIL: a supervisor starts the node again, and it comes back as a standby.
  app.onDeposed(() => stop('deposed from its shard', 75));
}
