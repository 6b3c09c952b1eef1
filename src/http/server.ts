/**
 * The HTTP edge: one Fastify instance with request ids, one log line per request,
 * Prometheus metrics, health endpoints, and the git and REST routes. Built apart from
 * `listen` so tests can use `inject()`.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { newId } from '../shared/ids.js';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../config/load.js';
import type { Logger } from '../shared/log.js';
import { invalid, isDomainError, tooLarge, type DomainError } from '../shared/errors.js';
import { sendGitError, sendJsonError } from './errors.js';
import type { Metrics } from './metrics.js';
import { watchBodyIdle } from './idle-timeout.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The Smart HTTP routes (see git-routes.ts), whose client is git itself. */
export const GIT_ROUTE = /^\/:owner\/:space\/:repo\/(?:info\/refs|git-upload-pack|git-receive-pack)$/;

/**
 * Fastify's own 4xx errors (body parsing, schema validation) in our terms: stable codes of
 * ours rather than Fastify's internal ones, and messages that say what was wrong.
 */
function edgeError(err: Error & { code?: string }, contentType?: string): DomainError {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return invalid('unsupported_media_type', `unsupported content type: ${contentType ?? 'none'}`);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return tooLarge('body_too_large', 'request body is too large');
  }
  // Schema validation and unparseable bodies: one stable code.
  return invalid('invalid_request', err.message);
}

/**
 * Reads and checks the certificate and key at start, so a wrong path or a key that does not
 * belong to the certificate stops the server with a message naming the setting, not a stack.
 */
export function loadTls(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  const read = (setting: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`cannot read ${setting} ${file}: ${(err as Error).message}`);
    }
  };
  const tls = { cert: read('tlsCert', certFile), key: read('tlsKey', keyFile) };
  try {
    createSecureContext(tls);
  } catch (err) {
    throw new ConfigError(`cannot use tlsCert ${certFile} with tlsKey ${keyFile}: ${(err as Error).message}`);
  }
  return tls;
}

export function trustProxySetting(value: string): boolean | number | string {
  if (value === 'true') return true;
  if (value === 'false' || value === '') return false;
  if (/^\d+$/.test(value)) return Number(value);
  return value;
}

export interface EdgeDeps {
  config: Pick<Config, 'tlsCert' | 'tlsKey' | 'trustProxy' | 'requestIdleTimeoutSeconds' | 'maxJsonBodyBytes'>;
  log: Logger;
  metrics: Metrics;
  ready: () => Promise<boolean>;
}

export function createHttpServer(deps: EdgeDeps): FastifyInstance {
  const { config, metrics } = deps;
  const idleMs = config.requestIdleTimeoutSeconds * 1000;
  // Node checks headersTimeout on this interval (30 s by default): a quarter of the bound keeps it tight.
  const connectionsCheckingInterval = Math.max(250, Math.floor(idleMs / 4));
  const options: FastifyServerOptions & {
    http?: { connectionsCheckingInterval: number };
    https?: { cert: Buffer; key: Buffer; connectionsCheckingInterval: number };
  } = {
    loggerInstance: deps.log.child({ component: 'http' }),
    // Our onResponse hook writes the one line per request.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : newId();
    },
    trustProxy: trustProxySetting(config.trustProxy) as FastifyServerOptions['trustProxy'],
    // Git requests can run for a long time: no bound on a whole request; a stalled one is
    // ended by the idle timeouts below, a long-running git process by gitTimeoutSeconds.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 65_000,
    http: { connectionsCheckingInterval },
    // Every parsed body (LFS, API); git and LFS object bodies are streams and never parsed.
    bodyLimit: config.maxJsonBodyBytes,
    // Refuse unknown body fields instead of dropping them: a mistyped `visibility` must not
    // silently create a public repository.
    ajv: { customOptions: { removeAdditional: false } },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  };
  if (config.tlsCert && config.tlsKey) {
    options.https = { ...loadTls(config.tlsCert, config.tlsKey), connectionsCheckingInterval };
  }
  const app = Fastify(options) as unknown as FastifyInstance;

  // Idle timeouts (issue 9). Headers: Node ends a request whose headers take longer than this.
  // Body: a request whose body stops arriving is dropped (idle-timeout.ts).
  app.server.headersTimeout = idleMs;
  app.addHook('onRequest', async (req, reply) => {
    watchBodyIdle(req.raw, reply.raw, idleMs, req.log);
  });

  // Shutdown. Node's close() ends only the connections idle at that moment; one busy with a
  // push at SIGTERM would stay open after its response for as long as the client (a proxy's
  // keep-alive pool, git-lfs) keeps it: up to keepAliveTimeout, beyond the shutdown bound.
  // So while closing, answers say `Connection: close`, and each connection is closed as soon
  // as its response is done.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header('X-Request-Id', req.id);
    reply.raw.once('finish', () => {
      if (closing) setImmediate(() => app.server.closeIdleConnections());
    });
  });

  app.addHook('onSend', async (_req, reply) => {
    if (closing) reply.header('Connection', 'close');
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const seconds = reply.elapsedTime / 1000;
    metrics.requests.inc({ route, method: req.method, status: String(reply.statusCode) });
    metrics.duration.observe({ route, method: req.method }, seconds);
    req.log.info(
      {
        method: req.method,
        route,
        url: req.url,
        status: reply.statusCode,
        duration_ms: Math.round(reply.elapsedTime),
        client_ip: req.ip,
        protocol: req.protocol,
      },
      'request completed',
    );
  });

  app.setErrorHandler((err: Error & { code?: string }, req, reply) => {
    // Git prints only a text/plain body (as `remote:` lines); everyone else gets JSON.
    const git = GIT_ROUTE.test(req.routeOptions.url ?? '');
    const send = git ? sendGitError : sendJsonError;
    if (isDomainError(err)) return send(reply, err);
    const { statusCode: status, validation } = err as { statusCode?: number; validation?: unknown };
    if (validation) return send(reply, edgeError(err), 400);
    if (status && status >= 400 && status < 500) return send(reply, edgeError(err, req.headers['content-type']), status);
    req.log.error({ err }, 'request failed');
    reply.code(500);
    return git
      ? reply.type('text/plain; charset=utf-8').send('internal server error\n')
      : reply.send({ error: { code: 'internal', message: 'internal server error' } });
  });

  app.setNotFoundHandler((req, reply) =>
    reply.code(404).type('text/plain; charset=utf-8').send(`not found: ${req.method} ${req.url.split('?')[0]}\n`),
  );

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const ok = await deps.ready().catch(() => false);
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready' });
  });
  app.get('/metrics', async (_req, reply) => {
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  return app;
}
