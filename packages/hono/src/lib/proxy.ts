import type { ProxyAppOptions } from '@wsgiproxy/core'
import { createProxyApp } from '@wsgiproxy/core'
import type { Handler } from 'hono'
import { mount } from './mount.ts'
import type { GetRemoteAddr } from './remote-addr.ts'

/**
 * Options of {@link proxy}: those of core's `createProxyApp` (`href`, keys, `signer`,
 * `transport`, `timeouts`, `exposeErrors`, `onError` for forwarding failures, ...) and the client
 * address lookup and header cap of {@link mount}.
 */
export interface ProxyOptions extends ProxyAppOptions {
  /** Finds the client address sent as `X-Forwarded-For`; see `MountOptions.getRemoteAddr`. Default: found by shape in `c.env`. */
  getRemoteAddr?: GetRemoteAddr
  /** Header fields accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
}

/**
 * A Hono handler that forwards requests to `href` with the wsgiproxy protocol headers: `mount`
 * of core's `createProxyApp`. The matched route prefix is sent as `X-Forwarded-Script-Name`, so
 * a backend behind `wsgiProxy` (or core's `proxyMiddleware`) restores the public URL.
 *
 * @param options - where to forward and how (see `createProxyApp`), client address lookup
 * @returns the handler, for `app.all(route, handler)`
 * @throws WsgiProxyError `INVALID_OPTIONS` for a bad href, key or option combination
 * @example
 * import { proxy } from '@wsgiproxy/hono'
 * app.all('/api/*', proxy({ href: 'http://127.0.0.1:8080/', stringKeys: ['REMOTE_USER'] }))
 */
export function proxy(options: ProxyOptions): Handler {
  const { getRemoteAddr, maxHeaders, ...proxyOptions } = options
  return mount(createProxyApp(proxyOptions), {
    ...(getRemoteAddr === undefined ? {} : { getRemoteAddr }),
    ...(maxHeaders === undefined ? {} : { maxHeaders }),
    ...(proxyOptions.exposeErrors === undefined ? {} : { exposeErrors: proxyOptions.exposeErrors }),
  })
}
