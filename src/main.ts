/**
 * `gitstratum serve`: load configuration, build the app, listen, and stop cleanly on
 * SIGTERM/SIGINT: stop accepting, let in-flight requests (pushes above all) finish within
 * the shutdown bound, then exit.
 */
import type { Config } from './config/schema.js';
import { createLogger } from './shared/log.js';
import { createApp } from './app.js';
import { loadTls } from './http/server.js';

export async function serve(config: Config): Promise<void> {
  // Unusable TLS files stop the start before anything is opened.
  if (config.tlsCert && config.tlsKey) loadTls(config.tlsCert, config.tlsKey);
  const log = createLogger(config.logLevel);
  const app = await createApp(config, log);
  const url = await app.listen();
  log.info({ url, data: app.core.dataDir, database: app.core.meta.location }, 'gitstratum listening');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, running_git: app.limiter.runningCount, bound_s: config.shutdownTimeoutSeconds }, 'shutting down');
    const bound = setTimeout(() => {
      log.warn({ running_git: app.limiter.runningCount }, 'shutdown bound reached; exiting with requests in flight');
      process.exit(1);
    }, config.shutdownTimeoutSeconds * 1000);
    bound.unref();
    try {
      await app.close();
      log.info('stopped');
      process.exit(0);
    } catch (err) {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
