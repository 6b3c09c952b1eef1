#!/usr/bin/env node
// Entry point of the `gitstratum` command. The TypeScript sources are compiled to dist/ by
// `npm ci` (the `prepare` script) or `npm run build`.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/src/cli/program.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('gitstratum: not built yet; run `npm ci` (or `npm run build`) in the checkout first\n');
  process.exit(1);
}
const { run } = await import(entry.href);
await run(process.argv);
