/**
 * Public keys made by the real ssh-keygen: accepted types fingerprint exactly as OpenSSH
 * prints them; weak, private, malformed and multiple keys are refused with a reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parsePublicKey } from './public-key.js';

async function keygen(dir: string, name: string, args: string[]): Promise<{ pub: string; priv: string; fingerprint: string }> {
  const file = path.join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-N', '', '-C', `${name}@test`, '-f', file, ...args]);
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
  return { pub: await readFile(`${file}.pub`, 'utf8'), priv: await readFile(file, 'utf8'), fingerprint };
}

test('keys ssh-keygen makes are accepted and fingerprinted as ssh-keygen -l prints them', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-keys-'));
  try {
    for (const [name, args, type] of [
      ['ed', ['-t', 'ed25519'], 'ssh-ed25519'],
      ['ec', ['-t', 'ecdsa', '-b', '384'], 'ecdsa-sha2-nistp384'],
      ['rsa', ['-t', 'rsa', '-b', '2048'], 'ssh-rsa'],
    ] as const) {
      const made = await keygen(dir, name, [...args]);
      const key = parsePublicKey(made.pub);
      assert.equal(key.type, type);
      assert.equal(key.fingerprint, made.fingerprint, name);
      assert.equal(key.comment, `${name}@test`);
      if (type === 'ssh-rsa') assert.equal(key.bits, 2048);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('weak, private, malformed and several keys are refused, each with its reason', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-keys-'));
  try {
    const short = await keygen(dir, 'short', ['-t', 'rsa', '-b', '1024']);
    assert.throws(() => parsePublicKey(short.pub), { code: 'weak_ssh_key', message: /at least 2048 bits; this one has 1024/ });
    const ed = await keygen(dir, 'ed', ['-t', 'ed25519']);
    assert.throws(() => parsePublicKey(ed.priv), { code: 'invalid_ssh_key', message: /private key/ });
    assert.throws(() => parsePublicKey(`${ed.pub}\n${ed.pub}`), { code: 'invalid_ssh_key', message: /one SSH public key at a time/ });
    assert.throws(() => parsePublicKey('ssh-dss AAAAB3NzaC1kc3MAAACBAP'), { code: 'weak_ssh_key', message: /DSA/ });
    assert.throws(() => parsePublicKey('hello world'), { code: 'invalid_ssh_key' });
    assert.throws(() => parsePublicKey(''), { code: 'invalid_ssh_key', message: /no SSH public key/ });
    // The blob of one type under the name of another.
    const blob = ed.pub.split(' ')[1]!;
    assert.throws(() => parsePublicKey(`ssh-rsa ${blob}`), { code: 'invalid_ssh_key', message: /does not match its type/ });
    assert.throws(() => parsePublicKey(`ssh-ed25519 ${blob.slice(0, 20)}`), { code: 'invalid_ssh_key' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
