/**
 * `npm run bench:lfs`: a 1 GiB Git LFS object uploaded to and downloaded from gitstratum in
 * proxy mode with the filesystem object store, next to peers measured in the same run:
 *
 *   - a loopback copy through a static file server: nginx on 127.0.0.1 serving the same file
 *     to `curl` (download), and taking it from `curl -T` with the dav module's PUT (upload);
 *   - a plain `cp` of the file to the filesystem of the data directory, and `cp` + fsync
 *     (gitstratum fsyncs an upload before it answers; nginx and cp do not).
 *
 * gitstratum is driven as git-lfs drives it: a batch request, then the action's href with the
 * action's headers (a signed Authorization), the body streamed from disk, and the download
 * streamed to a file whose SHA-256 is checked afterwards. Both servers are driven by both
 * clients, a node:http one and curl, so each ratio can be read with the client held equal
 * (on 2 cores the client's CPU competes with the server's).
 *
 * Then the batch endpoint: requests naming 1,000 objects (download of objects present, of
 * random absent oids, upload of random new oids), latency measured by the client.
 *
 * Method as in /work/shared/BENCHMARKING.md: every cell is the median and min–max of several
 * runs with the peers interleaved (A B C, B C A, …), server CPU is the process tree's
 * (utime+stime+cutime+cstime), peak RSS is VmHWM reset before each transfer plus RSS sampled
 * every 100 ms during it, ratios come last. 127.0.0.1 only; every process is stopped by PID.
 *
 * Options (flags after `npm run bench:lfs --`, or environment):
 *   --runs N        BENCH_RUNS        transfer runs per cell (default 5, at least 3)
 *   --batch-runs N  BENCH_BATCH_RUNS  batch requests per kind (default 9, at least 3)
 *   --size-mib N    BENCH_LFS_MIB     object size in MiB (default 1024; smaller for a quick look)
 *   --keep          BENCH_KEEP=1      keep the run directory (.bench/run-lfs-*)
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startGitstratum, type GitstratumServer } from './gitstratum-server.js';
import { startNginx } from './http-backend-peer.js';
import { findExecutable, run, runBench, startRun } from './processes.js';
import { currentRss, peakRss, resetPeakRss, sampleRss, treeCpuSeconds, treeOf, waitForTree } from './proc-stats.js';
import { median, spread, table } from './report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = path.join(ROOT, '.bench');
const MiB = 1024 * 1024;
const MB = 1e6;
const LFS_TYPE = 'application/vnd.git-lfs+json';
/** Bump when the generated object changes (its bytes are a function of this and the size). */
const GENERATOR_VERSION = 1;
const TRANSFER_TIMEOUT_MS = 300_000;
const REQUEST_TIMEOUT_MS = 60_000;
const BATCH_OBJECTS = 1000;
const TARGET_THROUGHPUT = 0.7;
const TARGET_RSS = 200 * MB;
const TARGET_BATCH_MS = 250;

interface Options {
  runs: number;
  batchRuns: number;
  sizeMiB: number;
  keep: boolean;
  timeoutS: number;
}

function parseOptions(argv: string[]): Options {
  const env = process.env;
  const opts: Options = {
    runs: Number(env['BENCH_RUNS'] ?? 5),
    batchRuns: Number(env['BENCH_BATCH_RUNS'] ?? 9),
    sizeMiB: Number(env['BENCH_LFS_MIB'] ?? 1024),
    keep: env['BENCH_KEEP'] === '1',
    timeoutS: Number(env['BENCH_TIMEOUT_S'] ?? 1800),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--keep') opts.keep = true;
    else if (arg === '--runs') opts.runs = Number(argv[++i]);
    else if (arg === '--batch-runs') opts.batchRuns = Number(argv[++i]);
    else if (arg === '--size-mib') opts.sizeMiB = Number(argv[++i]);
    else throw new Error(`unknown option: ${arg} (known: --runs N, --batch-runs N, --size-mib N, --keep)`);
  }
  if (!Number.isInteger(opts.runs) || opts.runs < 3 || opts.runs > 20) throw new Error('--runs must be an integer from 3 to 20');
  if (!Number.isInteger(opts.batchRuns) || opts.batchRuns < 3 || opts.batchRuns > 100) throw new Error('--batch-runs must be an integer from 3 to 100');
  if (!Number.isInteger(opts.sizeMiB) || opts.sizeMiB < 1 || opts.sizeMiB > 4096) throw new Error('--size-mib must be an integer from 1 to 4096');
  return opts;
}

