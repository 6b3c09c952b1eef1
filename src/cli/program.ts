/**
 * The command line: the `serve` and `worker` roles, and the admin commands. Admin
 * commands open the metadata store and call the same services as the REST API, acting as
 * the local operator. Each prints what it did, or JSON with --json.
 */
import { Command, CommanderError, Option } from 'commander';
import { loadConfig, ConfigError } from '../config/load.js';
import { configKeys, envName, type Config } from '../config/schema.js';
import type { Core } from '../core.js';
import { systemActor } from '../access/policy.js';
import type { TokenInfo } from '../access/accounts.js';
import { invalid, isDomainError } from '../shared/errors.js';
import { parseRepoPath } from '../repos/names.js';
import type { Role } from '../meta/schema.js';
import type { RestoredRepository, SnapshotAdminDeps } from '../snapshots/admin.js';
import type { DrillReport } from '../snapshots/drill.js';
import { createProgress } from './progress.js';
import { registerAccessCommands } from './access-commands.js';
import { describeUsage, registerQuotaCommands } from './quota-commands.js';
import { registerDoctorCommand } from './doctor-command.js';
import { registerShardCommands } from './shard-commands.js';
import { registerHookCommands } from './hook-commands.js';
import { registerProtectionCommands } from './protection-commands.js';
import { registerSshCommands } from './ssh-commands.js';
import { registerClusterCommands } from './cluster-commands.js';
import { registerLfsCommands } from './lfs-commands.js';

interface CommonOpts {
  data?: string;
  databaseUrl?: string;
  config?: string;
  json?: boolean;
}

/**
 * A member's role in an organization (`org add-member --role`). Not the `role` setting (a
 * process's part in a cluster): `admin()` keeps it out of the configuration.
 */
const MEMBER_ROLE = 'role in the organization';
const roleOption = () => new Option('--role <role>', MEMBER_ROLE).choices(['read', 'write', 'admin']).makeOptionMandatory();

export function common(cmd: Command): Command {
  return cmd
    .option('--data <dir>', 'data directory (default ./data)')
    .option('--database-url <url>', 'PostgreSQL URL (default: SQLite in the data directory)')
    .option('--config <file>', 'JSON configuration file')
    .option('--json', 'print JSON for scripts');
}

function configFrom(opts: CommonOpts & Record<string, unknown>): Config {
  const { json: _json, ...flags } = opts;
  return loadConfig(flags);
}

/** Opens the core, runs the action, prints its result, closes. */
export function admin<A extends unknown[]>(
  run: (core: Core, ...args: A) => Promise<{ text: string | string[]; json: unknown }>,
  passCommand = false,
) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const opts = cmd.opts<CommonOpts & Record<string, unknown>>();
    const memberRole = cmd.options.some((o) => o.description === MEMBER_ROLE);
    const config = configFrom(memberRole ? { ...opts, role: undefined } : opts);
    const { openCore } = await import('../core.js');
    const core = await openCore(config);
    try {
      const out = await run(core, ...((passCommand ? args : args.slice(0, -1)) as A));
      if (opts.json) process.stdout.write(JSON.stringify(out.json, null, 2) + '\n');
      else process.stdout.write([out.text].flat().join('\n') + '\n');
    } finally {
      await core.close();
    }
  };
}

/** Adds every setting of the schema not already an option, as --kebab-case (commands that need the object store). */
export function withSettings(cmd: Command): Command {
  const named = new Set(cmd.options.map((o) => o.attributeName()));
  for (const key of configKeys) {
    if (named.has(key)) continue;
    cmd.option(`--${key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} <value>`, `setting ${key} (also ${envName(key)})`);
  }
  return cmd;
}

/** Like admin(), with the configured object store and what snapshot operations need. */
function snapshotAdmin<A extends unknown[]>(
  run: (deps: SnapshotAdminDeps & { config: Config }, opts: Record<string, unknown>, ...args: A) => Promise<{ text: string | string[]; json: unknown }>,
) {
  return admin(async (core, ...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const { createObjectStore } = await import('../app.js');
    const { repoDir, repositoryConfig } = await import('../repos/local-host.js');
    const store = await createObjectStore(core.config, core.dataDir);
    try {
      const deps = { meta: core.meta, store, dataDir: core.dataDir, repoPath: (id: string) => repoDir(core.dataDir, id), repoConfig: repositoryConfig(), config: core.config };
      return await run(deps, cmd.opts(), ...(args.slice(0, -1) as A));
    } finally {
      store.destroy?.();
    }
  }, true);
}

