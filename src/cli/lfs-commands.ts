/**
 * The readable LFS layout and LFS garbage collection on the command line (README "Readable LFS
 * layout", "LFS garbage collection"): `repo lfs-layout`, `lfs relayout`, `lfs published`,
 * `lfs jobs`, `lfs gc`. They open the configured object store, as the server does.
 */
import { Option, type Command } from 'commander';
import { systemActor } from '../access/policy.js';
import type { Core } from '../core.js';
import { parseSeconds } from '../config/units.js';
import { invalid } from '../shared/errors.js';
import { formatBytes } from '../shared/bytes.js';
import { createLogger } from '../shared/log.js';
import type { ObjectStore } from '../storage/object-store.js';
import { admin, common, withSettings } from './program.js';
import { createProgress } from './progress.js';

/** Like admin(), with the configured object store (closed after). */
function withStore<A extends unknown[]>(run: (core: Core, store: ObjectStore, opts: Record<string, unknown>, ...args: A) => Promise<{ text: string | string[]; json: unknown }>) {
  return admin(async (core, ...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const { createObjectStore } = await import('../app.js');
    const store = await createObjectStore(core.config, core.dataDir);
    try {
      return await run(core, store, cmd.opts(), ...(args.slice(0, -1) as A));
    } finally {
      (store as { destroy?(): void }).destroy?.();
    }
  }, true);
}

async function publishDeps(core: Core, store: ObjectStore) {
  const { repoDir } = await import('../repos/local-host.js');
  return { meta: core.meta, store, prefix: core.config.lfsReadablePrefix, repoPath: (id: string) => repoDir(core.dataDir, id), log: createLogger('warn'), repos: core.repos };
}

function describeSettings(r: { ownerName: string; spaceName: string; name: string; lfsLayout: string; lfsPublishRefs: string[] | null; lfsPublicUrl: string | null; defaultBranch: string }): string {
  const refs = r.lfsPublishRefs?.join(', ') ?? `refs/heads/${r.defaultBranch} (the default branch)`;
  return `${r.ownerName}/${r.spaceName}/${r.name}: LFS layout ${r.lfsLayout}; published refs ${refs}; public base URL ${r.lfsPublicUrl ?? 'none'}`;
}

