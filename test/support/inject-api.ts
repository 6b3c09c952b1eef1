/** The REST API in process for route tests: calls through Fastify's inject(), no sockets. */
import type { FastifyInstance } from 'fastify';

/** `api(method, url, token?, body?)` under /api/v1: the status and the parsed JSON answer. */
export function injectApi(app: FastifyInstance) {
  return async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, token?: string, body?: unknown) => {
    const res = await app.inject({
      method,
      url: `/api/v1${url}`,
      headers: { ...(token && { authorization: `Bearer ${token}` }), ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { payload: JSON.stringify(body) }),
    });
    return { status: res.statusCode, body: res.body ? (JSON.parse(res.body) as any) : undefined };
  };
}
