import * as z from 'zod'
import { environHeaders, formatAuthority, isValidServer } from './environ.ts'
import { WsgiProxyError } from './errors.ts'
import { fetchTransport } from './fetch-transport.ts'
import type { ForwardSettings } from './_forward.ts'
import { failure, forward, logProxyError } from './_forward.ts'
import { stripHopByHop } from './_hop-by-hop.ts'
import { duration, fn, parseOptions } from './_options.ts'
import type { EnvironApp, ProxyErrorHook, Transport } from './types.ts'
import { environPath } from './url-path.ts'

/** Timeouts of a forwarded request, in milliseconds; `false` turns one off. */
export interface ProxyTimeouts {
  /**
   * From sending the request until the response headers arrive (connecting included). A miss
   * gives 504. Default 60000, as nginx's `proxy_read_timeout`.
   */
  headers?: number | false
  /**
   * The longest pause between two chunks of the response body. A miss ends the response early
   * (its status is already sent). Default 60000; turn it off for long-lived streams.
   */
  body?: number | false
}

/** Options of {@link exactProxy}. */
export interface ExactProxyOptions {
  /** Sends the request. Default `fetchTransport()`; on Node, `undiciTransport()` sends any Host. */
  transport?: Transport
  /** Timeouts; see {@link ProxyTimeouts}. */
  timeouts?: ProxyTimeouts
  /**
   * Show error messages (which may name internal addresses) in problem+json bodies. Default
   * `false`: bodies carry a generic detail (DESIGN.md §8).
   */
  exposeErrors?: boolean
  /** Called on every failure; may return the response to send. Default: log status ≥ 500. */
  onError?: ProxyErrorHook
}

/** Default timeouts of the forwarding apps, in milliseconds. */
export const DEFAULT_TIMEOUTS: { readonly headers: 60_000; readonly body: 60_000 } = {
  headers: 60_000,
  body: 60_000,
} as const

const timeoutsSchema = z.strictObject({
  headers: duration.optional(),
  body: duration.optional(),
})

const exactProxyOptions = z.strictObject({
  transport: fn<Transport>().optional(),
  timeouts: timeoutsSchema.optional(),
  exposeErrors: z.boolean().optional(),
  onError: fn<ProxyErrorHook>().optional(),
})

/**
 * The exact proxy (WSGIProxy's `proxy_exact_request`): sends the request an environ describes to
 * `wsgi.url_scheme://SERVER_NAME:SERVER_PORT`, with `Host: HTTP_HOST` as it is, the path from the
 * percent-encoded `SCRIPT_NAME + PATH_INFO` and `?QUERY_STRING`, the body streamed. Hop-by-hop
 * headers are removed both ways, redirects are passed through, and failures become
 * problem+json responses (502 unreachable, 504 timeout, 499 client gone).
 *
 * @param options - transport, timeouts, error handling
 * @returns the environ app
 * @example
 * // forward everything under /api to the server the environ names
 * const app = exactProxy({ timeouts: { headers: 10_000 } })
 * serve({ fetch: toFetchHandler((environ) => app({ ...environ, SERVER_PORT: '8080' })) })
 */
export function exactProxy(options?: ExactProxyOptions): EnvironApp {
  const opts = parseOptions(exactProxyOptions, options, 'exactProxy')
  const settings: ForwardSettings = {
    transport: opts.transport ?? fetchTransport(),
    headersTimeout: opts.timeouts?.headers ?? DEFAULT_TIMEOUTS.headers,
    bodyTimeout: opts.timeouts?.body ?? DEFAULT_TIMEOUTS.body,
    exposeErrors: opts.exposeErrors ?? false,
    onError: opts.onError ?? logProxyError,
  }
  return (environ) => {
    const scheme = environ['wsgi.url_scheme'] as unknown
    if (scheme !== 'http' && scheme !== 'https') {
      const error = new WsgiProxyError(
        'UNSUPPORTED_SCHEME',
        `wsgi.url_scheme must be "http" or "https" (got ${JSON.stringify(scheme)})`,
        { expose: true },
      )
      return failure(error, environ, settings)
    }
    const { SERVER_NAME: name, SERVER_PORT: port } = environ
    const authority = formatAuthority(name, port, scheme)
    let url: URL | undefined
    if (isValidServer(name, port)) {
      const query = environ.QUERY_STRING ? `?${environ.QUERY_STRING}` : ''
      url = URL.parse(`${scheme}://${authority}${environPath(environ) || '/'}${query}`) ?? undefined
    }
    if (url === undefined) {
      const error = new WsgiProxyError(
        'INVALID_UPSTREAM',
        `SERVER_NAME and SERVER_PORT do not name an upstream (${JSON.stringify(authority)})`,
      )
      return failure(error, environ, settings)
    }
    const headers = stripHopByHop(environHeaders(environ), 'request').filter(
      ([header]) => header !== 'host',
    )
    const host = environ.HTTP_HOST
    headers.unshift(['host', typeof host === 'string' && host !== '' ? host : authority])
    const method = environ.REQUEST_METHOD
    return forward({ url, method, headers, body: environ['wsgi.input'] }, environ, settings)
  }
}
