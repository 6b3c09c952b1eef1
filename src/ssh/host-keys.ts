/**
 * The SSH server's host keys: an Ed25519 and an RSA key, made on the first start that needs
 * them and kept private in <data>/ssh/ (0700, files 0600), as OpenSSH keeps its own in
 * /etc/ssh. Clients pin them on first contact, so they never change by themselves: losing
 * them (a new data directory) makes every client warn, which is why `ssh host-keys` and the
 * start log print their fingerprints, for users to check.
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ssh2 } from './ssh2.js';
import { fingerprintOf } from './public-key.js';

export interface HostKey {
  type: string;
  /** The private key, as ssh2 reads it (OpenSSH format). */
  private: string;
  /** The public key as a known_hosts entry takes it: `type base64`. */
  public: string;
  /** `SHA256:…`, as ssh-keygen -l and the client's first-contact question show it. */
  fingerprint: string;
}

const KINDS = [
  { type: 'ssh-ed25519', file: 'ssh_host_ed25519_key', make: () => ssh2().utils.generateKeyPairSync('ed25519') },
  { type: 'ssh-rsa', file: 'ssh_host_rsa_key', make: () => ssh2().utils.generateKeyPairSync('rsa', { bits: 3072 }) },
] as const;

function describe(type: string, priv: string, pub: string): HostKey {
  const blob = Buffer.from(pub.trim().split(/\s+/)[1] ?? '', 'base64');
  return { type, private: priv, public: `${type} ${blob.toString('base64')}`, fingerprint: fingerprintOf(blob) };
}

/** The data directory's SSH folder. */
export function sshDir(dataDir: string): string {
  return path.join(dataDir, 'ssh');
}

/** Reads the host keys, making the missing ones when `create` (the server's start). */
export async function loadHostKeys(dataDir: string, create: boolean): Promise<HostKey[]> {
  const dir = sshDir(dataDir);
  if (create) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
  }
  const keys: HostKey[] = [];
  for (const kind of KINDS) {
    const file = path.join(dir, kind.file);
    const existing = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (existing !== undefined) {
      const pub = await readFile(`${file}.pub`, 'utf8');
      keys.push(describe(kind.type, existing, pub));
      continue;
    }
    if (!create) continue;
    const made = kind.make();
    // `wx`: two processes starting on one data directory never overwrite each other's key.
    await writeFile(file, made.private, { mode: 0o600, flag: 'wx' });
    await writeFile(`${file}.pub`, `${made.public}\n`, { mode: 0o600, flag: 'wx' });
    keys.push(describe(kind.type, made.private, made.public));
  }
  return keys;
}