function tokenState(t: TokenInfo): string {
  if (t.revokedAt) return 'revoked';
  if (t.expired) return `EXPIRED ${t.expiresAt}`;
  return t.expiresAt ? `expires ${t.expiresAt}` : 'no expiry';
}

function describeRestore(r: RestoredRepository): string[] {
  const from = r.snapshot ? `snapshot ${r.snapshot.id} of ${r.snapshot.createdAt} (chain of ${r.chain.length})` : 'no snapshot (empty repository)';
  const lines = [`restored ${r.repository} from ${from}: ${r.refs} refs, ${r.bytes} bytes, to ${r.target}`];
  if (r.unpersistedPushes.length > 0) {
    lines.push(`warning: ${r.unpersistedPushes.length} acknowledged push(es) after this snapshot are not in it:`);
    for (const p of r.unpersistedPushes) lines.push(`  push at ${p.at}${p.details['request_id'] ? ` (request ${String(p.details['request_id'])})` : ''}`);
  }
  return lines;
}

function describeDrill(r: DrillReport): string[] {
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  const lines = [`dr-drill: ${r.checked} of ${r.repositoriesWithSnapshots} repositories with snapshots checked`];
  for (const x of r.repositories) {
    const what = x.detail ?? `snapshot ${x.snapshot}, ${x.refs} refs, ${mib(x.bytes)} in ${(x.durationMs / 1000).toFixed(1)} s`;
    lines.push(`  ${(x.status === 'mismatch' || x.status === 'failed' ? x.status.toUpperCase() : x.status).padEnd(12)} ${x.repository}: ${what}`);
  }
  const c = r.counts;
  lines.push(
    `${r.passed ? 'passed' : 'FAILED'}: ${c.ok} ok, ${c.dirty} dirty, ${c['no-live-copy']} without a live copy, ${c.mismatch} mismatched, ${c.failed} failed; ` +
      `${mib(r.bytes)} restored at ${mib(r.bytesPerSecond)}/s`,
  );
  return lines;
}

