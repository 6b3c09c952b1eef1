import { readFileSync } from 'node:fs';
import { configKeys, configSchema, envName, type Config } from './schema.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * Builds the configuration from defaults, an optional JSON file, the environment and
 * explicit flags, in that order of precedence (flags win).
 */
export function loadConfig(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): Config {
  const source: Record<string, string> = {};
  const merged: Record<string, unknown> = {};

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
    const lines = result.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '');
      if (issue.code === 'unrecognized_keys') {
        return `unknown setting(s) ${issue.keys.join(', ')} in ${source[issue.keys[0] ?? ''] ?? 'configuration'}`;
      }
      // A key with no source was not set at all (defaults are valid), e.g. a missing s3Bucket.
      const from = source[key] ? `from ${source[key]}` : 'not set';
      return `invalid ${key} (${from}): ${issue.message}`;
    });
    throw new ConfigError(lines.join('\n'));
  }
  return result.data;
}
