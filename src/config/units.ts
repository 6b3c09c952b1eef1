/**
 * Sizes and durations as an operator writes them: `5GiB`, `500MB`, `64KiB`, `30s`, `15m`,
 * `7d`. A plain number keeps the meaning the setting always had (bytes, or seconds for a
 * *Seconds setting), so existing configuration reads the same. The parsers return undefined
 * for text they do not understand; the schema turns that into a message naming the setting.
 *
 * Token lifetimes (access/tokens.ts) have their own parser: there a plain number means days.
 */

/** Decimal units are powers of 1000 and binary ones of 1024, as IEC 80000-13 has it. */
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

// A decimal number (`1.5`), optional spaces, then the unit; no sign, no exponent.
const QUANTITY = /^(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)$/i;

function quantity(text: string, units: Record<string, number>, plain: number): number | undefined {
  const m = QUANTITY.exec(text.trim());
  if (!m) return undefined;
  const factor = m[2] === '' ? plain : units[m[2]!.toLowerCase()];
  if (factor === undefined) return undefined;
  const value = Number(m[1]) * factor;
  return Number.isFinite(value) ? value : undefined;
}

/** Bytes in `5GiB`, `500MB`, `64KiB`, `1.5GB` or `1048576`; undefined if it is not a size or not whole bytes. */
export function parseBytes(text: string): number | undefined {
  const n = quantity(text, SIZE_UNITS, 1);
  if (n === undefined) return undefined;
  // 1.1MB is 1100000.0000000002 in binary floating point: whole bytes up to that rounding.
  const whole = Math.round(n);
  return Number.isSafeInteger(whole) && Math.abs(n - whole) <= n * 1e-12 ? whole : undefined;
}

/** Seconds in `30s`, `15m`, `1h`, `7d`, `1.5h` or `90` (seconds); undefined if it is not a duration. */
export function parseSeconds(text: string): number | undefined {
  return quantity(text, DURATION_UNITS, 1);
}
