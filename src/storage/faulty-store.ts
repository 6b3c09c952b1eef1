/**
 * Test-only wrapper: the next `failPuts` puts and the next `failGets` gets throw `unavailable`
 * as a backend outage would, without touching the inner store; then it behaves normally.
 * A failed put leaves its body unread, like a backend that refused the connection.
 */
import { unavailable } from '../shared/errors.js';
import type { ObjectStore } from './object-store.js';

export function faulty(store: ObjectStore, faults: { failPuts?: number; failGets?: number }): ObjectStore {
  let puts = faults.failPuts ?? 0;
  let gets = faults.failGets ?? 0;
  const outage = (op: string) => unavailable('storage_unavailable', 'injected object store fault', { op, backend: store.kind });
  return {
    kind: store.kind,
    ...(store.presigner && { presigner: store.presigner }),
    async put(key, body, opts) {
      if (puts > 0 && puts--) throw outage('put');
      return store.put(key, body, opts);
    },
    async get(key, opts) {
      if (gets > 0 && gets--) throw outage('get');
      return store.get(key, opts);
    },
    head: (key) => store.head(key),
    delete: (key) => store.delete(key),
    list: (prefix) => store.list(prefix),
  };
}
