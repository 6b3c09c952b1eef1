/** Whether a process with this id runs on this host (EPERM: it does, under another user). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A scratch directory name prefix that says which process uses it (`restore-<id>-pid<pid>-`),
 * so crash recovery can remove the scratch of a dead process at once, whatever its age.
 */
export function scratchPrefix(what: string): string {
  return `${what}-pid${process.pid}-`;
}

/** The process a scratchPrefix() name belongs to, if it has one. */
export function scratchOwner(name: string): number | undefined {
  const m = /-pid(\d+)-/.exec(name);
  return m ? Number(m[1]) : undefined;
}