const say = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;

async function prerequisites(): Promise<{ nginx: string; curl: string }> {
  if (process.platform !== 'linux') throw new Error('this benchmark reads /proc: it runs on Linux only');
  let nginx = findExecutable('nginx');
  let curl = findExecutable('curl');
  if (!nginx || !curl) {
    const missing = [!nginx && 'nginx-light', !curl && 'curl'].filter(Boolean).join(' ');
    if (process.getuid?.() !== 0) throw new Error(`nginx and curl are needed for the peer; install them with: sudo apt-get install -y ${missing}`);
    say(`installing ${missing} from Debian's packages`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    await run('apt-get', ['update', '-qq'], { env });
    await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing.split(' ')], { env });
    nginx = findExecutable('nginx');
    curl = findExecutable('curl');
    if (!nginx || !curl) throw new Error('nginx or curl still missing after apt-get install');
  }
  const modules = spawnSync(nginx, ['-V'], { encoding: 'utf8' }).stderr;
  if (!modules.includes('--with-http_dav_module')) throw new Error(`${nginx} lacks the dav module (PUT); Debian's nginx-light has it`);
  return { nginx, curl };
}

// ---------------------------------------------------------------------------------------------
// The object: seeded random bytes, generated once into .bench/ and streamed to disk.

interface TestObject {
  file: string;
  oid: string;
  size: number;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: MiB }), hash);
  return hash.digest('hex');
}

/**
 * `size` bytes of AES-128-CTR keystream under a fixed key (incompressible, and the same bytes
 * every time), written in 1 MiB chunks and hashed on the way. A stamp beside it records the
 * generator version, size and SHA-256; a mismatch regenerates.
 */
async function ensureObject(sizeMiB: number): Promise<TestObject> {
  const size = sizeMiB * MiB;
  const file = path.join(CACHE, `lfs-${sizeMiB}mib.bin`);
  const stampFile = `${file}.json`;
  try {
    const stamp = JSON.parse(await readFile(stampFile, 'utf8')) as { version: number; size: number; oid: string };
    if (stamp.version === GENERATOR_VERSION && stamp.size === size && (await stat(file)).size === size) return { file, oid: stamp.oid, size };
  } catch {
    // no usable stamp: generate
  }
  say(`generating ${path.relative(ROOT, file)} (${sizeMiB} MiB of seeded random bytes)`);
  await mkdir(CACHE, { recursive: true });
  const cipher = createCipheriv('aes-128-ctr', createHash('sha256').update(`gitstratum lfs bench ${GENERATOR_VERSION}`).digest().subarray(0, 16), Buffer.alloc(16));
  const zeros = Buffer.alloc(MiB);
  const hash = createHash('sha256');
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await pipeline(async function* () {
      for (let done = 0; done < size; done += MiB) {
        const chunk = cipher.update(zeros.subarray(0, Math.min(MiB, size - done)));
        hash.update(chunk);
        yield chunk;
      }
    }, createWriteStream(tmp, { highWaterMark: MiB }));
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const oid = hash.digest('hex');
  await writeFile(stampFile, JSON.stringify({ version: GENERATOR_VERSION, size, oid }) + '\n');
  return { file, oid, size };
}

// ---------------------------------------------------------------------------------------------
// A small LFS client on node:http.

interface Action {
  href: string;
  header?: Record<string, string>;
}
interface BatchObject {
  oid: string;
  size: number;
  actions?: { upload?: Action; download?: Action; verify?: Action };
  error?: { code: number; message: string };
}

