/** The REST API in process for route tests: calls through Fastify's inject(), no sockets. */
import { rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { configSchema } from '../../src/config/schema.js';
import { openCore } from '../../src/core.js';
import { EventHub } from '../../src/events/stream.js';
import { registerApiRoutes, type ApiDeps } from '../../src/http/api-routes.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createHttpServer } from '../../src/http/server.js';
import { createLogger } from '../../src/shared/log.js';
import { createFsStore } from '../../src/storage/fs-store.js';
import { tempDir } from '../e2e/harness.js';

/** `api(method, url, token?, body?)` under /api/v1: the status and the parsed JSON answer. */
export function injectApi(app: FastifyInstance) {
  return async (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, token?: string, body?: unknown) => {
    const res = await app.inject({
      method,
      url: `/api/v1${url}`,
      headers: { ...(token && { authorization: `Bearer ${token}` }), ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { payload: JSON.stringify(body) }),
    });
    return { status: res.statusCode, body: res.body ? (JSON.parse(res.body) as any) : undefined };
  };
}

/**
 * A server with the REST API on a fresh data directory, as `serve` registers it (its own
 * core), closed and removed after the test; `extra` overrides route dependencies.
 */
export async function apiApp(t: { after(fn: () => Promise<void>): void }, extra: Partial<ApiDeps> = {}) {
  const data = await tempDir('gitstratum-api-');
  const config = configSchema.parse({ data, logLevel: 'silent' });
  const core = await openCore(config);
  const app = createHttpServer({ config, log: createLogger('silent'), metrics: createMetrics({ gitRunning: () => 0, gitQueued: () => 0 }), ready: async () => true });
  registerApiRoutes(app, { ...core, lfsStore: createFsStore(`${data}/objects`), hub: new EventHub(core.meta, createLogger('silent')), maxEventStreams: 8, ...extra });
  await app.ready();
  t.after(async () => {
    await app.close();
    await core.close();
    await rm(data, { recursive: true, force: true });
  });
  return { app, core, data };
}
