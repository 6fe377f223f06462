// The steps a restorer runs on a request it accepted (docs/design.md §6): strip the protocol keys,
// restore what a trusted front forwarded (host, scheme, client, paths, extra keys), then apply
// the values the options force (prefix / popPrefix, scheme, host, domain, port).
import { isValidHost, parseHost } from '../environ/environ.ts'
import { environPath, unquotePath } from '../environ/url-path.ts'
import { WsgiProxyError } from '../errors.ts'
import type { Environ } from '../types.ts'
import { trimTrailingSlashes } from '../_text.ts'
import type { ValidSignature } from './_trust-decision.ts'
import type { DecodeExtraKeysOptions } from './header-codec.ts'
import { decodeExtraKeys } from './header-codec.ts'
import { isProtocolEnvironKey, PROTOCOL_VERSION } from './protocol.ts'
import { clientAddress } from './trust.ts'

/** The options of `proxyMiddleware` that {@link resolveForced} reads. */
export interface ForcedOptions {
  /** Force `SCRIPT_NAME`. */
  prefix?: string | undefined
  /** Move this prefix from `PATH_INFO` to `SCRIPT_NAME`. */
  popPrefix?: string | undefined
  /** Force `wsgi.url_scheme`. */
  scheme?: 'http' | 'https' | undefined
  /** Force `HTTP_HOST`, `SERVER_NAME` and `SERVER_PORT` (host:port). */
  host?: string | undefined
  /** Force the host name. */
  domain?: string | undefined
  /** Force `SERVER_PORT`. */
  port?: number | string | undefined
}

/** The forced values, checked and normalized once by {@link resolveForced}. */
export interface Forced {
  /** `SCRIPT_NAME`, without trailing `/`. */
  prefix?: string
  /** The prefix to pop, without trailing `/`. */
  popPrefix?: string
  /** `wsgi.url_scheme`. */
  scheme?: 'http' | 'https'
  /** `host:port`. */
  host?: string
  /** The host name, without IPv6 brackets. */
  domain?: string
  /** The port, as digits. */
  port?: string
}

/**
 * Checks the forced values of the options: `prefix` and `popPrefix`, `host` and `domain`,
 * `host` and `port` exclude each other; paths start with `/`; `host` has a port, `domain` none;
 * `port` is 0–65535.
 *
 * @param opts - the options
 * @param what - the public function called, for messages
 * @returns the forced values
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `what` and the option
 */
