/** Where clients reach this server, for links given out of band (SSH's LFS endpoint, event payloads). */
import type { Config } from '../config/schema.js';

/** This server's own scheme://host:port (config `host` and the bound port). */
export function httpOrigin(http: { server: { address(): unknown } }, config: Pick<Config, 'host' | 'port' | 'tlsCert'>): string {
  const address = http.server.address() as { port: number } | null;
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host.includes(':') ? `[${config.host}]` : config.host;
  return `${config.tlsCert ? 'https' : 'http'}://${host}:${address?.port ?? config.port}`;
}

/**
 * The public origin of repository links in events: `publicUrl`, else this server's own when it
 * serves clients itself (a storage node's address is no client's); none otherwise.
 */
export function eventOrigin(config: Pick<Config, 'host' | 'port' | 'tlsCert' | 'publicUrl' | 'role'>, http: { server: { address(): unknown } }): string | undefined {
  return config.publicUrl ?? (config.role === 'all' ? httpOrigin(http, config) : undefined);
}
