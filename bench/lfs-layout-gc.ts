/**
 * `bench:lfs-layout`, part `gc`: `gitstratum lfs gc` over 10,000 LFS objects (issue 15).
 *
 * One server of its own (filesystem store, or a versioned bucket on moto's S3 server; a readable
 * repository `alice/bench/gc`): the objects
 * (1–8 KiB of seeded random bytes each) are uploaded through the batch API as git-lfs does it
 * (batch, PUT of the upload action, verify; 8 at a time). Half of them, every other one, are
 * then named by pointer files of one commit pushed to `main` (written with `git fast-import`,
 * so no LFS client is involved) and published; the other half no ref reaches. Every object is
 * then made older than the grace period: `created_at` set to 2020 and `touched_at` cleared in
 * the metadata database, as test/e2e/lfs-layout.test.ts does.
 *
 * Timed (wall of the admin command, process start included; the server keeps running): three
 * dry runs, the collection, and a collection with nothing left to delete. Checked: each dry run
 * deletes nothing, the collection deletes exactly the unreferenced half (links, content copies,
 * bytes) and keeps every referenced object's published version, and the store holds that many
 * bytes fewer afterwards.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { randomBytesSeeded, sha256 } from '../test/e2e/lfs-fixture.js';
import { openMetaStore } from '../src/meta/db.js';
import { startGitstratum, type GitstratumServer } from './gitstratum-server.js';
import {
  adminToken,
  createReadableRepo,
  describeAreas,
  describeProblems,
  filesystemStore,
  lfsBytes,
  lfsKey,
  listPublished,
  logProblems,
  MiB,
  motoStore,
  waitForPublishJobs,
  type BenchStore,
} from './lfs-layout-api.js';
import { run } from './processes.js';
import { median, spread, table } from './report.js';

const LFS_TYPE = 'application/vnd.git-lfs+json';
const BATCH_OBJECTS = 100;
const UPLOADS_AT_ONCE = 8;
const DRY_RUNS = 3;

interface GcObject {
  oid: string;
  size: number;
  seed: number;
  referenced: boolean;
  /** Where the pointer commit names it (referenced objects only). */
  path: string;
}

/** `gitstratum lfs gc --json`'s report (src/lfs/gc.ts GcReport), the fields read here. */
interface GcReport {
  repositories: number;
  objects: { total: number; reachable: number; recent: number; locked: number; deleted: number };
  bytes: { deleted: number };
  versions: { deleted: number; orphansDeleted: number };
  /** Content-addressed objects no repository links; copies of objects every linking repository published. */
  unlinkedDeleted: number;
  contentCopiesRemoved: number;
}

const bytesOf = (o: GcObject) => randomBytesSeeded(o.size, o.seed);

function gcObjects(count: number): GcObject[] {
  return Array.from({ length: count }, (_, i) => {
    const seed = 1_000_000 + i;
    const size = 1024 + ((i * 7919) % (7 * 1024));
    const oid = sha256(randomBytesSeeded(size, seed));
    return { oid, size, seed, referenced: i % 2 === 0, path: `objects/d${String(i % 50).padStart(2, '0')}/obj-${String(i).padStart(6, '0')}.bin` };
  });
}

