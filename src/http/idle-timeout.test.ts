import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../shared/log.js';
import { watchBodyIdle } from './idle-timeout.js';

const IDLE_MS = 1500;
const log = createLogger('silent');

/** A server that watches every body and, after `readAfterMs`, reads it and answers its length. */
async function server(readAfterMs = 0): Promise<{ port: number; close(): Promise<void> }> {
  const srv = http.createServer((req, res) => {
    watchBodyIdle(req, res, IDLE_MS, log);
    setTimeout(() => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(String(n)));
    }, readAfterMs);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: () => new Promise((resolve) => srv.close(() => resolve())),
  };
}

/** Sends headers for `length` bytes, then the body in `chunks` pieces `gapMs` apart; the answer or 'dropped'. */
async function send(port: number, length: number, chunks: Buffer[], gapMs: number): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  let answer = '';
  socket.setEncoding('latin1').on('data', (d: string) => (answer += d));
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(answer === '' ? 'dropped' : answer.split('\r\n\r\n')[1]!)));
  socket.write(`POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${length}\r\n\r\n`);
  for (const chunk of chunks) {
    if (socket.destroyed) break;
    socket.write(chunk);
    await sleep(gapMs);
  }
  return closed;
}

test('a body that stops arriving is dropped', async (t) => {
  const s = await server();
  t.after(() => s.close());
  assert.equal(await send(s.port, 1000, [Buffer.alloc(10)], 0), 'dropped');
});

test('a slow but steady body is never cut, however long it takes', async (t) => {
  const s = await server();
  t.after(() => s.close());
  // Three times the idle timeout in total, a byte at a time, never a pause near the timeout.
  const chunks = Array.from({ length: 45 }, () => Buffer.from('x'));
  assert.equal(await send(s.port, chunks.length, chunks, 100), String(chunks.length));
});

test('time the server spends not reading does not count against the client', async (t) => {
  // The server reads nothing for twice the timeout while the client has sent all it can.
  const s = await server(2 * IDLE_MS);
  t.after(() => s.close());
  const body = Buffer.alloc(4 * 1024 * 1024);
  assert.equal(await send(s.port, body.length, [body], 0), String(body.length));
});
