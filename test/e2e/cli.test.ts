/**
 * The admin command line against a running server's data: every command says what it did,
 * `--json` is parseable, and rename/move/delete keep git and the disk consistent (a
 * repository lives at repos/<ULID[0:2]>/<ULID>.git whatever its name).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { access, readdir } from 'node:fs/promises';
import path from 'node:path';
import { Git, Server, databaseBackends, tempDir } from './harness.js';

const ULID = '[0-9A-HJKMNP-TV-Z]{26}';

interface RepoJson {
  id: string;
  name: string;
  ownerName: string;
  spaceName: string;
  visibility: string;
  path: string;
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** Every repository directory under the data directory, as `<ab>/<ULID>.git`. */
async function repoDirs(server: Server): Promise<string[]> {
  const root = path.join(server.dataDir, 'repos');
  const found: string[] = [];
  for (const shard of await readdir(root).catch(() => [])) {
    for (const dir of await readdir(path.join(root, shard))) found.push(`${shard}/${dir}`);
  }
  return found.sort();
}

async function json<T>(server: Server, args: string[]): Promise<T> {
  const out = await server.cliOk([...args, '--json']);
  return JSON.parse(out) as T;
}

describe('admin CLI', () => {
  let server: Server;

  before(async () => {
    server = await Server.start();
  });
  after(() => server?.cleanup());

  test('every command prints what it did, and --json prints parseable JSON', async () => {
    // Users.
    const [carolText, dave] = await Promise.all([
      server.cliOk(['user', 'create', 'carol']),
      json<{ id: string; name: string; isAdmin: boolean }>(server, ['user', 'create', 'dave', '--admin']),
    ]);
    assert.match(carolText, new RegExp(`^created user carol \\(${ULID}\\)\\n$`));
    assert.match(dave.id, new RegExp(`^${ULID}$`));
    assert.deepEqual({ name: dave.name, isAdmin: dave.isAdmin }, { name: 'dave', isAdmin: true });

    // Organizations and spaces, each once as text and once as JSON.
    const [orgText, beta, spaceText] = await Promise.all([
      server.cliOk(['org', 'create', 'acme']),
      json<{ id: string; name: string }>(server, ['org', 'create', 'beta']),
      server.cliOk(['space', 'create', 'carol/main']),
    ]);
    assert.match(orgText, new RegExp(`^created organization acme \\(${ULID}\\)\\n$`));
    assert.equal(beta.name, 'beta');
    assert.match(spaceText, new RegExp(`^created space carol/main \\(${ULID}\\)\\n$`));
    const [memberText, member, tools] = await Promise.all([
      server.cliOk(['org', 'add-member', 'acme', 'carol', '--role', 'write']),
      json<{ org: string; user: string; role: string }>(server, ['org', 'add-member', 'beta', 'dave', '--role', 'admin']),
      json<{ id: string; owner: string; name: string }>(server, ['space', 'create', 'acme/tools']),
    ]);
    assert.equal(memberText, 'carol is now write in acme\n');
    assert.deepEqual(member, { org: 'beta', user: 'dave', role: 'admin' });
    assert.deepEqual({ owner: tools.owner, name: tools.name }, { owner: 'acme', name: 'tools' });

    // Repositories.
    const [repoText, priv] = await Promise.all([
      server.cliOk(['repo', 'create', 'carol/main/one']),
      json<RepoJson>(server, ['repo', 'create', 'acme/tools/two', '--private']),
    ]);
    const created = new RegExp(`^created public repository carol/main/one \\((${ULID})\\) at (.+)\\n$`).exec(repoText);
    assert.ok(created, repoText);
    assert.equal(created[2], path.join(server.dataDir, 'repos', created[1]!.slice(0, 2), `${created[1]}.git`));
    assert.equal(priv.visibility, 'private');
    assert.equal(priv.path, path.join(server.dataDir, 'repos', priv.id.slice(0, 2), `${priv.id}.git`));

    // Tokens: the secret is alone on the last line, and never listed again.
    const tokenText = await server.cliOk(['token', 'create', 'carol', '--scope', 'read', '--expires', '30d']);
    const lines = tokenText.trimEnd().split('\n');
    assert.equal(lines.length, 2, tokenText);
    assert.match(lines[0]!, new RegExp(`^created read token (${ULID}) for carol, expires \\d{4}-`));
    assert.match(lines[1]!, /^gst_[A-Za-z0-9_-]{40,}$/);
    const tokenJson = await json<{ id: string; token: string; scope: string; user: string }>(server, ['token', 'create', 'carol', '--scope', 'write']);
    assert.match(tokenJson.token, /^gst_/);
    assert.deepEqual({ scope: tokenJson.scope, user: tokenJson.user }, { scope: 'write', user: 'carol' });

    // Listings, as text and JSON.
    const [users, usersJson, spaces, spacesJson, repos, reposJson, tokens, tokensJson] = await Promise.all([
      server.cliOk(['user', 'list']),
      json<{ name: string }[]>(server, ['user', 'list']),
      server.cliOk(['space', 'list']),
      json<{ ownerName: string; name: string }[]>(server, ['space', 'list']),
      server.cliOk(['repo', 'list']),
      json<RepoJson[]>(server, ['repo', 'list']),
      server.cliOk(['token', 'list', 'carol']),
      json<Record<string, unknown>[]>(server, ['token', 'list', 'carol']),
    ]);
    assert.deepEqual(users.trimEnd().split('\n').sort(), ['carol', 'dave (site admin)']);
    assert.deepEqual(usersJson.map((u) => u.name).sort(), ['carol', 'dave']);
    assert.deepEqual(spaces.trimEnd().split('\n').sort(), ['acme/tools', 'carol/main']);
    assert.deepEqual(spacesJson.map((s) => `${s.ownerName}/${s.name}`).sort(), ['acme/tools', 'carol/main']);
    assert.deepEqual(repos.trimEnd().split('\n').sort(), [
      `acme/tools/two\tprivate\t${priv.id}\t0 B used, no quota`,
      `carol/main/one\tpublic\t${created[1]}\t0 B used, no quota`,
    ]);
    assert.deepEqual(reposJson.map((r) => r.name).sort(), ['one', 'two']);
    assert.equal(tokens.trimEnd().split('\n').length, 2);
    assert.match(tokens, new RegExp(`^${lines[0]!.split(' ')[3]}\\tread\\texpires `, 'm'));
    assert.equal(tokensJson.length, 2);
    for (const secret of [lines[1]!, tokenJson.token]) {
      assert.ok(!tokens.includes(secret) && !JSON.stringify(tokensJson).includes(secret), 'a listing never shows a secret');
    }

    // Revoke, rename, delete.
    const [revokeText, revoked] = await Promise.all([
      server.cliOk(['token', 'revoke', lines[0]!.split(' ')[3]!]),
      json<{ id: string; revokedAt: string | null }>(server, ['token', 'revoke', tokenJson.id]),
    ]);
    assert.equal(revokeText, `revoked token ${lines[0]!.split(' ')[3]} of carol\n`);
    assert.equal(revoked.id, tokenJson.id);
    assert.ok(revoked.revokedAt);
    assert.match(await server.cliOk(['token', 'list', 'carol']), /\trevoked\t/);

    const [renameText, moved] = await Promise.all([
      server.cliOk(['repo', 'rename', 'carol/main/one', 'uno']),
      json<RepoJson>(server, ['repo', 'rename', 'acme/tools/two', 'carol/main/dos']),
    ]);
    assert.equal(renameText, 'renamed carol/main/one to carol/main/uno\n');
    assert.deepEqual([moved.ownerName, moved.spaceName, moved.name, moved.id], ['carol', 'main', 'dos', priv.id]);

    const [deleteText, deleted] = await Promise.all([
      server.cliOk(['repo', 'delete', 'carol/main/uno']),
      json<{ deleted: string }>(server, ['repo', 'delete', 'carol/main/dos']),
    ]);
    assert.equal(deleteText, `deleted carol/main/uno (${created[1]})\n`);
    assert.deepEqual(deleted, { deleted: priv.id });
    assert.deepEqual(await repoDirs(server), []);
  });

  test('org add-member refuses a bad role, an unknown org and an unknown user with a clear message', async () => {
    await server.cliOk(['user', 'create', 'erin']);
    await server.cliOk(['org', 'create', 'gamma']);
    const [badRole, noOrg, noUser, noRole] = await Promise.all([
      server.cli(['org', 'add-member', 'gamma', 'erin', '--role', 'owner']),
      server.cli(['org', 'add-member', 'nosuchorg', 'erin', '--role', 'read']),
      server.cli(['org', 'add-member', 'gamma', 'nosuchuser', '--role', 'read']),
      server.cli(['org', 'add-member', 'gamma', 'erin']),
    ]);
    assert.equal(badRole.code, 2, badRole.stderr);
    assert.match(badRole.stderr, /argument 'owner' is invalid\. Allowed choices are read, write, admin\./);
    assert.equal(noOrg.code, 1, noOrg.stderr);
    assert.equal(noOrg.stderr, "gitstratum: organization 'nosuchorg' not found\n");
    assert.equal(noUser.code, 1, noUser.stderr);
    assert.equal(noUser.stderr, "gitstratum: user 'nosuchuser' not found\n");
    assert.equal(noRole.code, 2, noRole.stderr);
    assert.match(noRole.stderr, /required option '--role <role>' not specified/);
    for (const r of [badRole, noOrg, noUser, noRole]) assert.equal(r.stdout, '');
  });
});

