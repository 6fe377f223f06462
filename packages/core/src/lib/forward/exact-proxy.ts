import * as z from 'zod'
import { formatAuthority, isValidServer } from '../environ/environ.ts'
import { environPath } from '../environ/url-path.ts'
import { WsgiProxyError } from '../errors.ts'
import type { ForwardOptions } from './forward-options.ts'
import { forwardOptionsSchema, forwardSettings } from './forward-options.ts'
import type { ForwardSettings } from './_forward.ts'
import { failure, forward } from './_forward.ts'
import { forwardedRequestHeaders } from './_hop-by-hop.ts'
import { fn, parseOptions } from '../options.ts'
import {
  ALLOW_ENTRY_HINT,
  allowEntryProblem as entryProblem,
  compileAllowList,
  parseAddress,
} from './_allow-list.ts'
import type { Checked, TargetGuard } from './_target-check.ts'
import { checkTarget } from './_target-check.ts'
import { appendVia, processPseudonym, viaNames } from './_via.ts'
import { errorResponse, problemResponse } from '../problem.ts'
import type { AppResponse, CopyableApp, CopyTarget, Environ } from '../types.ts'
import { tracingOn } from '../telemetry/tracing.ts'

/** Options of {@link exactProxy}; the {@link ForwardOptions} plus the SSRF and loop guards. */
export interface ExactProxyOptions extends ForwardOptions {
  /**
   * Where the proxy may connect: the target named by the `Host` header (or the absolute-form
   * request target) must match an entry, else the client gets 403. An entry is
   *
   * - a host name, `example.com`, or every name under a domain, `*.example.com`;
   * - an IP address or CIDR range, `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8` (IPv4 in dotted
   *   decimal; an IPv4-mapped IPv6 target is matched as its IPv4 address);
   * - a preset: `public` (public unicast addresses: no loopback, private, carrier-grade NAT,
   *   link-local, unique-local, multicast, broadcast, unspecified, reserved or documentation
   *   range; IPv6 only from global unicast 2000::/3 and not NAT64, 6to4 or Teredo, which can
   *   carry an internal IPv4 address), `loopback`, `linklocal`, `uniquelocal`;
   *
   * each optionally followed by `:port`, `:port,port,...` or `:*` (IPv6 in brackets:
   * `[::1]:8080`, `[fd00::/8]:443`); without one, any port. The target is first normalised as the
   * URL parser (and so the transport) reads it: `127.1`, `2130706433`, `0x7f000001`,
   * `127.000.000.001` and `127.0.0.1.` are all `127.0.0.1`. Localhost names (`localhost`,
   * `*.localhost`, with or without the root dot) are the loopback addresses 127.0.0.1 and ::1
   * ([RFC 6761 §6.3](https://www.rfc-editor.org/rfc/rfc6761#section-6.3)).
   *
   * A host name that no name entry matches is allowed when every address `resolve` gives for it
   * is; without `resolve`, core cannot look names up and believes a name public (`public` allows
   * it, address entries alone do not). On Node, pass `resolveHost` from `@wsgiproxy/node` so that a
   * name resolving to an internal address (DNS rebinding) is refused too.
   *
   * Default `['public']`: an exact proxy open to clients is a server-side request forgery
   * (SSRF) tool for reaching loopback and internal services unless it says where it may go.
   * `[]` refuses everything.
   */
  allow?: readonly string[]
  /**
   * Resolves a host name to the addresses to check, then connect to: the request goes to the
   * first address (its `Host` header unchanged), so the address checked is the address connected
   * to and a second lookup cannot answer differently. Needs a transport that sends `Host` as given
   * (`undiciTransport()`, which also takes the TLS server name from `Host`). Not called for IP addresses, localhost names, or names a name entry of
   * `allow` matches (then only for `isSelf`, and the name is connected to). Default: none; on
   * Node, `resolveHost` from `@wsgiproxy/node`.
   */
  resolve?: (hostname: string) => readonly string[] | Promise<readonly string[]>
  /**
   * Whether an address and port are this server itself: a request sent there would come back
   * (508 Loop Detected). Called with the target's canonical address (IPv4-mapped IPv6 as IPv4,
   * IPv6 as RFC 5952 text without brackets), for an IP address, each address of a localhost name
   * and each address `resolve` gives. Default: none (the `via` guard still catches loops); on
   * Node, `createSelfCheck()` from `@wsgiproxy/node`.
   */
  isSelf?: (address: string, port: number) => boolean
  /**
   * The loop guard: every forwarded request gets a `Via` entry with this proxy's pseudonym
   * appended (`Via: 1.1 wsgiproxy-3f2a...`,
   * [RFC 9110 §7.6.3](https://www.rfc-editor.org/rfc/rfc9110#section-7.6.3)), and a request whose
   * `Via` already carries it has been here before: it gets 508 Loop Detected instead of going
   * round again, however it came back (another proxy, a port forward, a name that resolves
   * here). `true`: a random pseudonym made once per process (so every exact proxy in the process
   * shares it); a string: that pseudonym (an RFC 9110 token, e.g. one name for the processes of
   * one cluster); `false`: no `Via` and no check. Default `true`.
   */
  via?: boolean | string
}

