/**
 * Administering the readable LFS layout (docs/design/lfs-layout.md) for the REST API and the
 * command line: the per-repository settings, checked (the layout needs a store that keeps
 * versions, probed at the moment it is asked for), the published files with their public
 * URLs, and the publish jobs.
 */
import type { MetaStore } from '../meta/db.js';
import { jobsOf, listPublications, type JobProgress } from '../meta/lfs-publish.js';
import type { Actor } from '../access/policy.js';
import type { LfsSettingsChange, RepoInfo, RepoService } from '../repos/service.js';
import { parseRepoPath } from '../repos/names.js';
import type { ObjectStore } from '../storage/object-store.js';
import { invalid } from '../shared/errors.js';
import { checkPublicUrl, checkPublishPattern, MAX_PUBLISH_PATTERNS, publicUrl } from './layout.js';

export interface LfsSettingsInput {
  lfsLayout?: 'content' | 'readable' | undefined;
  lfsPublishRefs?: string[] | null | undefined;
  lfsPublicUrl?: string | null | undefined;
}

/** Refuses the readable layout on a store without versions, saying how to turn them on. */
export async function requireVersions(store: ObjectStore): Promise<void> {
  if (store.versions && (await store.versions.enabled())) return;
  const how =
    store.kind === 's3'
      ? 'turn on versioning for its bucket (aws s3api put-bucket-versioning --bucket BUCKET --versioning-configuration Status=Enabled)'
      : 'use the filesystem store or an S3 bucket with versioning on';
  throw invalid('versioning_disabled', `the readable LFS layout needs an object store that keeps every version of a file, and this ${store.kind} store does not: ${how}`);
}

/** The settings as stored, every value checked; the store probed when the layout becomes readable. */
export async function checkLfsSettings(store: ObjectStore, input: LfsSettingsInput): Promise<LfsSettingsChange> {
  if (input.lfsLayout === 'readable') await requireVersions(store);
  let refs: string[] | null | undefined;
  if (input.lfsPublishRefs !== undefined) {
    if (input.lfsPublishRefs !== null && input.lfsPublishRefs.length > MAX_PUBLISH_PATTERNS) {
      throw invalid('invalid_pattern', `at most ${MAX_PUBLISH_PATTERNS} published ref patterns`);
    }
    refs = input.lfsPublishRefs === null || input.lfsPublishRefs.length === 0 ? null : [...new Set(input.lfsPublishRefs.map(checkPublishPattern))];
  }
  return {
    ...(input.lfsLayout !== undefined && { lfsLayout: input.lfsLayout }),
    ...(refs !== undefined && { lfsPublishRefs: refs }),
    ...(input.lfsPublicUrl !== undefined && { lfsPublicUrl: checkPublicUrl(input.lfsPublicUrl) }),
  };
}

export function createLfsAdmin(deps: { meta: MetaStore; repos: RepoService; store: ObjectStore }) {
  const { meta, repos, store } = deps;
  return {
    async updateSettings(actor: Actor, repoPath: string, input: LfsSettingsInput, opts: { requestId?: string } = {}): Promise<RepoInfo> {
      await repos.resolve(actor, parseRepoPath(repoPath), 'admin');
      return repos.updateRepo(actor, repoPath, await checkLfsSettings(store, input), opts);
    },

    /** Published versions, newest first (of one path, when given), with their public URLs. */
    async published(actor: Actor, repoPath: string, q: { path?: string | undefined; limit?: number | undefined; before?: string | undefined }) {
      const repo = await repos.resolve(actor, parseRepoPath(repoPath), 'read');
      const limit = Math.min(Math.max(1, q.limit ?? 100), 1000);
      const rows = await listPublications(meta.db, repo.id, { limit, ...(q.path !== undefined && { path: q.path }), ...(q.before !== undefined && { before: q.before }) });
      return rows.map((p) => ({
        id: p.id,
        path: p.path,
        oid: p.oid,
        size: p.size,
        key: p.key,
        versionId: p.versionId!,
        commit: p.commitOid,
        publishedAt: p.publishedAt,
        url: publicUrl(repo.lfsPublicUrl, p.path),
      }));
    },

    /** The repository's publish jobs, oldest first, with their progress. */
    async jobs(actor: Actor, repoPath: string): Promise<JobProgress[]> {
      const repo = await repos.resolve(actor, parseRepoPath(repoPath), 'admin');
      return (await jobsOf(meta.db, repo.id)).slice(-100);
    },
  };
}

export type LfsAdmin = ReturnType<typeof createLfsAdmin>;
