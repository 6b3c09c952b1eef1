/**
 * What every `doctor` check returns, and the slice of the filesystem the checks use. The
 * filesystem is an argument (node:fs/promises in use) so that a test can hand in one whose
 * rename, link, open or fsync misbehaves and see the check fail with a clear detail.
 */
import * as fsp from 'node:fs/promises';

export type CheckStatus = 'ok' | 'failed' | 'skipped';

export interface CheckResult {
  /** Stable, kebab-case: scripts read `--json` by it. */
  name: string;
  status: CheckStatus;
  /** One line for the operator: what was seen, and on failure why it matters. */
  detail: string;
}

export const ok = (name: string, detail: string): CheckResult => ({ name, status: 'ok', detail });
export const failed = (name: string, detail: string): CheckResult => ({ name, status: 'failed', detail });
export const skipped = (name: string, detail: string): CheckResult => ({ name, status: 'skipped', detail });

export interface FileHandleLike {
  sync(): Promise<void>;
  close(): Promise<void>;
}

export interface DoctorFs {
  mkdir(path: string, options: { recursive?: boolean; mode?: number }): Promise<unknown>;
  rm(path: string, options: { recursive: boolean; force: boolean }): Promise<void>;
  writeFile(path: string, data: string | Uint8Array, options?: { flag?: string }): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  readdir(path: string): Promise<string[]>;
  rename(from: string, to: string): Promise<void>;
  link(existing: string, newPath: string): Promise<void>;
  unlink(path: string): Promise<void>;
  stat(path: string): Promise<{ dev: number; ino: number; nlink: number }>;
  open(path: string, flags: string): Promise<FileHandleLike>;
  statfs(path: string): Promise<{ bsize: number; bavail: number; files: number; ffree: number }>;
}

export const nodeFs: DoctorFs = fsp;

/** An error in a few words; a refused connection to a name with several addresses is an AggregateError with no message. */
export function errorText(err: unknown): string {
  const e = err as (Error & { code?: string; errors?: unknown[] }) | undefined;
  if (e?.message) return e.message;
  if (e?.errors?.length) return errorText(e.errors[0]);
  return e?.code ?? String(err);
}

/** `0.8 ms`, `12 ms`, `2.3 s`. */
export function formatMs(ms: number): string {
  if (Math.abs(ms) >= 1000) return `${(ms / 1000).toFixed(1)} s`;
  return Math.abs(ms) < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}
