import type { ErrorHook, ProxyAppOptions } from '@wsgiproxy/core'
import { createProxyApp, WsgiProxyError } from '@wsgiproxy/core'
import { checkProxyAppOptions, parseOptions } from '@wsgiproxy/core/adapter'
import type { Handler } from 'hono'
import * as z from 'zod'
import { ENVIRON_FIELDS, ENVIRON_FROM_CONTEXT } from './_options.ts'
import type { EnvironFromContext } from './_options.ts'
import type { MountOptions } from './mount.ts'
import { mount } from './mount.ts'
import type { GetRemoteAddr } from './remote-addr.ts'

/**
 * Options of {@link proxy}: those of core's `createProxyApp` (`href`, keys, `signer`,
 * `transport`, `timeouts`, `exposeErrors`, ...) and the client address lookup and header cap of
 * {@link mount}.
 */
export interface ProxyOptions extends ProxyAppOptions {
  /** Finds the client address sent as `X-Forwarded-For`; see `MountOptions.getRemoteAddr`. Default: found by shape in `c.env`. */
  getRemoteAddr?: GetRemoteAddr
  /** Header fields accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
  /** Environ keys to add from the context (`REMOTE_USER` for `stringKeys`); see `MountOptions.environ`. */
  environ?: EnvironFromContext
  /** Peers whose `traceparent` continues their trace; see `MountOptions.trustTraceparent`. Default `[]`. */
  trustTraceparent?: readonly string[]
  /**
   * Called with the error and the environ on every failure: forwarding (502 unreachable, 504
   * timeout, ...) and a request that cannot be turned into an environ (400, 431; `environ` is
   * then `undefined`). May return the response to send instead of the problem+json one; a hook
   * that throws gives a 500. Default: log errors of status ≥ 500.
   */
  onError?: ErrorHook
}

// The options proxy passes on to createProxyApp, checked there (by checkProxyAppOptions, naming
// proxy); listed here so that an unknown option is reported first, with a suggestion from all of
// proxy's options. The type keeps the list in step with ProxyAppOptions.
const ANY = z.unknown().optional()
const FORWARDED_FIELDS: Record<Exclude<keyof ProxyAppOptions, 'href' | 'onError'>, z.ZodType> = {
  targets: ANY,
  balance: ANY,
  ejection: ANY,
  healthCheck: ANY,
  retries: ANY,
  limits: ANY,
  stringKeys: ANY,
  unicodeKeys: ANY,
  jsonKeys: ANY,
  pickleKeys: ANY,
  pickleCodec: ANY,
  forwarded: ANY,
  xForwarded: ANY,
  compat: ANY,
  rewriteLocation: ANY,
  trustClientHeaders: ANY,
  signer: ANY,
  transport: ANY,
  timeouts: ANY,
  exposeErrors: ANY,
}

const ONE_HREF = z
  .union([z.string(), z.instanceof(URL)], { error: 'expected a URL, as a string or URL' })
  .superRefine((href, ctx) => {
    const problem = hrefProblem(href)
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem })
  })

const PROXY_OPTIONS = z.strictObject({
  href: z
    .union([ONE_HREF, z.array(ONE_HREF).min(1, { error: 'expected at least one URL' })], {
      error: 'expected a URL, as a string or URL, or a list of them',
    })
    .optional(),
  ...ENVIRON_FIELDS,
  environ: ENVIRON_FROM_CONTEXT,
  ...FORWARDED_FIELDS,
})

/**
 * A Hono handler that forwards requests to `href` with the wsgiproxy protocol headers: `mount`
 * of core's `createProxyApp`. The matched route prefix is sent as `X-Forwarded-Script-Name`, so
 * a backend behind `wsgiProxy` (or core's `proxyMiddleware`) restores the public URL.
 *
 * @param href - where to forward, every other option at its default: the same as
 *   `proxy({ href })`
 * @returns the handler, for `app.all(route, handler)`
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `proxy.href` for a bad URL
 * @example
 * import { proxy } from '@wsgiproxy/hono'
 * app.all('/api/*', proxy('http://127.0.0.1:8080/'))
 */
export function proxy(href: string | URL): Handler
/**
 * A Hono handler that forwards requests to `href`, with options: see the form with a URL string
 * above.
 *
 * @param options - where to forward and how (see `createProxyApp`), client address lookup,
 *   error handling
 * @returns the handler, for `app.all(route, handler)`
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `proxy` and the option, for a bad href, key or
 *   option combination (an unknown option first, with the option meant when it can tell), and
 *   for a value that is neither a URL string nor an options object
 * @example
 * import { proxy } from '@wsgiproxy/hono'
 * app.all('/api/*', proxy({ href: 'http://127.0.0.1:8080/', stringKeys: ['REMOTE_USER'] }))
 */
export function proxy(options: ProxyOptions): Handler
export function proxy(options: ProxyOptions | string | URL): Handler {
  const { href, getRemoteAddr, maxHeaders, environ, trustTraceparent, ...forwarding } =
    parseOptions<ProxyOptions>(
      PROXY_OPTIONS,
      typeof options === 'string' || options instanceof URL ? { href: options } : options,
      'proxy',
      'a URL string or an options object',
    )
  const { targets, balance, ejection, healthCheck, retries, limits, ...rest } = forwarding
  if ((href === undefined) === (targets === undefined)) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      href === undefined
        ? 'invalid options: proxy.href: expected a URL, as a string or URL (or targets, for a pool)'
        : 'invalid options: proxy: give href or targets, not both',
      { expose: true },
    )
  }
  checkProxyAppOptions(rest, 'proxy')
  const mountOptions: MountOptions = {}
  if (getRemoteAddr !== undefined) mountOptions.getRemoteAddr = getRemoteAddr
  if (maxHeaders !== undefined) mountOptions.maxHeaders = maxHeaders
  if (environ !== undefined) mountOptions.environ = environ
  if (trustTraceparent !== undefined) mountOptions.trustTraceparent = trustTraceparent
  if (forwarding.exposeErrors !== undefined) mountOptions.exposeErrors = forwarding.exposeErrors
  if (forwarding.onError !== undefined) mountOptions.onError = forwarding.onError
  // createProxyApp checks the targets and pool options (its messages name createProxyApp).
  const pool = { targets, balance, ejection, healthCheck, retries, limits }
  const given = Object.fromEntries(Object.entries(pool).filter(([, value]) => value !== undefined))
  return mount(
    createProxyApp({ ...rest, ...given, ...(href === undefined ? {} : { href }) }),
    mountOptions,
  )
}

// The href rules of createProxyApp, checked here so that the error names proxy.href.
function hrefProblem(href: string | URL): string | undefined {
  const url = URL.parse(String(href))
  // The value itself is not echoed: a malformed one may still hold credentials.
  if (url === null) return 'expected an http or https URL'
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return `expected http or https (got ${JSON.stringify(url.protocol.slice(0, -1))})`
  }
  if (url.username !== '' || url.password !== '') return 'must not contain credentials'
  if (url.hash !== '') return 'must not contain a fragment'
  return undefined
}