/** One request with a small body; the whole answer is read. Bounded by REQUEST_TIMEOUT_MS. */
function request(
  url: string,
  opts: { method: string; headers: Record<string, string>; body?: string | Buffer; agent?: http.Agent },
): Promise<{ status: number; body: Buffer; seconds: number }> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method, headers: opts.headers, agent: opts.agent ?? false });
    const timer = setTimeout(() => req.destroy(new Error(`${opts.method} ${url}: no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)), REQUEST_TIMEOUT_MS);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), seconds: seconds(started) });
      });
    });
    req.end(opts.body);
  });
}

class LfsClient {
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  constructor(
    private readonly gs: GitstratumServer,
    private readonly repo: string,
  ) {}

  get lfsUrl(): string {
    return `${this.gs.url}/alice/bench/${this.repo}.git/info/lfs`;
  }

  /** The batch request as git-lfs sends it, with the token as Basic credentials. */
  async batch(operation: 'upload' | 'download', objects: { oid: string; size: number }[]): Promise<{ objects: BatchObject[]; seconds: number; bytes: number }> {
    const body = JSON.stringify({ operation, transfers: ['basic'], objects, hash_algo: 'sha256' });
    const res = await request(`${this.lfsUrl}/objects/batch`, {
      method: 'POST',
      agent: this.agent,
      headers: {
        Accept: LFS_TYPE,
        'Content-Type': LFS_TYPE,
        Authorization: `Basic ${Buffer.from(`git:${this.gs.token}`).toString('base64')}`,
        'Content-Length': String(Buffer.byteLength(body)),
      },
      body,
    });
    if (res.status !== 200) throw new Error(`batch ${operation}: HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
    const parsed = JSON.parse(res.body.toString('utf8')) as { objects: BatchObject[] };
    return { objects: parsed.objects, seconds: res.seconds, bytes: res.body.length };
  }

  async action(operation: 'upload' | 'download', obj: { oid: string; size: number }): Promise<BatchObject> {
    const [o] = (await this.batch(operation, [obj])).objects;
    if (!o?.actions?.[operation]) throw new Error(`batch ${operation} of ${obj.oid}: no ${operation} action: ${JSON.stringify(o)}`);
    return o;
  }

  async verify(o: BatchObject): Promise<void> {
    const v = o.actions?.verify;
    if (!v) return;
    const body = JSON.stringify({ oid: o.oid, size: o.size });
    const res = await request(v.href, {
      method: 'POST',
      agent: this.agent,
      headers: { ...v.header, Accept: LFS_TYPE, 'Content-Type': LFS_TYPE, 'Content-Length': String(Buffer.byteLength(body)) },
      body,
    });
    if (res.status !== 200) throw new Error(`verify: HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
  }
}

/** PUT of a file streamed from disk in 1 MiB reads, on a fresh connection; seconds to the answer. */
function putFile(action: Action, file: string, size: number): Promise<number> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = http.request(action.href, {
      method: 'PUT',
      agent: false,
      headers: { ...action.header, 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
    });
    const timer = setTimeout(() => req.destroy(new Error(`PUT ${action.href}: not done within ${TRANSFER_TIMEOUT_MS / 1000} s`)), TRANSFER_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    req.on('error', fail);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('error', fail);
      res.on('end', () => {
        clearTimeout(timer);
        if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) resolve(seconds(started));
        else reject(new Error(`PUT: HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
      });
    });
    pipeline(createReadStream(file, { highWaterMark: MiB }), req).catch(fail);
  });
}

/** GET streamed into a file (1 MiB writes), on a fresh connection; seconds until the file is closed. */
function getToFile(action: Action, dest: string): Promise<number> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = http.get(action.href, { agent: false, headers: { ...action.header } });
    const timer = setTimeout(() => req.destroy(new Error(`GET ${action.href}: not done within ${TRANSFER_TIMEOUT_MS / 1000} s`)), TRANSFER_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    req.on('error', fail);
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        fail(new Error(`GET: HTTP ${res.statusCode}`));
        return;
      }
      pipeline(res, createWriteStream(dest, { highWaterMark: MiB })).then(() => {
        clearTimeout(timer);
        resolve(seconds(started));
      }, fail);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Measuring.

interface TransferSample {
  wall: number;
  /** MB/s, MB = 10^6 bytes. */
  rate: number;
  /** Server process-tree CPU seconds; NaN when there is no server (cp). */
  cpu: number;
  /** Server VmHWM after the transfer (reset before it); NaN when there is no server. */
  hwm: number;
  /** Largest RSS sampled every 100 ms during the transfer; NaN when not sampled. */
  sampled: number;
}

interface TransferCell {
  scenario: string;
  side: string;
  samples: TransferSample[];
}

