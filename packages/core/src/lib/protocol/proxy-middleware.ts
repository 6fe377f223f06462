import * as z from 'zod'
import { isValidHost, parseHost } from '../environ/environ.ts'
import { WsgiProxyError } from '../errors.ts'
import type { PickleCodec } from './header-codec.ts'
import { decodeExtraKeys } from './header-codec.ts'
import { fn, parseOptions } from '../_options.ts'
import { trimTrailingSlashes } from '../_text.ts'
import { errorResponse } from '../problem.ts'
import { isProtocolEnvironKey, PROTOCOL_VERSION } from './protocol.ts'
import { clientAddress, compileTrust } from './trust.ts'
import type { RejectReason, Verifier, VerifyOutcome } from '../signing/signing.ts'
import type { AppResponse, Environ, EnvironApp } from '../types.ts'
import { environPath, unquotePath } from '../environ/url-path.ts'

/** Options of {@link proxyMiddleware}. Trust is off by default: nothing is restored. */
export interface ProxyMiddlewareOptions {
  /**
   * Checks the front's RFC 9421 signature (see `createVerifier`). A request with a valid
   * signature is trusted (with `trustIps` too, see `mode`), and protocol headers it does not cover
   * are deleted before anything is decoded; an invalid one is refused (401, 400, 413, 431, 503)
   * without calling the app. Default: none.
   */
  verifier?: Verifier
  /** With both `verifier` and `trustIps`: require both (`all`, the default) or either (`any`). */
  mode?: 'all' | 'any'
  /**
   * Refuse with 401 every request that is not trusted (no valid `wsgiproxy` signature, or with
   * `trustIps` in mode `all` a peer outside them) instead of serving it untrusted. Needs
   * `verifier`. Default `false`.
   */
  requireSignature?: boolean
  /**
   * Peers whose protocol headers are believed: addresses, CIDR ranges (IPv4, IPv6, IPv4-mapped)
   * and the presets `loopback`, `linklocal`, `uniquelocal`. `X-Forwarded-For` is walked right to
   * left from the peer, believing each entry only when the hop that added it is trusted. Default:
   * none (every request is untrusted and has its protocol headers stripped).
   */
  trustIps?: readonly string[]
  /** Force `SCRIPT_NAME` to this value (`/bar`), leaving `PATH_INFO` as it is. */
  prefix?: string
  /** Move this prefix from the front of `PATH_INFO` to the end of `SCRIPT_NAME`; 400 when a request does not start with it. */
  popPrefix?: string
  /** Force `wsgi.url_scheme`. */
  scheme?: 'http' | 'https'
  /** Force `HTTP_HOST`, `SERVER_NAME` and `SERVER_PORT`; must include a port (`example.com:443`). */
  host?: string
  /** Force the host name: `HTTP_HOST` becomes `<domain>:<SERVER_PORT>` and `SERVER_NAME` the domain. */
  domain?: string
  /** Force `SERVER_PORT` (and the port of `HTTP_HOST`). */
  port?: number | string
  /** Zod schemas per JSON key: decoded values are validated (400 when they do not match). */
  jsonSchemas?: Readonly<Record<string, z.ZodType>>
  /** Decodes `X-WSGIProxy-Pickle-*` on trusted requests; without it they are stripped undecoded. */
  pickleCodec?: PickleCodec
  /**
   * Called when a request is refused (bad signature, malformed forwarded data), with the precise
   * reason (a `SignatureRejectedError` carries `reason`). Default: nothing.
   */
  onReject?: (error: WsgiProxyError, environ: Environ) => void
}

const middlewareOptions = z.strictObject({
  verifier: z
    .custom<Verifier>(
      (v) => typeof (v as Partial<Verifier> | null)?.verify === 'function',
      'expected a verifier from createVerifier()',
    )
    .optional(),
  mode: z.enum(['all', 'any']).optional(),
  requireSignature: z.boolean().optional(),
  trustIps: z.array(z.string()).optional(),
  prefix: z.string().optional(),
  popPrefix: z.string().optional(),
  scheme: z.enum(['http', 'https']).optional(),
  host: z.string().optional(),
  domain: z.string().optional(),
  port: z.union([z.number(), z.string()]).optional(),
  jsonSchemas: z
    .record(
      z.string(),
      z.custom<z.ZodType>((v) => v instanceof z.ZodType),
    )
    .optional(),
  pickleCodec: z
    .object({ stringify: fn<PickleCodec['stringify']>(), parse: fn<PickleCodec['parse']>() })
    .optional(),
  onReject: fn<NonNullable<ProxyMiddlewareOptions['onReject']>>().optional(),
})

