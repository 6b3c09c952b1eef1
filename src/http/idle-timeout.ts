/**
 * The request body idle timeout (issue 9): a request whose body stops arriving for
 * `idleMs` is ended by dropping its connection, which stops its git process (the routes
 * abort on close). Node's own timeouts do not fit: `requestTimeout` bounds the whole request,
 * which would cut a slow but steady 5 GB push, and the socket timeout also counts time spent
 * writing a response.
 *
 * Progress is the connection's `bytesRead`. Time during which the server is not reading
 * (the request's buffer is full because git or the object store is slow to take the bytes,
 * or the route has not started reading) is never the client's fault and does not count.
 * The check runs every quarter of the timeout, so a stall is ended after 1 to 1.25 × idleMs.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyBaseLogger } from 'fastify';

/** Whether the request still has body bytes to come. */
function expectsBody(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const length = req.headers['content-length'];
  if (length !== undefined) return Number(length) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

export function watchBodyIdle(req: IncomingMessage, res: ServerResponse, idleMs: number, log: FastifyBaseLogger): void {
  const socket = req.socket;
  // inject() has no connection to watch or to drop.
  if (typeof socket?.bytesRead !== 'number' || typeof socket.destroy !== 'function') return;
  if (!expectsBody(req)) return;
  let lastBytes = socket.bytesRead;
  let lastProgress = Date.now();
  const timer = setInterval(
    () => {
      if (req.complete || req.destroyed || socket.destroyed) {
        clearInterval(timer);
        return;
      }
      const now = Date.now();
      const waitingOnServer = req.readableLength >= req.readableHighWaterMark;
      if (socket.bytesRead !== lastBytes || waitingOnServer) {
        lastBytes = socket.bytesRead;
        lastProgress = now;
        return;
      }
      if (now - lastProgress < idleMs) return;
      clearInterval(timer);
      log.warn({ idle_ms: now - lastProgress, bytes_read: socket.bytesRead }, 'request body idle timeout');
      socket.destroy();
    },
    Math.max(25, Math.floor(idleMs / 4)),
  );
  timer.unref();
  // Once the answer is out, the rest of the body no longer matters here.
  const stop = () => clearInterval(timer);
  req.once('close', stop);
  res.once('close', stop);
}
