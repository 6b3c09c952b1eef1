/**
 * A client's slow network link, for tests that need a response still in flight at a chosen
 * moment: a TCP proxy on 127.0.0.1 that passes requests through at once, passes the server's
 * answers at `bytesPerSecond`, and holds them (reads nothing more from the server) once
 * `holdAfter` bytes have passed, until `release()`; from then on everything passes at full speed.
 *
 * Reading slowly before the hold keeps the kernel from growing the link's receive buffer, so
 * what the server has written but the client has not yet read stays at a few MiB at most (the
 * server's send buffer, net.ipv4.tcp_wmem): a response larger than that is still being
 * written, from the server's point of view, for as long as the link holds.
 */
import net from 'node:net';

export interface SlowLink {
  /** http://127.0.0.1:PORT, to use in place of the server's origin. */
  origin: string;
  /** Resolves once the link holds (`holdAfter` bytes of answers have passed). */
  held: Promise<void>;
  /** Bytes of answers passed to clients so far. */
  passed(): number;
  /** Lets everything through at full speed from now on. */
  release(): void;
  /** Stops listening and cuts every connection. */
  close(): Promise<void>;
}

export async function startSlowLink(target: string, opts: { bytesPerSecond: number; holdAfter: number }): Promise<SlowLink> {
  const { hostname, port } = new URL(target);
  let passed = 0;
  let released = false;
  const holding = new Set<net.Socket>();
  const sockets = new Set<net.Socket>();
  let onHeld!: () => void;
  const held = new Promise<void>((resolve) => (onHeld = resolve));

  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      passed += chunk.length;
      const drained = client.write(chunk);
      if (released) {
        if (!drained) {
          upstream.pause();
          client.once('drain', () => upstream.resume());
        }
        return;
      }
      upstream.pause();
      if (passed >= opts.holdAfter) {
        holding.add(upstream);
        onHeld();
        return;
      }
      setTimeout(() => upstream.resume(), (chunk.length / opts.bytesPerSecond) * 1000);
    });
    upstream.on('end', () => client.end());
    // A side that fails cuts the other, as a broken link would.
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    held,
    passed: () => passed,
    release() {
      released = true;
      for (const s of holding) s.resume();
      holding.clear();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
