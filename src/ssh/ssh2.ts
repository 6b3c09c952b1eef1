/**
 * The ssh2 library, loaded on first use. Loading it costs 13 MB of resident memory (its
 * poly1305 module reserves its memory at once), which a server without `--ssh-port` that never
 * parses a key should not carry (issue 12: the server's idle memory).
 */
import { createRequire } from 'node:module';

type Ssh2 = typeof import('ssh2');

let loaded: Ssh2 | undefined;

export function ssh2(): Ssh2 {
  // require, not import(): callers are synchronous (key parsing), and ssh2 is CommonJS.
  loaded ??= createRequire(import.meta.url)('ssh2') as Ssh2;
  return loaded;
}
