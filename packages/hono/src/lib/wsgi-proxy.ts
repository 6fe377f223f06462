import type { Environ, ProxyMiddlewareOptions } from '@wsgiproxy/core'
import {
  createEnvironRestorer,
  environUrl,
  errorResponse,
  toEnviron,
  toResponse,
  WsgiProxyError,
} from '@wsgiproxy/core'
import type { MiddlewareHandler } from 'hono'
import type { GetRemoteAddr } from './remote-addr.ts'
import { remoteAddrOf } from './remote-addr.ts'

/**
 * The context variables {@link wsgiProxy} sets; declare them on the app to get them typed:
 * `new Hono<{ Variables: WsgiProxyVariables }>()`.
 */
export type WsgiProxyVariables = {
  /**
   * The request as the client made it to the front proxy: host, scheme, client address
   * (`REMOTE_ADDR`), script name, path and decoded extra keys. Its `wsgi.input` is the request
   * body (the same stream as `c.req.raw.body`: read one of them).
   */
  environ: Environ
  /** The URL the client asked the front proxy for (core's `environUrl` of the restored environ). */
  originalUrl: URL
}

/**
 * Options of {@link wsgiProxy}: those of core's `proxyMiddleware` (`verifier`, `trustIps`,
 * `mode`, `requireSignature`, `prefix`, `popPrefix`, `scheme`, `host`, `domain`, `port`,
 * `jsonSchemas`, `pickleCodec`, `onReject`; trust is off by default), plus the client address
 * lookup and header cap.
 */
export interface WsgiProxyOptions extends ProxyMiddlewareOptions {
  /**
   * Finds the peer address that `trustIps` is checked against; see `MountOptions.getRemoteAddr`.
   * Default: found by shape in `c.env` (@hono/node-server, Bun, Deno); none elsewhere, so only a
   * signature can make a request trusted there.
   */
  getRemoteAddr?: GetRemoteAddr
  /** Header fields accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
}

/**
 * Hono middleware for the backend side of the wsgiproxy protocol: verifies the front proxy's
 * signature and trust as core's `proxyMiddleware` does, restores the original request, sets it as
 * `c.get('environ')` and its URL as `c.get('originalUrl')`, and calls `next()`. A refused request
 * is answered here (401 with `WWW-Authenticate`, 400, 413, 431, 503 with `Retry-After`, as
 * problem+json) and never reaches the handlers. An untrusted request still goes on, with its
 * protocol headers left out of the environ. The environ is built with `SCRIPT_NAME` `''` (the path
 * as this app received it) before it is restored. `c.req` keeps the request as received: read the
 * client, host and scheme from the environ, not from `X-Forwarded-*` headers.
 *
 * @param options - trust, signature verification and forced values (see `proxyMiddleware`)
 * @returns the middleware
 * @throws WsgiProxyError `INVALID_OPTIONS` for conflicting options, as `proxyMiddleware`
 * @example
 * import { wsgiProxy, type WsgiProxyVariables } from '@wsgiproxy/hono'
 * const app = new Hono<{ Variables: WsgiProxyVariables }>()
 * app.use(wsgiProxy({ trustIps: ['loopback'] }))
 * app.get('/', (c) => c.text(`hello ${c.get('environ').REMOTE_ADDR} at ${c.get('originalUrl')}`))
 */
export function wsgiProxy(
  options: WsgiProxyOptions = {},
): MiddlewareHandler<{ Variables: WsgiProxyVariables }> {
  const { getRemoteAddr, maxHeaders, ...restoreOptions } = options
  if (getRemoteAddr !== undefined && typeof getRemoteAddr !== 'function') {
    throw invalidOption(
      `wsgiProxy.getRemoteAddr: expected a function (got ${typeof getRemoteAddr})`,
    )
  }
  const environOptions = maxHeaders === undefined ? {} : { maxHeaders }
  const restore = asWsgiProxyOptions(() => {
    // Checks maxHeaders now rather than failing every request with it.
    toEnviron(new Request('http://localhost/'), environOptions)
    return createEnvironRestorer(restoreOptions)
  })
  return async (c, next) => {
    let restored: Environ
    let originalUrl: URL
    let received: Environ
    try {
      const remoteAddr = remoteAddrOf(c, getRemoteAddr)
      received = toEnviron(
        c.req.raw,
        remoteAddr === undefined ? environOptions : { ...environOptions, remoteAddr },
      )
      const result = await restore(received)
      if (!result.ok) return toResponse(result.response)
      restored = result.environ
      originalUrl = environUrl(restored)
    } catch (error) {
      return toResponse(errorResponse(error))
    }
    const input = restored['wsgi.input']
    if (input !== received['wsgi.input'] && input !== null) {
      // The verifier read the body to check its digest; handlers get the buffered copy.
      const chunks: Uint8Array<ArrayBuffer>[] = []
      for await (const chunk of input) chunks.push(new Uint8Array(chunk))
      const { method, url, headers, signal } = c.req.raw
      c.req.raw = new Request(url, { method, headers, signal, body: new Blob(chunks) })
    }
    c.set('environ', restored)
    c.set('originalUrl', originalUrl)
    return next()
  }
}

function invalidOption(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', `invalid options: ${message}`, { expose: true })
}

// Core names the function that checked an option; a user of wsgiProxy() passed it to wsgiProxy.
function asWsgiProxyOptions<T>(build: () => T): T {
  try {
    return build()
  } catch (error) {
    if (!(error instanceof WsgiProxyError) || error.code !== 'INVALID_OPTIONS') throw error
    throw invalidOption(
      error.message
        .replace(/^invalid options: /, '')
        .replace(/\b(?:createEnvironRestorer|toEnviron)\b/g, 'wsgiProxy'),
    )
  }
}
