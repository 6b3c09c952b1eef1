/**
 * The refs worker (refs-version.ts): answers fingerprint requests from the main thread with
 * the walks of refs-walk.ts, remembering content digests across requests.
 */
import { parentPort } from 'node:worker_threads';
import { RefsWalker } from './refs-walk.js';

export interface WalkRequest {
  id: number;
  kind: 'refs' | 'config';
  repoPath: string;
  nowMs: number;
}

export type WalkReply = { id: number; version: string; error?: undefined } | { id: number; error: string };

const walker = new RefsWalker();

parentPort?.on('message', (req: WalkRequest) => {
  const walk = req.kind === 'config' ? walker.readConfig(req.repoPath, req.nowMs) : walker.read(req.repoPath, req.nowMs);
  walk.then(
    (version) => parentPort!.postMessage({ id: req.id, version } satisfies WalkReply),
    (err: unknown) => parentPort!.postMessage({ id: req.id, error: err instanceof Error ? err.message : String(err) } satisfies WalkReply),
  );
});
