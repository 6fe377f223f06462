import type { ErrorHook } from '@wsgiproxy/core'
import type { Spawner, SpawnerOptions } from '@wsgiproxy/node'
import { parseOptions } from '@wsgiproxy/core/adapter'
import { createSpawner } from '@wsgiproxy/node'
import type { Handler } from 'hono'
import * as z from 'zod'
import { ENVIRON_FIELDS, ENVIRON_FROM_CONTEXT } from './_options.ts'
import type { MountOptions } from './mount.ts'
import { mount } from './mount.ts'

/**
 * Options of {@link spawn}: the spawner's (`command`, `idleTimeout`, forwarding options, ...; see
 * `createSpawner` in `@wsgiproxy/node`) and the mount's. `exposeErrors` and `onError` apply to
 * both.
 */
export interface SpawnOptions extends SpawnerOptions, Omit<MountOptions, 'onError'> {
  /**
   * Called with the error and the environ on every failure: the spawner's (502 when the backend
   * exits or cannot start, 503 in backoff or with a full queue, 504 at the start timeout), the
   * forwarding's, and a request that cannot be turned into an environ (400, 431; `environ` is
   * then `undefined`). May return the response to send instead of the problem+json one; a hook
   * that throws gives a 500. Default: the spawner logs its failures, the mount those of
   * status ≥ 500.
   */
  onError?: ErrorHook
}

/** The Hono handler {@link spawn} returns, with the spawner it serves. */
export type SpawnHandler = Handler & {
  /** The spawner: `status()`, `start()`, `restart()`, events (`spawn`, `ready`, `exit`, ...). */
  readonly spawner: Spawner
  /** Stops the backend and waits until its process group has gone (`spawner.close()`). */
  close(): Promise<void>
  /** The same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>
}

// The spawner's own options are checked by createSpawner.
const SPAWN_OPTIONS = z.looseObject({
  ...ENVIRON_FIELDS,
  environ: ENVIRON_FROM_CONTEXT,
  exposeErrors: z.boolean().optional(),
})

/**
 * A Hono handler that starts a backend process on the first request and forwards to it, mounted
 * like {@link mount}: the route prefix reaches the backend as `X-Forwarded-Script-Name`, so a
 * backend behind `proxyMiddleware` (or any WSGIProxy middleware) sees it as `SCRIPT_NAME`.
 * Built on `createSpawner` from `@wsgiproxy/node` (Node only): idle shutdown, crash backoff and no
 * orphan processes come from there. Call `close()` when the app stops.
 *
 * @param options - the backend command and spawner options, plus the mount options
 * @returns the handler, with `spawner` and `close()`
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `spawn` and the option for a mount option or
 *   `onError`, and naming `createSpawner` for a spawner option
 * @example
 * import { spawn } from '@wsgiproxy/hono/node'
 * const py = spawn({ command: 'python3 app.py __PORT__', idleTimeout: 60_000 })
 * app.all('/py/*', py) // the backend sees SCRIPT_NAME '/py'
 * process.once('SIGTERM', () => void py.close())
 */
export function spawn(options: SpawnOptions): SpawnHandler {
  const { getRemoteAddr, maxHeaders, environ, trustTraceparent, ...spawnerOptions } =
    parseOptions<SpawnOptions>(SPAWN_OPTIONS, options, 'spawn')
  const spawner = createSpawner(spawnerOptions)
  const mountOptions: MountOptions = {}
  if (getRemoteAddr !== undefined) mountOptions.getRemoteAddr = getRemoteAddr
  if (maxHeaders !== undefined) mountOptions.maxHeaders = maxHeaders
  if (environ !== undefined) mountOptions.environ = environ
  if (trustTraceparent !== undefined) mountOptions.trustTraceparent = trustTraceparent
  if (spawnerOptions.exposeErrors !== undefined) {
    mountOptions.exposeErrors = spawnerOptions.exposeErrors
  }
  if (spawnerOptions.onError !== undefined) mountOptions.onError = spawnerOptions.onError
  const handler = mount(spawner.app, mountOptions)
  const close = (): Promise<void> => spawner.close()
  return Object.assign(handler, { spawner, close, [Symbol.asyncDispose]: close })
}