/** What an {@link EnvironRestorer} answers: the restored environ, or the response that refuses the request. */
export type RestoreResult = { ok: true; environ: Environ } | { ok: false; response: AppResponse }

/**
 * Verifies and restores one environ as {@link proxyMiddleware} does, without calling an app.
 * Never throws: a refused request resolves with its 400 / 401 / 413 / 431 / 503 response.
 */
export type EnvironRestorer = (environ: Environ) => Promise<RestoreResult>

/**
 * The WSGIProxyMiddleware: on the backend, restores the request as the client made it from the
 * headers a trusted front proxy set (DESIGN.md §6): `X-Forwarded-Server` → `HTTP_HOST`,
 * `SERVER_NAME`, `SERVER_PORT`; `X-Forwarded-Scheme` → `wsgi.url_scheme`; `X-Forwarded-For` →
 * `REMOTE_ADDR`; `X-Traversal-Path` removed from the front of `PATH_INFO`;
 * `X-Forwarded-Script-Name` prepended to `SCRIPT_NAME`; extra keys decoded. Then `prefix` /
 * `popPrefix`, `scheme`, `host`, `domain` and `port` are applied. An untrusted request has every
 * protocol header stripped and nothing decoded, so a client can never set `REMOTE_USER`, the
 * client address, the scheme or the host.
 *
 * @param app - the app to call with the restored environ
 * @param options - trust and forced values
 * @returns the wrapped environ app
 * @throws WsgiProxyError `INVALID_OPTIONS` for conflicting options (`prefix` with `popPrefix`,
 *   `host` with `domain` or `port`), a `host` without a port, or a bad trust entry
 * @example
 * const app = proxyMiddleware(myEnvironApp, { trustIps: ['loopback'] })
 */
export function proxyMiddleware(app: EnvironApp, options?: ProxyMiddlewareOptions): EnvironApp {
  const restorer = buildRestorer(options, 'proxyMiddleware')
  return async (environ) => {
    const result = await restorer(environ)
    return result.ok ? app(result.environ) : result.response
  }
}

/**
 * The restoring half of {@link proxyMiddleware} on its own, for adapters whose next step is not
 * an environ app (a framework middleware that calls `next()`): verifies the signature, checks
 * trust, restores the original request and applies the forced values, with the same options and
 * the same refusals.
 *
 * When the verifier buffered the body to check its digest, the restored `wsgi.input` is the
 * buffered copy and the original body stream has been read.
 *
 * @param options - trust and forced values, as for {@link proxyMiddleware}
 * @returns `(environ) => Promise<{ ok: true, environ } | { ok: false, response }>`
 * @throws WsgiProxyError `INVALID_OPTIONS` as {@link proxyMiddleware}
 * @example
 * const restore = createEnvironRestorer({ trustIps: ['loopback'] })
 * const result = await restore(toEnviron(request, { remoteAddr: '127.0.0.1' }))
 * if (!result.ok) return toResponse(result.response)
 * result.environ.REMOTE_ADDR // the client the front proxy saw
 */
export function createEnvironRestorer(options?: ProxyMiddlewareOptions): EnvironRestorer {
  return buildRestorer(options, 'createEnvironRestorer')
}

