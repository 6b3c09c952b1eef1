/**
 * What an SSH client may ask to run (issue 14): git's own commands on one repository path, as
 * git sends them (`git-upload-pack '/alice/main/app.git'`, the path single-quoted by git's
 * sq_quote), and git-lfs's `git-lfs-authenticate PATH upload|download`. Anything else is
 * refused by the caller with a one-line message.
 */
import { invalid } from '../shared/errors.js';
import { parseRepoPath, type RepoPath } from '../repos/names.js';

export type SshCommand =
  | { kind: 'git'; service: 'upload-pack' | 'receive-pack'; repo: RepoPath; path: string }
  | { kind: 'lfs-authenticate'; operation: 'upload' | 'download'; repo: RepoPath; path: string };

/** Longer commands are no git command (a path is at most three names). */
const MAX_COMMAND = 1024;

/**
 * Splits a command line into words the way git's sq_quote writes them: bare words, or
 * single-quoted ones in which `'\''` stands for a quote. Undefined for anything else (double
 * quotes, backslashes outside that escape, unbalanced quotes): no git client sends those.
 */
export function splitWords(command: string): string[] | undefined {
  const words: string[] = [];
  let i = 0;
  while (i < command.length) {
    while (command[i] === ' ') i++;
    if (i >= command.length) break;
    let word = '';
    while (i < command.length && command[i] !== ' ') {
      const c = command[i]!;
      if (c === "'") {
        const end = command.indexOf("'", i + 1);
        if (end < 0) return undefined;
        word += command.slice(i + 1, end);
        i = end + 1;
      } else if (c === '\\' && command[i + 1] === "'") {
        word += "'";
        i += 2;
      } else if (c === '"' || c === '\\' || c === '\n' || c === '\r' || c === '\t') {
        return undefined;
      } else {
        word += c;
        i++;
      }
    }
    words.push(word);
  }
  return words;
}

/** The command, or a domain error whose message says why it is refused. */
export function parseCommand(command: string): SshCommand {
  if (command.length > MAX_COMMAND) throw invalid('unknown_command', 'command too long');
  const words = splitWords(command);
  if (!words || words.length === 0) throw invalid('unknown_command', 'not a git command; this server runs git-upload-pack and git-receive-pack only');
  // `git upload-pack` (two words) is how some clients spell it.
  const [first, ...rest] = words[0] === 'git' && words.length > 1 ? [`git-${words[1]}`, ...words.slice(2)] : words;
  const service = first === 'git-upload-pack' ? 'upload-pack' : first === 'git-receive-pack' ? 'receive-pack' : undefined;
  if (service) {
    if (rest.length !== 1) throw invalid('unknown_command', `usage: git-${service} 'OWNER/SPACE/REPO.git'`);
    return { kind: 'git', service, repo: repoOf(rest[0]!), path: rest[0]! };
  }
  if (first === 'git-lfs-authenticate') {
    const [path, operation] = rest;
    if (rest.length !== 2 || (operation !== 'upload' && operation !== 'download')) throw invalid('unknown_command', "usage: git-lfs-authenticate 'OWNER/SPACE/REPO.git' upload|download");
    return { kind: 'lfs-authenticate', operation, repo: repoOf(path!), path: path! };
  }
  throw invalid('unknown_command', `${JSON.stringify((first ?? '').slice(0, 64))} is not allowed; this server runs git-upload-pack, git-receive-pack and git-lfs-authenticate only`);
}

function repoOf(path: string): RepoPath {
  // `..` or a fourth name never reach the filesystem: a path is three validated names.
  if (path.includes('..')) throw invalid('invalid_path', 'repository path must be OWNER/SPACE/REPO');
  return parseRepoPath(path.replace(/^~?\//, ''));
}