/** A server as the transfers measure it. */
interface Server {
  cpuSeconds(): number;
  resetPeak(): boolean;
  peakRss(): number;
  waitIdle(): Promise<void>;
  /** The process whose RSS is sampled during transfers. */
  samplePid?: number;
}

async function measureTransfer(server: Server | undefined, bytes: number, action: () => Promise<number>): Promise<TransferSample> {
  // Dirty pages of the previous transfer are written back now, not during this one.
  await run('sync', [], { timeoutMs: 120_000 });
  await server?.waitIdle();
  server?.resetPeak();
  const before = server?.cpuSeconds() ?? NaN;
  const sampler = server?.samplePid !== undefined ? sampleRss(server.samplePid, 100) : undefined;
  let wall: number;
  let sampled = NaN;
  try {
    wall = await action();
  } finally {
    if (sampler) sampled = sampler.stop();
  }
  await server?.waitIdle();
  return { wall, rate: bytes / wall / MB, cpu: (server?.cpuSeconds() ?? NaN) - before, hwm: server?.peakRss() ?? NaN, sampled };
}

const fmt = (values: number[], digits: number, scale = 1) => (values.some((v) => Number.isNaN(v)) ? '—' : spread(values, digits, scale));

function transferTable(cells: readonly TransferCell[]): string {
  const rows = [['scenario', 'side', 'wall s', 'MB/s', 'server CPU s', 'server VmHWM MiB', 'sampled RSS max MiB']];
  let last = '';
  for (const c of cells) {
    const pick = (f: (s: TransferSample) => number) => c.samples.map(f);
    rows.push([
      c.scenario === last ? '' : c.scenario,
      c.side,
      fmt(pick((s) => s.wall), 2),
      fmt(pick((s) => s.rate), 0),
      fmt(pick((s) => s.cpu), 2),
      fmt(pick((s) => s.hwm), 1, MiB),
      fmt(pick((s) => s.sampled), 1, MiB),
    ]);
    last = c.scenario;
  }
  return table(rows);
}

interface BatchSample {
  ms: number;
  cpuMs: number;
  hwm: number;
  kib: number;
}

