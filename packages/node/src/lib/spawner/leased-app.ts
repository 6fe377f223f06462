// The app of a process whose spawner lives in another process (a cluster's primary, which owns the
// backends so that every worker shares them): each request leases a backend there and is forwarded
// from here, to the address the lease names, with the same protocol headers as the spawner's own
// app. The lease is held until the response body (or upgraded connection) ends, so the owning
// spawner's idle stop, growth and rolling restarts see every worker's requests.
import { createProxyApp } from '@wsgiproxy/core'
import type { Environ, ErrorHook, ProxyAppOptions, UpgradableApp } from '@wsgiproxy/core'
import { createSpawnerApp, failureResponse } from './_requests.ts'
import type { SpawnerLease } from './spawner.ts'

/** Options of {@link createLeasedSpawnerApp}. */
export interface LeasedSpawnerAppOptions {
  /**
   * Takes a backend for one request, as `Spawner.lease()` does where the spawner lives. It
   * rejects with the failure to answer (a `SpawnerError` gives its status, code and
   * `Retry-After`).
   */
  lease: (signal: AbortSignal | undefined) => Promise<SpawnerLease>
  /**
   * How to forward to the leased backend: `createProxyApp`'s options without `href` (and without
   * pool options; the owning spawner chooses the backend). The transport is the caller's to close.
   */
  proxy?: Omit<ProxyAppOptions, 'href' | 'targets'>
}

// Proxy apps kept per backend address; older ones are dropped beyond this many (backends that
// were replaced).
const MAX_ADDRESSES = 64

/** A lease with the proxy app of its address. */
interface LeasedBackend {
  readonly lease: SpawnerLease
  readonly proxy: UpgradableApp
}

/**
 * The environ app of a spawner that runs in another process: each request (or WebSocket upgrade)
 * takes a lease through `options.lease`, is forwarded to the leased backend with
 * `createProxyApp`'s protocol headers and signing, and releases the lease when its response body
 * or upgraded connection ends. Failures to lease are answered as the spawner's app answers them.
 *
 * @param options - how to lease a backend and how to forward to it
 * @returns the app; serve it like `spawner.app`
 * @example
 * // In a worker; `leaseFromPrimary` asks the process that owns the spawner for `spawner.lease()`.
 * const app = createLeasedSpawnerApp({ lease: leaseFromPrimary, proxy: { transport } })
 */
export function createLeasedSpawnerApp(options: LeasedSpawnerAppOptions): UpgradableApp {
  const { lease, proxy = {} } = options
  const onError: ErrorHook<Environ> = proxy.onError ?? (() => undefined)
  const apps = new Map<string, UpgradableApp>()
  const proxyFor = (host: string, port: number): UpgradableApp => {
    const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
    let app = apps.get(authority)
    if (app === undefined) {
      app = createProxyApp({ ...proxy, href: `http://${authority}` })
      if (apps.size >= MAX_ADDRESSES) apps.delete(apps.keys().next().value as string)
      apps.set(authority, app)
    }
    return app
  }
  return createSpawnerApp<LeasedBackend>({
    acquire: async (signal) => {
      const taken = await lease(signal)
      return { lease: taken, proxy: proxyFor(taken.host, taken.port) }
    },
    release: (backend) => backend.lease.release(),
    respond: (error, environ) =>
      failureResponse(error, environ, onError, proxy.exposeErrors ?? false),
  })
}