/**
 * The checks of {@link exactProxy}'s `allow` list, for validating a list early or checking a
 * target elsewhere.
 */
export interface AllowList {
  /**
   * Whether the list allows this IP address at this port (IPv4-mapped IPv6 is read as IPv4).
   * An address that does not parse is not allowed.
   */
  allowsAddress(address: string, port: number): boolean
  /** Whether a name entry matches this host name (compared as the URL parser writes it). */
  namesHost(hostname: string, port: number): boolean
}

// RFC 9110 §5.6.2: a token.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$/
const DEFAULT_ALLOW: readonly string[] = ['public']

/**
 * What is wrong with one `allow` entry, or `undefined` when `exactProxy` accepts it: for checkers
 * (a config file, a command-line flag) that name the entry's place themselves.
 *
 * @param entry - one entry of an allow list
 * @returns the problem, lower-case, or `undefined`
 */
export function allowEntryProblem(entry: string): string | undefined {
  return entryProblem(entry)
}

const allowEntry = z.string().superRefine((entry, context) => {
  const problem = entryProblem(entry)
  if (problem !== undefined) context.addIssue({ code: 'custom', message: problem })
})

const exactProxyOptions = forwardOptionsSchema({
  allow: z
    .array(allowEntry, { error: `expected an array of entries: ${ALLOW_ENTRY_HINT}` })
    .optional(),
  resolve: fn<ExactProxyOptions['resolve']>().optional(),
  isSelf: fn<ExactProxyOptions['isSelf']>().optional(),
  via: z
    .union([z.boolean(), z.string().regex(TOKEN)], {
      error:
        "expected true, false or a pseudonym (a token of 1–64 letters, digits or !#$%&'*+-.^_`|~)",
    })
    .optional(),
})

/**
 * The exact proxy (WSGIProxy's `proxy_exact_request`): sends the request an environ describes to
 * `wsgi.url_scheme://SERVER_NAME:SERVER_PORT`, with `Host: HTTP_HOST` as it is, the path from the
 * percent-encoded `SCRIPT_NAME + PATH_INFO` and `?QUERY_STRING`, the body streamed. Hop-by-hop
 * headers are removed both ways, redirects are passed through, and failures become
 * problem+json responses (502 unreachable, 504 timeout, 499 client gone).
 *
 * Two guards come first. A target outside `allow` (default: public addresses only) gets 403
 * `TARGET_NOT_ALLOWED`; a request that would come back here (its `Via` carries this proxy's
 * pseudonym, or `isSelf` says the target is this server) gets 508 `LOOP_DETECTED`. Their bodies
 * never repeat what the client sent; `onError` receives the error whose message names the
 * target, for the log.
 *
 * @param options - allow list, resolver, loop guard, transport, timeouts, error handling
 * @returns the environ app, with `prepareCopy` for `serve({ byteCopy: true })`
 * @throws WsgiProxyError `INVALID_OPTIONS` naming each bad option (an allow entry, for one)
 * @example
 * // forward everything to the server the Host header names, if it is one of ours
 * const app = exactProxy({
 *   transport: undiciTransport(),
 *   allow: ['*.internal.example:80,443', '10.0.0.0/8:8080'],
 *   resolve: resolveHost,
 * })
 */