/** Uploads every object to alice/bench/gc as git-lfs would: batches of 100, then PUT and verify, 8 at a time. */
async function upload(gs: GitstratumServer, objects: readonly GcObject[]): Promise<void> {
  const auth = `Basic ${Buffer.from(`git:${gs.token}`).toString('base64')}`;
  const lfsUrl = `${gs.url}/alice/bench/gc.git/info/lfs`;
  const byOid = new Map(objects.map((o) => [o.oid, o]));
  const queue: { oid: string; actions?: { upload?: { href: string; header?: Record<string, string> }; verify?: { href: string; header?: Record<string, string> } } }[] = [];
  for (let i = 0; i < objects.length; i += BATCH_OBJECTS) {
    const body = JSON.stringify({ operation: 'upload', transfers: ['basic'], objects: objects.slice(i, i + BATCH_OBJECTS).map(({ oid, size }) => ({ oid, size })), hash_algo: 'sha256' });
    const res = await fetch(`${lfsUrl}/objects/batch`, { method: 'POST', headers: { accept: LFS_TYPE, 'content-type': LFS_TYPE, authorization: auth }, body, signal: AbortSignal.timeout(60_000) });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`batch upload: HTTP ${res.status}: ${text.slice(0, 300)}`);
    queue.push(...(JSON.parse(text) as { objects: typeof queue }).objects);
  }
  await Promise.all(
    Array.from({ length: UPLOADS_AT_ONCE }, async () => {
      for (let o = queue.shift(); o; o = queue.shift()) {
        const { upload: put, verify } = o.actions ?? {};
        const obj = byOid.get(o.oid);
        if (!put || !verify || !obj) throw new Error(`batch upload: no upload and verify actions for ${o.oid}: ${JSON.stringify(o).slice(0, 300)}`);
        const res = await fetch(put.href, { method: 'PUT', headers: { ...put.header, 'content-type': 'application/octet-stream' }, body: new Uint8Array(bytesOf(obj)), signal: AbortSignal.timeout(60_000) });
        if (res.status !== 200) throw new Error(`PUT of ${o.oid}: HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
        await res.arrayBuffer();
        const v = await fetch(verify.href, {
          method: 'POST',
          headers: { ...verify.header, accept: LFS_TYPE, 'content-type': LFS_TYPE },
          body: JSON.stringify({ oid: obj.oid, size: obj.size }),
          signal: AbortSignal.timeout(60_000),
        });
        if (v.status !== 200) throw new Error(`verify of ${o.oid}: HTTP ${v.status}: ${(await v.text()).slice(0, 300)}`);
        await v.arrayBuffer();
      }
    }),
  );
}

/** One commit whose tree holds a pointer file for each referenced object (and the .gitattributes git-lfs would write). */
function fastImportStream(objects: readonly GcObject[]): string {
  const inline = (file: string, text: string) => `M 100644 inline ${file}\ndata ${Buffer.byteLength(text)}\n${text}\n`;
  const message = 'pointers to half of the objects\n';
  const parts = [`commit refs/heads/main\ncommitter Bench <bench@example.com> 1767225600 +0000\ndata ${message.length}\n${message}`];
  parts.push(inline('.gitattributes', '*.bin filter=lfs diff=lfs merge=lfs -text\n'));
  for (const o of objects.filter((x) => x.referenced)) parts.push(inline(o.path, `version https://git-lfs.github.com/spec/v1\noid sha256:${o.oid}\nsize ${o.size}\n`));
  return parts.join('') + 'done\n';
}

/** The oids linked to any repository (lfs_objects), read from the metadata database. */
async function linkedOids(dataDir: string): Promise<Set<string>> {
  const meta = await openMetaStore({ dataDir });
  try {
    return new Set((await meta.db.selectFrom('lfs_objects').select('oid').execute()).map((r) => r.oid));
  } finally {
    await meta.close();
  }
}

export async function gcPart(ctx: {
  root: string;
  workDir: string;
  env: NodeJS.ProcessEnv;
  kind: 'filesystem' | 'moto';
  objects: number;
  say(msg: string): void;
}): Promise<{ lines: string[]; verdicts: string[][] }> {
  const dataDir = path.join(ctx.workDir, `${ctx.kind}-gc`);
  const store = ctx.kind === 'filesystem' ? filesystemStore(dataDir) : await motoStore({ versioning: true });
  try {
    return await collect(ctx, dataDir, store);
  } finally {
    await store.stop();
  }
}

async function collect(
  ctx: { root: string; env: NodeJS.ProcessEnv; kind: string; workDir: string; objects: number; say(msg: string): void },
  dataDir: string,
  store: BenchStore,
): Promise<{ lines: string[]; verdicts: string[][] }> {
  const say = (msg: string) => ctx.say(`${ctx.kind}: ${msg}`);
  const label = `${ctx.objects.toLocaleString('en')} objects`;
  // The store's settings for the server and the admin commands alike. The setup's uploads
  // would pass the per-client LFS budget of a minute; what is timed is the admin command.
  const env = { ...ctx.env, ...store.env, GITSTRATUM_RATE_LIMIT_LFS_REQUESTS: '0' };
  const gs = await startGitstratum(ctx.root, dataDir, env, ['--lfs-transfer-mode', 'proxy']);
  const token = await adminToken(gs);
  await createReadableRepo(gs, 'gc');
  const objects = gcObjects(ctx.objects);
  if (new Set(objects.map((o) => o.oid)).size !== objects.length) throw new Error('gc: the generated objects are not all distinct');
  const referenced = objects.filter((o) => o.referenced);
  const unreferenced = objects.filter((o) => !o.referenced);
  const publishedKey = (o: GcObject) => `files/alice/bench/gc/${o.path}`;

  say(`gc: uploading ${label} (1–8 KiB each) to alice/bench/gc through the batch API`);
  const up0 = Date.now();
  await upload(gs, objects);
  const uploadS = (Date.now() - up0) / 1000;

  say(`gc: pushing one commit with pointers to ${referenced.length} of them, then waiting for their publication`);
  const src = path.join(ctx.workDir, `${ctx.kind}-gc-src.git`);
  await mkdir(src, { recursive: true });
  await run('git', ['init', '-q', '--bare', '-b', 'main', src], { env: ctx.env });
  await run('git', ['fast-import', '--quiet'], { cwd: src, env: ctx.env, input: fastImportStream(objects) });
  await run('git', ['push', '-q', `${gs.authUrl}/alice/bench/gc.git`, 'main:main'], { cwd: src, env: ctx.env, timeoutMs: 300_000 });
  const pub0 = Date.now();
  await waitForPublishJobs(gs, token, 'gc', { timeoutMs: 1_800_000, pollMs: 1000 });
  const publishS = (Date.now() - pub0) / 1000;
  const published = await listPublished(gs, token, 'gc');
  if (published.length !== referenced.length) throw new Error(`gc: ${published.length} versions published for ${referenced.length} pointer files`);

  // Older than any grace period, as the e2e test makes them.
  const meta = await openMetaStore({ dataDir });
  try {
    await meta.db.updateTable('lfs_objects').set({ created_at: '2020-01-01T00:00:00.000Z', touched_at: null }).execute();
  } finally {
    await meta.close();
  }
  const storedBefore = await store.bytes();
  /** What the store holds as current objects: content-addressed copies, published files. */
  const present = async () => {
    const lfs = await store.currentKeys('lfs/');
    const files = await store.currentKeys('files/alice/bench/gc/');
    return {
      contentUnreferenced: unreferenced.filter((o) => lfs.has(lfsKey(o.oid))).length,
      contentReferenced: referenced.filter((o) => lfs.has(lfsKey(o.oid))).length,
      publishedReferenced: referenced.filter((o) => files.has(publishedKey(o))).length,
    };
  };
  const before = { ...(await present()), linked: (await linkedOids(dataDir)).size };

  const bin = path.join(ctx.root, 'bin', 'gitstratum.js');
  const cli = async (args: string[]) => {
    const r = await run(process.execPath, [bin, ...args, '--data', dataDir], { env, timeoutMs: 1_800_000 });
    return { seconds: r.seconds, stdout: r.stdout };
  };
  const gc = async (dryRun: boolean) => {
    const r = await cli(['lfs', 'gc', ...(dryRun ? ['--dry-run'] : []), '--json']);
    return { seconds: r.seconds, report: JSON.parse(r.stdout) as GcReport };
  };
  // What any admin command pays before its work: Node's start, the CLI's modules, the database.
  const startup: number[] = [];
  for (let i = 0; i < 3; i++) startup.push((await cli(['user', 'list', '--json'])).seconds);

  const dry: { seconds: number; report: GcReport }[] = [];
  let dryDeletedNothing = true;
  for (let i = 1; i <= DRY_RUNS; i++) {
    const r = await gc(true);
    dry.push(r);
    const after = { ...(await present()), linked: (await linkedOids(dataDir)).size };
    dryDeletedNothing &&= JSON.stringify(after) === JSON.stringify(before);
    say(`gc: dry run ${i}/${DRY_RUNS}: ${r.seconds.toFixed(2)} s, would delete ${r.report.objects.deleted} objects`);
  }
  const real = await gc(false);
  say(`gc: ${real.seconds.toFixed(2)} s, deleted ${real.report.objects.deleted} objects, ${real.report.bytes.deleted} bytes`);
  const after = await present();
  const linkedAfter = await linkedOids(dataDir);
  const storedAfter = await store.bytes();
  const again = await gc(false);
  say(`gc again: ${again.seconds.toFixed(2)} s, deleted ${again.report.objects.deleted} objects`);

  const unreferencedBytes = unreferenced.reduce((n, o) => n + o.size, 0);
  const keptExactly = linkedAfter.size === referenced.length && referenced.every((o) => linkedAfter.has(o.oid));
  const checks: [string, boolean][] = [
    [`dry runs: each reported ${dry.map((d) => d.report.objects.deleted).join(', ')} to delete and deleted nothing`, dryDeletedNothing && dry.every((d) => d.report.objects.deleted === unreferenced.length)],
    [
      `deleted ${real.report.objects.deleted} objects (expected ${unreferenced.length}), ${real.report.bytes.deleted} bytes (expected ${unreferencedBytes}), ` +
        `${real.report.versions.deleted + real.report.versions.orphansDeleted} published versions, ${real.report.unlinkedDeleted} unlinked objects and ${real.report.contentCopiesRemoved} content copies (expected 0 each)`,
      real.report.objects.deleted === unreferenced.length &&
        real.report.bytes.deleted === unreferencedBytes &&
        real.report.versions.deleted + real.report.versions.orphansDeleted + real.report.unlinkedDeleted + real.report.contentCopiesRemoved === 0,
    ],
    [`links left: ${linkedAfter.size}, exactly the ${referenced.length} referenced oids: ${keptExactly ? 'yes' : 'no'}`, keptExactly],
    [`content-addressed copies of unreferenced objects: ${before.contentUnreferenced} before, ${after.contentUnreferenced} after`, before.contentUnreferenced === unreferenced.length && after.contentUnreferenced === 0],
    [`published versions of referenced objects (current links): ${before.publishedReferenced} before, ${after.publishedReferenced} after`, after.publishedReferenced === referenced.length],
    [`the second collection deleted ${again.report.objects.deleted} objects`, again.report.objects.deleted === 0],
  ];
  const exact = checks.every(([, ok]) => ok);
  const freed = lfsBytes(storedBefore) - lfsBytes(storedAfter);

  const lines: string[] = [];
  lines.push(`[${store.label}]`);
  lines.push(`LFS GC over ${label}: one readable repository on a server of its own; every other object referenced by a pointer of \`main\``);
  lines.push(`  (${referenced.length} published), the rest reached by no ref; all backdated past the grace period (created_at 2020, touched_at cleared)`);
  lines.push(`  setup: uploads ${uploadS.toFixed(1)} s (${(objects.length / uploadS).toFixed(0)} objects/s, 8 at a time), publication of ${referenced.length} files ${publishS.toFixed(1)} s after the push`);
  const rows = [['`gitstratum lfs gc`', 'wall s', 'objects total / reachable', 'deleted objects', 'deleted bytes', 'versions deleted', 'unlinked / copies removed']];
  const row = (what: string, runs: { seconds: number; report: GcReport }[]) => {
    const r = runs[runs.length - 1]!.report;
    rows.push([
      what,
      spread(runs.map((x) => x.seconds), 2),
      `${r.objects.total} / ${r.objects.reachable}`,
      String(r.objects.deleted),
      String(r.bytes.deleted),
      String(r.versions.deleted + r.versions.orphansDeleted),
      `${r.unlinkedDeleted} / ${r.contentCopiesRemoved}`,
    ]);
  };
  row(`--dry-run (${DRY_RUNS} runs)`, dry);
  row('collection (1 run)', [real]);
  row('again, nothing left (1 run)', [again]);
  lines.push(table(rows));
  lines.push(`  wall: the admin command's, from spawn to exit, with the server running; an admin command that does nothing (\`user list\`) takes ${spread(startup, 2)} s`);
  const mib = (n: number) => (n / MiB).toFixed(2);
  lines.push(`  bytes the store holds (every version): ${mib(storedBefore.total)} MiB before (${describeAreas(storedBefore.byArea)}), ${mib(storedAfter.total)} MiB after`);
  lines.push(`    (${describeAreas(storedAfter.byArea)}; noncurrent ${mib(storedAfter.noncurrent)}): LFS bytes fell by ${mib(freed)} MiB; the collection reported ${mib(real.report.bytes.deleted)} MiB deleted`);
  for (const [what, ok] of checks) lines.push(`  check: ${what} — ${ok ? 'ok' : 'WRONG'}`);
  lines.push(`server log: ${describeProblems(await logProblems(dataDir))}`);
  lines.push('');
  await gs.stop();
  return {
    lines,
    verdicts: [
      [`[${ctx.kind}] LFS GC over ${label}, wall s: dry run / collection`, `${median(dry.map((d) => d.seconds)).toFixed(2)} / ${real.seconds.toFixed(2)}`, 'none given', '—'],
      [`[${ctx.kind}] LFS GC deleted exactly the unreferenced half, nothing else`, exact ? 'yes' : 'no', 'exactly', exact ? 'met' : 'missed'],
      [`[${ctx.kind}] LFS GC: store's LFS bytes fell by what it reports deleted`, `${mib(freed)} of ${mib(real.report.bytes.deleted)} MiB`, 'all', freed >= real.report.bytes.deleted ? 'met' : 'missed'],
    ],
  };
}
