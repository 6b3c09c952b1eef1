/**
 * Graceful stop on SIGTERM/SIGINT for a long-running command (`serve`, `worker`): the first
 * signal runs `close` once and exits 0 (1 if it failed); if closing takes longer than
 * `boundSeconds`, the process exits 1 with what is still in flight logged.
 */
import type { Logger } from './log.js';

export interface Shutdown {
  /** Logged with the signal when stopping starts. */
  starting(): Record<string, unknown>;
  /** Logged when the bound is reached, with the message. */
  inFlight(): { fields: Record<string, unknown>; message: string };
  close(): Promise<void>;
}

/**
 * Returns `stop(reason, exitCode)`, for a process that must stop for a reason of its own (a
 * storage node deposed from its shard): the same close, then that exit code once closed.
 */
export function stopOnSignals(log: Logger, boundSeconds: number, message: string, shutdown: Shutdown): (reason: string, exitCode: number) => void {
  let stopping = false;
  const stop = async (signal: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, ...shutdown.starting() }, message);
    const bound = setTimeout(() => {
      const { fields, message: why } = shutdown.inFlight();
      log.warn(fields, why);
      process.exit(1);
    }, boundSeconds * 1000);
    bound.unref();
    try {
      await shutdown.close();
      log.info('stopped');
      process.exit(exitCode);
    } catch (err) {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  return (reason, exitCode) => void stop(reason, exitCode);
}
