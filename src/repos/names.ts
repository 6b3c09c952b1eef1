/**
 * Names of owners, spaces and repositories. They appear in URLs and the CLI, never on disk
 * (repositories live under their ULID), but they are still kept to a safe set so every
 * URL is unambiguous and every log line printable.
 */
import { invalid } from '../shared/errors.js';

export type NameKind = 'owner' | 'space' | 'repository';

const SAFE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** Owner names that would collide with the server's own top-level paths. */
const RESERVED_OWNERS = new Set([
  'api', 'metrics', 'healthz', 'readyz', 'openapi', 'openapi.json', 'docs', 'static', 'assets',
  'admin', 'login', 'logout', 'settings', 'explore', 'new', 'git', 'lfs', 'info', 'users', 'orgs',
]);
const RESERVED_ANY = new Set(['.', '..', 'info', 'objects', 'refs', 'hooks', 'head', 'git-upload-pack', 'git-receive-pack']);

export function validateName(kind: NameKind, raw: string): string {
  const name = kind === 'repository' ? raw.replace(/\.git$/i, '') : raw;
  const fields = { kind, name: raw };
  if (!SAFE.test(name)) {
    throw invalid(
      'invalid_name',
      `${kind} name must be 1-100 characters of letters, digits, '.', '-' and '_', starting with a letter or digit`,
      fields,
    );
  }
  if (name.includes('..') || /\.(lock|git)$/i.test(name)) {
    throw invalid('invalid_name', `${kind} name must not contain '..' nor end in .lock or .git`, fields);
  }
  const lower = name.toLowerCase();
  if (RESERVED_ANY.has(lower) || (kind === 'owner' && RESERVED_OWNERS.has(lower))) {
    throw invalid('reserved_name', `${kind} name '${name}' is reserved`, fields);
  }
  return name;
}

export interface RepoPath {
  owner: string;
  space: string;
  repo: string;
}

/** Parses `OWNER/SPACE/REPO` (a trailing `.git` allowed). */
export function parseRepoPath(text: string): RepoPath {
  const parts = text.replace(/^\/+|\/+$/g, '').split('/');
  if (parts.length !== 3) throw invalid('invalid_path', 'repository path must be OWNER/SPACE/REPO', { path: text });
  return {
    owner: validateName('owner', parts[0]!),
    space: validateName('space', parts[1]!),
    repo: validateName('repository', parts[2]!),
  };
}

/** Parses `OWNER/SPACE`. */
export function parseSpacePath(text: string): { owner: string; space: string } {
  const parts = text.replace(/^\/+|\/+$/g, '').split('/');
  if (parts.length !== 2) throw invalid('invalid_path', 'space path must be OWNER/SPACE', { path: text });
  return { owner: validateName('owner', parts[0]!), space: validateName('space', parts[1]!) };
}
