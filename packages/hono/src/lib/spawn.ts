import type { Spawner, SpawnerOptions } from '@wsgiproxy/node'
import { createSpawner } from '@wsgiproxy/node'
import type { Handler } from 'hono'
import type { MountOptions } from './mount.ts'
import { mount } from './mount.ts'

/**
 * Options of {@link spawn}: the spawner's (`command`, `idleTimeout`, forwarding options, ...; see
 * `createSpawner` in `@wsgiproxy/node`) and the mount's. `exposeErrors` applies to both;
 * `onError` is the spawner's forwarding error hook.
 */
export interface SpawnOptions
  extends SpawnerOptions, Omit<MountOptions, 'onError' | 'exposeErrors'> {}

/** The Hono handler {@link spawn} returns, with the spawner it serves. */
export type SpawnHandler = Handler & {
  /** The spawner: `status()`, `start()`, `restart()`, events (`spawn`, `ready`, `exit`, ...). */
  readonly spawner: Spawner
  /** Stops the backend and waits until its process group has gone (`spawner.close()`). */
  close(): Promise<void>
  /** The same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * A Hono handler that starts a backend process on the first request and forwards to it, mounted
 * like {@link mount}: the route prefix reaches the backend as `X-Forwarded-Script-Name`, so a
 * backend behind `proxyMiddleware` (or any WSGIProxy middleware) sees it as `SCRIPT_NAME`.
 * Built on `createSpawner` from `@wsgiproxy/node` (Node only): idle shutdown, crash backoff and no
 * orphan processes come from there. Call `close()` when the app stops.
 *
 * @param options - the backend command and spawner options, plus the mount options
 * @returns the handler, with `spawner` and `close()`
 * @example
 * import { spawn } from '@wsgiproxy/hono/node'
 * const py = spawn({ command: 'python3 app.py __PORT__', idleTimeout: 60_000 })
 * app.all('/py/*', py) // the backend sees SCRIPT_NAME '/py'
 * process.once('SIGTERM', () => void py.close())
 */
export function spawn(options: SpawnOptions): SpawnHandler {
  const { getRemoteAddr, maxHeaders, ...spawnerOptions } = options
  const spawner = createSpawner(spawnerOptions)
  const mountOptions: MountOptions = {}
  if (getRemoteAddr !== undefined) mountOptions.getRemoteAddr = getRemoteAddr
  if (maxHeaders !== undefined) mountOptions.maxHeaders = maxHeaders
  if (options.exposeErrors !== undefined) mountOptions.exposeErrors = options.exposeErrors
  const handler = mount(spawner.app, mountOptions)
  const close = (): Promise<void> => spawner.close()
  return Object.assign(handler, { spawner, close, [Symbol.asyncDispose]: close })
}
