/**
 * Transfer progress for long CLI operations (restore), on stderr so stdout stays the result.
 * On a terminal: one line redrawn in place at most every 100 ms, with a bar, bytes done of the
 * total, the percentage and the average rate; a new line per item (repository). Not on a
 * terminal (logs, CI): a plain line every 30 s while an item takes that long, so a long restore
 * shows it is alive without flooding a log; short ones print nothing here.
 */
import { formatBytes } from '../shared/bytes.js';

export { formatBytes };

export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  now?: () => number;
  ttyIntervalMs?: number;
  plainIntervalMs?: number;
}

export function createProgress(opts: ProgressOptions = {}) {
  const stream = opts.stream ?? process.stderr;
  const now = opts.now ?? Date.now;
  const tty = stream.isTTY === true;
  const every = tty ? (opts.ttyIntervalMs ?? 100) : (opts.plainIntervalMs ?? 30_000);
  let item: string | undefined;
  let started = 0;
  let shownAt = 0;
  let last = { bytes: 0, totalBytes: 0 };
  let drawn = false;

  const render = (final: boolean) => {
    const { bytes, totalBytes } = last;
    const elapsed = now() - started;
    const pct = totalBytes > 0 ? Math.min(100, Math.floor((bytes / totalBytes) * 100)) : 100;
    // An average over less than half a second says nothing yet.
    const rate = elapsed >= 500 || final ? `${formatBytes(Math.round(bytes / Math.max(0.001, elapsed / 1000)))}/s` : '';
    if (!tty) {
      stream.write(`${item}: ${formatBytes(bytes)} of ${formatBytes(totalBytes)} (${pct}%), ${rate}\n`);
      return;
    }
    const width = 20;
    const filled = Math.round((pct / 100) * width);
    const figures = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}% ${formatBytes(bytes)}/${formatBytes(totalBytes)} ${rate}`;
    // The figures always fit; a long repository name gives way, from the left.
    // A pseudo-terminal without a size reports 0 columns.
    const cols = Math.max(40, stream.columns || 80) - 1;
    const room = Math.max(0, cols - figures.length - 1);
    const name = item!.length <= room ? item! : `…${item!.slice(item!.length - room + 1)}`;
    stream.write(`\r${`${name} ${figures}`.slice(0, cols).padEnd(cols)}${final ? '\n' : ''}`);
    drawn = !final;
  };

  const finish = () => {
    if (item !== undefined && tty && drawn) render(true);
    item = undefined;
    drawn = false;
  };

  return {
    /** Progress of `name`; a new name finishes the previous item's line. */
    update(name: string, p: { bytes: number; totalBytes: number }): void {
      if (name !== item) {
        finish();
        item = name;
        started = shownAt = now();
      }
      last = p;
      const t = now();
      // On a terminal the first update draws at once; a plain line waits a whole interval.
      if ((tty && !drawn) || t - shownAt >= every) {
        shownAt = t;
        render(false);
      }
    },
    /** Ends the current line (on a terminal, with the final figures). */
    finish,
  };
}
