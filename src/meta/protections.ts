/** Protected-branch rules of repositories (repos/protections.ts decides what they refuse). */
import type { Db } from './db.js';

export interface ProtectionRule {
  /** A branch name pattern (`main`, `release/*`, `hotfix/**`), without `refs/heads/`. */
  pattern: string;
  allowForcePush: boolean;
  allowDeletion: boolean;
  /** Who may push to matching branches: anyone with write access, or admins only. */
  pushRole: 'write' | 'admin';
  /** Refuse merge commits on matching branches. */
  linearHistory: boolean;
}

export interface ProtectionRow extends ProtectionRule {
  createdAt: string;
  updatedAt: string;
}

export async function listProtections(db: Db, repositoryId: string): Promise<ProtectionRow[]> {
  const rows = await db.selectFrom('branch_protections').selectAll().where('repository_id', '=', repositoryId).orderBy('pattern').execute();
  return rows.map((r) => ({
    pattern: r.pattern,
    allowForcePush: r.allow_force_push === 1,
    allowDeletion: r.allow_deletion === 1,
    pushRole: r.push_role,
    linearHistory: r.linear_history === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }));
}

/** Creates the rule for its pattern, or replaces the one there is. */
export async function upsertProtection(db: Db, repositoryId: string, rule: ProtectionRule, at: string): Promise<void> {
  const values = {
    allow_force_push: rule.allowForcePush ? 1 : 0,
    allow_deletion: rule.allowDeletion ? 1 : 0,
    push_role: rule.pushRole,
    linear_history: rule.linearHistory ? 1 : 0,
    updated_at: at,
  };
  await db
    .insertInto('branch_protections')
    .values({ repository_id: repositoryId, pattern: rule.pattern, created_at: at, ...values })
    .onConflict((oc) => oc.columns(['repository_id', 'pattern']).doUpdateSet(values))
    .execute();
}

/** Whether there was a rule to remove. */
export async function removeProtection(db: Db, repositoryId: string, pattern: string): Promise<boolean> {
  const res = await db.deleteFrom('branch_protections').where('repository_id', '=', repositoryId).where('pattern', '=', pattern).executeTakeFirst();
  return Number(res.numDeletedRows) > 0;
}
