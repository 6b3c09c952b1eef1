/**
 * OpenSSH public keys as users paste them (`ssh-ed25519 AAAA… laptop`): parsed, checked and
 * fingerprinted the way OpenSSH shows them (`SHA256:` and the unpadded base64 of the SHA-256
 * of the key blob), so `ssh-keygen -lf key.pub` and gitstratum print the same string.
 *
 * Accepted: Ed25519, ECDSA (P-256, P-384, P-521) and RSA of 2048 bits or more. Refused with a
 * reason: DSA (broken since 2015, gone from OpenSSH), short RSA, anything the SSH library
 * cannot use to verify a signature, and text that is not one key.
 */
import { createHash } from 'node:crypto';
import { ssh2 } from './ssh2.js';
import { invalid } from '../shared/errors.js';

export interface PublicKey {
  /** The key's algorithm name, e.g. `ssh-ed25519`. */
  type: string;
  /** The key blob, base64 as in the `.pub` file. */
  blob: string;
  /** `SHA256:…`, as `ssh-keygen -l` prints it. */
  fingerprint: string;
  /** The comment after the key, if any (often user@host). */
  comment: string | null;
  /** RSA: the modulus length. */
  bits?: number;
}

const ACCEPTED = new Set(['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521']);
export const MIN_RSA_BITS = 2048;
/** Longer text is no public key (an 8192-bit RSA key is about 1.4 KB). */
const MAX_TEXT = 16 * 1024;

/** The SHA256 fingerprint of a key blob, as OpenSSH prints it. */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Reads one SSH wire `string` (uint32 length, bytes) at `at`. */
function sshString(buf: Buffer, at: number): { value: Buffer; next: number } | undefined {
  if (at + 4 > buf.length) return undefined;
  const len = buf.readUInt32BE(at);
  if (at + 4 + len > buf.length) return undefined;
  return { value: buf.subarray(at + 4, at + 4 + len), next: at + 4 + len };
}

/** The bit length of an SSH `mpint` (big-endian, maybe a leading zero byte). */
function mpintBits(value: Buffer): number {
  let i = 0;
  while (i < value.length && value[i] === 0) i++;
  if (i === value.length) return 0;
  return (value.length - i - 1) * 8 + (32 - Math.clz32(value[i]!));
}

export function parsePublicKey(text: string): PublicKey {
  if (text.length > MAX_TEXT) throw invalid('invalid_ssh_key', 'not an SSH public key: too long');
  if (/PRIVATE KEY/.test(text)) throw invalid('invalid_ssh_key', 'that is a private key: give the public one (the .pub file)');
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length !== 1) {
    throw invalid('invalid_ssh_key', lines.length === 0 ? 'no SSH public key given' : 'give one SSH public key at a time (one line, as in a .pub file)');
  }
  const line = lines[0]!;
  const [type = '', b64 = '', ...rest] = line.split(/\s+/);
  if (type === 'ssh-dss') throw invalid('weak_ssh_key', 'DSA keys are refused: they are weak and OpenSSH no longer accepts them; use ssh-keygen -t ed25519');
  if (!ACCEPTED.has(type)) {
    throw invalid('invalid_ssh_key', `not a supported SSH public key${type ? ` (type ${JSON.stringify(type.slice(0, 40))})` : ''}: use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa`);
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw invalid('invalid_ssh_key', 'not an SSH public key: the key data is not base64');
  const blob = Buffer.from(b64, 'base64');
  const inner = sshString(blob, 0);
  if (!inner || inner.value.toString('latin1') !== type) throw invalid('invalid_ssh_key', 'not an SSH public key: the key data does not match its type');
  const parsed = ssh2().utils.parseKey(`${type} ${b64}`);
  if (parsed instanceof Error || Array.isArray(parsed)) throw invalid('invalid_ssh_key', `not a usable SSH public key: ${parsed instanceof Error ? parsed.message : 'several keys'}`);
  const key: PublicKey = { type, blob: b64, fingerprint: fingerprintOf(blob), comment: rest.length > 0 ? rest.join(' ').slice(0, 200) : null };
  if (type === 'ssh-rsa') {
    const e = sshString(blob, inner.next);
    const n = e && sshString(blob, e.next);
    key.bits = n ? mpintBits(n.value) : 0;
    if (key.bits < MIN_RSA_BITS) {
      throw invalid('weak_ssh_key', `RSA keys must have at least ${MIN_RSA_BITS} bits; this one has ${key.bits} (use ssh-keygen -t ed25519)`, { bits: key.bits });
    }
  }
  return key;
}
