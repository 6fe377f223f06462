/** @module @wsgiproxy/node: wsgiproxy on Node: the undici transport, the node:http listener, key files. */
export type { KeyFileWatcher, LoadKeyFileOptions, WatchKeyFileOptions } from './lib/key-file.ts'
export { loadKeyFile, watchKeyFile } from './lib/key-file.ts'
export type { UndiciTransport, UndiciTransportOptions } from './lib/undici-transport.ts'
export { undiciTransport } from './lib/undici-transport.ts'
export type { NodeListenerOptions } from './lib/node-listener.ts'
export { toNodeListener } from './lib/node-listener.ts'
export type { Served, ServeOptions } from './lib/serve.ts'
export { serve } from './lib/serve.ts'
