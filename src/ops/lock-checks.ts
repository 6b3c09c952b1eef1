/**
 * Locking between two processes, on the shard's filesystem. Node has no flock or fcntl API,
 * so the other process is a child: a tiny `node` script, or `flock(1)` from util-linux.
 *
 * - `lockfile` (required): git's own locking (lockfile.c). A writer creates `x.lock` with
 *   O_CREAT|O_EXCL, then commits it by rename or rolls it back by unlink; of two processes
 *   exactly one may create it. A filesystem that does not honour O_EXCL (NFSv2, some FUSE
 *   mounts) lets two pushes update one ref at once.
 * - `flock` (when flock(1) is installed): flock(2) advisory locks, which operators' scripts
 *   around a shard (backups, cron jobs) commonly take. Skipped, with the reason, without it.
 *
 * Each check holds the lock in a child, shows that this process (or a second child) cannot
 * take it while it is held, has the child release it, and shows it can be taken then.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { errorText, failed, ok, skipped, type CheckResult, type DoctorFs } from './check.js';

/** Longest wait for a child's answer: a lock on a healthy filesystem takes milliseconds. */
const ANSWER_MS = 10_000;

/**
 * The lock holder: creates the file given as its argument exclusively, says `held`, and on
 * the end of its stdin removes the file (git's rollback), says `released` and exits.
 */
const LOCKFILE_HOLDER = `
const fs = require('node:fs');
const file = process.argv[1];
let fd;
try { fd = fs.openSync(file, 'wx'); } catch (err) { process.stdout.write('busy ' + err.code + '\\n'); process.exit(3); }
process.stdout.write('held\\n');
process.stdin.resume();
process.stdin.on('end', () => { fs.closeSync(fd); fs.unlinkSync(file); process.stdout.write('released\\n'); });
`;

/** A child whose stdout is read line by line, waited for with a bound. */
class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<number | null>;
  private readonly lines: string[] = [];
  private waiting: ((line: string | undefined) => void) | undefined;
  private ended = false;
  stderr = '';

  constructor(command: string, args: string[]) {
    this.process = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.process.on('error', (err) => {
        this.stderr += errorText(err);
        resolve(null);
      });
      this.process.on('close', (code) => resolve(code));
    });
    this.process.stdin!.on('error', () => {});
    this.process.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    const reader = createInterface({ input: this.process.stdout! });
    reader.on('line', (line) => {
      if (this.waiting) this.take(line);
      else this.lines.push(line);
    });
    reader.on('close', () => {
      this.ended = true;
      this.take(undefined);
    });
  }

  private take(line: string | undefined): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.(line);
  }

  /** The next line of output; undefined when the child closed its output first. */
  nextLine(): Promise<string | undefined> {
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`no answer from ${path.basename(String(this.process.spawnfile))} within ${ANSWER_MS / 1000} s`));
      }, ANSWER_MS);
      this.waiting = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  }

  /** What the child said on stderr, or its exit code. */
  async why(): Promise<string> {
    const code = await Promise.race([this.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 1000).unref())]);
    return this.stderr.trim() || (typeof code === 'string' ? code : `exit code ${code}`);
  }

  /** Ends the child whatever state it is in, and waits for it. */
  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGKILL');
    await this.exited;
  }
}

async function run(command: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = new Child(command, args);
  child.process.stdin!.end();
  const timer = setTimeout(() => child.process.kill('SIGKILL'), ANSWER_MS);
  const code = await child.exited;
  clearTimeout(timer);
  return { code, stderr: child.stderr.trim() };
}

/** O_EXCL lockfiles between this process and a `node` child (git's locking). */
export async function checkLockfile(fs: DoctorFs, dir: string, nodePath: string): Promise<CheckResult> {
  const name = 'lockfile';
  const lock = path.join(dir, 'x.lock');
  const holder = new Child(nodePath, ['-e', LOCKFILE_HOLDER, lock]);
  try {
    const said = await holder.nextLine();
    if (said !== 'held') return failed(name, `another process could not create a free x.lock: ${said ?? (await holder.why())}`);

    try {
      const handle = await fs.open(lock, 'wx');
      await handle.close();
      return failed(name, 'two processes both created x.lock with O_CREAT|O_EXCL: the filesystem does not honour O_EXCL, so git ref locks would not exclude each other');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return failed(name, `creating x.lock held by another process: ${errorText(err)} (expected EEXIST)`);
    }

    holder.process.stdin!.end();
    const released = await holder.nextLine();
    if (released !== 'released') return failed(name, `the other process could not remove x.lock: ${released ?? (await holder.why())}`);
    await holder.exited;

    try {
      const handle = await fs.open(lock, 'wx');
      await handle.close();
      await fs.unlink(lock);
    } catch (err) {
      return failed(name, `x.lock could not be created after its holder removed it: ${errorText(err)}`);
    }
    return ok(name, 'x.lock created with O_EXCL by one process was refused to another (EEXIST), and taken once released');
  } catch (err) {
    return failed(name, errorText(err));
  } finally {
    await holder.stop();
  }
}

/** Exit code flock(1) is told to use when the lock is taken (`--conflict-exit-code`). */
const CONFLICT = 75;

/** flock(2) between two flock(1) processes; skipped when flock(1) is not installed. */
export async function checkFlock(dir: string, flockPath: string | undefined): Promise<CheckResult> {
  const name = 'flock';
  if (!flockPath) return skipped(name, "flock(1) is not installed (util-linux); git's own locking is the lockfile check");
  const lock = path.join(dir, 'flock');
  const tryLock = () => run(flockPath, ['--exclusive', '--nonblock', '--conflict-exit-code', String(CONFLICT), lock, 'true']);
  // flock(1) takes the lock, then runs cat, which echoes a line back once the lock is held
  // and exits (releasing it) at the end of its stdin.
  const holder = new Child(flockPath, ['--exclusive', '--nonblock', '--conflict-exit-code', String(CONFLICT), lock, 'cat']);
  try {
    holder.process.stdin!.write('held\n');
    const said = await holder.nextLine();
    if (said !== 'held') return failed(name, `flock(1) could not take a free lock: ${await holder.why()}`);

    const second = await tryLock();
    if (second.code === 0) return failed(name, 'a second process took the flock while another process held it');
    if (second.code !== CONFLICT) return failed(name, `flock(1) on a held lock: ${second.stderr || `exit code ${second.code}`}`);

    holder.process.stdin!.end();
    const code = await holder.exited;
    if (code !== 0) return failed(name, `the holding flock(1) failed: ${await holder.why()}`);

    const third = await tryLock();
    if (third.code === CONFLICT) return failed(name, 'the flock was still held after its holder exited');
    if (third.code !== 0) return failed(name, `flock(1) on a released lock: ${third.stderr || `exit code ${third.code}`}`);
    return ok(name, 'a flock held by one process was refused to another, and taken once released');
  } catch (err) {
    return failed(name, errorText(err));
  } finally {
    await holder.stop();
  }
}
