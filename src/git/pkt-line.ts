/**
 * pkt-line framing (gitprotocol-common "pkt-line Format"): a 4-digit hex length that counts
 * itself, then the payload; `0000` flush, `0001` delimiter and `0002` response-end (v2).
 *
 * `RequestValidator` checks the framing of a request body as it streams to git, so a
 * malformed body is refused with 400 instead of reaching git, and learns what the request
 * says on the way: for receive-pack the ref update commands and capabilities, after which
 * the packfile streams through untouched.
 *
 * What it keeps is bounded (`PushCaps`): a push's ref updates and push options in count, and
 * the bytes before the pack in total, so a small gzip body that decodes to millions of
 * push-option lines is refused as it streams instead of filling the heap (issue 9).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { invalid, tooLarge } from '../shared/errors.js';

/** Largest pkt-line, header included (LARGE_PACKET_MAX in git). */
export const MAX_PKT_LEN = 65520;

export function pktLine(payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  if (body.length + 4 > MAX_PKT_LEN) throw new RangeError('pkt-line payload too long');
  return Buffer.concat([Buffer.from((body.length + 4).toString(16).padStart(4, '0')), body]);
}

export const FLUSH_PKT = Buffer.from('0000');

export interface RefUpdate {
  oldOid: string;
  newOid: string;
  ref: string;
}

const OID = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const EMPTY = Buffer.alloc(0);

/** Value of each byte as a lowercase hex digit, -1 for any other byte. */
const HEX_DIGIT = new Int8Array(256).fill(-1);
for (let d = 0; d < 16; d++) HEX_DIGIT['0123456789abcdef'.charCodeAt(d)] = d;

/** The pkt-line length in the 4 bytes at `at`, or undefined unless they are 4 lowercase hex digits. */
/** The length of the pkt-line header at `at` (four lowercase or uppercase hex digits), or undefined. */
export function hexLength(buf: Buffer, at: number): number | undefined {
  const a = HEX_DIGIT[buf[at]!]!;
  const b = HEX_DIGIT[buf[at + 1]!]!;
  const c = HEX_DIGIT[buf[at + 2]!]!;
  const d = HEX_DIGIT[buf[at + 3]!]!;
  return (a | b | c | d) < 0 ? undefined : (a << 12) | (b << 8) | (c << 4) | d;
}
const ZERO_OID = /^0+$/;

type Phase = 'lines' | 'push-options' | 'pack';

/** Bounds on the part of a push that comes before the pack (and is held in memory). */
export interface PushCaps {
  /** Ref update commands in one push. */
  maxRefUpdates: number;
  /** Push options (`git push -o`) in one push. */
  maxPushOptions: number;
  /** Bytes of commands, capabilities and push options together, framing included. */
  maxCommandBytes: number;
  /** Bytes of the push options' text together (a push option is a short word or setting). */
  maxPushOptionBytes: number;
}

/** Generous for people, small for memory: used where no configuration applies (tests, fuzzing). */
export const DEFAULT_PUSH_CAPS: PushCaps = { maxRefUpdates: 50_000, maxPushOptions: 100, maxCommandBytes: 8 * 1024 * 1024, maxPushOptionBytes: 64 * 1024 };

export class RequestValidator extends Transform {
  /** Ref updates a receive-pack request asks for, in order. */
  readonly commands: RefUpdate[] = [];
  readonly capabilities: string[] = [];
  readonly pushOptions: string[] = [];
  /** Bytes seen so far, framing and pack included. */
  bytes = 0;

  private phase: Phase = 'lines';
  private optionBytes = 0;
  private header = '';
  private remaining = -1;
  private payload: Buffer[] = [];
  private readonly collect: boolean;

  constructor(
    private readonly service: 'upload-pack' | 'receive-pack',
    private readonly caps: PushCaps = DEFAULT_PUSH_CAPS,
  ) {
    super();
    this.collect = service === 'receive-pack';
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    try {
      this.scan(chunk);
    } catch (err) {
      done(err as Error);
      return;
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.phase !== 'pack' && (this.header.length > 0 || this.remaining > 0)) {
      done(invalid('truncated_pkt_line', 'request body ends inside a pkt-line'));
      return;
    }
    done();
  }

