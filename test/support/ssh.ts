/** What the SSH tests share: a key pair for the OpenSSH client, its options, a server's SSH port. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

export interface Key {
  file: string;
  pub: string;
}

/** A new Ed25519 key pair in `dir`, made by ssh-keygen. */
export async function keygen(dir: string, name: string): Promise<Key> {
  const file = path.join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-N', '', '-t', 'ed25519', '-C', name, '-f', file]);
  return { file, pub: await readFile(`${file}.pub`, 'utf8') };
}

/** ssh's options for a test: this key only, no prompts, no known_hosts. */
export function sshArgs(key: Key, port: number): string[] {
  return ['-i', key.file, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(port)];
}

/** git's environment to reach a server over SSH with `key`. */
export function sshAs(key: Key, port: number): NodeJS.ProcessEnv {
  return { GIT_SSH_COMMAND: `ssh ${sshArgs(key, port).join(' ')}` };
}

/** The SSH port a server started with `--ssh-port 0` chose, from its `ssh listening` log line. */
export function sshPortOf(server: { logs: string[] }): number {
  const listening = server.logs.map((l) => JSON.parse(l) as { msg?: string; port?: number }).find((l) => l.msg === 'ssh listening');
  assert.ok(listening?.port, 'the server logs its SSH port');
  return listening.port;
}
