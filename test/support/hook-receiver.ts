/**
 * A webhook receiver for tests: a real HTTP server on 127.0.0.1 that records every delivery
 * (headers, raw body, parsed JSON) and answers 200, or 503 while `down`.
 */
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';

export interface Received {
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: Record<string, any>;
}

export class HookReceiver {
  readonly received: Received[] = [];
  /** Answer 503 to everything while true. */
  down = false;
  /** Called for each delivery answered 200, before the answer is sent. */
  onDelivery: ((r: Received) => Promise<void> | void) | undefined;
  private constructor(private readonly server: http.Server) {}

  static async start(): Promise<HookReceiver> {
    const receiver: HookReceiver = new HookReceiver(
      http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          if (receiver.down) {
            res.writeHead(503, { 'content-type': 'text/plain' }).end('down for maintenance');
            return;
          }
          const raw = Buffer.concat(chunks).toString('utf8');
          const r: Received = { headers: req.headers, raw, body: JSON.parse(raw) as Record<string, any> };
          receiver.received.push(r);
          void Promise.resolve(receiver.onDelivery?.(r)).finally(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('thanks'));
        });
      }),
    );
    receiver.server.listen(0, '127.0.0.1');
    await once(receiver.server, 'listening');
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  /** Deliveries of one event kind (X-Gitstratum-Event). */
  of(kind: string): Received[] {
    return this.received.filter((r) => r.headers['x-gitstratum-event'] === kind);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
  }
}