function buildRestorer(options: ProxyMiddlewareOptions | undefined, what: string): EnvironRestorer {
  const opts = parseOptions(middlewareOptions, options, what)
  conflict(opts.prefix, 'prefix', opts.popPrefix, 'popPrefix', what)
  conflict(opts.host, 'host', opts.domain, 'domain', what)
  conflict(opts.host, 'host', opts.port, 'port', what)
  const forced = resolveForced(opts, what)
  const isTrusted = compileTrust(opts.trustIps ?? [])
  const trustConfigured = (opts.trustIps ?? []).length > 0
  const decodeOptions = {
    ...(opts.jsonSchemas === undefined ? {} : { jsonSchemas: opts.jsonSchemas }),
    ...(opts.pickleCodec === undefined ? {} : { pickleCodec: opts.pickleCodec }),
  }

  const { verifier, onReject } = opts
  const requireSignature = opts.requireSignature ?? false
  if (requireSignature && verifier === undefined) {
    throw invalid(`${what}.requireSignature needs ${what}.verifier`)
  }
  const mode = opts.mode ?? 'all'

  const refuse = (error: WsgiProxyError, environ: Environ): RestoreResult => {
    try {
      onReject?.(error, environ)
    } catch {
      // a failing hook must not change the answer
    }
    return { ok: false, response: refusal(error) }
  }

  return async (environ) => {
    const peer = typeof environ.REMOTE_ADDR === 'string' ? environ.REMOTE_ADDR : ''
    const ipTrusted = trustConfigured && peer !== '' && isTrusted(peer)
    let outcome: VerifyOutcome | undefined
    if (verifier !== undefined) {
      outcome = await verifier.verify(environ)
      if (outcome.status === 'invalid') {
        return refuse(
          new SignatureRejectedError(outcome.httpStatus, outcome.reason, outcome.message),
          environ,
        )
      }
      if (outcome.status === 'absent' && requireSignature) {
        const error = new SignatureRejectedError(
          401,
          'malformed',
          'the request has no wsgiproxy signature',
        )
        return refuse(error, environ)
      }
    }
    const signed = outcome?.status === 'valid' ? outcome : undefined
    const trusted =
      verifier === undefined
        ? ipTrusted
        : !trustConfigured
          ? signed !== undefined
          : mode === 'any'
            ? signed !== undefined || ipTrusted
            : signed !== undefined && ipTrusted

    if (requireSignature && !trusted) {
      // Signed but from a peer outside trustIps (mode 'all'): required trust is missing.
      const error = new SignatureRejectedError(
        401,
        'malformed',
        'the signed request is not trusted',
      )
      return refuse(error, environ)
    }
    const restored: Environ = { ...environ }
    for (const key in restored) if (isProtocolEnvironKey(key)) delete restored[key]
    // The verifier read the body to check its digest: the app gets the buffered bytes.
    if (signed?.body !== undefined) restored['wsgi.input'] = signed.body
    try {
      if (trusted) {
        let source = environ
        // On a signed request: X-Forwarded-For is the front's assertion (its right-most entry),
        // and a protocol header the signature does not cover is never believed.
        let clientOf = (forwardedFor: string): string =>
          clientAddress(peer, forwardedFor, isTrusted)
        if (signed !== undefined) {
          source = withoutUncovered(environ, signed.covered)
          clientOf = (forwardedFor) =>
            clientAddress(peer, forwardedFor.split(',').at(-1) ?? '', () => true)
        }
        restore(restored, source, clientOf, decodeOptions)
      }
      applyForced(restored, forced)
    } catch (error) {
      const problem =
        error instanceof WsgiProxyError
          ? error
          : new WsgiProxyError('BAD_REQUEST', 'the forwarded request is malformed', {
              cause: error,
              expose: true,
            })
      return refuse(problem, environ)
    }
    return { ok: true, environ: restored }
  }
}

const REJECTION_CODES = {
  400: 'BAD_REQUEST',
  401: 'SIGNATURE_INVALID',
  413: 'BODY_TOO_LARGE',
  431: 'HEADER_TOO_LARGE',
  503: 'REPLAY_STORE_FULL',
} as const

/**
 * A refused signature: `status` is what the client got, `reason` (for logs and `onReject` only,
 * never sent to the client, RFC 9421 §8.3) says why.
 */
export class SignatureRejectedError extends WsgiProxyError {
  override name: string = 'SignatureRejectedError'
  /** Why the signature was refused. */
  readonly reason: RejectReason

  /**
   * @param status - the status the client gets
   * @param reason - the reason code
   * @param message - the precise explanation
   */
  constructor(status: 400 | 401 | 413 | 431 | 503, reason: RejectReason, message: string) {
    super(REJECTION_CODES[status], `signature rejected (${reason}): ${message}`)
    this.reason = reason
  }
}