function randomObjects(n: number): { oid: string; size: number }[] {
  return Array.from({ length: n }, () => ({ oid: randomBytes(32).toString('hex'), size: 1 + Math.floor(Math.random() * 100 * MiB) }));
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const tools = await prerequisites();
  const { workDir, env, finish } = await startRun(CACHE, 'run-lfs', { keep: opts.keep, timeoutS: opts.timeoutS });

  try {
    const obj = await ensureObject(opts.sizeMiB);
    const label = opts.sizeMiB === 1024 ? '1 GiB' : `${opts.sizeMiB} MiB`;

    say('starting gitstratum (filesystem store, proxy mode) and nginx (static files + dav PUT)');
    const gsData = path.join(workDir, 'gitstratum');
    const gs = await startGitstratum(ROOT, gsData, env, ['--object-store', 'filesystem', '--lfs-transfer-mode', 'proxy']);
    const storedFile = path.join(gsData, 'objects', 'lfs', obj.oid.slice(0, 2), obj.oid.slice(2, 4), obj.oid);

    // The static peer serves a hard link to the very file gitstratum gets (same page cache),
    // and stores PUTs under upload/; its temp files are on the same filesystem (a rename).
    const nginxPrefix = path.join(workDir, 'nginx');
    const www = path.join(nginxPrefix, 'www');
    await mkdir(path.join(www, 'upload'), { recursive: true });
    await chmod(path.join(www, 'upload'), 0o777); // nginx's workers run as nobody when we are root
    await link(obj.file, path.join(www, 'object.bin'));
    const nginx = await startNginx(
      tools.nginx,
      nginxPrefix,
      {
        // As Debian's default nginx.conf has it.
        http: '  sendfile on;\n  tcp_nopush on;\n  types { application/octet-stream bin; }',
        server: `    root ${www};
    location /upload/ {
      dav_methods PUT;
      dav_access user:rw all:r;
    }`,
      },
      env,
    );
    const nginxResident = new Set(treeOf([nginx.pid]).map((p) => p.pid));

    const gsServer: Server = {
      cpuSeconds: () => treeCpuSeconds([gs.pid]),
      resetPeak: () => resetPeakRss(gs.pid),
      peakRss: () => peakRss(gs.pid),
      waitIdle: () => waitForTree([gs.pid], new Set([gs.pid])),
      samplePid: gs.pid,
    };
    const nginxServer: Server = {
      cpuSeconds: () => treeCpuSeconds([nginx.pid]),
      resetPeak: () => [...nginxResident].map(resetPeakRss).every(Boolean),
      peakRss: () => Math.max(...[...nginxResident].map((pid) => peakRss(pid))),
      waitIdle: () => waitForTree([nginx.pid], nginxResident),
    };
    if (![gsServer, nginxServer].every((s) => s.resetPeak())) say('warning: cannot reset VmHWM (/proc/<pid>/clear_refs); peaks are per process lifetime');

    const gsIdleRss = currentRss(gs.pid);
    const loadBefore = os.loadavg()[0]!;
    const out = path.join(workDir, 'out');
    await mkdir(out, { recursive: true });
    say(`warming the page cache with ${path.relative(ROOT, obj.file)}`);
    await run('sh', ['-c', 'cat "$1" > /dev/null', 'sh', obj.file]);

    const cells: TransferCell[] = [];
    const cell = (scenario: string, side: string) => {
      let c = cells.find((x) => x.scenario === scenario && x.side === side);
      if (!c) cells.push((c = { scenario, side, samples: [] }));
      return c;
    };
    const up = `upload ${label}`;
    const down = `download ${label}`;
    const local = `local copy ${label}`;
    type Client = 'node' | 'curl';
    const CLIENTS: Client[] = ['node', 'curl'];
    const sideName = (server: 'gitstratum' | 'nginx', client: Client) => `${server}, ${client === 'node' ? 'node:http' : 'curl'} client`;
    const CP = 'cp';
    const CP_FSYNC = 'cp + fsync';
    const curl = (args: string[]) => run(tools.curl, ['-sS', '--fail', '--no-progress-meter', '-H', 'Expect:', ...args], { env, timeoutMs: TRANSFER_TIMEOUT_MS });
    const curlHeaders = (a: Action) => Object.entries(a.header ?? {}).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
    /** The same PUT and GET for both servers: the action's href and headers, with either client. */
    const put = async (client: Client, action: Action) =>
      client === 'node'
        ? putFile(action, obj.file, obj.size)
        : (await curl([...curlHeaders(action), '-H', 'Content-Type: application/octet-stream', '-T', obj.file, '-o', '/dev/null', action.href])).seconds;
    const get = async (client: Client, action: Action, dest: string) =>
      client === 'node' ? getToFile(action, dest) : (await curl([...curlHeaders(action), '-o', dest, action.href])).seconds;
    const checkSize = async (file: string, what: string) => {
      const size = (await stat(file)).size;
      if (size !== obj.size) throw new Error(`${what}: ${size} bytes, expected ${obj.size}`);
    };
    const checkHash = async (file: string, what: string) => {
      const oid = await sha256File(file);
      if (oid !== obj.oid) throw new Error(`${what}: SHA-256 ${oid}, expected ${obj.oid}`);
    };
    const note = (what: string, s: TransferSample) =>
      say(`${what}: ${s.wall.toFixed(2)} s, ${s.rate.toFixed(0)} MB/s${Number.isNaN(s.cpu) ? '' : `, server CPU ${s.cpu.toFixed(2)} s`}`);

    type Step = [scenario: string, side: string, measure: (i: number) => Promise<TransferSample>];
    let repoSeq = 0;
    let lastRepo = '';
    const uploads: Step[] = [
      // Into a fresh repository each time, the object removed from the store first: every
      // upload really writes. The verify action follows, untimed.
      ...CLIENTS.map((client): Step => [
        up,
        sideName('gitstratum', client),
        async () => {
          const repo = `lfs-${++repoSeq}`;
          await gs.createRepo(repo);
          await rm(storedFile, { force: true });
          const lfs = new LfsClient(gs, repo);
          try {
            const o = await lfs.action('upload', { oid: obj.oid, size: obj.size });
            const sample = await measureTransfer(gsServer, obj.size, () => put(client, o.actions!.upload!));
            await lfs.verify(o);
            await checkSize(storedFile, 'stored object');
            lastRepo = repo;
            return sample;
          } finally {
            lfs.agent.destroy();
          }
        },
      ]),
      ...CLIENTS.map((client): Step => [
        up,
        sideName('nginx', client),
        async (i) => {
          const name = `object-${client}-${i}.bin`;
          const sample = await measureTransfer(nginxServer, obj.size, () => put(client, { href: `${nginx.url}/upload/${name}` }));
          await checkSize(path.join(www, 'upload', name), 'nginx PUT');
          await rm(path.join(www, 'upload', name), { force: true });
          return sample;
        },
      ]),
      ...(
        [
          [CP, 'cp "$1" "$2"'],
          [CP_FSYNC, 'cp "$1" "$2" && sync "$2"'],
        ] as const
      ).map(([side, script]): Step => [
        local,
        side,
        async (i) => {
          const dest = path.join(gsData, `cp-${i}.bin`); // the data directory's filesystem
          const sample = await measureTransfer(undefined, obj.size, async () => (await run('sh', ['-c', script, 'sh', obj.file, dest], { timeoutMs: TRANSFER_TIMEOUT_MS })).seconds);
          await checkSize(dest, side);
          await rm(dest, { force: true });
          return sample;
        },
      ]),
    ];
    // Downloads: gitstratum's of the object its last upload stored; nginx's of the same file.
    const downloads: Step[] = [
      ...CLIENTS.map((client): Step => [
        down,
        sideName('gitstratum', client),
        async (i) => {
          const lfs = new LfsClient(gs, lastRepo);
          const action = await lfs.action('download', { oid: obj.oid, size: obj.size }).finally(() => lfs.agent.destroy());
          const dest = path.join(out, `gs-${client}-${i}.bin`);
          const sample = await measureTransfer(gsServer, obj.size, () => get(client, action.actions!.download!, dest));
          await checkHash(dest, `gitstratum download (${client})`);
          await rm(dest, { force: true });
          return sample;
        },
      ]),
      ...CLIENTS.map((client): Step => [
        down,
        sideName('nginx', client),
        async (i) => {
          const dest = path.join(out, `nginx-${client}-${i}.bin`);
          const sample = await measureTransfer(nginxServer, obj.size, () => get(client, { href: `${nginx.url}/object.bin` }, dest));
          await checkHash(dest, `nginx download (${client})`);
          await rm(dest, { force: true });
          return sample;
        },
      ]),
    ];
    // Each run takes the sides in turn, starting one further along each time, so no side
    // always follows the same one.
    const rotate = <T>(list: T[], by: number) => list.map((_, k) => list[(k + by) % list.length]!);
    for (let i = 1; i <= opts.runs; i++) {
      for (const [scenario, side, measure] of [...rotate(uploads, i - 1), ...rotate(downloads, i - 1)]) {
        const sample = await measure(i);
        cell(scenario, side).samples.push(sample);
        note(`${scenario.split(' ')[0]} ${i}/${opts.runs} ${side}`, sample);
      }
    }
    // Order the table: upload, download, local copy.
    cells.sort((a, b) => [up, down, local].indexOf(a.scenario) - [up, down, local].indexOf(b.scenario));

    const batch = await batchLatency(gs, gsServer, opts.batchRuns);

    const nginxVersion = spawnSync(tools.nginx, ['-v'], { encoding: 'utf8' }).stderr.trim().replace('nginx version: ', '');
    const curlVersion = execFileSync(tools.curl, ['--version'], { encoding: 'utf8' }).split(' ').slice(0, 2).join(' ');
    const lines: string[] = [];
    lines.push('');
    lines.push(`gitstratum LFS (proxy mode, filesystem store) vs nginx + curl and cp — Node ${process.version}, ${nginxVersion}, ${curlVersion}, ${os.cpus().length} CPUs`);
    lines.push(`object: ${label} of seeded random bytes (${obj.size} bytes), sha256 ${obj.oid.slice(0, 16)}…; page cache warm; \`sync\` before each transfer`);
    lines.push(`${opts.runs} runs per cell, sides interleaved (order rotated each run); median [min–max]; load average ${loadBefore.toFixed(1)} at start, ${os.loadavg()[0]!.toFixed(1)} at end`);
    lines.push('');
    lines.push(transferTable(cells));
    lines.push('');
    lines.push('wall: the client, from the request to the answer (upload) or to the closed file (download); curl and cp include');
    lines.push('  their process start. Batch requests are made before, untimed. MB/s = 10^6 bytes per second.');
    lines.push('gitstratum: PUT/GET of the batch action\'s href with its signed Authorization. Its upload hashes the body and');
    lines.push('  fsyncs the file and its directories before answering; nginx (dav module PUT) and cp do neither (cp + fsync does).');
    lines.push('nginx: the same file as a static file, sendfile on, tcp_nopush on (as Debian\'s default nginx.conf).');
    lines.push('clients: node:http streams the file in 1 MiB reads / writes the download through an fs stream (1 MiB); curl -T / -o,');
    lines.push('  with `Expect:` empty. The same client against both servers isolates the server; it runs on the same 2 cores.');
    lines.push('server CPU: utime+stime+cutime+cstime of the server process tree (gitstratum: the Node process; nginx: master');
    lines.push('  and workers). Server VmHWM: reset before each transfer; gitstratum\'s RSS also sampled every 100 ms.');
    lines.push(`  gitstratum's Node process had ${(gsIdleRss / MiB).toFixed(1)} MiB resident after start, before any request.`);
    lines.push('');
    lines.push(...batch.lines);
    lines.push('');

    // Ratios last.
    const med = (scenario: string, side: string, f: (s: TransferSample) => number) => {
      const c = cells.find((x) => x.scenario === scenario && x.side === side)!;
      return median(c.samples.map(f));
    };
    const rate = (scenario: string, side: string) => med(scenario, side, (s) => s.rate);
    const verdict = (ok: boolean) => (ok ? 'met' : 'missed');
    const ratioRows = [['gitstratum ÷ nginx, MB/s (medians)', 'value', `target ≥ ${(TARGET_THROUGHPUT * 100).toFixed(0)} %`]];
    const ratio = (label: string, scenario: string, side: string, peerScenario: string, peer: string, target: boolean) => {
      const r = rate(scenario, side) / rate(peerScenario, peer);
      ratioRows.push([label, `${(r * 100).toFixed(1)} %`, target ? verdict(r >= TARGET_THROUGHPUT) : '(context)']);
    };
    for (const scenario of [up, down]) {
      const what = scenario.split(' ')[0];
      for (const client of CLIENTS) {
        ratio(`${what}, both with the ${client === 'node' ? 'node:http' : 'curl'} client`, scenario, sideName('gitstratum', client), scenario, sideName('nginx', client), true);
      }
      ratio(`${what}, gitstratum with node:http ÷ nginx with curl`, scenario, sideName('gitstratum', 'node'), scenario, sideName('nginx', 'curl'), true);
    }
    for (const [scenario, peer] of [
      [up, CP_FSYNC],
      [up, CP],
      [down, CP],
    ] as const) {
      ratio(`${scenario.split(' ')[0]}, gitstratum (curl client) ÷ ${peer}`, scenario, sideName('gitstratum', 'curl'), local, peer, false);
    }
    const gsCells = cells.filter((c) => c.side.startsWith('gitstratum'));
    const transferPeak = Math.max(...gsCells.flatMap((c) => c.samples.flatMap((s) => [s.hwm, s.sampled])));
    const peak = Math.max(transferPeak, batch.peak);
    const batchMedians = batch.medians;
    const worstBatch = Math.max(...batchMedians.map(([, ms]) => ms));
    lines.push('ratios and targets, last (medians)');
    lines.push(table(ratioRows));
    lines.push('');
    lines.push(
      `gitstratum peak RSS (VmHWM and 100 ms samples): ${(transferPeak / MiB).toFixed(1)} MiB over the transfers, ${(batch.peak / MiB).toFixed(1)} MiB over the batch requests` +
        ` — target < ${TARGET_RSS / MB} MB (${(TARGET_RSS / MiB).toFixed(1)} MiB): ${verdict(peak < TARGET_RSS)}`,
    );
    lines.push(
      `batch of ${BATCH_OBJECTS.toLocaleString('en')} objects, median latency: ${batchMedians.map(([k, ms]) => `${k} ${ms.toFixed(0)} ms`).join(', ')}` +
        ` — target < ${TARGET_BATCH_MS} ms: ${verdict(worstBatch < TARGET_BATCH_MS)}`,
    );
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await finish();
  }
}

