import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, nearest, withoutPassword } from './load.js';
import { isTrustProxy } from './schema.js';

/** The one-line message of the ConfigError that loading throws. */
function refusal(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): string {
  try {
    loadConfig(flags, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.doesNotMatch(err.message, /\n/, 'one line');
    return err.message;
  }
  assert.fail(`accepted ${JSON.stringify({ flags, env })}`);
}

test('sizes and durations take units in flags and the environment; plain numbers keep their meaning', () => {
  const c = loadConfig(
    { maxPushBytes: '5GiB', gitTimeoutSeconds: '1h', packCacheMaxEntryBytes: '1048576' },
    { GITSTRATUM_LFS_MAX_OBJECT_BYTES: '500MB', GITSTRATUM_SHUTDOWN_TIMEOUT_SECONDS: '90', GITSTRATUM_SNAPSHOT_DEBOUNCE_SECONDS: '0.5' },
  );
  assert.equal(c.maxPushBytes, 5 * 1024 ** 3);
  assert.equal(c.gitTimeoutSeconds, 3600);
  assert.equal(c.packCacheMaxEntryBytes, 1048576);
  assert.equal(c.lfsMaxObjectBytes, 500e6);
  assert.equal(c.shutdownTimeoutSeconds, 90);
  assert.equal(c.snapshotDebounceSeconds, 0.5);
  // Defaults are untouched numbers.
  assert.equal(c.packCacheMaxBytes, 4 * 1024 ** 3);
  assert.equal(c.metaBackupIntervalSeconds, 900);
});

test('a JSON config file may give sizes as numbers or text', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-config-'));
  const file = path.join(dir, 'c.json');
  await writeFile(file, JSON.stringify({ maxPushBytes: 1024, lfsMaxObjectBytes: '2GiB', maintenanceDelaySeconds: '2m', trustProxy: 1 }));
  const c = loadConfig({ config: file }, {});
  assert.equal(c.maxPushBytes, 1024);
  assert.equal(c.lfsMaxObjectBytes, 2 * 1024 ** 3);
  assert.equal(c.maintenanceDelaySeconds, 120);
  assert.equal(c.trustProxy, '1');
});

test('a value of the wrong JSON type says what was expected', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-config-'));
  const file = path.join(dir, 'c.json');
  await writeFile(file, JSON.stringify({ port: true, maxPushBytes: [1], trustProxy: null, packCacheEnabled: 'yes' }));
  const message = refusal({ config: file });
  const from = `(from config file ${file})`;
  assert.ok(message.includes(`invalid port ${from}: expected a number (got true)`), message);
  assert.ok(message.includes(`invalid maxPushBytes ${from}: expected a size such as 5GiB`), message);
  assert.ok(message.includes(`invalid trustProxy ${from}: expected true, false, a hop count`), message);
  assert.ok(message.includes(`invalid packCacheEnabled ${from}: expected true or false (got "yes")`), message);
});

test('a bad value is one line naming the setting, where it came from and the value', () => {
  assert.equal(
    refusal({ maxPushBytes: '5GB!' }),
    'invalid maxPushBytes (from flag --max-push-bytes): expected a size such as 5GiB, 500MB, 64KiB (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), or a number of bytes (got "5GB!")',
  );
  assert.match(refusal({}, { GITSTRATUM_GIT_TIMEOUT_SECONDS: 'soon' }), /^invalid gitTimeoutSeconds \(from environment variable GITSTRATUM_GIT_TIMEOUT_SECONDS\): expected a duration .* \(got "soon"\)$/);
  assert.match(refusal({ gitTimeoutSeconds: '1.5s' }), /^invalid gitTimeoutSeconds \(from flag --git-timeout-seconds\): .*int.* \(got "1.5s"\)$/);
  assert.match(refusal({ maxPushBytes: '0' }), /^invalid maxPushBytes .*too small/);
  assert.match(refusal({ port: 'abc' }), /^invalid port \(from flag --port\): expected a number \(got "abc"\)$/);
  assert.match(refusal({ port: '' }), /^invalid port/);
  assert.match(refusal({ lfsActionExpiresSeconds: '8d' }), /^invalid lfsActionExpiresSeconds .*604800/);
  // Several problems still make one line.
  assert.match(refusal({ port: '70000', logLevel: 'loud' }), /^invalid port .*; invalid logLevel .*\(got "loud"\)$/);
});

