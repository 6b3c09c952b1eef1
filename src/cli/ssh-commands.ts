/** `ssh-key add|list|remove`: the SSH keys of users (issue 14; access/ssh-keys.ts). */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { systemActor } from '../access/policy.js';
import type { SshKeyInfo } from '../access/ssh-keys.js';
import { invalid } from '../shared/errors.js';
import { loadHostKeys } from '../ssh/host-keys.js';
import { admin, common } from './program.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) throw invalid('invalid_ssh_key', 'not an SSH public key: too long');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function line(k: SshKeyInfo): string {
  return `${k.id}\t${k.type}\t${k.fingerprint}\t${k.scope}\tlast used ${k.lastUsedAt ?? 'never'}\t${k.name ?? '-'}`;
}

export function registerSshCommands(program: Command): void {
  const ssh = program.command('ssh').description('the built-in SSH server (git over SSH)');
  common(ssh.command('host-keys').description("the SSH server's host key fingerprints, for users to check on first contact (made at the server's first start with --ssh-port)")).action(
    admin(async (core) => {
      const keys = await loadHostKeys(core.dataDir, false);
      if (keys.length === 0) return { text: 'no host keys yet: they are made when the server first starts with --ssh-port', json: [] };
      return { text: keys.map((k) => `${k.type}\t${k.fingerprint}`), json: keys.map((k) => ({ type: k.type, fingerprint: k.fingerprint, publicKey: k.public })) };
    }),
  );

  const key = program.command('ssh-key').description("manage users' SSH public keys (git over SSH)");
  common(
    key
      .command('add <user> [file]')
      .description('add an SSH public key to a user: the .pub file given as FILE or --file, or - (or nothing) to read it from standard input')
      .option('--file <path>', 'the public key file, e.g. ~/.ssh/id_ed25519.pub')
      .option('--name <name>', 'a label for people, such as laptop (default: the key comment, when it is one word)')
      .addOption(new Option('--scope <scope>', 'what the key may do: write, or read for a deploy key').choices(['read', 'write']).default('write')),
  ).action(
    admin(async (core, userName: string, file?: string) => {
      const opts = key.commands.find((c) => c.name() === 'add')!.opts();
      const from = (opts['file'] as string | undefined) ?? file;
      const text = from && from !== '-' ? await readFile(from, 'utf8') : await readStdin();
      const k = await core.sshKeys.add(systemActor, userName, text, { name: opts['name'] as string | undefined, scope: opts['scope'] as string });
      return { text: `added ${k.scope} key ${k.id} (${k.type} ${k.fingerprint}) for ${k.user}`, json: k };
    }),
  );
  common(key.command('list <user>').description("list a user's SSH keys")).action(
    admin(async (core, userName: string) => {
      const list = await core.sshKeys.list(systemActor, userName);
      return { text: list.map(line), json: list };
    }),
  );
  common(key.command('remove <id>').description('remove an SSH key; it stops working at once')).action(
    admin(async (core, id: string) => {
      const k = await core.sshKeys.remove(systemActor, id);
      return { text: `removed key ${k.id} (${k.fingerprint}) of ${k.user}`, json: k };
    }),
  );
}
