import type { Environ, ErrorHook, ProxyMiddlewareOptions } from '@wsgiproxy/core'
import { environUrl, errorResponse, logErrors, toEnviron, toResponse } from '@wsgiproxy/core'
import {
  asWsgiProxyError,
  createEnvironRestorerFor,
  parseOptions,
  toReadableStream,
} from '@wsgiproxy/core/adapter'
import type { Context, MiddlewareHandler } from 'hono'
import * as z from 'zod'
import { ENVIRON_FIELDS } from './_options.ts'
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
 * lookup, header cap and error hook.
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
  /**
   * Called with the error and the environ (`undefined` when none could be built) when the
   * request cannot be turned into an environ (a bad `Host` 400, too many header fields 431) or
   * `getRemoteAddr` throws; may return the response to send instead of the problem+json one. A
   * hook that throws gives a fixed 500. Refused signatures and forwarded data go to `onReject`
   * instead. Default: log errors of status ≥ 500.
   */
  onError?: ErrorHook
}

// The restorer's options are checked by createEnvironRestorerFor, which names wsgiProxy too.
const WSGI_PROXY_OPTIONS = z.looseObject(ENVIRON_FIELDS)

/**
 * Hono middleware for the backend side of the wsgiproxy protocol: verifies the front proxy's
 * signature and trust as core's `proxyMiddleware` does, restores the original request, sets it as
 * `c.get('environ')` and its URL as `c.get('originalUrl')`, and calls `next()`. A refused request
 * is answered here (401 with `WWW-Authenticate`, 400, 413, 431, 503 with `Retry-After`, as
 * problem+json, or what `onError` returns) and never reaches the handlers. An untrusted request
 * still goes on, with its protocol headers left out of the environ. The environ is built with
 * `SCRIPT_NAME` `''` (the path as this app received it) before it is restored. `c.req` keeps the
 * request as received: read the client, host and scheme from the environ, not from
 * `X-Forwarded-*` headers. When the verifier read the body to check its digest, `c.req` streams
 * the bytes it holds, uncopied.
 *
 * @param options - trust, signature verification, forced values (see `proxyMiddleware`), client
 *   address lookup, header cap, error handling
 * @returns the middleware
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `wsgiProxy` and the option, for a bad value or
 *   conflicting options
 * @example
 * import { wsgiProxy, type WsgiProxyVariables } from '@wsgiproxy/hono'
 * const app = new Hono<{ Variables: WsgiProxyVariables }>()
 * app.use(wsgiProxy({ trustIps: ['loopback'] }))
 * app.get('/', (c) => c.text(`hello ${c.get('environ').REMOTE_ADDR} at ${c.get('originalUrl')}`))
 */
export function wsgiProxy(
  options?: WsgiProxyOptions,
): MiddlewareHandler<{ Variables: WsgiProxyVariables }> {
  const { getRemoteAddr, maxHeaders, onError, ...restoreOptions } = parseOptions<WsgiProxyOptions>(
    WSGI_PROXY_OPTIONS,
    options,
    'wsgiProxy',
  )
  const restore = createEnvironRestorerFor(restoreOptions, 'wsgiProxy')
  const environOptions = maxHeaders === undefined ? {} : { maxHeaders }
  const fail = failureResponder(onError ?? logErrors())
  return async (c, next) => {
    let environ: Environ | undefined
    let received: Environ
    let originalUrl: URL
    try {
      const remoteAddr = remoteAddrOf(c, getRemoteAddr)
      received = toEnviron(
        c.req.raw,
        remoteAddr === undefined ? environOptions : { ...environOptions, remoteAddr },
      )
      environ = received
      const result = await restore(received)
      if (!result.ok) return toResponse(result.response)
      environ = result.environ
      originalUrl = environUrl(environ)
    } catch (error) {
      return fail(error, environ)
    }
    const input = environ['wsgi.input']
    if (input !== received['wsgi.input'] && input !== null) {
      // The verifier read the body to check its digest: the handlers read its bytes through one
      // stream, shared by c.req and the environ.
      environ['wsgi.input'] = replaceBody(c, input)
    }
    c.set('environ', environ)
    c.set('originalUrl', originalUrl)
    return next()
  }
}

/** Makes `c.req` the received request with `input` as its body; returns the body stream. */
function replaceBody(c: Context, input: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const { method, url, headers, signal } = c.req.raw
  const init: RequestInit & { duplex: 'half' } = {
    method,
    headers,
    signal,
    body: toReadableStream(input),
    // A streamed body needs half duplex (https://fetch.spec.whatwg.org/#dom-requestinit-duplex).
    duplex: 'half',
  }
  c.req.raw = new Request(url, init)
  // The Request keeps the stream it was given, so the environ and c.req read the same one.
  return c.req.raw.body as ReadableStream<Uint8Array>
}

/** Answers a failure: what `onError` returns, else the problem response; a fixed 500 if it throws. */
function failureResponder(
  onError: ErrorHook,
): (error: unknown, environ: Environ | undefined) => Promise<Response> {
  return async (error, environ) => {
    try {
      const problem = asWsgiProxyError(error)
      return toResponse((await onError(problem, environ)) ?? errorResponse(problem))
    } catch {
      return new Response('Internal Server Error', {
        status: 500,
        headers: { 'content-type': 'text/plain; charset=utf-8' },
      })
    }
  }
}
