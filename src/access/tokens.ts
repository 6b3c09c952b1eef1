/**
 * Access token secrets. A token is `gst_` followed by 40 base62-ish characters from 32
 * random bytes; only its SHA-256 is stored. A plain hash (not a slow KDF) is right here: the
 * secret has 256 bits of entropy, and every git request verifies one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { invalid } from '../shared/errors.js';

export const TOKEN_PREFIX = 'gst_';

export function newTokenSecret(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export function hashToken(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** The default bound of a token's lifetime (setting tokenMaxLifetimeDays): ten years. */
export const DEFAULT_MAX_TOKEN_DAYS = 3650;

/**
 * Parses `30d`, `12h`, `90m`, `3600s`, `2w` or a bare number of days into milliseconds, at most
 * `maxMs`. The bound matters beyond policy: past year 9999 an ISO date gains a sign and six
 * digits (`+010000-…`), and expiry is compared as text, so such a date would read as expired.
 */
export function parseDuration(text: string, maxMs = DEFAULT_MAX_TOKEN_DAYS * 86400e3): number {
  const m = /^(\d+)\s*([smhdw]?)$/.exec(text.trim());
  if (!m) throw invalid('invalid_duration', 'duration must look like 30d, 12h, 90m or 3600s', { value: text });
  const n = Number(m[1]);
  const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3, '': 86400e3 }[m[2] as 's'];
  if (n <= 0) throw invalid('invalid_duration', 'duration must be positive', { value: text });
  const ms = n * unit;
  if (ms > maxMs) {
    throw invalid('duration_too_long', `duration must be at most ${Math.floor(maxMs / 86400e3)} days`, { value: text, max_days: Math.floor(maxMs / 86400e3) });
  }
  return ms;
}

/** A token's name is a label for people (`ci-deploy`): short, and safe to print in a table. */
export function parseTokenName(text: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(text)) {
    throw invalid('invalid_token_name', 'token name must be 1-64 letters, digits, ., - or _, starting with a letter or digit', { value: text });
  }
  return text;
}
