import { formatAuthority, isValidServer } from './environ.ts'
import { WsgiProxyError } from './errors.ts'
import type { ForwardOptions } from './forward-options.ts'
import { forwardOptionsSchema, forwardSettings } from './forward-options.ts'
import { failure, forward } from './_forward.ts'
import { forwardedRequestHeaders } from './_hop-by-hop.ts'
import { parseOptions } from './_options.ts'
import type { EnvironApp } from './types.ts'
import { environPath } from './url-path.ts'

/** Options of {@link exactProxy}: see {@link ForwardOptions}. */
export interface ExactProxyOptions extends ForwardOptions {}

const exactProxyOptions = forwardOptionsSchema()

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
  const settings = forwardSettings(opts)
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
    const host = environ.HTTP_HOST
    const headers = forwardedRequestHeaders(environ, [
      ['host', typeof host === 'string' && host !== '' ? host : authority],
    ])
    const method = environ.REQUEST_METHOD
    return forward({ url, method, headers, body: environ['wsgi.input'] }, environ, settings)
  }
}
