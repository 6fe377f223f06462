// What a single-process spawner and a pool share: the forwarding setup, the proxy app of a ready
// backend, leases, the backoff error and events whose listeners cannot break the spawner.
import type { EventEmitter } from 'node:events'
import { createProxyApp } from '@wsgiproxy/core'
import type { Environ, ErrorHook, ProxyAppOptions } from '@wsgiproxy/core'
import { undiciTransport } from '@wsgiproxy/core/undici'
import type { UndiciTransport } from '@wsgiproxy/core/undici'
import type { BackendProcess } from './_backend-process.ts'
import type { Lifecycle } from './_lifecycle.ts'
import type { SpawnerLog } from './_log.ts'
import { sleep } from './_readiness.ts'
import type { SpawnerSettings } from './options.ts'
import { SpawnerError } from './spawner-error.ts'
import type { SpawnerEvents, SpawnerLease } from './spawner.ts'

/** The forwarding options every backend's proxy app gets, and what the spawner owns of them. */
export interface Forwarding {
  /** The user's `onError`, or one that logs failures. */
  onError: ErrorHook<Environ>
  /** The forwarding options with the transport and `onError` filled in (no `href`). */
  proxyOptions: Omit<ProxyAppOptions, 'href'>
  /** The transport the spawner created (and closes), when none was given. */
  ownTransport: UndiciTransport | undefined
}

/**
 * The forwarding setup: the given transport or an own undici one, and the given `onError` or one
 * that logs failed requests (start failures are logged once when they happen, not per request).
 */
export function createForwarding(settings: SpawnerSettings, log: SpawnerLog): Forwarding {
  const { proxy } = settings
  const onError: ErrorHook<Environ> =
    proxy.onError ??
    ((error) => {
      if (error instanceof SpawnerError || error.status < 500) return
      log.notice(null, `request failed: ${error.message}`)
    })
  let ownTransport: UndiciTransport | undefined
  let transport = proxy.transport
  if (transport === undefined) transport = ownTransport = undiciTransport()
  return { onError, proxyOptions: { ...proxy, transport, onError }, ownTransport }
}

/** Gives a ready backend its proxy app, forwarding to the address that answered its probe. */
export function connectProxy(
  backend: BackendProcess,
  options: Omit<ProxyAppOptions, 'href'>,
): void {
  const host = backend.host ?? '127.0.0.1'
  const authority = host.includes(':') ? `[${host}]:${backend.port}` : `${host}:${backend.port}`
  backend.proxy = createProxyApp({ ...options, href: `http://${authority}` })
}

/** Closes the spawner's own transport; requests still open to dead backends fail at once. */
export async function closeTransport(transport: UndiciTransport | undefined): Promise<void> {
  if (transport === undefined) return
  await Promise.race([transport.close().catch(() => {}), sleep(1_000)])
}

/** `BACKEND_BACKOFF` (503 with `Retry-After`), with the output lines of every process. */
export function backoffError(life: Lifecycle, log: SpawnerLog): SpawnerError {
  const seconds = life.retryAfter
  return new SpawnerError(
    'BACKEND_BACKOFF',
    `the backend failed ${life.failures} times in a row; retry in ${seconds} s`,
    { expose: true, retryAfter: seconds, recentLogs: log.lines() },
  )
}

/**
 * Calls the listeners of `event`. Listeners are the host's code: one that throws is reported and
 * the others still run, since an exception out of emit() would cut a state change short (a group
 * never reaped, a running process forgotten, an unhandled rejection). Without listeners nothing
 * is emitted, so an 'error' nobody listens to never throws.
 */
export function emitSafely<K extends keyof SpawnerEvents>(
  emitter: EventEmitter<SpawnerEvents>,
  log: SpawnerLog,
  event: K,
  ...args: SpawnerEvents[K]
): void {
  for (const listener of emitter.rawListeners(event)) {
    try {
      Reflect.apply(listener, emitter, args)
    } catch (error) {
      const reason = error instanceof Error ? (error.stack ?? String(error)) : String(error)
      log.notice(null, `a '${String(event)}' listener threw: ${reason}`, true)
    }
  }
}

/**
 * A lease of `backend` (taken, counted in flight) that `release` ends once.
 *
 * @param backend - the ready backend
 * @param release - ends its count in flight
 * @returns the lease
 */
export function leaseOf(backend: BackendProcess, release: () => void): SpawnerLease {
  let released = false
  return {
    pid: backend.pid ?? 0,
    host: backend.host ?? '127.0.0.1',
    port: backend.port,
    release: () => {
      if (released) return
      released = true
      release()
    },
  }
}
