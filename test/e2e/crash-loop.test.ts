/**
 * Issue 16, the kill -9 loop in the suite (a few trials; `npm run bench:crash` runs a hundred):
 * concurrent pushers, snapshots and maintenance, the server killed at random moments and
 * restarted. After every restart no acknowledged push is lost, no repository is corrupt, no
 * push is refused for a stale lock, every repository is persisted again (waited for, with a
 * generous bound), and no leftover of the crash remains.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashTrials } from '../support/crash-trials.js';

test('kill -9 loop: acknowledged pushes survive, nothing blocks the next push, the snapshot worker catches up', async () => {
  const result = await crashTrials({ trials: 5, repositories: 2, pushers: 3, runMs: [0, 1500], persistBoundMs: 60_000, seed: 16 });
  assert.ok(result.acknowledged > 0, 'no push was acknowledged at all');
  assert.deepEqual(result.refusedForLeftover, []);
  for (const [i, trial] of result.trials.entries()) {
    assert.deepEqual(trial.lost, [], `trial ${i + 1}: acknowledged pushes lost`);
    assert.deepEqual(trial.corrupt, [], `trial ${i + 1}: corrupt repositories`);
    assert.notEqual(trial.persistMs, undefined, `trial ${i + 1}: not every repository persisted within the bound`);
    assert.deepEqual(trial.leftovers, [], `trial ${i + 1}: leftovers of the crash`);
  }
});
