/** `repo protect|unprotect|protections`: protected branches (issue 13; repos/protections.ts). */
import { Option, type Command } from 'commander';
import { systemActor } from '../access/policy.js';
import type { ProtectionRule } from '../repos/protections.js';
import { admin, common } from './program.js';

function describe(r: ProtectionRule): string {
  const rules = [
    r.allowForcePush ? 'force pushes allowed' : 'no force pushes',
    r.allowDeletion ? 'deletion allowed' : 'no deletion',
    r.pushRole === 'admin' ? 'pushes by admins only' : 'pushes by writers',
    ...(r.linearHistory ? ['linear history'] : []),
  ];
  return `${r.pattern}\t${rules.join(', ')}`;
}

export function registerProtectionCommands(repo: Command): void {
  common(
    repo
      .command('protect <owner/space/repo> <pattern>')
      .description('protect the branches matching PATTERN (main, release/*): no force push and no deletion unless allowed, and the rules chosen; replaces the rule for PATTERN')
      .option('--allow-force-push', 'allow pushes that are not fast-forwards')
      .option('--allow-deletion', 'allow deleting matching branches')
      .addOption(new Option('--push-role <role>', 'who may push: write (anyone with write access) or admin (repository administrators)').choices(['write', 'admin']).default('write'))
      .option('--linear-history', 'refuse merge commits on matching branches'),
  ).action(
    admin(async (core, repoPath: string, pattern: string) => {
      const opts = repo.commands.find((c) => c.name() === 'protect')!.opts();
      const rule = await core.protections.protect(systemActor, repoPath, {
        pattern,
        allowForcePush: Boolean(opts['allowForcePush']),
        allowDeletion: Boolean(opts['allowDeletion']),
        pushRole: opts['pushRole'] as 'write' | 'admin',
        linearHistory: Boolean(opts['linearHistory']),
      });
      return { text: `protected ${repoPath}: ${describe(rule)}`, json: rule };
    }),
  );
  common(repo.command('unprotect <owner/space/repo> <pattern>').description('remove the protection rule for PATTERN')).action(
    admin(async (core, repoPath: string, pattern: string) => {
      await core.protections.unprotect(systemActor, repoPath, pattern);
      return { text: `removed the protection rule for ${pattern} from ${repoPath}`, json: { repository: repoPath, pattern } };
    }),
  );
  common(repo.command('protections <owner/space/repo>').description("list a repository's protection rules")).action(
    admin(async (core, repoPath: string) => {
      const rules = await core.protections.list(systemActor, repoPath);
      return { text: rules.length ? rules.map(describe) : `${repoPath} has no protection rules`, json: rules };
    }),
  );
}
