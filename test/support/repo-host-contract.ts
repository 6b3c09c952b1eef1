/**
 * The RepoHost contract (src/repos/host.ts): what every host must do, run against the local host
 * and against the remote one in front of a storage node (the way every ObjectStore adapter runs
 * one suite). Real git on both ends: the pushes and fetches are git's own request bodies.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { ulid } from 'ulid';
import type { HostedRepo, RepoHost } from '../../src/repos/host.js';
import { FLUSH_PKT, pktLine } from '../../src/git/pkt-line.js';
import type { GitResponse } from '../../src/git/smart-http.js';
import { isDomainError } from '../../src/shared/errors.js';
import { gitEnv } from '../e2e/harness.js';

const exec = promisify(execFile);
const ZERO = '0'.repeat(40);

export interface HostUnderTest {
  host: RepoHost;
  /** Where the host keeps a repository (the node's disk), to check what it did there. */
  diskPath(id: string): string;
  close(): Promise<void>;
}

async function drain(res: GitResponse): Promise<{ text: string; bytes: Buffer }> {
  const chunks: Buffer[] = [];
  for await (const c of res.body) chunks.push(c as Buffer);
  const bytes = Buffer.concat(chunks);
  return { text: bytes.toString('latin1'), bytes };
}

/** What `body` sends up to and including the first `marker`, leaving the rest unread. */
async function readUntil(body: Readable, marker: Buffer): Promise<Buffer> {
  let seen = Buffer.alloc(0);
  while (!seen.includes(marker)) {
    const chunk = (body.read() as Buffer | null) ?? (await once(body, 'readable').then(() => body.read() as Buffer | null));
    if (chunk === null && body.readableEnded) assert.fail(`the stream ended before ${JSON.stringify(marker.toString())}`);
    if (chunk) seen = Buffer.concat([seen, chunk]);
  }
  return seen;
}

async function domainError(p: Promise<unknown>): Promise<{ kind: string; code: string }> {
  try {
    await p;
  } catch (err) {
    assert.ok(isDomainError(err), `a domain error, not ${String(err)}`);
    return { kind: err.kind, code: err.code };
  }
  assert.fail('expected an error');
}

