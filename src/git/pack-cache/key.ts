/**
 * What an upload-pack response depends on, as a cache key; and which requests may be cached.
 *
 * The key hashes the repository id, its refs version, the git version, the service, the
 * protocol version, the endpoint and the request body. The body is normalized only where
 * git provably ignores the difference (git 2.39, upload-pack.c and serve.c):
 * - v0/v1: the `agent=` and `session-id=` capabilities of the first want line. upload-pack
 *   only looks features up by name at a whitespace boundary (parse_feature_request), reads no
 *   `agent`, and sends `session-id` to trace2 only; a token is dropped only if it holds no
 *   whitespace, so no other feature can hide in it.
 * - v2: `agent=` capability lines (always advertised, never read by ls-refs or fetch). Not
 *   `session-id=`: git dies on it unless transfer.advertiseSID is set, so it stays in the key.
 *
 * A request with `have` lines is a negotiation: usually unique to one client's history, but
 * CI runners that keep a workspace at the same commit all send the same one after a push. It
 * is cacheable (`negotiation`), keyed like any other on its whole normalized body, haves
 * included, so its response is only ever served for the same request; the cache stores one only
 * on its second sighting (cache.ts). Not cached: a v2 command other than `fetch` and `ls-refs`,
 * or a body that does not parse (git gets it as before and answers with its own error).
 */
import { createHash } from 'node:crypto';
import { MAX_PKT_LEN, pktLine } from '../pkt-line.js';

export type Endpoint = 'advertisement' | 'ls-refs' | 'fetch';
export type ProtocolVersion = 0 | 1 | 2;

export type UncacheableReason = 'have' | 'command' | 'malformed' | 'request_too_large' | 'no_space' | 'refs_unreadable';

export type Classified =
  | { cacheable: true; endpoint: 'ls-refs' | 'fetch'; normalized: Buffer; negotiation: boolean }
  | { cacheable: false; endpoint: Endpoint | 'other'; reason: UncacheableReason };

/** The protocol version of a `version=N` value as gitProtocolValue() returns it. */
export function protocolVersion(protocol: string | undefined): ProtocolVersion {
  if (protocol === 'version=2') return 2;
  if (protocol === 'version=1') return 1;
  return 0;
}

type Packet = { kind: 'data'; payload: Buffer } | { kind: 'flush' | 'delim' | 'end' };

/** Splits a whole request body into pkt-lines; undefined if the framing is broken. */
export function parsePackets(body: Buffer): Packet[] | undefined {
  const packets: Packet[] = [];
  let i = 0;
  while (i < body.length) {
    if (i + 4 > body.length) return undefined;
    const header = body.toString('latin1', i, i + 4);
    if (!/^[0-9a-f]{4}$/.test(header)) return undefined;
    const len = parseInt(header, 16);
    if (len === 0) packets.push({ kind: 'flush' });
    else if (len === 1) packets.push({ kind: 'delim' });
    else if (len === 2) packets.push({ kind: 'end' });
    else if (len === 3 || len > MAX_PKT_LEN || i + len > body.length) return undefined;
    else packets.push({ kind: 'data', payload: body.subarray(i + 4, i + len) });
    i += len < 4 ? 4 : len;
  }
  return packets;
}

function encode(packets: Packet[]): Buffer {
  return Buffer.concat(
    packets.map((p) => {
      if (p.kind === 'data') return pktLine(p.payload);
      return Buffer.from(p.kind === 'flush' ? '0000' : p.kind === 'delim' ? '0001' : '0002');
    }),
  );
}

/** git reads a line with PACKET_READ_CHOMP_NEWLINE: one trailing LF is not part of it. */
function chomp(payload: Buffer): string {
  const text = payload.toString('latin1');
  return text.endsWith('\n') ? text.slice(0, -1) : text;
}

const FIRST_WANT = /^want ([0-9a-f]{40}|[0-9a-f]{64})( [^]*)?$/;
/** C isspace() other than the space that separates features. */
const OTHER_SPACE = /[\t\n\v\f\r]/;

/** The first want line without its agent= and session-id= features, when that is safe. */
function normalizeFirstWant(payload: Buffer): Buffer {
  const line = chomp(payload);
  const m = FIRST_WANT.exec(line);
  if (!m || m[2] === undefined) return payload;
  const features = m[2].split(' ');
  const kept = features.filter((f) => !((f.startsWith('agent=') || f.startsWith('session-id=')) && !OTHER_SPACE.test(f)));
  if (kept.length === features.length) return payload;
  const rebuilt = `want ${m[1]}${kept.join(' ')}`;
  return Buffer.from(payload.toString('latin1').endsWith('\n') ? `${rebuilt}\n` : rebuilt, 'latin1');
}

function isData(p: Packet): p is { kind: 'data'; payload: Buffer } {
  return p.kind === 'data';
}

/** Decides whether a POST to git-upload-pack may be cached, and what its key body is. */
export function classifyUploadPackRequest(body: Buffer, version: ProtocolVersion): Classified {
  const packets = parsePackets(body);
  if (!packets) return { cacheable: false, endpoint: 'other', reason: 'malformed' };
  return version === 2 ? classifyV2(packets) : classifyV0(packets);
}

function classifyV0(packets: Packet[]): Classified {
  let firstWant = true;
  let negotiation = false;
  const out: Packet[] = [];
  for (const p of packets) {
    if (!isData(p)) {
      out.push(p);
      continue;
    }
    const line = chomp(p.payload);
    if (line.startsWith('have ')) negotiation = true;
    if (firstWant && line.startsWith('want ')) {
      firstWant = false;
      out.push({ kind: 'data', payload: normalizeFirstWant(p.payload) });
      continue;
    }
    out.push(p);
  }
  return { cacheable: true, endpoint: 'fetch', normalized: encode(out), negotiation };
}

function classifyV2(packets: Packet[]): Classified {
  let command: string | undefined;
  let inArgs = false;
  let negotiation = false;
  const out: Packet[] = [];
  for (const p of packets) {
    if (!isData(p)) {
      // The first delim or flush ends the capability list (serve.c process_request).
      if (!inArgs) inArgs = true;
      out.push(p);
      continue;
    }
    const line = chomp(p.payload);
    if (!inArgs) {
      if (line.startsWith('agent=')) continue;
      if (line.startsWith('command=')) command = line.slice('command='.length);
    } else if (line.startsWith('have ')) {
      negotiation = true;
    }
    out.push(p);
  }
  if (command !== 'fetch' && command !== 'ls-refs') return { cacheable: false, endpoint: 'other', reason: 'command' };
  return { cacheable: true, endpoint: command, normalized: encode(out), negotiation };
}

export interface KeyParts {
  repoId: string;
  refsVersion: string;
  gitVersion: string;
  service: 'upload-pack';
  protocol: ProtocolVersion;
  endpoint: Endpoint;
  /** The normalized request body (empty for the advertisement). */
  request: Buffer;
}

/** sha256 over every part, unambiguously framed; 64 hex digits. */
export function cacheKey(parts: KeyParts): string {
  const head = JSON.stringify([parts.repoId, parts.refsVersion, parts.gitVersion, parts.service, parts.protocol, parts.endpoint]);
  return createHash('sha256').update(head).update('\n').update(parts.request).digest('hex');
}
