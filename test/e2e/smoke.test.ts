import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Git, Server, databaseBackends, seed, tempDir } from './harness.js';

for (const database of databaseBackends()) {
  test(`push then clone over protocol v2 and v0 (${database})`, async (t) => {
    const server = await Server.start({ database });
    t.after(() => server.cleanup());
    const tokens = await seed(server);
    await server.createRepo('alice/main/hello');
    const git = await Git.create();
    const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 3 });
    await git.ok(['push', server.repoUrl('alice/main/hello.git', tokens.alice.write), 'main'], { cwd: work });
    const head = await git.revParse(work, 'HEAD');

    for (const version of ['2', '0']) {
      const dest = path.join(await tempDir(), `clone-v${version}`);
      await git.ok(['-c', `protocol.version=${version}`, 'clone', '-q', server.repoUrl('alice/main/hello'), dest]);
      assert.equal(await git.revParse(dest, 'HEAD'), head);
    }

    const audit = JSON.parse(await server.cliOk(['repo', 'list', '--json'])) as { name: string }[];
    assert.deepEqual(audit.map((r) => r.name), ['hello']);
  });
}