function refusal(error: WsgiProxyError): AppResponse {
  if (error instanceof SignatureRejectedError) {
    // The precise reason never reaches the client: a generic problem per status.
    const response = errorResponse(new WsgiProxyError(error.code, 'signature rejected'))
    if (error.status === 401) {
      response.headers.push(['www-authenticate', 'Signature realm="wsgiproxy"'])
    }
    if (error.status === 503) response.headers.push(['retry-after', '1'])
    return response
  }
  return errorResponse(error)
}

function withoutUncovered(environ: Environ, covered: ReadonlySet<string>): Environ {
  const source: Environ = { ...environ }
  for (const key in source) {
    if (
      isProtocolEnvironKey(key) &&
      !covered.has(key.slice(5).toLowerCase().replaceAll('_', '-'))
    ) {
      delete source[key]
    }
  }
  return source
}

interface Forced {
  prefix?: string
  popPrefix?: string
  scheme?: 'http' | 'https'
  host?: string
  domain?: string
  port?: string
}

function restore(
  restored: Environ,
  original: Environ,
  clientOf: (forwardedFor: string) => string,
  decodeOptions: Parameters<typeof decodeExtraKeys>[1],
): void {
  const header = (name: string): string | undefined => {
    const value = original[`HTTP_${name}`]
    return typeof value === 'string' ? value : undefined
  }
  const version = header('X_WSGIPROXY_VERSION')
  if (version !== undefined && version !== PROTOCOL_VERSION) {
    throw badRequest(`X-WSGIProxy-Version must be ${PROTOCOL_VERSION}`)
  }

  const scheme = header('X_FORWARDED_SCHEME')
  if (scheme !== undefined) {
    const lower = scheme.toLowerCase()
    if (lower !== 'http' && lower !== 'https') {
      throw badRequest('X-Forwarded-Scheme must be http or https')
    }
    restored['wsgi.url_scheme'] = lower as 'http' | 'https'
  }

  const server = header('X_FORWARDED_SERVER')
  if (server !== undefined) {
    if (!isValidHost(server)) throw badRequest('X-Forwarded-Server must be a host[:port]')
    setHost(restored, server)
  }

  const forwardedFor = header('X_FORWARDED_FOR')
  if (forwardedFor !== undefined) {
    restored.REMOTE_ADDR = clientOf(forwardedFor)
  }

  const traversal = header('X_TRAVERSAL_PATH')
  const scriptHeader = header('X_FORWARDED_SCRIPT_NAME')
  if (traversal !== undefined || scriptHeader !== undefined) {
    const rawScript =
      scriptHeader === undefined ? '' : forwardedPath(scriptHeader, 'X-Forwarded-Script-Name')
    const path =
      traversal === undefined ? '' : unquotePath(forwardedPath(traversal, 'X-Traversal-Path'))
    const script = restored.SCRIPT_NAME
    const info = restored.PATH_INFO
    // The traversal path (the href's path) is replaced by the front's script name; it may reach
    // into SCRIPT_NAME when this app is itself mounted below it (Plack's ReverseProxyPath).
    let [restScript, restInfo] = [script, info]
    if (path !== '') {
      const full = script + info
      if (full !== path && !full.startsWith(`${path}/`)) {
        throw badRequest('the path does not start with X-Traversal-Path')
      }
      if (script.length >= path.length) restScript = script.slice(path.length)
      else [restScript, restInfo] = ['', info.slice(path.length - script.length)]
    }
    // Keep the encoded forms, so %2F in the script name and the path survives.
    const rest = environPath({
      ...restored,
      SCRIPT_NAME: restScript,
      PATH_INFO: restInfo,
    })
    restored.SCRIPT_NAME = unquotePath(rawScript) + restScript
    restored.PATH_INFO = restInfo
    restored['wsgiproxy.raw_path'] = rawScript + rest
  }

  const extra = decodeExtraKeys(original, decodeOptions)
  for (const key of Object.keys(extra)) restored[key] = extra[key]
}

