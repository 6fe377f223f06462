import type { EnvironApp, ErrorHook } from '@wsgiproxy/core'
import { toFetchHandler } from '@wsgiproxy/core'
import { parseOptions } from '@wsgiproxy/core/adapter'
import type { Context, Handler } from 'hono'
import * as z from 'zod'
import { ENVIRON_FIELDS, ENVIRON_FROM_CONTEXT } from './_options.ts'
import type { EnvironFromContext } from './_options.ts'
import { routePrefix } from './_route-prefix.ts'
import type { GetRemoteAddr } from './remote-addr.ts'
import { remoteAddrOf } from './remote-addr.ts'

/** Options of {@link mount}. */
export interface MountOptions {
  /**
   * Finds the client address for `REMOTE_ADDR`. Pass your runtime's Hono conninfo helper
   * (`getConnInfo` from `@hono/node-server/conninfo`, `hono/bun`, `hono/deno`) or any function of
   * the context. Default: the address in `c.env` of @hono/node-server, Bun or Deno, found by shape
   * (core's `findRemoteAddr`, which reads what those helpers read); none elsewhere.
   */
  getRemoteAddr?: GetRemoteAddr
  /**
   * Environ keys to add from the context, per request: what your middleware knows and the request
   * does not say, for example `(c) => ({ REMOTE_USER: c.get('user')?.name })`, which `proxy()`
   * then forwards with `stringKeys: ['REMOTE_USER']`. `undefined` values are skipped; a key the
   * request sets itself (`REQUEST_METHOD`, `HTTP_*`, `wsgi.*`, ...) gives a 500. Default: none.
   */
  environ?: EnvironFromContext
  /** Header fields accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
  /** Show error messages in problem bodies (development only: they may name internal addresses). Default `false`. */
  exposeErrors?: boolean
  /**
   * Called with the error and the environ (`undefined` when the request could not be turned into
   * one: a bad `Host`, too many header fields) when the app throws or the request is refused; may
   * return the response to send instead of the problem+json one. A hook that throws gives a fixed
   * 500. Default: log errors of status ≥ 500.
   */
  onError?: ErrorHook
  /**
   * Peers whose W3C `traceparent` the request's span continues, with an OpenTelemetry SDK
   * registered (core's `toFetchHandler` option; addresses, CIDR ranges, `loopback`, ...). Any
   * other client's becomes a link of a new trace. Default `[]`.
   */
  trustTraceparent?: readonly string[]
}

const MOUNT_OPTIONS = z.strictObject({
  ...ENVIRON_FIELDS,
  environ: ENVIRON_FROM_CONTEXT,
  exposeErrors: z.boolean().optional(),
})

/**
 * A Hono handler that serves an environ app under the route it is registered on: the part of the
 * path the route matched becomes `SCRIPT_NAME`, the rest `PATH_INFO`
 * (`app.all('/api/*', mount(x))`: `/api/users/1` gives `/api` and `/users/1`, `/api` gives `/api`
 * and `''`). Nested routes (`app.route('/v1', sub)`) and route parameters count; `%2F` in the
 * path stays in `wsgiproxy.raw_path`. Never throws to Hono: failures are problem+json responses
 * (or what `onError` returns), and a `HEAD` response goes without its body.
 *
 * @param app - the environ app to serve
 * @param options - client address lookup, header cap, error handling
 * @returns the handler, for `app.all(route, handler)`
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `mount` and the option
 * @example
 * import { mount } from '@wsgiproxy/hono'
 * const app = new Hono()
 * app.all('/legacy/*', mount(legacyEnvironApp)) // SCRIPT_NAME '/legacy'
 */
export function mount(app: EnvironApp, options?: MountOptions): Handler {
  const { getRemoteAddr, environ, ...rest } = parseOptions<MountOptions>(
    MOUNT_OPTIONS,
    options,
    'mount',
  )
  const fetch = toFetchHandler(app, {
    ...rest,
    ...(environ === undefined ? {} : { extraEnviron: (_request, c) => environ(c as Context) }),
    scriptName: (_request, c) => routePrefix(c as Context),
    getRemoteAddr: (_request, c) => remoteAddrOf(c as Context, getRemoteAddr),
  })
  return (c) => fetch(c.req.raw, c)
}