export function registerLfsCommands(program: Command, repo: Command): void {
  withSettings(
    common(
      repo
        .command('lfs-layout <owner/space/repo> [layout]')
        .description('show or set where the repository keeps its Git LFS files: content (content-addressed, the default) or readable (under their paths, in a store with versioning; its published history is published in the background)')
        .option('--publish-refs <patterns>', 'comma-separated refs whose pushes publish (main, release/*, refs/tags/v*); "default": the default branch')
        .option('--public-url <url>', 'base URL of the published tree (a CDN in front of the bucket); "none" to remove'),
    ),
  ).action(
    withStore(async (core, store, opts, repoPath: string, layout?: string) => {
      if (layout !== undefined && layout !== 'content' && layout !== 'readable') throw invalid('invalid_argument', `expected content or readable, not ${layout}`);
      const refs = opts['publishRefs'] as string | undefined;
      const url = opts['publicUrl'] as string | undefined;
      const input = {
        ...(layout !== undefined && { lfsLayout: layout as 'content' | 'readable' }),
        ...(refs !== undefined && { lfsPublishRefs: refs === 'default' ? null : refs.split(',').map((p) => p.trim()).filter(Boolean) }),
        ...(url !== undefined && { lfsPublicUrl: url === 'none' ? null : url }),
      };
      const { createLfsAdmin } = await import('../lfs/admin.js');
      const r =
        Object.keys(input).length > 0
          ? await createLfsAdmin({ meta: core.meta, repos: core.repos, store }).updateSettings(systemActor, repoPath, input)
          : await core.repos.resolve(systemActor, (await import('../repos/names.js')).parseRepoPath(repoPath), 'read');
      return { text: describeSettings(r), json: { repository: r.id, lfsLayout: r.lfsLayout, lfsPublishRefs: r.lfsPublishRefs, lfsPublicUrl: r.lfsPublicUrl } };
    }),
  );

  const lfs = program.command('lfs').description('Git LFS storage: the readable layout and garbage collection');
  withSettings(
    common(
      lfs
        .command('relayout <owner/space/repo>')
        .description('convert a repository to the readable layout (publish its files under their paths) or back to content; resumable, with progress')
        .addOption(new Option('--to <layout>', 'the layout to convert to').choices(['readable', 'content']).makeOptionMandatory())
        .option('--dry-run', 'print what would be written, and write nothing'),
    ),
  ).action(
    withStore(async (core, store, opts, repoPath: string) => {
      const { relayout } = await import('../lfs/relayout.js');
      const progress = createProgress();
      const abort = new AbortController();
      const stop = () => abort.abort(new Error('interrupted; run the command again to resume'));
      process.once('SIGINT', stop);
      try {
        const r = await relayout(await publishDeps(core, store), systemActor, repoPath, opts['to'] as 'readable' | 'content', {
          dryRun: opts['dryRun'] === true,
          signal: abort.signal,
          progress: (p) => progress.update(p.what, { bytes: p.bytes, totalBytes: p.totalBytes }),
        });
        progress.finish();
        const verb = r.to === 'readable' ? 'published' : 'restored as content-addressed copies';
        const lines = r.dryRun ? [...r.plan, `dry run: would write ${r.files} files (${formatBytes(r.bytes)})${r.to === 'content' ? ` and delete ${r.versionsDeleted} published versions` : ''}; ${r.unchanged} already in place`] : [];
        if (!r.dryRun) {
          lines.push(`${r.repository}: ${r.files} files ${verb} (${formatBytes(r.bytes)}), ${r.unchanged} already in place${r.to === 'content' ? `, ${r.versionsDeleted} published versions deleted` : ''}; LFS layout now ${r.to}`);
        }
        for (const s of r.skipped.slice(0, 50)) lines.push(`skipped ${s.path}: ${s.reason}`);
        return { text: lines, json: r };
      } finally {
        process.off('SIGINT', stop);
      }
    }),
  );

  withSettings(
    common(
    lfs
      .command('published <owner/space/repo>')
      .description('list published LFS files (readable layout), newest first, with their storage keys, version ids and public URLs')
      .option('--path <path>', 'only the versions of this path')
      .option('--limit <n>', 'at most this many (default 100)'),
    ),
  ).action(
    withStore(async (core, store, opts, repoPath: string) => {
      const { createLfsAdmin } = await import('../lfs/admin.js');
      const rows = await createLfsAdmin({ meta: core.meta, repos: core.repos, store }).published(systemActor, repoPath, {
        path: opts['path'] as string | undefined,
        limit: opts['limit'] === undefined ? undefined : Number(opts['limit']),
      });
      return { text: rows.map((p) => `${p.path}\t${p.oid.slice(0, 12)}\t${formatBytes(p.size)}\t${p.key}\t${p.versionId}\t${p.commit.slice(0, 12)}\t${p.url ?? ''}`), json: rows };
    }),
  );

  withSettings(common(lfs.command('jobs <owner/space/repo>').description("the repository's LFS publish jobs and their progress"))).action(
    withStore(async (core, store, _opts, repoPath: string) => {
      const { createLfsAdmin } = await import('../lfs/admin.js');
      const jobs = await createLfsAdmin({ meta: core.meta, repos: core.repos, store }).jobs(systemActor, repoPath);
      return { text: jobs.map((j) => `${j.id}\t${j.kind}\t${j.ref}\t${j.state}\t${j.filesDone}/${j.filesTotal ?? '?'} files\t${formatBytes(j.bytesDone)}${j.error ? `\t${j.error}` : ''}`), json: jobs };
    }),
  );

  withSettings(
    common(
      lfs
        .command('gc')
        .description('delete LFS objects (and published versions) no ref of any repository reaches, older than the grace period; abort multipart uploads older than a day')
        .option('--dry-run', 'report what would be deleted, and delete nothing')
        .option('--grace <duration>', 'keep objects uploaded or named by a batch within this long (default: lfsGcGraceSeconds, 7d)'),
    ),
  ).action(
    withStore(async (core, store, opts) => {
      if (core.config.role !== 'all') throw invalid('invalid_argument', 'lfs gc reads every repository from this disk: run it on a single-node installation (role all)');
      const grace = opts['grace'] === undefined ? core.config.lfsGcGraceSeconds : parseSeconds(String(opts['grace']));
      if (grace === undefined) throw invalid('invalid_argument', `--grace expects a duration such as 7d, 12h or 3600 (seconds), not ${String(opts['grace'])}`);
      const { collectGarbage } = await import('../lfs/gc.js');
      const d = await publishDeps(core, store);
      const r = await collectGarbage(d, { dryRun: opts['dryRun'] === true, graceMs: grace * 1000 });
      const verb = r.dryRun ? 'would delete' : 'deleted';
      const lines = [
        `${r.objects.total} LFS objects in ${r.repositories} repositories: ${r.objects.reachable} reachable, ${r.objects.recent} within the grace period, ${r.objects.locked} locked`,
        `${verb} ${r.objects.deleted} objects, ${r.versions.deleted + r.versions.orphansDeleted} published versions (${r.versions.orphansDeleted} not recorded), ${r.unlinkedDeleted} objects no repository links, ${formatBytes(r.bytes.deleted)} in all${r.dryRun ? '' : `; ${r.multipartAborted} stale multipart uploads aborted`}`,
        `${r.dryRun ? 'would remove' : 'removed'} ${r.contentCopiesRemoved} content-addressed copies of objects every repository holding them has published`,
      ];
      if (r.unreadable.length > 0) lines.push(`kept every object of ${r.unreadable.length} repositories whose history could not be read: ${r.unreadable.slice(0, 10).join(', ')}`);
      return { text: lines, json: r };
    }),
  );
}
