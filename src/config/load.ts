import { readFileSync } from 'node:fs';
import { configKeys, configSchema, envName, type Config } from './schema.js';

/** A configuration the program cannot start with; its message is one line for the operator. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * GITSTRATUM_* variables that are not settings and must not be refused as typos: the config
 * file's own variable, the test command's (scripts/test.sh), and those the server puts in git
 * children's environment for its hooks (git/command.ts), which a hook's children inherit.
 */
const NOT_SETTINGS = new Set([
  'GITSTRATUM_CONFIG',
  'GITSTRATUM_REPO_ID',
  'GITSTRATUM_ACTOR_ID',
  'GITSTRATUM_ACTOR_NAME',
  'GITSTRATUM_REQUEST_ID',
  'GITSTRATUM_HOOK_SOCKET',
  'GITSTRATUM_SHARD_EPOCH',
]);
const NOT_SETTING_PREFIXES = ['GITSTRATUM_TEST_', 'GITSTRATUM_HOOK_'];

/**
 * Builds the configuration from defaults, an optional JSON file, the environment and
 * explicit flags, in that order of precedence (flags win). Every problem is a ConfigError
 * whose message names the setting, the value given and where it came from.
 */
export function loadConfig(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const source: Record<string, string> = {};
  const merged: Record<string, unknown> = {};

  refuseUnknownEnv(env);

  const file = (flags['config'] as string | undefined) ?? env['GITSTRATUM_CONFIG'];
  if (file !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError(`config file ${file} must hold a JSON object`);
    }
    for (const [key, value] of Object.entries(parsed)) {
      merged[key] = value;
      source[key] = `config file ${file}`;
    }
  }
  for (const key of configKeys) {
    const value = env[envName(key)];
    if (value !== undefined && value !== '') {
      merged[key] = value;
      source[key] = `environment variable ${envName(key)}`;
    }
  }
  for (const key of configKeys) {
    const value = flags[key];
    if (value !== undefined) {
      merged[key] = typeof value === 'boolean' ? String(value) : value;
      source[key] = `flag --${key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`;
    }
  }

  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        const hints = issue.keys.map((k) => nearest(k, configKeys)).filter((k) => k !== undefined);
        const hint = hints.length > 0 ? `: did you mean ${hints.join(', ')}?` : '';
        return `unknown setting(s) ${issue.keys.join(', ')} in ${source[issue.keys[0] ?? ''] ?? 'configuration'}${hint}`;
      }
      const key = String(issue.path[0] ?? '');
      const message = issue.message.charAt(0).toLowerCase() + issue.message.slice(1);
      // A key with no source was not set at all (defaults are valid), e.g. a missing s3Bucket.
      if (!source[key]) return `invalid ${key} (not set): ${message}`;
      return `invalid ${key} (from ${source[key]}): ${message} (got ${shown(key, merged[key])})`;
    });
    // One line, whatever the number of problems: supervisors and CI logs show the first line.
    throw new ConfigError(problems.join('; '));
  }
  return result.data;
}

/** A GITSTRATUM_* variable that is no setting is a typo that would be silently ignored. */
function refuseUnknownEnv(env: NodeJS.ProcessEnv): void {
  const known = new Set(configKeys.map(envName));
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('GITSTRATUM_') || known.has(name) || NOT_SETTINGS.has(name)) continue;
    if (NOT_SETTING_PREFIXES.some((p) => name.startsWith(p))) continue;
    // Compared without the common prefix, which would make every name look close.
    const suffix = (n: string) => n.slice('GITSTRATUM_'.length);
    const match = nearest(suffix(name), [...known, 'GITSTRATUM_CONFIG'].map(suffix));
    const hint = match && `GITSTRATUM_${match}`;
    throw new ConfigError(
      `unknown environment variable ${name}: ${hint ? `did you mean ${hint}?` : 'no setting has that name (see the configuration table in the README)'}`,
    );
  }
}

/** The candidate closest to `word` by edit distance, if close enough to be the intended one. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  const a = word.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(a, candidate.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  // About one typo in three characters; beyond that the "suggestion" is noise.
  return bestDistance <= Math.max(2, Math.floor(a.length / 3)) ? best : undefined;
}

/** Levenshtein distance (insertions, deletions, substitutions), two rows at a time. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length]!;
}

/** The value as given, for the message; secrets are not printed, nor a database password. */
function shown(key: string, value: unknown): string {
  if (/secret/i.test(key)) return '(hidden)';
  if (key === 'databaseUrl' && typeof value === 'string') return JSON.stringify(withoutPassword(value));
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** `postgres://user:***@host/db`: a URL as it can be shown in messages and logs. */
export function withoutPassword(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, '$1:***@');
}