export function repoHostContract(name: string, start: () => Promise<HostUnderTest>): void {
  describe(`RepoHost contract: ${name}`, () => {
    let t: HostUnderTest;
    let dir: string;
    let work: string;
    let env: NodeJS.ProcessEnv;
    let head: string;
    const signal = () => new AbortController().signal;
    const repo = (id: string): HostedRepo => ({ id, defaultBranch: 'main', label: `contract/${id}` });
    const pusher = { actorId: null, actorName: 'contract', requestId: 'req-1' };

    /** A receive-pack request as git sends it: one command creating `ref` (refs/heads/main), then the pack. */
    async function pushBody(ref = 'refs/heads/main'): Promise<Buffer> {
      const child = spawn('git', ['-C', work, 'pack-objects', '--stdout', '--revs', '-q'], { env, stdio: ['pipe', 'pipe', 'inherit'] });
      child.stdin.end(`${head}\n`);
      const chunks: Buffer[] = [];
      for await (const c of child.stdout) chunks.push(c as Buffer);
      const pack = Buffer.concat(chunks);
      assert.ok(pack.subarray(0, 4).equals(Buffer.from('PACK')), 'git pack-objects made a pack');
      return Buffer.concat([pktLine(`${ZERO} ${head} ${ref}\0report-status\n`), FLUSH_PKT, pack]);
    }

    async function advertisedRefs(id: string): Promise<string> {
      const res = await t.host.advertiseRefs(repo(id), { service: 'upload-pack' }, signal());
      const { text } = await drain(res);
      assert.equal((await res.done).code, 0);
      return text;
    }

    before(async () => {
      t = await start();
      dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-host-contract-'));
      env = gitEnv(dir);
      work = path.join(dir, 'work');
      await exec('git', ['init', '-q', '-b', 'main', work], { env });
      await writeFile(path.join(work, 'a.txt'), 'hello\n');
      await exec('git', ['-C', work, 'add', '-A'], { env });
      await exec('git', ['-C', work, 'commit', '-q', '-m', 'one'], { env });
      head = (await exec('git', ['-C', work, 'rev-parse', 'HEAD'], { env })).stdout.trim();
    });

    after(async () => {
      await t.close();
      await rm(dir, { recursive: true, force: true });
    });

    test('create gives an empty repository that advertises no refs', async () => {
      const id = ulid();
      await t.host.create({ id, defaultBranch: 'main' });
      assert.ok((await stat(t.diskPath(id))).isDirectory());
      const text = await advertisedRefs(id);
      assert.match(text, /^001e# service=git-upload-pack\n0000/);
      assert.equal(text, '001e# service=git-upload-pack\n0000' + '0000', 'the service line, then no refs');
      assert.equal(t.host.location(id).includes(id), true);
    });

    test('creating an id that exists is a conflict and leaves it as it was', async () => {
      const id = ulid();
      await t.host.create({ id, defaultBranch: 'main' });
      assert.deepEqual(await domainError(t.host.create({ id, defaultBranch: 'main' })), { kind: 'conflict', code: 'repo_dir_exists' });
      assert.ok((await stat(t.diskPath(id))).isDirectory());
    });

    test('a push streamed through receive-pack moves the ref; a fetch streams the pack back', async () => {
      const id = ulid();
      await t.host.create({ id, defaultBranch: 'main' });
      const pushed = await t.host.statelessRpc(repo(id), { service: 'receive-pack', input: Readable.from([await pushBody()]), pusher }, signal());
      const report = await drain(pushed);
      assert.match(report.text, /unpack ok/);
      assert.match(report.text, /ok refs\/heads\/main/);
      const outcome = await pushed.done;
      assert.equal(outcome.code, 0);
      assert.equal(outcome.spawned, true);
      assert.ok(outcome.bytesIn > 0 && outcome.bytesOut === report.bytes.length);
      assert.match(await advertisedRefs(id), new RegExp(`${head} refs/heads/main`));

      // The same want, plain and gzip-encoded, as git sends it.
      const want = Buffer.concat([pktLine(`want ${head} ofs-delta\n`), FLUSH_PKT, pktLine('done\n')]);
      for (const encoding of [undefined, 'gzip'] as const) {
        const input = Readable.from([encoding ? gzipSync(want) : want]);
        const fetched = await t.host.statelessRpc(repo(id), { service: 'upload-pack', input, encoding, pusher }, signal());
        const { bytes } = await drain(fetched);
        assert.ok(bytes.includes(Buffer.from('PACK')), `a pack came back (${encoding ?? 'identity'})`);
        assert.equal((await fetched.done).code, 0);
      }
    });

    test('a fork has every ref of its source; a fork of a repository not on the host is not found', async () => {
      const source = ulid();
      await t.host.create({ id: source, defaultBranch: 'main' });
      await drain(await t.host.statelessRpc(repo(source), { service: 'receive-pack', input: Readable.from([await pushBody()]), pusher }, signal()));
      const fork = ulid();
      await t.host.create({ id: fork, defaultBranch: 'main', forkOf: source });
      assert.match(await advertisedRefs(fork), new RegExp(`${head} refs/heads/main`));
      assert.deepEqual(await domainError(t.host.create({ id: ulid(), defaultBranch: 'main', forkOf: ulid() })), { kind: 'not_found', code: 'repo_dir_missing' });
    });

    test('a request git refuses is the same domain error on every host', async () => {
      const id = ulid();
      await t.host.create({ id, defaultBranch: 'main' });
      // A want of an object the repository does not have.
      const input = Readable.from([Buffer.concat([pktLine(`want ${'1'.repeat(40)}\n`), FLUSH_PKT, pktLine('done\n')])]);
      const res = await t.host.statelessRpc(repo(id), { service: 'upload-pack', input, pusher }, signal()).catch((err: unknown) => err);
      if (isDomainError(res)) {
        assert.equal(res.kind, 'invalid');
      } else {
        const { text } = await drain(res as GitResponse);
        assert.match(text, /not our ref|ERR/);
        assert.notEqual((await (res as GitResponse).done).code, 0);
      }
    });

    test('a whole v0 fetch conversation: the advertisement comes while the client has sent nothing, the pack after its done', async () => {
      const id = ulid();
      await t.host.create({ id, defaultBranch: 'main' });
      await drain(await t.host.statelessRpc(repo(id), { service: 'receive-pack', input: Readable.from([await pushBody()]), pusher }, signal()));
      const input = new PassThrough();
      const res = await t.host.uploadPackSession(repo(id), { input }, signal());
      const seen = await readUntil(res.body, FLUSH_PKT);
      assert.match(seen.toString('latin1'), new RegExp(`${head} HEAD\0`), 'the advertisement, before any line of the client');
      input.end(Buffer.concat([pktLine(`want ${head} ofs-delta\n`), FLUSH_PKT, pktLine('done\n')]));
      const { bytes } = await drain(res);
      assert.ok(bytes.includes(Buffer.from('PACK')), 'the pack, after done');
      assert.equal((await res.done).code, 0);
    });

    test('a push whose input stays open is answered before the input ends (a branch deletion, which sends no pack)', async () => {
      const id = ulid();
      await t.host.create({ id, defaultBranch: 'main' });
      await drain(await t.host.statelessRpc(repo(id), { service: 'receive-pack', input: Readable.from([await pushBody('refs/heads/topic')]), pusher }, signal()));
      const input = new PassThrough();
      input.write(Buffer.concat([pktLine(`${head} ${ZERO} refs/heads/topic\0report-status\n`), FLUSH_PKT]));
      const res = await t.host.statelessRpc(repo(id), { service: 'receive-pack', input, open: true, pusher }, signal());
      const report = await readUntil(res.body, FLUSH_PKT);
      assert.match(report.toString('latin1'), /ok refs\/heads\/topic/, 'the report, while the client still holds its side open');
      input.end();
      await drain(res);
      assert.equal((await res.done).code, 0);
      assert.doesNotMatch(await advertisedRefs(id), /refs\/heads\/topic/);
    });

    test('remove deletes the directory; removing again is no error', async () => {
      const id = ulid();
      await t.host.create({ id, defaultBranch: 'main' });
      await t.host.remove(id);
      assert.equal(await stat(t.diskPath(id)).catch(() => undefined), undefined);
      await t.host.remove(id);
    });
  });
}