export function buildProgram(): Command {
  const program = new Command('gitstratum')
    .description('A self-hostable Git + Git LFS server')
    .showHelpAfterError()
    .configureOutput({ outputError: (str, write) => write(str) })
    // Usage errors throw instead of exiting, so `run` gives them exit code 2; subcommands
    // created below inherit this.
    .exitOverride();

  const serveCmd = program
    .command('serve')
    .description('start the server (Smart HTTP, REST API, metrics)')
    .option('--data <dir>', 'data directory (default ./data)')
    .option('--host <host>', 'address to listen on (default 127.0.0.1)')
    .option('--port <port>', 'port to listen on (default 8080)')
    .option('--database-url <url>', 'PostgreSQL URL (default: SQLite in the data directory)')
    .option('--config <file>', 'JSON configuration file')
    .option('--tls-cert <file>', 'TLS certificate (PEM), to serve HTTPS without a proxy')
    .option('--tls-key <file>', 'TLS private key (PEM)')
    .option('--trust-proxy <value>', 'trust X-Forwarded-* from: true, a hop count, or addresses/CIDRs')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
    .option('--git-max-processes <n>', 'git processes allowed at once')
    .option('--max-push-bytes <size>', 'largest push accepted: bytes, or with a unit (5GiB, 500MB)');
  // Every other setting of the schema is a flag too: --kebab-case of its key.
  const named = new Set(serveCmd.options.map((o) => o.attributeName()));
  for (const key of configKeys) {
    if (named.has(key)) continue;
    const flag = key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
    serveCmd.option(`--${flag} <value>`, `setting ${key} (also ${envName(key)}; see the README)`);
  }
  serveCmd.action(async (opts: Record<string, unknown>) => {
    const config = loadConfig(opts);
    // The server's module graph (HTTP, S3, LFS) takes a while to load; a bad setting is
    // reported before that, at once.
    const { serve } = await import('../main.js');
    await serve(config);
  });

  // The background jobs without the HTTP server (src/worker-main.ts).
  withSettings(
    program
      .command('worker')
      .description('run the snapshot worker and the scheduled jobs (DR drill, metadata backup) without the HTTP server')
      .option('--data <dir>', 'data directory (default ./data)')
      .option('--database-url <url>', 'PostgreSQL URL (default: SQLite in the data directory)')
      .option('--config <file>', 'JSON configuration file'),
  ).action(async (opts: Record<string, unknown>) => {
    const config = loadConfig(opts);
    const { work } = await import('../worker-main.js');
    await work(config);
  });

  const user = program.command('user').description('manage users');
  common(user.command('create <name>').description('create a user').option('--admin', 'make the user a site administrator')).action(
    admin(async (core, name: string) => {
      const cmd = user.commands.find((c) => c.name() === 'create')!;
      const u = await core.accounts.createUser(systemActor, name, { admin: !!cmd.opts()['admin'] });
      return { text: `created user ${u.name}${u.isAdmin ? ' (site admin)' : ''} (${u.id})`, json: u };
    }),
  );
  common(user.command('list').description('list users')).action(
    admin(async (core) => {
      const users = await core.accounts.listUsers(systemActor);
      return { text: users.map((u) => `${u.name}${u.isAdmin ? ' (site admin)' : ''}${u.disabledAt ? ` (disabled ${u.disabledAt})` : ''}`), json: users };
    }),
  );

  const org = program.command('org').description('manage organizations');
  common(org.command('create <name>').description('create an organization')).action(
    admin(async (core, name: string) => {
      const o = await core.accounts.createOrg(systemActor, name);
      return { text: `created organization ${o.name} (${o.id})`, json: o };
    }),
  );
  common(org.command('add-member <org> <user>').description('add a user to an organization, or change their role').addOption(roleOption())).action(
    admin(async (core, orgName: string, userName: string) => {
      const cmd = org.commands.find((c) => c.name() === 'add-member')!;
      const m = await core.accounts.addMember(systemActor, orgName, userName, cmd.opts()['role'] as Role);
      return { text: `${m.user} is now ${m.role} in ${m.org}`, json: m };
    }),
  );

  registerAccessCommands({ program, user, org, common, admin });

  const space = program.command('space').description('manage spaces');
  common(space.command('create <owner/space>').description('create a space under an owner')).action(
    admin(async (core, spacePath: string) => {
      const s = await core.repos.createSpace(systemActor, spacePath);
      return { text: `created space ${s.owner}/${s.name} (${s.id})`, json: s };
    }),
  );
  common(space.command('list [owner]').description('list spaces')).action(
    admin(async (core, owner?: string) => {
      const list = await core.repos.listSpaces(systemActor, owner);
      return { text: list.map((s) => `${s.ownerName}/${s.name}`), json: list };
    }),
  );

  const repo = program.command('repo').description('manage repositories');
  withSettings(
    common(
      repo
        .command('create <owner/space/repo>')
        .description('create a bare repository')
        .option('--private', 'only members can read it')
        .addOption(new Option('--lfs-layout <layout>', 'where its Git LFS files are kept (README "Readable LFS layout")').choices(['content', 'readable'])),
    ),
  ).action(
    admin(async (core, repoPath: string) => {
      const cmd = repo.commands.find((c) => c.name() === 'create')!;
      const layout = cmd.opts()['lfsLayout'] as 'content' | 'readable' | undefined;
      if (layout === 'readable') {
        const store = await (await import('../app.js')).createObjectStore(core.config, core.dataDir);
        try {
          await (await import('../lfs/admin.js')).requireVersions(store);
        } finally {
          (store as { destroy?(): void }).destroy?.();
        }
      }
      const r = await core.repos.createRepo(systemActor, repoPath, { visibility: cmd.opts()['private'] ? 'private' : 'public', ...(layout && { lfsLayout: layout }) });
      const at = core.repos.location(r);
      return { text: `created ${r.visibility} repository ${r.ownerName}/${r.spaceName}/${r.name} (${r.id}) at ${at}`, json: { ...r, path: at } };
    }),
  );
  common(
    repo
      .command('fork <owner/space/repo> <owner/space/name>')
      .description("fork a repository: a new one with all of the source's refs and objects (local hardlinks), in its fork network")
      .addOption(new Option('--private', 'make the fork private (default: the source’s visibility)').conflicts('public'))
      .addOption(new Option('--public', 'make the fork public (never for a private source)')),
  ).action(
    admin(async (core, from: string, to: string) => {
      const opts = repo.commands.find((c) => c.name() === 'fork')!.opts();
      const visibility = opts['private'] ? 'private' : opts['public'] ? 'public' : undefined;
      const r = await core.repos.forkRepo(systemActor, from, to, { ...(visibility && { visibility }) });
      const at = core.repos.location(r);
      return { text: `forked ${from} to ${r.visibility} repository ${r.ownerName}/${r.spaceName}/${r.name} (${r.id}) at ${at}`, json: { ...r, path: at } };
    }),
  );
  common(repo.command('list [owner[/space]]').description('list repositories')).action(
    admin(async (core, scope?: string) => {
      const [owner, spaceName] = (scope ?? '').split('/');
      const list = await core.repos.listRepos(systemActor, { ...(owner && { owner }), ...(spaceName && { space: spaceName }) });
      const usages = await core.quotas.repoUsages(list.map((r) => r.id));
      return {
        text: list.map((r) => `${r.ownerName}/${r.spaceName}/${r.name}\t${r.visibility}\t${r.id}\t${describeUsage(usages.get(r.id))}`),
        json: list.map((r) => ({ ...r, path: core.repos.location(r), usage: usages.get(r.id) })),
      };
    }),
  );
  common(repo.command('rename <owner/space/repo> <new-name-or-path>').description('rename, or move to OWNER/SPACE/NAME (metadata only)')).action(
    admin(async (core, from: string, to: string) => {
      const r = await core.repos.renameRepo(systemActor, from, to);
      return { text: `renamed ${from} to ${r.ownerName}/${r.spaceName}/${r.name}`, json: r };
    }),
  );
  common(repo.command('delete <owner/space/repo>').description('delete a repository and its data')).action(
    admin(async (core, repoPath: string) => {
      parseRepoPath(repoPath);
      const r = await core.repos.deleteRepo(systemActor, repoPath);
      return { text: `deleted ${r.ownerName}/${r.spaceName}/${r.name} (${r.id})`, json: { deleted: r.id } };
    }),
  );

  common(
    repo
      .command('evict <owner/space/repo>')
      .description('remove a fully persisted repository from local disk now; its next request restores it from its snapshots'),
  ).action(
    admin(async (core, repoPath: string) => {
      const { evictNow } = await import('../snapshots/admin.js');
      const { hookSocketPath } = await import('../git/hooks.js');
      const { repoDir } = await import('../repos/local-host.js');
      const r = await evictNow(
        { meta: core.meta, dataDir: core.dataDir, repoPath: (id) => repoDir(core.dataDir, id), socketPath: hookSocketPath(core.dataDir) },
        repoPath,
      );
      return { text: `evicted ${r.repository} from local disk; snapshot ${r.snapshot} holds it and its next request restores it`, json: r };
    }),
  );

  common(
    repo
      .command('lock-enforcement <owner/space/repo> <on|off>')
      .description('refuse (on, the default) or allow pushes that change files another user has locked with git lfs lock'),
  ).action(
    admin(async (core, repoPath: string, state: string) => {
      if (state !== 'on' && state !== 'off') throw invalid('invalid_argument', `expected on or off, not ${state}`);
      const r = await core.repos.updateRepo(systemActor, repoPath, { enforceLocks: state === 'on' });
      return { text: `lock enforcement on push is ${state} for ${r.ownerName}/${r.spaceName}/${r.name}`, json: { repository: r.id, enforceLocks: r.enforceLocks } };
    }),
  );

  registerQuotaCommands(program, repo);
  registerLfsCommands(program, repo);
  registerProtectionCommands(repo);
  registerShardCommands(program, repo);
  registerClusterCommands(program);
  registerSshCommands(program);
  registerHookCommands(program);

  const token = program.command('token').description('manage access tokens');
  common(
    token
      .command('create <user>')
      .description('create an access token; the token is printed alone on the last line')
      .addOption(new Option('--scope <scope>', 'what the token may do').choices(['read', 'write', 'admin']).makeOptionMandatory())
      .option('--expires <duration>', 'lifetime such as 30d, 12h')
      .option('--name <name>', 'a label for people, such as ci-deploy'),
  ).action(
    admin(async (core, userName: string) => {
      const opts = token.commands.find((c) => c.name() === 'create')!.opts();
      const t = await core.accounts.createToken(systemActor, userName, opts['scope'] as Role, {
        expires: opts['expires'] as string | undefined,
        name: opts['name'] as string | undefined,
      });
      return {
        text: [`created ${t.scope} token ${t.id}${t.name ? ` (${t.name})` : ''} for ${t.user}${t.expiresAt ? `, expires ${t.expiresAt}` : ''}`, t.token],
        json: t,
      };
    }),
  );
  common(token.command('list <user>').description("list a user's tokens (never their secrets)")).action(
    admin(async (core, userName: string) => {
      const list = await core.accounts.listTokens(systemActor, userName);
      return {
        text: list.map((t) => `${t.id}\t${t.scope}\t${tokenState(t)}\tlast used ${t.lastUsedAt ?? 'never'}\t${t.name ?? '-'}`),
        json: list,
      };
    }),
  );
  common(token.command('revoke <id>').description('revoke a token')).action(
    admin(async (core, id: string) => {
      const t = await core.accounts.revokeToken(systemActor, id);
      return { text: `revoked token ${t.id} of ${t.user}`, json: t };
    }),
  );

  // Snapshots and restore (docs/design/snapshots.md). They reach the object store, so every
  // setting is a flag here as it is for serve.
  const snapshot = program.command('snapshot').description('repository snapshots in the object store');
  withSettings(common(snapshot.command('list <owner/space/repo>').description("list a repository's snapshots, oldest first"))).action(
    snapshotAdmin(async (deps, _opts, repoPath: string) => {
      const list = await (await import('../snapshots/admin.js')).listRepoSnapshots(deps, repoPath);
      return { text: list.map((s) => `${s.id}\t${s.kind}\t${s.createdAt}\t${s.objectCount} objects\t${s.byteSize} bytes`), json: list };
    }),
  );
  withSettings(common(snapshot.command('create <owner/space/repo>').description('write a snapshot now').option('--full', 'a full snapshot, not an incremental one'))).action(
    snapshotAdmin(async (deps, opts, repoPath: string) => {
      const s = await (await import('../snapshots/admin.js')).snapshotNow(deps, repoPath, { full: !!opts['full'] });
      return { text: `wrote ${s.kind} snapshot ${s.id} of ${repoPath}: ${s.objectCount} objects, ${s.byteSize} bytes`, json: s };
    }),
  );
  withSettings(
    common(
      snapshot
        .command('compact <owner/space/repo>')
        .description('replace the snapshots up to one (the latest by default) with one full snapshot, retiring those nothing else stands on')
        .option('--at <snapshot>', 'compact up to this snapshot'),
    ),
  ).action(
    snapshotAdmin(async (deps, opts, repoPath: string) => {
      const r = await (await import('../snapshots/admin.js')).compactNow(deps, repoPath, { at: opts['at'] as string | undefined });
      const text =
        r.full.id === r.chosen.id
          ? [`snapshot ${r.chosen.id} of ${repoPath} is already full`]
          : [`compacted ${repoPath} up to snapshot ${r.chosen.id} into full snapshot ${r.full.id}: ${r.full.objectCount} objects, ${r.full.byteSize} bytes`];
      text.push(`retired ${r.deleted.length} snapshot(s); kept ${r.kept.length} that other snapshots stand on; swept ${r.orphans.length} orphan object(s)`);
      return { text, json: r };
    }),
  );
  withSettings(
    common(
      program
        .command('restore [owner/space/repo]')
        .description('rebuild a repository from its snapshots (the latest, or --at/--before); --all rebuilds every repository missing from disk')
        .option('--at <snapshot>', 'restore this snapshot')
        .option('--before <time>', 'restore the last snapshot at or before this ISO-8601 time')
        .option('--to <dir>', 'restore into this new directory instead of the repository’s own')
        .option('--all', 'restore every repository whose directory is missing'),
    ),
  ).action(
    snapshotAdmin(async (deps, opts, repoPath?: string) => {
      if (opts['all']) {
        if (repoPath || opts['at'] || opts['before'] || opts['to']) throw invalid('invalid_argument', '--all takes no repository, --at, --before or --to');
        const progress = createProgress();
        const all = await (await import('../snapshots/admin.js')).restoreAll(deps, { onBytes: (p) => progress.update(p.repository, p) }).finally(progress.finish);
        const summary = `${all.restored.length} restored, ${all.present.length} already present${all.evicted.length > 0 ? `, ${all.evicted.length} evicted (restored on their next request)` : ''}`;
        return { text: [...all.restored.flatMap(describeRestore), summary], json: all };
      }
      if (!repoPath) throw invalid('invalid_argument', 'name a repository (OWNER/SPACE/REPO) or pass --all');
      if (opts['at'] && opts['before']) throw invalid('invalid_argument', '--at and --before exclude each other');
      const progress = createProgress();
      const r = await (await import('../snapshots/admin.js'))
        .restoreOne(deps, repoPath, {
          at: opts['at'] as string | undefined,
          before: opts['before'] as string | undefined,
          to: opts['to'] as string | undefined,
          onBytes: (p) => progress.update(p.repository, p),
        })
        .finally(progress.finish);
      return { text: describeRestore(r), json: r };
    }),
  );

  withSettings(
    common(
      program
        .command('dr-drill')
        .description('restore repositories from their latest snapshots into a scratch directory and compare their refs with the snapshots and the live repositories; exits 1 on any mismatch or failure')
        .option('--sample <n>', 'check this many repositories, chosen at random (default: all that have snapshots)'),
    ),
  ).action(
    snapshotAdmin(async (deps, opts) => {
      const raw = opts['sample'] ?? deps.config.drDrillSample;
      const sample = raw === undefined ? undefined : Number(raw);
      if (sample !== undefined && !(Number.isInteger(sample) && sample > 0)) throw invalid('invalid_argument', `--sample must be a positive integer, not ${String(raw)}`);
      const { runDrill } = await import('../snapshots/drill.js');
      const report = await runDrill(deps, { sample });
      if (!report.passed) process.exitCode = 1;
      return { text: describeDrill(report), json: report };
    }),
  );

  // Metadata backups (SQLite only; src/snapshots/meta-backup.ts).
  withSettings(common(program.command('backup-meta').description('back the SQLite metadata database up to the object store now (backups/meta/)'))).action(
    snapshotAdmin(async (deps) => {
      const { backupMeta } = await import('../snapshots/meta-backup.js');
      const b = await backupMeta(deps, { keep: deps.config.metaBackupKeep });
      return { text: `backed up metadata to ${b.key} (${b.size} bytes)${b.pruned ? `; removed ${b.pruned} older backup(s)` : ''}`, json: b };
    }),
  );
  withSettings(
    common(
      program
        .command('restore-meta')
        .description('bring the SQLite metadata database back from a backup (the newest, or --at); the server must be stopped')
        .option('--at <timestamp>', 'a backup timestamp as --list shows it, or an ISO-8601 time (the newest backup at or before it)')
        .option('--list', 'list the backups instead')
        .option('--force', 'restore even though meta.sqlite exists (it is kept aside as meta.sqlite.before-restore-…)'),
    ),
  ).action(async (opts: CommonOpts & Record<string, unknown>) => {
    // Not admin(): opening the core would create (and migrate) the very database being restored.
    const config = configFrom(opts);
    const { listMetaBackups, restoreMeta, postgresRestoreMessage } = await import('../snapshots/meta-backup.js');
    if (config.databaseUrl) throw invalid('metadata_in_postgres', postgresRestoreMessage);
    const path = await import('node:path');
    const dataDir = path.resolve(config.data);
    const store = await (await import('../app.js')).createObjectStore(config, dataDir);
    let out: { text: string | string[]; json: unknown };
    try {
      if (opts['list']) {
        const all = await listMetaBackups(store);
        out = { text: all.length ? all.map((b) => `${b.stamp}\t${b.at}\t${b.size} bytes`) : 'no metadata backups', json: all };
      } else {
        const r = await restoreMeta({ store, dataDir }, { at: opts['at'] as string | undefined, force: !!opts['force'] });
        const aside = r.setAside.length ? `; the previous database is kept at ${r.setAside[0]}` : '';
        out = { text: `restored metadata backup ${r.backup.stamp} (${r.backup.at}) to ${r.target}${aside}`, json: r };
      }
    } finally {
      store.destroy?.();
    }
    process.stdout.write((opts.json ? JSON.stringify(out.json, null, 2) : [out.text].flat().join('\n')) + '\n');
  });

  // The preflight of this node's filesystem, database and object store (src/ops/doctor.ts).
  registerDoctorCommand(program);

  return program;
}

export async function run(argv: string[]): Promise<void> {
  // Everything this process and the git it spawns create is private to the server's user:
  // repositories, meta.sqlite, LFS objects, backups, the cache (issue 9: all were readable by
  // every local user). The mode git would take from core.sharedRepository is left unset.
  process.umask(0o077);
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed the message (and help); 0 for --help and --version.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
    } else if (isDomainError(err)) {
      process.stderr.write(`gitstratum: ${err.message}\n`);
      process.exitCode = err.kind === 'invalid' ? 2 : 1;
    } else if (err instanceof ConfigError) {
      process.stderr.write(`gitstratum: configuration error: ${err.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`gitstratum: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  }
}