export function resolveForced(opts: ForcedOptions, what: string): Forced {
  conflict(opts.prefix, 'prefix', opts.popPrefix, 'popPrefix', what)
  conflict(opts.host, 'host', opts.domain, 'domain', what)
  conflict(opts.host, 'host', opts.port, 'port', what)
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

/**
 * A copy of the environ without any protocol key; when the verifier buffered the body to check
 * its digest, its `wsgi.input` is the buffered copy.
 *
 * @param environ - the request as it came
 * @param signed - the signature that verified, if any
 * @returns the environ to restore into
 */
export function withoutProtocolKeys(environ: Environ, signed: ValidSignature | undefined): Environ {
  const restored: Environ = { ...environ }
  for (const key in restored) if (isProtocolEnvironKey(key)) delete restored[key]
  // The verifier read the body to check its digest: the app gets the buffered bytes.
  if (signed?.body !== undefined) restored['wsgi.input'] = signed.body
  return restored
}

/**
 * Restores what a trusted front forwarded into `restored`: `X-WSGIProxy-Version` checked,
 * `X-Forwarded-Scheme`, `X-Forwarded-Server`, `X-Forwarded-For`, `X-Traversal-Path` and
 * `X-Forwarded-Script-Name` applied, extra keys decoded. Without a signature, `X-Forwarded-For` is
 * walked through the trusted peers; with one, it is the front's assertion (its right-most entry)
 * and the protocol headers the signature does not cover are ignored.
 *
 * With `compat` (`'wsgiproxy-0.1'`), a request saying `X-WSGIProxy-Version: 0.1` from a peer in
 * `trustIps` is read as a WSGIProxy 0.1 front sends it: `X-Traversal-Path` without its leading
 * `/`, `X-Script-Name` when there is no `X-Forwarded-Script-Name`, and the extra-key values of
 * {@link DecodeExtraKeysOptions.wsgiproxy01}. A 0.2 request stays strict.
 *
 * @param restored - the environ to restore into, from {@link withoutProtocolKeys}
 * @param environ - the request as it came
 * @param request - the peer the request came from, whether it is in `trustIps`, and the
 *   signature that verified, if any
 * @param isTrusted - whether an address is a trusted peer
 * @param settings - schemas and pickle codec for the extra keys, and the compat mode
 * @throws WsgiProxyError `BAD_REQUEST` (400) or 431 for malformed forwarded data
 */
export function restoreForwarded(
  restored: Environ,
  environ: Environ,
  request: {
    readonly peer: string
    readonly ipTrusted: boolean
    readonly signed: ValidSignature | undefined
  },
  isTrusted: (address: string) => boolean,
  settings: RestoreSettings,
): void {
  const { peer, signed } = request
  let source = environ
  // On a signed request: X-Forwarded-For is the front's assertion (its right-most entry),
  // and a protocol header the signature does not cover is never believed.
  let clientOf = (forwardedFor: string): string => clientAddress(peer, forwardedFor, isTrusted)
  if (signed !== undefined) {
    source = withoutUncovered(environ, signed.covered)
    clientOf = (forwardedFor) =>
      clientAddress(peer, forwardedFor.split(',').at(-1) ?? '', () => true)
  }
  restore(restored, source, clientOf, settings, request.ipTrusted)
}

/** How {@link restoreForwarded} reads what a trusted front sent. */
export interface RestoreSettings {
  /** Schemas, pickle codec and the dropped-pickle callback for the extra keys. */
  readonly decode: DecodeExtraKeysOptions
  /** Accept WSGIProxy 0.1 requests from peers in `trustIps`. */
  readonly compat: 'wsgiproxy-0.1' | undefined
}

/**
 * Applies the forced values to an environ, after anything restored: `prefix` or `popPrefix`
 * (400 when the path is outside it), then `scheme`, `host`, `port` and `domain`.
 *
 * @param environ - the environ to change
 * @param forced - the values from {@link resolveForced}
 * @throws WsgiProxyError `BAD_REQUEST` (400) for a path outside `popPrefix`
 */
export function applyForced(environ: Environ, forced: Forced): void {
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

/**
 * What a failed restore step is refused with: the step's own `WsgiProxyError`, or anything else
 * as a `BAD_REQUEST` keeping it as `cause`.
 *
 * @param error - what the step threw
 * @returns the error to refuse the request with
 */
export function toRestoreProblem(error: unknown): WsgiProxyError {
  return error instanceof WsgiProxyError
    ? error
    : new WsgiProxyError('BAD_REQUEST', 'the forwarded request is malformed', {
        cause: error,
        expose: true,
      })
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

function restore(
  restored: Environ,
  original: Environ,
  clientOf: (forwardedFor: string) => string,
  settings: RestoreSettings,
  ipTrusted: boolean,
): void {
  const header = (name: string): string | undefined => {
    const value = original[`HTTP_${name}`]
    return typeof value === 'string' ? value : undefined
  }
  const version = header('X_WSGIPROXY_VERSION')
  const v01 = version === LEGACY_VERSION && settings.compat === 'wsgiproxy-0.1'
  if (v01 && !ipTrusted) {
    throw badRequest(
      'X-WSGIProxy-Version 0.1 is accepted only from a peer in trustIps (0.1 requests are not signed)',
    )
  }
  if (version !== undefined && version !== PROTOCOL_VERSION && !v01) {
    throw badRequest(
      version === LEGACY_VERSION
        ? `X-WSGIProxy-Version must be ${PROTOCOL_VERSION} (a WSGIProxy 0.1 front needs compat: "wsgiproxy-0.1" on this side)`
        : `X-WSGIProxy-Version must be ${PROTOCOL_VERSION}`,
    )
  }

  // X-Forwarded-Proto and X-Forwarded-Host: the names most frameworks read, from trusted peers
  // that do not send the protocol's own.
  const scheme = header('X_FORWARDED_SCHEME') ?? lastListValue(header('X_FORWARDED_PROTO'))
  if (scheme !== undefined) {
    const lower = scheme.toLowerCase()
    if (lower !== 'http' && lower !== 'https') {
      throw badRequest('X-Forwarded-Scheme must be http or https')
    }
    restored['wsgi.url_scheme'] = lower as 'http' | 'https'
  }

  const server = header('X_FORWARDED_SERVER') ?? lastListValue(header('X_FORWARDED_HOST'))
  if (server !== undefined) {
    if (!isValidHost(server)) {
      throw badRequest('X-Forwarded-Server (or X-Forwarded-Host) must be a host[:port]')
    }
    setHost(restored, server)
  }

  const forwardedFor = header('X_FORWARDED_FOR')
  if (forwardedFor !== undefined) {
    restored.REMOTE_ADDR = clientOf(forwardedFor)
  }

  let traversal = header('X_TRAVERSAL_PATH')
  let scriptHeader = header('X_FORWARDED_SCRIPT_NAME')
  if (v01) {
    // A 0.1 front sends the href's path without its leading "/"; its middleware read the
    // script name from X-Script-Name. The 0.1 front always sends X-Forwarded-Script-Name (empty
    // when unmounted) and passes a client's X-Script-Name through, so X-Script-Name counts only
    // when X-Forwarded-Script-Name is absent: a front that sets X-Script-Name itself.
    if (traversal !== undefined && traversal !== '' && !traversal.startsWith('/')) {
      traversal = `/${traversal}`
    }
    if (scriptHeader === undefined) scriptHeader = header('X_SCRIPT_NAME')
  }
  if (traversal !== undefined || scriptHeader !== undefined) {
    restorePaths(restored, traversal, scriptHeader)
  }

  const decodeOptions = v01 ? { ...settings.decode, wsgiproxy01: true } : settings.decode
  const extra = decodeExtraKeys(original, decodeOptions)
  for (const key of Object.keys(extra)) restored[key] = extra[key]
}

function restorePaths(
  restored: Environ,
  traversal: string | undefined,
  scriptHeader: string | undefined,
): void {
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

// The version WSGIProxy 0.1 (Paste) sends.
const LEGACY_VERSION = '0.1'

// The right-most value of a comma-separated header: the one the nearest (trusted) proxy added.
function lastListValue(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  return value.slice(value.lastIndexOf(',') + 1).trim()
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
