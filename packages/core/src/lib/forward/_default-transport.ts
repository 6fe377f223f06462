// The default transport where the `node` condition does not apply (Bun, Deno, browsers, workers):
// the runtime's fetch. `_default-transport.node.ts` is Node's.
import { fetchTransport } from './fetch-transport.ts'
import type { Transport } from '../types.ts'

/**
 * The transport a forwarding app uses when none is given.
 *
 * @returns a new {@link fetchTransport}
 */
export function defaultTransport(): Transport {
  return fetchTransport()
}
