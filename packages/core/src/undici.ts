/**
 * @module @wsgiproxy/core/undici: the undici transport, for Node only (it imports `undici` and
 * `node:*`). It is core's default transport on Node; `@wsgiproxy/node` re-exports it.
 */
export type {
  UndiciTransport,
  UndiciTransportOptions,
  UndiciTransportTls,
} from './lib/node/undici-transport.ts'
export { undiciTransport } from './lib/node/undici-transport.ts'
