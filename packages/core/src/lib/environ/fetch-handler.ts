import * as z from 'zod'
import { buildEnviron, parseToEnvironOptions, toRequest } from './environ.ts'
import { asWsgiProxyError, WsgiProxyError } from '../errors.ts'
import { logError } from '../log.ts'
import { fn, parseOptions } from '../options.ts'
import { findRemoteAddr } from './peer-address.ts'
import { extraKeyProblem } from '../protocol/extra-key-format.ts'
import { discardBody } from '../streams.ts'
import { errorResponse } from '../problem.ts'
import { fromResponse, toResponse } from './response.ts'
import type { Environ, EnvironApp, ErrorHook } from '../types.ts'
import { compileTrust } from '../protocol/trust.ts'
import { startServerTrace, traceResponse } from '../telemetry/tracing.ts'
import type { ServerTrace } from '../telemetry/tracing.ts'

/** A web-standard fetch handler, as `export default { fetch }` on Bun, Deno and @hono/node-server. */
export type FetchHandler = (request: Request, context?: unknown) => Response | Promise<Response>

/** Options of {@link toFetchHandler}. */
export interface ToFetchHandlerOptions {
  /**
   * The mount prefix that becomes `SCRIPT_NAME`, or a function that finds it per request (given
   * the handler's two arguments; a framework adapter derives it from the matched route). A
   * request outside it is answered 404. Default `''`.
   */
  scriptName?: string | ((request: Request, context: unknown) => string)
  /**
   * Finds the client address; overrides the lookup by the runtime's second argument
   * (`@hono/node-server`, Bun, Deno). Default: found by shape.
   */
  getRemoteAddr?: (request: Request, context: unknown) => string | undefined
  /**
   * Environ keys to add per request from what the request alone does not say (given the
   * handler's two arguments; a framework adapter passes its context): `REMOTE_USER` set by an
   * authentication middleware, for one, so that a proxy app can forward it with `stringKeys`.
   * `undefined` values are skipped; a key the request itself sets (`REQUEST_METHOD`, `HTTP_*`,
   * `wsgi.*`, ...) or that is not an identifier is an `APP_ERROR` (500). Default: none.
   */
  extraEnviron?: (request: Request, context: unknown) => Record<string, unknown> | undefined
  /** Header fields accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
  /** Show error messages in problem bodies (development only: they may name internal addresses). Default `false`. */
  exposeErrors?: boolean
  /**
   * Called when the app throws or the request cannot be turned into an environ (then `environ` is
   * `undefined`); see {@link ErrorHook}. Return a response to send instead of the default problem
   * response. If it throws, a fixed 500 is sent. Default `logErrors()`: one line per error with
   * status ≥ 500 on `console.error` (with the stack when the app threw).
   */
  onError?: ErrorHook
  /**
   * Peers (addresses, CIDR ranges, or `loopback` / `linklocal` / `uniquelocal`, as `trustIps`)
   * whose W3C `traceparent` the request's span continues, with OpenTelemetry tracing on. Any
   * other client's `traceparent` becomes a link of a new trace, never its parent. Default `[]`:
   * no client is trusted (docs/operations.md, "Tracing").
   */
  trustTraceparent?: readonly string[]
}

const toFetchHandlerOptions = z.strictObject({
  scriptName: z
    .union([z.string(), fn<(request: Request, context: unknown) => string>()])
    .optional(),
  getRemoteAddr: fn<NonNullable<ToFetchHandlerOptions['getRemoteAddr']>>().optional(),
  extraEnviron: fn<NonNullable<ToFetchHandlerOptions['extraEnviron']>>().optional(),
  maxHeaders: z.number().int().min(1).optional(),
  exposeErrors: z.boolean().optional(),
  onError: fn<NonNullable<ToFetchHandlerOptions['onError']>>().optional(),
  trustTraceparent: z.array(z.string()).readonly().optional(),
})

/**
 * Turns an {@link EnvironApp} into a fetch handler. The handler never throws: failures become
 * problem+json responses, and the app's response to a `HEAD` request is sent without a body.
 *
 * @param app - the environ app to serve
 * @param options - mount prefix, client address lookup, error handling
 * @returns `(request, context?) => Promise<Response>`
 * @example
 * import { exactProxy, toFetchHandler } from '@wsgiproxy/core'
 * export default { fetch: toFetchHandler(exactProxy()) }
 */
