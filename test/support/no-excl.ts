/**
 * Preloaded (`node --import`) into one gitstratum process by test/e2e/doctor.test.ts: in it,
 * an exclusive create (`open(file, 'wx')`) of a `*.lock` file succeeds even when the file
 * exists, as on a filesystem that does not honour O_EXCL (NFSv2, some FUSE mounts). Only that
 * process is affected: the other process of doctor's lock check is a fresh `node`.
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';

const require = createRequire(import.meta.url);
const fsp = require('node:fs/promises') as typeof import('node:fs/promises');
const open = fsp.open;
fsp.open = ((file, flags, mode) => open(file, String(file).endsWith('.lock') && flags === 'wx' ? 'w' : flags, mode)) as typeof fsp.open;
// ES module imports of node:fs/promises (gitstratum's) see the replacement from here on.
syncBuiltinESMExports();
