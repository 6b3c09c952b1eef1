/**
 * Offboarding and visibility commands of the admin CLI: disable, enable and delete users,
 * release their LFS locks, list organizations and members, remove members, read the audit
 * log. Kept apart from program.ts (which is long already); program.ts hands over its command
 * groups and its `common`/`admin` wrappers so every command opens the core the same way.
 */
import type { Command } from 'commander';
import type { Core } from '../core.js';
import { systemActor } from '../access/policy.js';
import type { ReleasedLock } from '../access/offboarding.js';
import { invalid } from '../shared/errors.js';

type Output = { text: string | string[]; json: unknown };
/** program.ts's admin(): runs with the core, the positional arguments, then commander's options object. */
type Admin = (run: (core: Core, ...args: any[]) => Promise<Output>) => (...args: unknown[]) => Promise<void>;
type Options = Record<string, unknown>;

export interface CommandKit {
  program: Command;
  user: Command;
  org: Command;
  common: (cmd: Command) => Command;
  admin: Admin;
}

function lockLines(locks: ReleasedLock[]): string[] {
  return locks.map((l) => `  released lock ${l.id} on ${l.path} in ${l.repository}`);
}

/** `details` on one line, `key=value` (values as JSON only when they are not plain). */
function detailText(details: Record<string, unknown>): string {
  return Object.entries(details)
    .map(([k, v]) => `${k}=${typeof v === 'string' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)}`)
    .join(' ');
}

export function registerAccessCommands({ program, user, org, common, admin }: CommandKit): void {
  common(
    user
      .command('disable <name>')
      .description('disable a user: none of their tokens works (git, LFS, API) until enabled again')
      .option('--release-locks', 'also release every Git LFS lock the user holds'),
  ).action(
    admin(async (core, name: string, opts: Options) => {
      const r = await core.offboarding.disable(systemActor, name, { releaseLocks: !!opts['releaseLocks'] });
      return { text: [`disabled user ${r.user.name}; their tokens are refused until \`user enable ${r.user.name}\``, ...lockLines(r.releasedLocks)], json: r };
    }),
  );
  common(user.command('enable <name>').description('enable a disabled user: their tokens work again')).action(
    admin(async (core, name: string) => {
      const u = await core.offboarding.enable(systemActor, name);
      return { text: `enabled user ${u.name}`, json: u };
    }),
  );
  common(
    user
      .command('delete <name>')
      .description('delete a user with their tokens, memberships, LFS locks and empty spaces; refused while they own repositories'),
  ).action(
    admin(async (core, name: string) => {
      const r = await core.offboarding.delete(systemActor, name);
      return { text: `deleted user ${r.user} (${r.id}); the audit log keeps the name`, json: { deleted: r.id, user: r.user } };
    }),
  );

  common(org.command('list').description('list organizations with their member counts')).action(
    admin(async (core) => {
      const list = await core.accounts.listOrgs(systemActor);
      return { text: list.map((o) => `${o.name}\t${o.members} member${o.members === 1 ? '' : 's'}`), json: list };
    }),
  );
  common(org.command('members <org>').description("list an organization's members and their roles")).action(
    admin(async (core, orgName: string) => {
      const list = await core.accounts.listMembers(systemActor, orgName);
      return { text: list.map((m) => `${m.user}\t${m.role}`), json: list };
    }),
  );
  common(org.command('remove-member <org> <user>').description('remove a user from an organization')).action(
    admin(async (core, orgName: string, userName: string) => {
      const r = await core.accounts.removeMember(systemActor, orgName, userName);
      return { text: `removed ${r.user} from ${r.org}`, json: r };
    }),
  );

  const lock = program.command('lock').description('Git LFS locks');
  common(
    lock
      .command('release-all <user>')
      .description("release every Git LFS lock a user holds (for example after disabling them)")
      .option('--repo <owner/space/repo>', 'only in this repository'),
  ).action(
    admin(async (core, userName: string, opts: Options) => {
      const r = await core.offboarding.releaseLocks(systemActor, userName, { repo: opts['repo'] as string | undefined });
      return { text: [`released ${r.released.length} lock(s) of ${r.user}`, ...lockLines(r.released)], json: r };
    }),
  );

  const audit = program.command('audit').description('the audit log');
  common(
    audit
      .command('list')
      .description('audit log entries, newest first')
      .option('--repo <owner/space/repo>', "this repository's entries")
      .option('--actor <user>', "this user's actions (cli: the local command line)")
      .option('--since <time>', 'entries since an ISO-8601 time, or for a duration back from now (2h, 7d)')
      .option('--limit <n>', 'entries per page (default 50, at most 1000)')
      .option('--before <cursor>', 'the next page: the cursor the previous page printed'),
  ).action(
    admin(async (core, opts: Options) => {
      const o = opts as Record<string, string | undefined>;
      const limit = o['limit'] === undefined ? undefined : Number(o['limit']);
      if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw invalid('invalid_limit', `--limit must be a positive integer, not ${o['limit']}`);
      const page = await core.auditTrail.list(systemActor, { repo: o['repo'], actor: o['actor'], since: o['since'], before: o['before'], limit });
      const lines = page.entries.map((e) => `${e.at}\t${e.actor}\t${e.action}\t${e.target}${Object.keys(e.details).length ? `\t${detailText(e.details)}` : ''}`);
      if (page.nextCursor) lines.push(`more: --before ${page.nextCursor}`);
      return { text: lines.length ? lines : 'no audit entries', json: page };
    }),
  );
}