export function toFetchHandler(
  app: EnvironApp,
  options?: ToFetchHandlerOptions,
): (request: Request, context?: unknown) => Promise<Response> {
  const opts = parseOptions(toFetchHandlerOptions, options, 'toFetchHandler')
  const { scriptName } = opts
  const environOptions = parseToEnvironOptions({
    ...(typeof scriptName === 'string' ? { scriptName } : {}),
    ...(opts.maxHeaders === undefined ? {} : { maxHeaders: opts.maxHeaders }),
  })
  const getRemoteAddr = opts.getRemoteAddr ?? findRemoteAddr
  const exposeErrors = opts.exposeErrors ?? false
  const onError = opts.onError ?? logError
  const trusted = compileTrust(opts.trustTraceparent ?? [])
  const traceTrust = (address: string | undefined): boolean =>
    address !== undefined && trusted(address)

  async function fail(error: unknown, environ: Environ | undefined): Promise<Response> {
    try {
      const replacement = await onError(asWsgiProxyError(error), environ)
      return toResponse(replacement ?? errorResponse(error, exposeErrors))
    } catch {
      return new Response('Internal Server Error', {
        status: 500,
        headers: { 'content-type': 'text/plain; charset=utf-8' },
      })
    }
  }

  return async (request, context) => {
    let environ: Environ | undefined
    let trace: ServerTrace | undefined
    try {
      const remoteAddr = getRemoteAddr(request, context)
      let perRequest = environOptions
      if (typeof scriptName === 'function') {
        perRequest = { ...perRequest, scriptName: checkScriptName(scriptName(request, context)) }
      }
      if (remoteAddr !== undefined) perRequest = { ...perRequest, remoteAddr }
      environ = buildEnviron(request, perRequest)
      if (opts.extraEnviron !== undefined) {
        addExtraEnviron(environ, opts.extraEnviron(request, context))
      }
      trace = startServerTrace(environ, traceTrust)
      const env = environ
      let response = await (trace === undefined ? app(env) : trace.run(() => app(env)))
      if (request.method === 'HEAD' && response?.body) {
        void discardBody(response.body)
        response = { ...response, body: null }
      }
      return toResponse(trace === undefined ? response : traceResponse(response, trace))
    } catch (error) {
      const response = await fail(error, environ)
      trace?.respond(response.status)
      trace?.end()
      return response
    }
  }
}

/**
 * Turns any fetch handler (a Hono app's `fetch`, for one) into an {@link EnvironApp}. The handler
 * gets the request built by `toRequest(environ)` and `{ environ }` as its second argument, so it
 * can read the environ (in Hono: `c.env.environ`).
 *
 * @param handler - the fetch handler
 * @returns the environ app
 * @example
 * const app = new Hono().get('/', (c) => c.text(c.env.environ.REMOTE_ADDR ?? 'unknown'))
 * const environApp = fromFetchHandler(app.fetch)
 */
export function fromFetchHandler(
  handler: (request: Request, context: { environ: Environ }) => Response | Promise<Response>,
): EnvironApp {
  return async (environ) => fromResponse(await handler(toRequest(environ), { environ }))
}

function addExtraEnviron(environ: Environ, extra: unknown): void {
  if (extra === undefined) return
  if (typeof extra !== 'object' || extra === null) {
    throw new WsgiProxyError(
      'APP_ERROR',
      `extra environ keys (toFetchHandler's extraEnviron, the environ option of the Hono adapters) must be an object or undefined (got ${extra === null ? 'null' : typeof extra})`,
    )
  }
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) continue
    const problem = extraKeyProblem(key)
    if (problem !== undefined) {
      throw new WsgiProxyError(
        'APP_ERROR',
        `an extra environ key (toFetchHandler's extraEnviron, the environ option of the Hono adapters) ${problem} (got ${JSON.stringify(key)})`,
      )
    }
    environ[key] = value
  }
}

function checkScriptName(scriptName: unknown): string {
  if (typeof scriptName === 'string' && (scriptName === '' || scriptName.startsWith('/'))) {
    return scriptName
  }
  throw new WsgiProxyError(
    'APP_ERROR',
    `toFetchHandler.scriptName must answer "" or a path starting with "/" (got ${JSON.stringify(scriptName)})`,
  )
}
