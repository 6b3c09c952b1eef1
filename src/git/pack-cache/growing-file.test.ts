import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import { createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GrowingFile, READ_CHUNK } from './growing-file.js';

async function withFile(fn: (fd: number) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'gitstratum-growing-'));
  const fd = openSync(path.join(dir, 'f'), 'w+');
  try {
    await fn(fd);
  } finally {
    closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  }
}

async function drain(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

test('readers that start early, mid-way and after the end all get every byte once', async () => {
  await withFile(async (fd) => {
    const file = new GrowingFile(fd, 512);
    const source = new PassThrough();
    const writing = pipeline(source, file.writer());
    const parts = [bytes(1000, 1), bytes(READ_CHUNK + 7, 2), bytes(3, 3), bytes(2 * READ_CHUNK, 4)];
    const expected = Buffer.concat(parts);

    const early = drain(file.reader());
    source.write(parts[0]);
    source.write(parts[1]);
    await new Promise((r) => setTimeout(r, 20));
    const middle = drain(file.reader());
    source.write(parts[2]);
    source.end(parts[3]);
    await writing;
    file.finish();
    const late = drain(file.reader());

    for (const got of await Promise.all([early, middle, late])) assert.ok(got.equals(expected));
    assert.equal(file.written, expected.length);
    assert.equal((await file.digest()).readUInt32BE(0), crc32(expected));
  });
});

test('a reader waiting for bytes is woken by the writer, not by polling, and ends on finish', async () => {
  await withFile(async (fd) => {
    const file = new GrowingFile(fd, 0);
    const reader = file.reader();
    const got = drain(reader);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(file.listenerCount('progress'), 1, 'the waiting reader listens for progress');
    const w = file.writer();
    await new Promise<void>((resolve, reject) => w.write(Buffer.from('hello'), (err) => (err ? reject(err) : resolve())));
    file.finish();
    assert.equal((await got).toString(), 'hello');
  });
});

test('when the writer fails, readers get the bytes written so far, then the error', async () => {
  await withFile(async (fd) => {
    const file = new GrowingFile(fd, 0);
    const w = file.writer();
    await new Promise<void>((resolve) => w.write(Buffer.from('partial'), () => resolve()));
    const reader = file.reader();
    const chunks: Buffer[] = [];
    reader.on('data', (c: Buffer) => chunks.push(c));
    const failed = new Promise<Error>((resolve) => reader.on('error', resolve));
    await new Promise((r) => setTimeout(r, 10));
    file.fail(new Error('disk gone'));
    assert.equal((await failed).message, 'disk gone');
    assert.equal(Buffer.concat(chunks).toString(), 'partial');
  });
});

test('a complete file is read in chunks of up to 1 MiB', async () => {
  await withFile(async (fd) => {
    const data = bytes(2 * READ_CHUNK + 5, 9);
    const writer = new GrowingFile(fd, 100);
    await pipeline(async function* () {
      yield data;
    }, writer.writer());
    const reader = GrowingFile.complete(fd, 100, data.length).reader();
    const sizes: number[] = [];
    reader.on('data', (c: Buffer) => sizes.push(c.length));
    await new Promise((r) => reader.on('end', r));
    assert.deepEqual(sizes, [READ_CHUNK, READ_CHUNK, 5]);
  });
});

/** An HTTP server whose every response is `file.reader()` piped in, as the git routes do. */
async function serveFile(file: GrowingFile): Promise<{ url: string; closed: Promise<void>[]; close(): Promise<void> }> {
  const closed: Promise<void>[] = [];
  const server = createServer((_req, res) => {
    const reader = file.reader();
    closed.push(new Promise((resolve) => reader.once('close', () => resolve())));
    reader.on('error', () => res.destroy());
    reader.pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/`, closed, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** GETs `url`; a slow client pauses a little after every chunk. */
function fetchAll(url: string, slow = false): Promise<{ body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (slow) {
          res.pause();
          setTimeout(() => res.resume(), 2);
        }
      });
      res.on('end', () => resolve({ body: Buffer.concat(chunks), complete: res.complete }));
      res.on('error', () => resolve({ body: Buffer.concat(chunks), complete: false }));
    }).on('error', reject);
  });
}

test('piped into HTTP responses, readers send every byte in order while the file grows, fast and slow clients alike', async () => {
  await withFile(async (fd) => {
    const file = new GrowingFile(fd, 4096);
    const server = await serveFile(file);
    try {
      const source = new PassThrough();
      const writing = pipeline(source, file.writer());
      // More than two 1 MiB buffers' worth, in odd sizes, so the reused buffers go round.
      const parts = [bytes(READ_CHUNK + 11, 1), bytes(777, 2), bytes(3 * READ_CHUNK - 5, 3), bytes(1, 4)];
      const expected = Buffer.concat(parts);
      source.write(parts[0]);
      const fast = fetchAll(server.url);
      const slow = fetchAll(server.url, true);
      await new Promise((r) => setTimeout(r, 20));
      source.write(parts[1]);
      source.write(parts[2]);
      source.end(parts[3]);
      await writing;
      file.finish();
      const late = fetchAll(server.url);
      for (const got of await Promise.all([fast, slow, late])) {
        assert.ok(got.complete, 'the response ends normally');
        assert.equal(got.body.length, expected.length);
        assert.ok(got.body.equals(expected), 'the bytes are the file, in order');
      }
      await Promise.all(server.closed);
    } finally {
      await server.close();
    }
  });
});

test('piped into an HTTP response, a writer failure cuts the response after the bytes written so far', async () => {
  await withFile(async (fd) => {
    const file = new GrowingFile(fd, 0);
    const server = await serveFile(file);
    try {
      const w = file.writer();
      await new Promise<void>((resolve) => w.write(bytes(READ_CHUNK + 3, 5), () => resolve()));
      const got = fetchAll(server.url);
      await new Promise((r) => setTimeout(r, 20));
      file.fail(new Error('disk gone'));
      const { body, complete } = await got;
      assert.equal(complete, false, 'the client sees a cut response, not a complete one');
      assert.ok(body.equals(bytes(READ_CHUNK + 3, 5).subarray(0, body.length)));
    } finally {
      await server.close();
    }
  });
});
