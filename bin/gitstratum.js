#!/usr/bin/env node
// Entry point of the `gitstratum` command. `npm ci` (the `prepare` script) or `npm run build`
// compiles the TypeScript to dist/src and bundles it into dist/bundle (scripts/bundle.mjs),
// which starts in half the time.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/bundle/gitstratum.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('gitstratum: not built yet; run `npm ci` (or `npm run build`) in the checkout first\n');
  process.exit(1);
}
const { run } = await import(entry.href);
await run(process.argv);
