/**
 * `gitstratum dr-drill` end to end: with the real server, git and snapshots on the filesystem
 * store. A clean drill passes and leaves no scratch directory; a repository pushed to since its
 * snapshot is reported dirty, not mismatched; a ref moved behind the server's back (no push, no
 * snapshot) and a damaged snapshot object are reported and fail the drill (exit 1); the
 * scheduled drill exports its last result as metrics.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Git, Server, seedAlice, tempDir } from './harness.js';

interface Report {
  passed: boolean;
  checked: number;
  counts: Record<string, number>;
  bytes: number;
  repositories: { repository: string; status: string; detail?: string }[];
}

describe('dr-drill', () => {
  let server: Server;
  let git: Git;
  let token: string;
  const repos = new Map<string, { path: string; id: string; work: string }>();

  before(async () => {
    // Snapshots are taken by hand (the worker never gets to a repository); a drill every second.
    server = await Server.start({
      args: ['--snapshot-debounce-seconds', '3600', '--snapshot-max-delay-seconds', '3600', '--maintenance-enabled', 'false', '--dr-drill-interval-seconds', '1'],
    });
    token = await seedAlice(server);
    git = await Git.create();
    for (const [i, name] of ['alice/main/a', 'alice/main/b'].entries()) {
      const created = await server.createRepo(name);
      const work = await git.workTree(path.join(await tempDir(), 'work'), { commits: 3, seed: 20 + i });
      await git.ok(['push', '-q', server.repoUrl(`${name}.git`, token), 'main', 'main:refs/heads/other'], { cwd: work });
      await server.cliOk(['snapshot', 'create', name]);
      repos.set(name, { ...created, work });
    }
  });
  after(() => server?.cleanup());

  async function drill(args: string[] = []): Promise<{ code: number | null; report: Report; text: string }> {
    const json = await server.cli(['dr-drill', '--json', ...args]);
    const text = await server.cli(['dr-drill', ...args]);
    assert.equal(json.code, text.code, json.stderr + text.stderr);
    return { code: json.code, report: JSON.parse(json.stdout) as Report, text: text.stdout };
  }
  const status = (r: Report, name: string) => r.repositories.find((x) => x.repository === name);

  async function metrics(): Promise<string> {
    return (await fetch(new URL('/metrics', server.url))).text();
  }
  async function waitForMetric(pattern: RegExp): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (!pattern.test(await metrics())) {
      assert.ok(Date.now() < deadline, `no metric matching ${pattern}:\n${(await metrics()).split('\n').filter((l) => l.includes('dr_drill')).join('\n')}`);
      await sleep(200);
    }
  }

  test('a clean drill passes, checks every repository with snapshots and leaves no scratch directory', async () => {
    const { code, report, text } = await drill();
    assert.equal(code, 0, text);
    assert.equal(report.passed, true);
    assert.equal(report.checked, 2);
    assert.equal(report.counts['ok'], 2);
    assert.ok(report.bytes > 0);
    assert.match(text, /passed: 2 ok/);
    // The server's own drill (every second) may be mid-run: its scratch directory goes when that
    // run ends. One left by the command would stay, so every one seen now must be gone soon.
    const scratch = async () => (await readdir(path.join(server.dataDir, 'tmp'))).filter((f) => f.startsWith('dr-drill-'));
    const seen = await scratch();
    let remaining = seen;
    for (let i = 0; i < 150 && remaining.length > 0; i++) {
      await sleep(100);
      const now = await scratch();
      remaining = seen.filter((f) => now.includes(f));
    }
    assert.deepEqual(remaining, [], 'no scratch directory is left behind');

    const one = await drill(['--sample', '1']);
    assert.equal(one.report.checked, 1);

    await waitForMetric(/^gitstratum_dr_drill_repositories\{result="ok"\} 2$/m);
    const text2 = await metrics();
    assert.ok(Number(/^gitstratum_dr_drill_last_success_timestamp_seconds (\S+)$/m.exec(text2)?.[1]) > Date.now() / 1000 - 60);
  });

  test('a repository pushed to since its snapshot is dirty, not a mismatch', async () => {
    const a = repos.get('alice/main/a')!;
    await git.commits(a.work, 1, { seed: 99 });
    await git.ok(['push', '-q', server.repoUrl('alice/main/a.git', token), 'main'], { cwd: a.work });
    const { code, report } = await drill();
    assert.equal(code, 0);
    assert.equal(status(report, 'alice/main/a')?.status, 'dirty');
    assert.equal(status(report, 'alice/main/b')?.status, 'ok');
    await server.cliOk(['snapshot', 'create', 'alice/main/a']);
  });

  test('a ref moved behind the server’s back without a new snapshot is a mismatch: exit 1, and in the metrics', async () => {
    const b = repos.get('alice/main/b')!;
    const tip = (await git.ok(['--git-dir', b.path, 'rev-parse', 'refs/heads/main'])).trim();
    await git.ok(['--git-dir', b.path, 'update-ref', 'refs/heads/main', `${tip}~1`]);
    try {
      const { code, report, text } = await drill();
      assert.equal(code, 1);
      assert.equal(report.passed, false);
      assert.equal(status(report, 'alice/main/b')?.status, 'mismatch');
      assert.match(status(report, 'alice/main/b')!.detail!, /refs\/heads\/main/);
      assert.equal(status(report, 'alice/main/a')?.status, 'ok');
      assert.match(text, /MISMATCH +alice\/main\/b: live refs differ/);
      assert.match(text, /^FAILED: /m);
      await waitForMetric(/^gitstratum_dr_drill_repositories\{result="mismatch"\} 1$/m);
    } finally {
      await git.ok(['--git-dir', b.path, 'update-ref', 'refs/heads/main', tip]);
    }
    assert.equal((await drill()).code, 0);
  });

  test('a damaged snapshot object fails the drill', async () => {
    const a = repos.get('alice/main/a')!;
    const [latest] = (JSON.parse(await server.cliOk(['snapshot', 'list', 'alice/main/a', '--json'])) as { id: string; byteSize: number }[]).reverse();
    const file = path.join(server.dataDir, 'objects', 'snapshots', a.id.toLowerCase(), latest!.id);
    // Bytes in the middle of the pack: the preamble still parses, git finds the damage.
    const handle = await open(file, 'r+');
    try {
      await handle.write(Buffer.alloc(16, 0xa5), 0, 16, latest!.byteSize - 40);
    } finally {
      await handle.close();
    }
    const { code, report, text } = await drill();
    assert.equal(code, 1);
    assert.equal(status(report, 'alice/main/a')?.status, 'failed');
    assert.match(status(report, 'alice/main/a')!.detail!, /index-pack|fsck|snapshot/);
    assert.match(text, /FAILED +alice\/main\/a/);
  });
});
