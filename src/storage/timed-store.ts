/** A wrapper that adds one behaviour to any ObjectStore: latency observations per operation. */
import { finished } from 'node:stream/promises';
import type { Histogram } from 'prom-client';
import type { ObjectStore } from './object-store.js';

export function timed(store: ObjectStore, histogram: Histogram<'backend' | 'operation' | 'outcome'>): ObjectStore {
  const observe = async <T>(operation: string, run: () => Promise<T>): Promise<T> => {
    const end = histogram.startTimer({ backend: store.kind, operation });
    try {
      const result = await run();
      end({ outcome: 'ok' });
      return result;
    } catch (err) {
      end({ outcome: 'error' });
      throw err;
    }
  };
  return {
    kind: store.kind,
    ...(store.presigner && { presigner: store.presigner }),
    // Passed through untimed (with their options) until the readable LFS layout (issue 15)
    // uses them; abandoned-upload clean-up is rare maintenance, not worth a latency series.
    ...(store.versions && { versions: store.versions }),
    ...(store.uploads && { uploads: store.uploads }),
    put: (key, body, opts) => observe('put', () => store.put(key, body, opts)),
    async get(key, opts) {
      const end = histogram.startTimer({ backend: store.kind, operation: 'get' });
      try {
        const result = await store.get(key, opts);
        finished(result.body).then(
          () => end({ outcome: 'ok' }),
          () => end({ outcome: 'error' }),
        );
        return result;
      } catch (err) {
        end({ outcome: 'error' });
        throw err;
      }
    },
    head: (key) => observe('head', () => store.head(key)),
    delete: (key) => observe('delete', () => store.delete(key)),
    list: (prefix) => store.list(prefix),
  };
}