test('secrets and database passwords are not repeated in messages', () => {
  const secret = refusal({ signingSecret: 'too-short-but-secret' });
  assert.doesNotMatch(secret, /too-short-but-secret/);
  assert.match(secret, /^invalid signingSecret \(from flag --signing-secret\): .*\(got \(hidden\)\)$/);
  const url = refusal({ databaseUrl: 'postgres://bob:hunter2@db.example:99999/gs' });
  assert.doesNotMatch(url, /hunter2/);
  assert.match(url, /^invalid databaseUrl .*postgres:\/\/bob:\*\*\*@db\.example:99999\/gs/);
  assert.equal(withoutPassword('postgres://bob:p%40ss:w@db/x'), 'postgres://bob:***@db/x');
  assert.equal(withoutPassword('postgres://db/x'), 'postgres://db/x');
});

test('trustProxy: true, false, a hop count, or addresses and CIDRs; anything else is refused', () => {
  for (const ok of ['true', 'false', '0', '2', '127.0.0.1', '10.0.0.0/8, 192.168.1.1', '::1', 'fd00::/8', '10.0.0.0/255.0.0.0', 'loopback,10.1.2.3']) {
    assert.ok(isTrustProxy(ok), ok);
  }
  for (const bad of ['maybe', 'yes', '-1', '10.0.0.0/33', '::/129', '10.0.0.0/8/8', '10.0.0.256', 'example.com', '10.0.0.1,', '1.2.3.4/ff']) {
    assert.ok(!isTrustProxy(bad), bad);
  }
  assert.match(refusal({ trustProxy: 'maybe' }), /^invalid trustProxy \(from flag --trust-proxy\): expected true, false, a hop count.* \(got "maybe"\)$/);
  assert.equal(loadConfig({}, { GITSTRATUM_TRUST_PROXY: '10.0.0.0/8,127.0.0.1' }).trustProxy, '10.0.0.0/8,127.0.0.1');
});

test('an unknown GITSTRATUM_* variable is refused with the nearest valid name', () => {
  assert.equal(refusal({}, { GITSTRATUM_MAX_PUSH_BYTE: '1' }), 'unknown environment variable GITSTRATUM_MAX_PUSH_BYTE: did you mean GITSTRATUM_MAX_PUSH_BYTES?');
  assert.equal(refusal({}, { GITSTRATUM_LOGLEVEL: 'debug' }), 'unknown environment variable GITSTRATUM_LOGLEVEL: did you mean GITSTRATUM_LOG_LEVEL?');
  assert.match(refusal({}, { GITSTRATUM_FROBNICATE: '1' }), /^unknown environment variable GITSTRATUM_FROBNICATE: no setting has that name/);
});

test('GITSTRATUM_* variables that are not settings are left alone: the config file, tests, hooks', () => {
  const env = {
    GITSTRATUM_CONFIG: undefined,
    GITSTRATUM_TEST_DATABASE_URL: 'postgres://x/y',
    GITSTRATUM_TEST_REDIS_URL: 'redis://x',
    GITSTRATUM_TEST_ANYTHING: '1',
    GITSTRATUM_REPO_ID: 'r',
    GITSTRATUM_ACTOR_ID: 'a',
    GITSTRATUM_ACTOR_NAME: 'alice',
    GITSTRATUM_REQUEST_ID: 'q',
    GITSTRATUM_HOOK_SOCKET: '/run/x.sock',
    GITSTRATUM_PORT: '0',
    OTHER_VARIABLE: 'x',
  };
  assert.equal(loadConfig({}, env).port, 0);
});

test('an unknown key in the config file suggests the nearest setting', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-config-'));
  const file = path.join(dir, 'c.json');
  await writeFile(file, JSON.stringify({ prot: 8080 }));
  assert.equal(refusal({ config: file }), `unknown setting(s) prot in config file ${file}: did you mean port?`);
  assert.equal(nearest('maxPushByte', ['port', 'maxPushBytes']), 'maxPushBytes');
  assert.equal(nearest('zzzzzz', ['port', 'maxPushBytes']), undefined);
});