for (const database of databaseBackends()) {
  test(`repo rename and move keep git working under the new URL, and delete removes the directory (${database})`, async (t) => {
    const server = await Server.start({ database });
    t.after(() => server.cleanup());
    const git = await Git.create();
    await server.cliOk(['user', 'create', 'alice']);
    const [token] = await Promise.all([
      server.token('alice', 'write'),
      server.cliOk(['space', 'create', 'alice/main']),
      server.cliOk(['space', 'create', 'alice/other']),
    ]);
    const repo = await json<RepoJson>(server, ['repo', 'create', 'alice/main/proj']);
    const dir = `${repo.id.slice(0, 2)}/${repo.id}.git`;
    assert.equal(repo.path, path.join(server.dataDir, 'repos', dir));
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 2 });
    await git.ok(['push', server.repoUrl('alice/main/proj.git', token), 'main'], { cwd: work });
    const head = await git.revParse(work, 'HEAD');

    const cloneOf = async (repoPath: string) => {
      const dest = path.join(await tempDir(), 'clone');
      await git.ok(['clone', '-q', server.repoUrl(`${repoPath}.git`), dest]);
      return git.revParse(dest, 'HEAD');
    };
    const gone = async (repoPath: string) => {
      const r = await git.run(['ls-remote', server.repoUrl(`${repoPath}.git`)]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`remote: repository not found: ${repoPath}`));
    };

    // Rename within the space.
    assert.equal(await server.cliOk(['repo', 'rename', 'alice/main/proj', 'renamed']), 'renamed alice/main/proj to alice/main/renamed\n');
    assert.equal(await cloneOf('alice/main/renamed'), head);
    await gone('alice/main/proj');
    assert.deepEqual(await repoDirs(server), [dir]);

    // Move to another space; a push under the new URL lands in the same directory.
    assert.equal(
      await server.cliOk(['repo', 'rename', 'alice/main/renamed', 'alice/other/moved']),
      'renamed alice/main/renamed to alice/other/moved\n',
    );
    await gone('alice/main/renamed');
    await git.commits(work, 1, { seed: 9 });
    await git.ok(['push', server.repoUrl('alice/other/moved.git', token), 'main'], { cwd: work });
    assert.equal(await cloneOf('alice/other/moved'), await git.revParse(work, 'HEAD'));
    assert.deepEqual(await repoDirs(server), [dir]);
    const [listed] = await json<RepoJson[]>(server, ['repo', 'list']);
    assert.deepEqual([listed!.id, listed!.spaceName, listed!.name, listed!.path], [repo.id, 'other', 'moved', repo.path]);
    assert.equal((await git.ok(['--git-dir', repo.path, 'rev-parse', 'main'])).trim(), await git.revParse(work, 'HEAD'));

    // A name already taken is refused, and nothing moves.
    await server.cliOk(['repo', 'create', 'alice/main/taken']);
    const clash = await server.cli(['repo', 'rename', 'alice/other/moved', 'alice/main/taken']);
    assert.equal(clash.code, 1, clash.stderr);
    assert.match(clash.stderr, /repository already exists: alice\/main\/taken/);
    assert.equal(await cloneOf('alice/other/moved'), await git.revParse(work, 'HEAD'));

    // Delete removes the row and the directory, and leaves nothing in tmp/.
    assert.equal(await server.cliOk(['repo', 'delete', 'alice/other/moved']), `deleted alice/other/moved (${repo.id})\n`);
    assert.equal(await exists(repo.path), false);
    await gone('alice/other/moved');
    assert.deepEqual((await json<RepoJson[]>(server, ['repo', 'list'])).map((r) => r.name), ['taken']);
    assert.deepEqual(await readdir(path.join(server.dataDir, 'tmp')), []);
    const again = await server.cli(['repo', 'delete', 'alice/other/moved']);
    assert.equal(again.code, 1);
    assert.equal(again.stderr, 'gitstratum: repository not found: alice/other/moved\n');
  });
}
