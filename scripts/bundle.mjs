// The second step of `npm run build`: the compiled program (dist/src) and the libraries it
// imports become one file per entry point in dist/bundle, which `bin/gitstratum.js` runs.
//
// Why: Node 20 resolves and links each ES module file on its own, and the program imports
// about 1,200 of them; a server took 2.4 CPU-seconds to start listening, an admin command 0.8.
// One file halves that. Every command, server and storage node starts this way, tests included.
//
// The hook relay (run by git's hooks at every push; its Perl twin, src/git/hook-relay.pl, is copied beside both), the refs-version worker and the git spawner's helper are entry
// points of their own, named as in dist/src, beside the program: the code finds them relative
// to its own file (`new URL('./hook-relay.js', import.meta.url)`), which holds in both layouts.
import { build } from 'esbuild';
import { copyFile, rm } from 'node:fs/promises';

const outdir = 'dist/bundle';
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: {
    gitstratum: 'dist/src/cli/program.js',
    'hook-relay': 'dist/src/git/hook-relay.js',
    'refs-version-worker': 'dist/src/git/pack-cache/refs-version-worker.js',
    'spawn-helper': 'dist/src/git/spawn-helper.js',
  },
  outdir,
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Linked to dist/src's maps, which lead back to the TypeScript: `node --enable-source-maps` shows src/ lines.
  sourcemap: 'linked',
  // Native addons (found through their packages' own paths: ssh2's optional crypto binding) and the optional native PostgreSQL driver.
  external: ['better-sqlite3', 'pg-native', 'ssh2'],
  // The libraries written as CommonJS call require(); an ES module file has none of its own.
  banner: { js: "import { createRequire as createRequireOfBundle } from 'node:module'; const require = createRequireOfBundle(import.meta.url);" },
  logLevel: 'warning',
  // Without comments and indentation, and with every character ASCII: V8 keeps each file's
  // source in memory, and one non-ASCII character (a comment's dash) makes it store the whole
  // file at two bytes a character. Together 12 MB less resident at idle (142 -> 130 MB).
  // Names are kept; the maps lead stack traces back to src/ under --enable-source-maps.
  minifyWhitespace: true,
  charset: 'ascii',
});

// tsc compiles TypeScript only: the Perl relay joins the compiled one in both layouts.
for (const dir of ['dist/src/git', outdir]) await copyFile('src/git/hook-relay.pl', `${dir}/hook-relay.pl`);
