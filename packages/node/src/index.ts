/** @module @wsgiproxy/node: wsgiproxy on Node (key files now; transport, listener and spawner next). */
export type { KeyFileWatcher, LoadKeyFileOptions, WatchKeyFileOptions } from './lib/key-file.ts'
export { loadKeyFile, watchKeyFile } from './lib/key-file.ts'