  private scan(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && this.phase !== 'pack') {
      // Everything before the pack is held (commands) or parsed (options) here; the pack is not.
      if (this.collect && this.bytes - chunk.length + i >= this.caps.maxCommandBytes) {
        throw tooLarge('push_commands_too_large', `push commands and options exceed the limit of ${this.caps.maxCommandBytes} bytes`, {
          limit: this.caps.maxCommandBytes,
        });
      }
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - i);
        if (this.collect) this.payload.push(chunk.subarray(i, i + take));
        this.remaining -= take;
        i += take;
        if (this.remaining === 0) this.line(this.collect ? Buffer.concat(this.payload) : EMPTY);
        continue;
      }
      // A fetch of many refs is 100,000 lines: the usual case, a whole header in this chunk, is
      // read without building a string.
      let header: string | number;
      if (this.header.length === 0 && i + 4 <= chunk.length) {
        header = hexLength(chunk, i) ?? chunk.toString('latin1', i, i + 4);
        i += 4;
      } else {
        this.header += String.fromCharCode(chunk[i]!);
        i++;
        if (this.header.length < 4) continue;
        header = hexLength(Buffer.from(this.header, 'latin1'), 0) ?? this.header;
        this.header = '';
      }
      if (typeof header === 'string') throw invalid('malformed_pkt_line', 'malformed pkt-line length', { header: JSON.stringify(header) });
      this.frame(header);
    }
  }

  /** What a pkt-line header of length `len` starts. */
  private frame(len: number): void {
    if (len === 0) this.special('flush');
    else if (len === 1 || len === 2) this.special(len === 1 ? 'delim' : 'response-end');
    else if (len === 3 || len > MAX_PKT_LEN) {
      throw invalid('malformed_pkt_line', 'pkt-line length out of range', { length: len });
    } else if (len === 4) {
      this.line(EMPTY);
    } else {
      // Checked at the header, before the option is held.
      if (this.collect && this.phase === 'push-options' && (this.optionBytes += len - 4) > this.caps.maxPushOptionBytes) {
        throw tooLarge('push_options_too_large', `push options exceed the limit of ${this.caps.maxPushOptionBytes} bytes`, { limit: this.caps.maxPushOptionBytes });
      }
      this.remaining = len - 4;
      this.payload = [];
    }
  }

  private special(kind: 'flush' | 'delim' | 'response-end'): void {
    if (this.service === 'upload-pack') return;
    if (kind !== 'flush') throw invalid('malformed_pkt_line', 'unexpected special packet in a push');
    if (this.phase === 'lines' && this.capabilities.includes('push-options')) this.phase = 'push-options';
    else this.phase = 'pack';
  }

  private line(payload: Buffer): void {
    this.remaining = -1;
    if (!this.collect) return;
    const text = payload.toString('utf8').replace(/\n$/, '');
    if (this.phase === 'push-options') {
      if (this.pushOptions.length >= this.caps.maxPushOptions) {
        throw tooLarge('too_many_push_options', `too many push options: the limit is ${this.caps.maxPushOptions}`, { limit: this.caps.maxPushOptions });
      }
      this.pushOptions.push(text);
      return;
    }
    if (text.startsWith('shallow ')) {
      if (!OID.test(text.slice(8))) throw invalid('malformed_push_command', 'malformed shallow line');
      return;
    }
    const [command, caps] = text.split('\0', 2);
    if (this.commands.length === 0 && caps !== undefined) this.capabilities.push(...caps.split(' ').filter(Boolean));
    const parts = (command ?? '').split(' ');
    if (parts.length !== 3 || !OID.test(parts[0]!) || !OID.test(parts[1]!) || !parts[2]!.startsWith('refs/')) {
      throw invalid('malformed_push_command', 'malformed ref update command', { line: command?.slice(0, 200) });
    }
    if (this.commands.length >= this.caps.maxRefUpdates) {
      throw tooLarge('too_many_ref_updates', `too many ref updates in one push: the limit is ${this.caps.maxRefUpdates}`, { limit: this.caps.maxRefUpdates });
    }
    this.commands.push({ oldOid: parts[0]!, newOid: parts[1]!, ref: parts[2]! });
  }
}

export function isZeroOid(oid: string): boolean {
  return ZERO_OID.test(oid);
}
