/**
 * Bad configuration through the real command: `serve`, `worker` and an admin command each stop
 * with one line on stderr that names the setting, its value and where it came from, and no
 * stack trace (issue 9: `--trust-proxy maybe` and an unreachable database used to end in one).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { BIN, run, tempDir } from './harness.js';

/** A loopback port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function gitstratum(args: string[], env: NodeJS.ProcessEnv = {}) {
  const data = path.join(await tempDir(), 'data');
  // --port 0 where it applies, so a case that wrongly starts never takes a fixed port.
  const extra = args[0] === 'serve' ? ['--port', '0'] : [];
  return run(process.execPath, [BIN, ...args, '--data', data, ...extra], { env: { ...process.env, ...env }, timeoutMs: 90_000 });
}

function assertOneLine(r: { code: number | null; stdout: string; stderr: string }, code: number, message: RegExp, what: string) {
  const detail = `${what}: exit ${r.code}\n${r.stderr}`;
  assert.equal(r.code, code, detail);
  assert.match(r.stderr, /^gitstratum: [^\n]+\n$/, `${detail}\n(expected exactly one line)`);
  assert.doesNotMatch(r.stderr, /\n\s+at |Error:/, `${detail}\n(a stack trace)`);
  assert.match(r.stderr, message, detail);
}

test('bad settings stop serve, worker and admin commands with one line and no stack trace', async () => {
  const pgPort = await closedPort();
  const cases: [string[], NodeJS.ProcessEnv, number, RegExp][] = [
    [['serve', '--trust-proxy', 'maybe'], {}, 2, /invalid trustProxy \(from flag --trust-proxy\): expected true, false, a hop count.*\(got "maybe"\)/],
    [['worker'], { GITSTRATUM_TRUST_PROXY: '10.0.0.0/33' }, 2, /invalid trustProxy \(from environment variable GITSTRATUM_TRUST_PROXY\).*\(got "10\.0\.0\.0\/33"\)/],
    [['serve', '--max-push-bytes', '5 GiBs'], {}, 2, /invalid maxPushBytes \(from flag --max-push-bytes\): expected a size such as 5GiB.*\(got "5 GiBs"\)/],
    [['worker', '--snapshot-retry-max-seconds', 'soon'], {}, 2, /invalid snapshotRetryMaxSeconds \(from flag --snapshot-retry-max-seconds\): expected a duration.*\(got "soon"\)/],
    [['serve'], { GITSTRATUM_MAX_PUSH_BYTE: '5GiB' }, 2, /unknown environment variable GITSTRATUM_MAX_PUSH_BYTE: did you mean GITSTRATUM_MAX_PUSH_BYTES\?/],
    [['worker'], { GITSTRATUM_SNAPSHOT_ENABLED: 'false' }, 2, /did you mean GITSTRATUM_SNAPSHOTS_ENABLED\?/],
    [['user', 'list'], { GITSTRATUM_DATABASEURL: 'postgres://x/y' }, 2, /did you mean GITSTRATUM_DATABASE_URL\?/],
    [['user', 'list'], { GITSTRATUM_PORT: 'eighty' }, 2, /invalid port \(from environment variable GITSTRATUM_PORT\): expected a number \(got "eighty"\)/],
    [['serve', '--database-url', `postgres://bob:hunter2@127.0.0.1:${pgPort}/gs`], {}, 1, new RegExp(`cannot connect to databaseUrl host 127\\.0\\.0\\.1:${pgPort}, database gs: .*ECONNREFUSED`)],
    [['worker', '--database-url', `postgres://bob:hunter2@127.0.0.1:${pgPort}/gs`], {}, 1, /cannot connect to databaseUrl host 127\.0\.0\.1/],
    [['user', 'list', '--database-url', `postgres://bob:hunter2@127.0.0.1:${pgPort}/gs`], {}, 1, /cannot connect to databaseUrl host 127\.0\.0\.1/],
    [['user', 'list', '--database-url', 'postgres://bob:hunter2@db.example:99999/gs'], {}, 2, /invalid databaseUrl \(from flag --database-url\): not a valid URL \(got "postgres:\/\/bob:\*\*\*@db\.example:99999\/gs"\)/],
  ];
  const results = await Promise.all(cases.map(([args, env]) => gitstratum(args, env)));
  results.forEach((r, i) => {
    const [args, env, code, message] = cases[i]!;
    const what = `gitstratum ${args.join(' ')} ${JSON.stringify(env)}`;
    assertOneLine(r, code, message, what);
    assert.doesNotMatch(r.stderr, /hunter2/, `${what}: the password was printed`);
  });
});

test('a data directory that cannot be created names the setting', async () => {
  const file = path.join(await tempDir(), 'not-a-directory');
  await writeFile(file, '');
  const r = await run(process.execPath, [BIN, 'user', 'list', '--data', path.join(file, 'data')], { timeoutMs: 90_000 });
  assertOneLine(r, 2, /cannot create data directory .*not-a-directory\/data \(setting data\): ENOTDIR/, 'user list --data under a file');
});

test('a host that does not resolve and a file that is not a database end in one line too', async () => {
  const host = await gitstratum(['serve', '--host', 'no.such.host.invalid']);
  assertOneLine(host, 2, /cannot listen on no\.such\.host\.invalid:0: getaddrinfo/, 'serve --host no.such.host.invalid');
  const data = path.join(await tempDir(), 'data');
  await mkdir(data);
  await writeFile(path.join(data, 'meta.sqlite'), 'not a database\n');
  const r = await run(process.execPath, [BIN, 'user', 'list', '--data', data], { timeoutMs: 90_000 });
  assertOneLine(r, 1, /cannot open the SQLite database .*meta\.sqlite: file is not a database/, 'user list on a broken meta.sqlite');
});

test('sizes and durations with units are accepted where numbers were', async () => {
  const r = await gitstratum(['user', 'list'], {
    GITSTRATUM_MAX_PUSH_BYTES: '5GiB',
    GITSTRATUM_LFS_MAX_OBJECT_BYTES: '500MB',
    GITSTRATUM_PACK_CACHE_MAX_REQUEST_BYTES: '64KiB',
    GITSTRATUM_GIT_TIMEOUT_SECONDS: '1h',
    GITSTRATUM_SHUTDOWN_TIMEOUT_SECONDS: '30s',
    GITSTRATUM_DR_DRILL_INTERVAL_SECONDS: '7d',
    GITSTRATUM_TRUST_PROXY: '10.0.0.0/8, 127.0.0.1',
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
});