/**
 * Batch requests naming 1,000 objects in one repository: a download of 1,000 objects it has
 * (small random objects uploaded through gitstratum first, so every one gets a signed
 * action), a download of 1,000 random oids it does not have (per-object 404s), and an upload
 * of 1,000 random new oids (signed upload and verify actions each). Kinds interleaved, one
 * warm-up each, keep-alive connection as git-lfs uses; latency = request sent → answer read.
 */
async function batchLatency(gs: GitstratumServer, server: Server, runs: number): Promise<{ lines: string[]; medians: [string, number][]; peak: number }> {
  const lfs = new LfsClient(gs, 'batch');
  await gs.createRepo('batch');
  say(`batch: uploading ${BATCH_OBJECTS} small objects to alice/bench/batch`);
  const present = Array.from({ length: BATCH_OBJECTS }, () => {
    const bytes = randomBytes(1 + Math.floor(Math.random() * 4096));
    return { oid: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, bytes };
  });
  const { objects: uploads } = await lfs.batch(
    'upload',
    present.map(({ oid, size }) => ({ oid, size })),
  );
  const byOid = new Map(present.map((p) => [p.oid, p.bytes]));
  const queue = [...uploads];
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let o = queue.shift(); o; o = queue.shift()) {
        const a = o.actions?.upload;
        if (!a) throw new Error(`batch upload: no action for ${o.oid}: ${JSON.stringify(o)}`);
        const bytes = byOid.get(o.oid)!;
        const res = await request(a.href, {
          method: 'PUT',
          agent: lfs.agent,
          headers: { ...a.header, 'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes.length) },
          body: bytes,
        });
        if (res.status !== 200) throw new Error(`PUT of a small object: HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`);
      }
    }),
  );
  const presentList = present.map(({ oid, size }) => ({ oid, size }));

  const kinds: { name: string; op: 'upload' | 'download'; objects: () => { oid: string; size: number }[]; expect: (o: BatchObject) => boolean }[] = [
    { name: 'download, 1,000 present', op: 'download', objects: () => presentList, expect: (o) => !!o.actions?.download },
    { name: 'download, 1,000 absent', op: 'download', objects: () => randomObjects(BATCH_OBJECTS), expect: (o) => o.error?.code === 404 },
    { name: 'upload, 1,000 new', op: 'upload', objects: () => randomObjects(BATCH_OBJECTS), expect: (o) => !!o.actions?.upload && !!o.actions.verify },
  ];
  const samples = new Map<string, BatchSample[]>(kinds.map((k) => [k.name, []]));
  let peak = 0;
  for (let i = 0; i <= runs; i++) {
    for (const kind of kinds) {
      const objects = kind.objects();
      await server.waitIdle();
      server.resetPeak();
      const before = server.cpuSeconds();
      const res = await lfs.batch(kind.op, objects);
      const cpu = server.cpuSeconds() - before;
      const hwm = server.peakRss();
      if (res.objects.length !== BATCH_OBJECTS || !res.objects.every(kind.expect)) throw new Error(`batch ${kind.name}: unexpected answer`);
      peak = Math.max(peak, hwm);
      if (i === 0) continue; // warm-up
      samples.get(kind.name)!.push({ ms: res.seconds * 1000, cpuMs: cpu * 1000, hwm, kib: res.bytes / 1024 });
    }
  }
  lfs.agent.destroy();
  const rows = [['batch request, 1,000 objects', 'latency ms', 'server CPU ms', 'answer KiB', 'server VmHWM MiB']];
  const medians: [string, number][] = [];
  for (const kind of kinds) {
    const s = samples.get(kind.name)!;
    rows.push([kind.name, spread(s.map((x) => x.ms), 0), spread(s.map((x) => x.cpuMs), 0), spread(s.map((x) => x.kib), 0), spread(s.map((x) => x.hwm), 1, MiB)]);
    medians.push([kind.name, median(s.map((x) => x.ms))]);
  }
  return {
    lines: [
      `batch API: alice/bench/batch, ${runs} requests per kind after one warm-up, kinds interleaved, keep-alive connection`,
      table(rows),
      'latency: client-side, request sent → whole answer read (JSON parsed after). Server CPU with 10 ms clock ticks: coarse.',
    ],
    medians,
    peak,
  };
}

runBench(main);
