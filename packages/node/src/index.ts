/** @module @wsgiproxy/node: wsgiproxy on Node: the undici transport, the node:http listener, key files, the backend spawner. */
export type { KeyFileWatcher, LoadKeyFileOptions, WatchKeyFileOptions } from './lib/key-file.ts'
export { loadKeyFile, watchKeyFile } from './lib/key-file.ts'
export type { ListenerAddress } from './lib/http/address-guard.ts'
export { createSelfCheck, resolveHost } from './lib/http/address-guard.ts'
export type {
  UndiciTransport,
  UndiciTransportOptions,
  UndiciTransportTls,
} from '@wsgiproxy/core/undici'
export { undiciTransport } from '@wsgiproxy/core/undici'
export type { NodeListenerOptions } from './lib/http/node-listener.ts'
export { toNodeListener } from './lib/http/node-listener.ts'
export type { Served, ServeOptions, ServeTls, TlsCertificate } from './lib/http/serve.ts'
export { serve } from './lib/http/serve.ts'
export type { NodeUpgradeListener, NodeUpgradeListenerOptions } from './lib/http/upgrade.ts'
export { toNodeUpgradeListener } from './lib/http/upgrade.ts'
export type {
  Spawner,
  SpawnerBackoff,
  SpawnerErrorOptions,
  SpawnerEvents,
  SpawnerExit,
  SpawnerInstanceState,
  SpawnerInstanceStatus,
  SpawnerInstances,
  SpawnerLease,
  SpawnerLogEntry,
  SpawnerLogger,
  SpawnerOptions,
  SpawnerReadiness,
  SpawnerScaleReason,
  SpawnerState,
  SpawnerStatus,
  SpawnerStopReason,
} from './lib/spawner/spawner.ts'
export { createSpawner, SpawnerError } from './lib/spawner/spawner.ts'
export { createLeasedSpawnerApp } from './lib/spawner/leased-app.ts'
export type { LeasedSpawnerAppOptions } from './lib/spawner/leased-app.ts'