export function exactProxy(options?: ExactProxyOptions): CopyableApp {
  const opts = parseOptions<ExactProxyOptions>(exactProxyOptions, options, 'exactProxy')
  const settings = forwardSettings(opts)
  const allow = compileAllowList(opts.allow ?? DEFAULT_ALLOW)
  const pseudonym =
    opts.via === false ? undefined : typeof opts.via === 'string' ? opts.via : processPseudonym()
  const guard: TargetGuard = {
    allow,
    resolve: opts.resolve,
    isSelf: opts.isSelf,
  }
  const skipVia = pseudonym === undefined ? undefined : (name: string): boolean => name === 'via'
  // The request for a target that passed the guards (to `checked`, an address, when given).
  const outbound = (
    environ: Environ,
    url: URL,
    authority: string,
    checked: Checked,
  ): Outbound | Promise<AppResponse> => {
    if (checked instanceof WsgiProxyError) return refuseTarget(checked, environ, settings)
    const host = environ.HTTP_HOST
    const headers = forwardedRequestHeaders(
      environ,
      [['host', typeof host === 'string' && host !== '' ? host : authority]],
      skipVia,
    )
    if (pseudonym !== undefined) {
      headers.push(['via', appendVia(environ.HTTP_VIA, environ.SERVER_PROTOCOL, pseudonym)])
    }
    // Connect to the address checked, not to a name a second lookup could answer differently.
    if (checked !== undefined) url.hostname = checked.includes(':') ? `[${checked}]` : checked
    return { url, method: environ.REQUEST_METHOD, headers }
  }
  // The request to send, or the answer instead; synchronous unless a name is looked up.
  const prepare = (environ: Environ): Outbound | Promise<Outbound | AppResponse> => {
    const scheme = environ['wsgi.url_scheme'] as unknown
    if (scheme !== 'http' && scheme !== 'https') {
      const error = new WsgiProxyError(
        'UNSUPPORTED_SCHEME',
        `wsgi.url_scheme must be "http" or "https" (got ${JSON.stringify(scheme)})`,
        { expose: true },
      )
      return failure(error, environ, settings)
    }
    const via = environ.HTTP_VIA
    if (pseudonym !== undefined && typeof via === 'string' && viaNames(via, pseudonym)) {
      const error = new WsgiProxyError(
        'LOOP_DETECTED',
        `the request came back: its Via header already names this proxy (${pseudonym})`,
      )
      return refuse(error, LOOP_DETAIL, environ, settings)
    }
    const authority = formatAuthority(environ.SERVER_NAME, environ.SERVER_PORT, scheme)
    const url = upstreamUrl(environ, scheme, authority)
    if (url === undefined) {
      const error = new WsgiProxyError(
        'INVALID_UPSTREAM',
        `SERVER_NAME and SERVER_PORT do not name an upstream (${JSON.stringify(authority)})`,
      )
      return failure(error, environ, settings)
    }
    const checked = checkTarget(url, guard)
    return checked instanceof Promise
      ? checked.then<Outbound | AppResponse>((result) => outbound(environ, url, authority, result))
      : outbound(environ, url, authority, checked)
  }
  const send = (environ: Environ, prepared: Outbound | AppResponse): Promise<AppResponse> =>
    'url' in prepared
      ? forward({ ...prepared, body: environ['wsgi.input'] }, environ, settings)
      : Promise.resolve(prepared)
  const app = (environ: Environ): Promise<AppResponse> => {
    const prepared = prepare(environ)
    return prepared instanceof Promise
      ? prepared.then((result) => send(environ, result))
      : send(environ, prepared)
  }
  const prepareCopy = async (environ: Environ): Promise<CopyTarget | AppResponse | undefined> => {
    if (tracingOn()) return undefined // a span per request needs the request to go through the app
    const prepared = await prepare(environ)
    if (!('url' in prepared)) return prepared
    return {
      ...prepared,
      headers: prepared.headers.filter(([name]) => name !== 'content-length'),
      headersTimeout: settings.headersTimeout,
      bodyTimeout: settings.bodyTimeout,
      answerHeaders: (lines) => lines,
      fail: (error) => failure(error, environ, settings),
    }
  }
  return Object.assign(app, { prepareCopy })
}

/** The request `exactProxy` sends, without its body. */
interface Outbound {
  url: URL
  method: string
  headers: Array<[string, string]>
}

export function parseAllowList(entries: readonly string[]): AllowList {
  const parsed = parseOptions<readonly string[]>(
    z.array(allowEntry, { error: 'expected an array of strings' }),
    entries,
    'allow',
  )
  const compiled = compileAllowList(parsed)
  return {
    allowsAddress: (address, port) => {
      const parsedAddress = parseAddress(address)
      return parsedAddress !== undefined && compiled.allowsAddress(parsedAddress, port)
    },
    namesHost: (hostname, port) => {
      const normalised = URL.parse(`http://${hostname}/`)?.hostname
      return normalised !== undefined && compiled.namesHost(normalised, port)
    },
  }
}

const NOT_ALLOWED_DETAIL =
  'the target host is not in the exactProxy allow list (the proxy operator can add it to allow)'
const LOOP_DETAIL =
  'the request would come back to this proxy: it names this proxy itself or has passed through it already'

/** The URL the environ's server, path and query name, or `undefined` when they name none. */
function upstreamUrl(environ: Environ, scheme: string, authority: string): URL | undefined {
  const { SERVER_NAME: name, SERVER_PORT: port } = environ
  if (!isValidServer(name, port)) return undefined
  const query = environ.QUERY_STRING ? `?${environ.QUERY_STRING}` : ''
  return URL.parse(`${scheme}://${authority}${environPath(environ) || '/'}${query}`) ?? undefined
}

/** Answers a target the guards refused (or whose name did not resolve). */
function refuseTarget(
  error: WsgiProxyError,
  environ: Environ,
  settings: ForwardSettings,
): Promise<AppResponse> {
  if (error.code === 'LOOP_DETECTED') return refuse(error, LOOP_DETAIL, environ, settings)
  if (error.code === 'TARGET_NOT_ALLOWED') {
    return refuse(error, NOT_ALLOWED_DETAIL, environ, settings)
  }
  return failure(error, environ, settings)
}

/**
 * Answers a refused request through the error hook: the hook's response, or a problem response
 * with a fixed detail that repeats nothing the client sent (the error's message, which names the
 * target, only with `exposeErrors`).
 */
async function refuse(
  error: WsgiProxyError,
  detail: string,
  environ: Environ,
  settings: ForwardSettings,
): Promise<AppResponse> {
  try {
    const replacement = await settings.onError(error, environ)
    return (
      replacement ??
      problemResponse(error.status, settings.exposeErrors ? error.message : detail, error.code)
    )
  } catch {
    return errorResponse(new WsgiProxyError('APP_ERROR', 'the error hook failed'))
  }
}