// A path header: "/"-separated non-empty segments of RFC 3986 pchar (no "?", "#", spaces, "//").
const FORWARDED_PATH = /^(?:\/[A-Za-z0-9\-._~!$&'()*+,;=:@%]+)+$/

function forwardedPath(value: string, name: string): string {
  const trimmed = trimTrailingSlashes(value)
  if (trimmed !== '' && !FORWARDED_PATH.test(trimmed)) {
    throw badRequest(`${name} must be a path starting with /`)
  }
  return trimmed
}

function applyForced(environ: Environ, forced: Forced): void {
  if (forced.prefix !== undefined) {
    environ.SCRIPT_NAME = forced.prefix
  } else if (forced.popPrefix !== undefined) {
    const pop = forced.popPrefix
    const info = environ.PATH_INFO
    if (info === pop) {
      environ.PATH_INFO = ''
    } else if (info.startsWith(`${pop}/`)) {
      environ.PATH_INFO = info.slice(pop.length)
    } else {
      throw badRequest('the path is outside the configured prefix')
    }
    environ.SCRIPT_NAME += pop
  }
  if (forced.scheme !== undefined) environ['wsgi.url_scheme'] = forced.scheme
  if (forced.host !== undefined) setHost(environ, forced.host)
  if (forced.port !== undefined) {
    environ.SERVER_PORT = forced.port
    if (forced.domain === undefined) {
      const [name] = parseHost(hostOf(environ), environ['wsgi.url_scheme'])
      environ.HTTP_HOST = `${bracket(name)}:${forced.port}`
    }
  }
  if (forced.domain !== undefined) {
    environ.SERVER_NAME = forced.domain
    environ.HTTP_HOST = `${bracket(forced.domain)}:${environ.SERVER_PORT}`
  }
}

function setHost(environ: Environ, host: string): void {
  const [name, port] = parseHost(host, environ['wsgi.url_scheme'])
  environ.HTTP_HOST = host
  environ.SERVER_NAME = name
  environ.SERVER_PORT = port
}

function hostOf(environ: Environ): string {
  const host = environ.HTTP_HOST
  return typeof host === 'string' && host !== '' ? host : bracket(environ.SERVER_NAME)
}

function bracket(name: string): string {
  return name.includes(':') ? `[${name}]` : name
}

function resolveForced(
  opts: Omit<ProxyMiddlewareOptions, 'port'> & { port?: number | string },
  what: string,
): Forced {
  const forced: Forced = {}
  if (opts.prefix !== undefined) forced.prefix = forcedPath(opts.prefix, `${what}.prefix`)
  if (opts.popPrefix !== undefined) {
    forced.popPrefix = forcedPath(opts.popPrefix, `${what}.popPrefix`)
  }
  if (opts.scheme !== undefined) forced.scheme = opts.scheme
  if (opts.host !== undefined) {
    if (!isValidHost(opts.host) || !hasPort(opts.host)) {
      throw invalid(
        `${what}.host must be host:port, port included (got ${JSON.stringify(opts.host)}); use domain to force only the name`,
      )
    }
    forced.host = opts.host
  }
  if (opts.domain !== undefined) {
    if (!isValidHost(opts.domain) || hasPort(opts.domain)) {
      throw invalid(
        `${what}.domain must be a host name without port (got ${JSON.stringify(opts.domain)})`,
      )
    }
    forced.domain = opts.domain.replace(/^\[(.*)\]$/, '$1')
  }
  if (opts.port !== undefined) {
    const port = String(opts.port)
    if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) {
      throw invalid(`${what}.port must be 0–65535 (got ${JSON.stringify(opts.port)})`)
    }
    forced.port = port
  }
  return forced
}

function forcedPath(value: string, option: string): string {
  const trimmed = trimTrailingSlashes(value)
  if (trimmed !== '' && !trimmed.startsWith('/')) {
    throw invalid(`${option} must start with "/" (got ${JSON.stringify(value)})`)
  }
  return trimmed
}

function hasPort(host: string): boolean {
  return host.startsWith('[') ? host.includes(']:') : host.includes(':')
}

function conflict(a: unknown, aName: string, b: unknown, bName: string, what: string): void {
  if (a !== undefined && b !== undefined) {
    throw invalid(`${what}.${aName} and ${what}.${bName} cannot be given together`)
  }
}

function invalid(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', `invalid options: ${message}`, { expose: true })
}

function badRequest(message: string): WsgiProxyError {
  return new WsgiProxyError('BAD_REQUEST', message, { expose: true })
}
