/** `repo quota` and `owner quota`: show or set size quotas (docs/design/quotas.md). */
import type { Command } from 'commander';
import { systemActor } from '../access/policy.js';
import { parseRepoPath } from '../repos/names.js';
import { parseQuotaValue, type Usage } from '../repos/quotas.js';
import { formatBytes } from '../shared/bytes.js';
import { admin, common } from './program.js';

/** `1.2 GiB used of a 10.0 GiB quota (default)`, or `… used, no quota`. */
export function describeUsage(u: Usage | undefined): string {
  if (!u) return '';
  const used = `${formatBytes(u.usedBytes)} used`;
  if (u.quotaBytes === null) return `${used}, no quota`;
  return `${used} of a ${formatBytes(u.quotaBytes)} quota${u.quotaSource === 'default' ? ' (default)' : ''}`;
}

function detail(u: Usage): string {
  return `git ${formatBytes(u.gitBytes)}, LFS ${formatBytes(u.lfsBytes)}`;
}

const SIZE_HELP = 'a size such as 10GiB or 500MB, none (no limit), or default (the configured default); leave out to show';

export function registerQuotaCommands(program: Command, repo: Command): void {
  common(repo.command('quota <owner/space/repo> [size]').description(`show or set a repository's size quota: ${SIZE_HELP}`)).action(
    admin(async (core, repoPath: string, size?: string) => {
      const where = parseRepoPath(repoPath);
      if (size !== undefined) {
        const u = await core.quotas.setRepoQuota(systemActor, repoPath, parseQuotaValue(size));
        return { text: `${u.repository}: ${describeUsage(u)} (${detail(u)})`, json: u };
      }
      const r = await core.repos.resolve(systemActor, where, 'read');
      const u = (await core.quotas.repoUsages([r.id])).get(r.id)!;
      return { text: `${u.fullName}: ${describeUsage(u)} (${detail(u)})`, json: u };
    }),
  );

  const owner = program.command('owner').description("owners (users and organizations): size quotas of all their repositories");
  common(owner.command('quota <owner> [size]').description(`show or set the size quota of all of an owner's repositories together: ${SIZE_HELP}`)).action(
    admin(async (core, name: string, size?: string) => {
      const u = size !== undefined ? await core.quotas.setOwnerQuota(systemActor, name, parseQuotaValue(size)) : await core.quotas.ownerUsage(systemActor, name);
      return { text: `${u.owner}: ${describeUsage(u)} (${detail(u)})`, json: u };
    }),
  );
}
