/**
 * Where webhooks may be sent: http(s) URLs whose host resolves to public addresses only.
 * Loopback, private, link-local, shared (CGNAT), multicast and reserved ranges are refused, as
 * a hook URL is a request made from inside the network on behalf of whoever set it; an
 * operator names the internal receivers they trust in `webhookAllowedHosts` (host names,
 * addresses or CIDR ranges). The check is made when a hook is saved and again at each
 * connection (the resolver is this module's), so a name that later resolves elsewhere is
 * caught too.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { invalid } from '../shared/errors.js';

const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  blocked.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  blocked.addSubnet(net, prefix, 'ipv6');
}

/** An IPv4 address carried in IPv6 (::ffff:a.b.c.d, or its hex form), as IPv4. */
function unmapped(address: string): string {
  const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (dotted) return dotted[1]!;
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (hex) {
    const [hi, lo] = [parseInt(hex[1]!, 16), parseInt(hex[2]!, 16)];
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return address;
}

/** Whether an address is in a range no webhook may reach unless allowed. */
export function isInternalAddress(address: string): boolean {
  const a = unmapped(address);
  const family = isIP(a);
  if (family === 0) return true;
  return blocked.check(a, family === 4 ? 'ipv4' : 'ipv6');
}

export interface AllowList {
  /** Whether a host name (as written in the URL) or an address is allowed though internal. */
  allows(hostOrAddress: string): boolean;
}

/** `webhookAllowedHosts`: host names, addresses and CIDR ranges. */
export function allowList(entries: readonly string[]): AllowList {
  const names = new Set<string>();
  const ranges = new BlockList();
  for (const raw of entries) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    const [net, bits] = entry.split('/');
    const family = isIP(net ?? '');
    if (family !== 0 && bits !== undefined) ranges.addSubnet(net!, Number(bits), family === 4 ? 'ipv4' : 'ipv6');
    else if (family !== 0) ranges.addAddress(net!, family === 4 ? 'ipv4' : 'ipv6');
    else names.add(entry.replace(/^\[|\]$/g, ''));
  }
  return {
    allows(hostOrAddress) {
      const h = unmapped(hostOrAddress.toLowerCase().replace(/^\[|\]$/g, ''));
      if (names.has(h)) return true;
      const family = isIP(h);
      return family !== 0 && ranges.check(h, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}

/** Parses and checks a hook URL's form; the host's addresses are checked by `checkHookUrl`. */
export function parseHookUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid('invalid_hook_url', `not a URL: ${JSON.stringify(text.slice(0, 200))}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('invalid_hook_url', `a webhook URL must be http or https, not ${url.protocol.replace(/:$/, '')}`);
  if (url.username || url.password) throw invalid('invalid_hook_url', 'a webhook URL may not carry a user name or password (use the secret: receivers check the signature)');
  if (text.length > 2000) throw invalid('invalid_hook_url', 'a webhook URL may be at most 2000 characters');
  return url;
}

function resolveAll(host: string): Promise<LookupAddress[]> {
  return new Promise((resolve, reject) => dnsLookup(host, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))));
}

/** Why the host may not be reached (its first internal address), or undefined. */
export async function refusalOf(host: string, allowed: AllowList): Promise<string | undefined> {
  const bare = host.replace(/^\[|\]$/g, '');
  if (allowed.allows(bare)) return undefined;
  const addresses = isIP(bare) ? [{ address: bare }] : await resolveAll(bare);
  const internal = addresses.find((a) => isInternalAddress(a.address) && !allowed.allows(a.address));
  return internal && `${bare} resolves to ${internal.address}, an internal address; an administrator can allow it with webhookAllowedHosts`;
}

/** A hook URL, checked in form and by where its host resolves now. */
export async function checkHookUrl(text: string, allowed: AllowList): Promise<URL> {
  const url = parseHookUrl(text);
  let refusal: string | undefined;
  try {
    refusal = await refusalOf(url.hostname, allowed);
  } catch (err) {
    throw invalid('invalid_hook_url', `the host of ${url.origin} cannot be resolved: ${(err as Error).message}`);
  }
  if (refusal) throw invalid('hook_url_internal', `webhook URL refused: ${refusal}`);
  return url;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for net.connect that resolves as dns.lookup does and fails on an internal address
 * the allowlist does not name: what undici connects to is what was checked.
 */
export function guardedLookup(allowed: AllowList) {
  return (hostname: string, options: { all?: boolean; family?: number | string }, callback: LookupCallback): void => {
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const named = allowed.allows(hostname);
      const internal = addresses.find((a) => isInternalAddress(a.address) && !named && !allowed.allows(a.address));
      if (internal) {
        const e = Object.assign(new Error(`webhook host ${hostname} resolves to ${internal.address}, an internal address`), { code: 'EHOOKINTERNAL' });
        return callback(e, []);
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      callback(null, first.address, first.family);
    });
  };
}
