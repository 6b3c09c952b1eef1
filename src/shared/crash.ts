/**
 * Named crash points for tests (docs/design/snapshots.md, "Crash recovery"): with
 * GITSTRATUM_TEST_CRASH_AT=<name> in its environment, the process kills itself with SIGKILL
 * when it reaches that point, so a test can restart it and check what the crash left. The
 * pattern of Gitaly's transaction manager tests: the crash happens at a known step, not at a
 * random moment, so each step's recovery is tested every run.
 *
 * Unset (always in production) a crash point costs one environment lookup, made once.
 */
export const CRASH_POINTS = [
  /** pre-receive: the pack is unpacked (in quarantine), nothing recorded, no ref changed yet. */
  'receive-after-unpack',
  /** post-receive starts: git has committed the ref updates. */
  'receive-after-ref-commit',
  /** post-receive, just before the push-end event is written. */
  'receive-before-push-end',
  /** post-receive, just after the push-end event is written. */
  'receive-after-push-end',
  /** A snapshot object is in the store; its row is not written. */
  'snapshot-after-upload',
  /** Compaction recorded its new full snapshot; the chain it replaces is not retired. */
  'compaction-after-full',
  /** A maintenance repack is running (its process group dies with the server). */
  'maintenance-mid-repack',
  /** A restore has installed the first pack into its scratch repository. */
  'restore-mid-install',
  /** An LFS publish job copied a file to its readable key; the copy is not recorded yet. */
  'lfs-publish-after-copy',
] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

const armed = process.env['GITSTRATUM_TEST_CRASH_AT'];

/** True when the process will die at `point` (to prepare what must die with it). */
export function crashArmed(point: CrashPoint): boolean {
  return armed === point;
}

/**
 * Dies here, at once and without cleanup, when the test environment names this point.
 * `alsoKill` runs first: children that would die with the server on a real machine crash (a
 * process group of ours, killed with the service's cgroup) are killed with it.
 */
export function crashPoint(point: CrashPoint, alsoKill?: () => void): void {
  if (armed !== point) return;
  alsoKill?.();
  process.kill(process.pid, 'SIGKILL');
}

/**
 * Named pause points, the same way: with GITSTRATUM_TEST_PAUSE_AT=<name>, the process stops
 * itself with SIGSTOP the first time it reaches that point, as a machine that freezes (a long GC,
 * a VM paused by its host) stops a server mid-step. A test then lets its lease run out and
 * sends SIGCONT. Once only, so the process works normally after it resumes.
 */
export const PAUSE_POINTS = [
  /** A storage node's reference-transaction `prepared`: the push's objects are in, its refs not committed. */
  'receive-before-ref-commit',
  /** A move's copy on the target shard's writer, before it fetches from the source. */
  'move-copy',
  /** A move's quiesce on the source shard's writer: pushes are paused, its refs not reported yet. */
  'move-quiesce',
] as const;
export type PausePoint = (typeof PAUSE_POINTS)[number];

let pauseArmed = process.env['GITSTRATUM_TEST_PAUSE_AT'];

export function pausePoint(point: PausePoint): void {
  if (pauseArmed !== point) return;
  pauseArmed = undefined;
  process.kill(process.pid, 'SIGSTOP');
}
