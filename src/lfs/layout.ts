/**
 * The readable LFS layout's naming (docs/design/lfs-layout.md): which refs publish, where a
 * file is published (`<prefix>/<owner>/<space>/<repo>/<path>`), and the public URL of a
 * published path.
 */
import picomatch from 'picomatch';
import type { RepoRow } from '../meta/repositories.js';
import { invalid } from '../shared/errors.js';
import { keySegmentProblem, objectKey, type ObjectKey } from '../storage/object-store.js';

export const MAX_PUBLISH_PATTERNS = 20;

/** A ref pattern as stored: a full ref (`refs/tags/v*`) or a branch name (`release/*`), globbing with `*` and `**`. */
export function checkPublishPattern(raw: string): string {
  const p = raw.trim();
  const full = p.startsWith('refs/') ? p : `refs/heads/${p}`;
  if (p === '' || full.length > 250 || /[\s~^:?[\\\0]|\.\.|@\{|\/\/|\/$/.test(full) || full.split('/').some((s) => s.startsWith('.') || s.endsWith('.lock'))) {
    throw invalid('invalid_pattern', `not a ref pattern: ${JSON.stringify(raw.slice(0, 200))} (e.g. main, release/*, refs/tags/v*)`);
  }
  return full;
}

/** The refs whose pushes publish: the repository's patterns, or its default branch. */
export function publishedRef(repo: Pick<RepoRow, 'lfsPublishRefs' | 'defaultBranch'>, ref: string): boolean {
  const patterns = repo.lfsPublishRefs ?? [`refs/heads/${repo.defaultBranch}`];
  return patterns.some((p) => picomatch.isMatch(ref, p, { dot: true, nonegate: true, noextglob: true, nobrace: true }));
}

export type RepoNames = Pick<RepoRow, 'ownerName' | 'spaceName' | 'name'>;

/** The prefix of the repository's published tree: `<prefix>/<owner>/<space>/<repo>`. */
export function publishedPrefix(prefix: string, repo: RepoNames): string {
  return `${prefix}/${repo.ownerName}/${repo.spaceName}/${repo.name}`;
}

/** Where a file is published, or why it cannot be (a path segment no store can hold as a key). */
export function readableKey(prefix: string, repo: RepoNames, path: string): { key: ObjectKey } | { problem: string } {
  for (const segment of path.split('/')) {
    const problem = keySegmentProblem(segment);
    if (problem) return { problem };
  }
  try {
    return { key: objectKey(`${publishedPrefix(prefix, repo)}/${path}`) };
  } catch (err) {
    return { problem: (err as Error).message.replace(/: .*/s, '') };
  }
}

/** A published path's public URL: the repository's base URL and the path, each segment encoded. */
export function publicUrl(base: string | null, path: string): string | null {
  if (!base) return null;
  return `${base.replace(/\/+$/, '')}/${path.split('/').map(encodeURIComponent).join('/')}`;
}

/** A base URL as stored: http(s), no query or fragment. */
export function checkPublicUrl(raw: string | null): string | null {
  if (raw === null || raw.trim() === '') return null;
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw invalid('invalid_url', `not a URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.search || url.hash || url.username || url.password) {
    throw invalid('invalid_url', 'the public base URL must be an http(s) URL without query, fragment or credentials');
  }
  return url.toString().replace(/\/+$/, '');
}
