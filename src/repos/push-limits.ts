/**
 * The hook side of quotas and the total-refs cap (repos/quotas.ts decides): pre-receive
 * refuses a push over a limit with a message git shows as `remote:` lines; post-receive and
 * maintenance measure the repository's size again. Kept apart from app.ts so that wiring it
 * is one line per hook.
 */
import { hookRepoId, parseRefLines, type HookAnswer, type HookCall } from '../git/hooks.js';
import type { Logger } from '../shared/log.js';
import type { Quotas } from './quotas.js';

export function pushLimitHooks(quotas: Quotas, deps: { repoPath: (repoId: string) => string; log: Logger }) {
  /** Measures and stores the repository's git bytes; a failure is logged, never thrown. */
  async function measure(repoId: string, repoPath: string = deps.repoPath(repoId)): Promise<void> {
    try {
      await quotas.refreshGitBytes(repoId, repoPath);
    } catch (err) {
      deps.log.warn({ err, repo_id: repoId }, 'repository size not measured');
    }
  }

  return {
    measure,

    async preReceive(call: HookCall): Promise<HookAnswer> {
      const repoId = hookRepoId(call);
      if (!repoId) return { code: 0 };
      const refusal = await quotas.pushRefusal(
        { id: repoId, path: deps.repoPath(repoId) },
        parseRefLines(call.stdin),
        call.env['GIT_QUARANTINE_PATH'] || undefined,
      );
      return refusal ? { code: 1, message: refusal } : { code: 0 };
    },

    async postReceive(call: HookCall): Promise<HookAnswer> {
      const repoId = hookRepoId(call);
      if (repoId) await measure(repoId);
      return { code: 0 };
    },
  };
}
