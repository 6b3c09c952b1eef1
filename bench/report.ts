/** Medians, spreads and the printed tables of the benchmarks. */

export interface Sample {
  /** Client wall time, seconds. */
  wall: number;
  /** Server process-tree CPU, seconds. */
  cpu: number;
  /** Of which the server's own processes (not git): Node, or nginx + fcgiwrap. */
  own: number;
  /** Server peak RSS, bytes. */
  rss: number;
}

export interface Cell {
  scenario: string;
  side: string;
  samples: Sample[];
}

const MiB = 1024 * 1024;

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The nearest-rank percentile `p` (0–100) of `values`. */
export function percentile(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function spread(values: readonly number[], digits: number, scale = 1): string {
  const v = values.map((x) => x / scale);
  return `${median(v).toFixed(digits)} [${Math.min(...v).toFixed(digits)}–${Math.max(...v).toFixed(digits)}]`;
}

/** Left-aligned columns, two spaces apart. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 2))).join('').trimEnd()).join('\n');
}

export function resultsTable(cells: readonly Cell[]): string {
  const rows = [['scenario', 'server', 'wall s', 'server CPU s', 'non-git CPU s', 'server peak RSS MiB']];
  let last = '';
  for (const c of cells) {
    rows.push([
      c.scenario === last ? '' : c.scenario,
      c.side,
      spread(c.samples.map((s) => s.wall), 2),
      spread(c.samples.map((s) => s.cpu), 2),
      spread(c.samples.map((s) => s.own), 2),
      spread(c.samples.map((s) => s.rss), 1, MiB),
    ]);
    last = c.scenario;
  }
  return table(rows);
}

/** Ratios of medians, subject ÷ peer, per scenario; `target` applies to wall and CPU. */
export function ratiosTable(cells: readonly Cell[], subject: string, peer: string, target: number): string {
  const rows = [['scenario', 'wall', 'server CPU', 'non-git CPU', 'peak RSS', `target ≤ ${target.toFixed(2)}× (wall, CPU)`]];
  for (const scenario of [...new Set(cells.map((c) => c.scenario))]) {
    const a = cells.find((c) => c.scenario === scenario && c.side === subject);
    const b = cells.find((c) => c.scenario === scenario && c.side === peer);
    if (!a || !b) continue;
    const ratio = (pick: (s: Sample) => number) => median(a.samples.map(pick)) / median(b.samples.map(pick));
    const wall = ratio((s) => s.wall);
    const cpu = ratio((s) => s.cpu);
    const verdict = (r: number) => (r <= target ? 'met' : 'missed');
    rows.push([
      scenario,
      `${wall.toFixed(2)}×`,
      `${cpu.toFixed(2)}×`,
      `${ratio((s) => s.own).toFixed(2)}×`,
      `${ratio((s) => s.rss).toFixed(1)}×`,
      `wall ${verdict(wall)}, CPU ${verdict(cpu)}`,
    ]);
  }
  return table(rows);
}

export const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
