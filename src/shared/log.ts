/**
 * JSON logs through pino. One root logger per process; components take a child with
 * `component` set. Fields are snake_case; messages are constant strings.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export function createLogger(level: LevelWithSilent): Logger {
  return pino({
    level,
    base: { service: 'gitstratum' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
