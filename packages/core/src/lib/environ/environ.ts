import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { parseOptions } from '../options.ts'
import { trimTrailingSlashes } from '../_text.ts'
import { toReadableStream } from '../streams.ts'
import type { Environ } from '../types.ts'
import { environPath, unquotePath } from './url-path.ts'
import { foldHeaders, headerName } from './_environ-keys.ts'
import { DEFAULT_PORTS, HOST_HEADER, isValidPort, SERVER_NAME } from './_host.ts'

/** Options of {@link toEnviron}. */
export interface ToEnvironOptions {
  /**
   * The mount prefix, decoded (`/api`); becomes `SCRIPT_NAME` and is cut from `PATH_INFO`. A
   * request whose path is not under it is refused with a `NOT_FOUND` error. Default `''`.
   */
  scriptName?: string
  /** The client address for `REMOTE_ADDR`. Default: unset. */
  remoteAddr?: string
  /** Aborts when the client goes away. Default: `request.signal`. */
  signal?: AbortSignal
  /**
   * At most this many header fields are accepted; more is refused with a `TOO_MANY_HEADERS`
   * error (431). Default 100, as Apache httpd's `LimitRequestFields`.
   */
  maxHeaders?: number
}

const DOT = 0x2e
const SLASH = 0x2f
const SEMICOLON = 0x3b

const toEnvironOptions = z.strictObject({
  scriptName: z
    .string()
    .refine((s) => s === '' || s.startsWith('/'), 'expected "" or a path starting with "/"')
    .optional(),
  remoteAddr: z.string().optional(),
  signal: z
    .custom<AbortSignal>((v) => v instanceof AbortSignal, 'expected an AbortSignal')
    .optional(),
  maxHeaders: z.number().int().min(1).optional(),
})

/** Options of {@link toRequest}. */
export interface ToRequestOptions {
  /** Aborts the request. Default: the environ's `wsgiproxy.signal`. */
  signal?: AbortSignal
}

const toRequestOptions = z.strictObject({
  signal: z
    .custom<AbortSignal>((v) => v instanceof AbortSignal, 'expected an AbortSignal')
    .optional(),
})

const DEFAULT_MAX_HEADERS = 100

/**
 * Builds the environ of a Fetch `Request`.
 *
 * @param request - the incoming request
 * @param options - mount prefix, client address, signal, header cap
 * @returns the environ; its `wsgi.input` streams the request body
 * @throws WsgiProxyError `NOT_FOUND` when the path is outside `scriptName`, `TOO_MANY_HEADERS`
 *   when the request has more header fields than `maxHeaders`, `BAD_REQUEST` when the Host header
 *   is not a valid `host[:port]` or the decoded path has a `.` or `..` segment (from `%2F`, or
 *   followed by `;` parameters as in `..;x`)
 * @example
 * const environ = toEnviron(request, { scriptName: '/api', remoteAddr: '203.0.113.7' })
 * environ.PATH_INFO // '/users/1' for https://example.com/api/users/1
 */
export function toEnviron(request: Request, options?: ToEnvironOptions): Environ {
  return buildEnviron(request, parseToEnvironOptions(options))
}

/**
 * Validates {@link ToEnvironOptions} once, for adapters that build many environs.
 *
 * @param options - the options
 * @param what - the public function the caller is, for error messages (default `toEnviron`)
 * @returns the options, checked
 */
export function parseToEnvironOptions(
  options: ToEnvironOptions | undefined,
  what = 'toEnviron',
): ToEnvironOptions {
  return options === undefined ? {} : parseOptions(toEnvironOptions, options, what)
}

const hasNoBody = (method: string): boolean => method === 'GET' || method === 'HEAD'

/** {@link toEnviron} with options already validated (the per-request path of adapters). */
export function buildEnviron(request: Request, opts: ToEnvironOptions): Environ {
  const parts: EnvironParts = {
    method: request.method,
    target: request.url,
    headers: request.headers,
    scheme: request.url.startsWith('https:') ? 'https' : 'http',
    // A GET or HEAD `Request` never has a body (the Fetch standard refuses one). Not asking for it
    // matters on servers whose `Request` is made on demand: `@hono/node-server` builds a whole
    // undici `Request` (headers converted, a signal followed) the first time `body` is read.
    input: hasNoBody(request.method) ? null : request.body,
    signal: opts.signal ?? request.signal,
  }
  if (opts.remoteAddr !== undefined) parts.remoteAddr = opts.remoteAddr
  return partsToEnviron(parts, opts)
}

/** A request as a server parsed it, for {@link environFromParts}. */
export interface EnvironParts {
  /** The request method, as received (`GET`, `POST`, ...). */
  method: string
  /**
   * The request target as received: origin-form (`/p?q`) or absolute-form (`http://h/p?q`).
   * It is parsed as a WHATWG URL, exactly as a Fetch `Request` URL is, so dot segments and `\`
   * are handled alike on every path.
   */
  target: string
  /** Header lines; names in any case, repeats as separate lines (or already joined). */
  headers: Iterable<readonly [string, string]>
  /** The scheme the client used. */
  scheme: 'http' | 'https'
  /** The request body, or `null` when the request has none. */
  input: AsyncIterable<Uint8Array> | null
  /**
   * Aborts when the client goes away. Default: unset (a server may then define
   * `wsgiproxy.signal` itself, for example created on first read).
   */
  signal?: AbortSignal
  /** The client address for `REMOTE_ADDR`. Default: unset. */
  remoteAddr?: string
}

const checkedOptions = new WeakSet<ToEnvironOptions>()

/**
 * Builds an environ from a request a server already parsed (the `node:http` fast path), with the
 * same validation and mapping as {@link toEnviron}. `remoteAddr` and `signal` come from `parts`;
 * `options` gives the mount prefix and the header cap, and is validated the first time it is seen
 * (pass the same object for every request).
 *
 * @param parts - method, request target, header lines, scheme, body, signal, client address
 * @param options - mount prefix and header cap
 * @returns the environ
 * @throws WsgiProxyError as {@link toEnviron}; also `BAD_REQUEST` when the target is not a valid
 *   URL or there is no Host to be found
 * @example
 * const environ = environFromParts(
 *   { method: 'GET', target: '/api/x?y=1', headers: [['Host', 'example.com']], scheme: 'http',
 *     input: null, signal: AbortSignal.timeout(30_000) },
 *   { scriptName: '/api' },
 * )
 */
export function environFromParts(parts: EnvironParts, options: ToEnvironOptions = {}): Environ {
  if (!checkedOptions.has(options)) {
    parseToEnvironOptions(options)
    checkedOptions.add(options)
  }
  return partsToEnviron(parts, options)
}

function partsToEnviron(parts: EnvironParts, opts: ToEnvironOptions): Environ {
  const { target, scheme } = parts
  // Origin-form is appended to an authority rather than resolved against one, so `//x/y` stays a
  // path (as in the URL a Fetch adapter builds), never a network-path reference.
  const url = URL.parse(target.startsWith('/') ? `${scheme}://placeholder${target}` : target)
  if (url === null) {
    throw new WsgiProxyError('BAD_REQUEST', 'the request target is not a valid URL', {
      expose: true,
    })
  }
  const rawPath = url.pathname
  const path = unquotePath(rawPath)
  // The URL parser removed the literal "." and ".." segments and their %2E forms; one left in the
  // decoded path came from %2F next to dots, or carries ";" parameters (`..;x`, which the parser
  // keeps and Tomcat or Jetty resolve). Quoted afresh it would climb out of a mount prefix.
  if (hasDotSegment(path)) {
    throw new WsgiProxyError(
      'BAD_REQUEST',
      'the path has a "." or ".." segment (encoded, or followed by ";" parameters)',
      { expose: true },
    )
  }
  const scriptName = normalizeScriptName(opts.scriptName ?? '')
  if (scriptName !== '' && !(path === scriptName || path.startsWith(`${scriptName}/`))) {
    // Not naming the prefix: a framework adapter may derive it from the request's own path.
    throw new WsgiProxyError('NOT_FOUND', 'the path is outside the mount prefix', { expose: true })
  }
  const environ: Environ = {
    REQUEST_METHOD: parts.method,
    SCRIPT_NAME: scriptName,
    PATH_INFO: path.slice(scriptName.length),
    QUERY_STRING: url.search.slice(1),
    SERVER_NAME: '',
    SERVER_PORT: '',
    SERVER_PROTOCOL: 'HTTP/1.1',
    'wsgi.url_scheme': scheme,
    'wsgi.input': parts.input,
    'wsgiproxy.raw_path': rawPath,
  }
  if (parts.signal !== undefined) environ['wsgiproxy.signal'] = parts.signal
  if (parts.remoteAddr !== undefined) environ.REMOTE_ADDR = parts.remoteAddr
  // Every line is read before any check, so the checks answer in the same order however many
  // lines there are.
  const count = foldHeaders(environ, parts.headers)
  // The Host header wins over an absolute-form authority, as it does in the URL Fetch adapters
  // build; without either, the empty host is refused below.
  const host = environ.HTTP_HOST ?? (target.startsWith('/') ? '' : url.host)
  const [serverName, serverPort] = parseHost(host, scheme)
  if (!isValidHost(host) || !isValidPort(serverPort)) {
    throw new WsgiProxyError('BAD_REQUEST', 'the Host header is not a valid host[:port]', {
      expose: true,
    })
  }
  environ.SERVER_NAME = serverName
  environ.SERVER_PORT = serverPort
  const maxHeaders = opts.maxHeaders ?? DEFAULT_MAX_HEADERS
  if (count > maxHeaders) {
    throw new WsgiProxyError(
      'TOO_MANY_HEADERS',
      `the request has more than ${maxHeaders} header fields`,
      { expose: true },
    )
  }
  return environ
}

/**
 * Builds a Fetch `Request` from an environ: URL from the scheme, `HTTP_HOST` (or
 * `SERVER_NAME:SERVER_PORT`), the path (see `environPath`) and `QUERY_STRING`; headers from
 * `HTTP_*`, `CONTENT_TYPE` and `CONTENT_LENGTH`; the body from `wsgi.input` (never for `GET` and
 * `HEAD`, which a `Request` cannot carry).
 *
 * @param environ - the environ to convert
 * @param options - an abort signal
 * @returns the request
 * @throws WsgiProxyError `BAD_REQUEST` when the environ does not make a valid request
 */
export function toRequest(environ: Environ, options?: ToRequestOptions): Request {
  const opts = options === undefined ? {} : parseOptions(toRequestOptions, options, 'toRequest')
  const url = environUrl(environ)
  const method = environ.REQUEST_METHOD
  const input = environ['wsgi.input']
  const withBody = input !== null && method !== 'GET' && method !== 'HEAD'
  const signal = opts.signal ?? environ['wsgiproxy.signal']
  const init: RequestInit & { duplex?: 'half' } = { method, headers: environHeaders(environ) }
  if (withBody) {
    init.body = toReadableStream(input)
    // A streamed body needs half duplex (https://fetch.spec.whatwg.org/#dom-requestinit-duplex).
    init.duplex = 'half'
  }
  if (signal) init.signal = signal
  try {
    return new Request(url, init)
  } catch (error) {
    throw new WsgiProxyError('BAD_REQUEST', `the environ does not make a valid request`, {
      cause: error,
    })
  }
}

/**
 * The URL an environ describes: `wsgi.url_scheme`, `HTTP_HOST` (or `SERVER_NAME:SERVER_PORT`),
 * the percent-encoded path (see `environPath`; `/` when empty) and `QUERY_STRING`. On an environ
 * restored by `proxyMiddleware` or `createEnvironRestorer` it is the URL the client asked the
 * front proxy for.
 *
 * @param environ - the environ
 * @returns a new URL
 * @throws WsgiProxyError `BAD_REQUEST` when the host is not a valid `host[:port]` or the parts do
 *   not make a URL
 * @example
 * environUrl(toEnviron(new Request('https://example.com/a%2Fb?q=1'))).href
 * // 'https://example.com/a%2Fb?q=1'
 */
export function environUrl(environ: Environ): URL {
  const host = environHost(environ)
  if (!isValidHost(host)) {
    throw new WsgiProxyError('BAD_REQUEST', `HTTP_HOST is not a valid host[:port]`, {
      expose: true,
    })
  }
  const query = environ.QUERY_STRING ? `?${environ.QUERY_STRING}` : ''
  const url = URL.parse(
    `${environ['wsgi.url_scheme']}://${host}${environPath(environ) || '/'}${query}`,
  )
  if (url === null) {
    throw new WsgiProxyError('BAD_REQUEST', 'the environ does not make a valid URL', {
      expose: true,
    })
  }
  return url
}

/**
 * The header lines an environ describes, in environ order: `HTTP_*` keys (lower-case, `_` to
 * `-`), then `content-type` and `content-length`.
 */
export function environHeaders(environ: Environ): Array<[string, string]> {
  const headers: Array<[string, string]> = []
  for (const key in environ) {
    if (key.startsWith('HTTP_')) {
      const value = environ[key]
      if (typeof value === 'string') headers.push([headerName(key), value])
    }
  }
  if (typeof environ.CONTENT_TYPE === 'string') headers.push(['content-type', environ.CONTENT_TYPE])
  if (typeof environ.CONTENT_LENGTH === 'string') {
    headers.push(['content-length', environ.CONTENT_LENGTH])
  }
  return headers
}

/** `HTTP_HOST`, or `SERVER_NAME[:SERVER_PORT]` (the port left out when it is the scheme's default). */
export function environHost(environ: Environ): string {
  const host = environ.HTTP_HOST
  if (typeof host === 'string' && host !== '') return host
  return formatAuthority(environ.SERVER_NAME, environ.SERVER_PORT, environ['wsgi.url_scheme'])
}

/**
 * `name[:port]` with IPv6 literals in brackets and the scheme's default port left out.
 *
 * @param name - a host name or a bare IP address
 * @param port - a decimal port
 * @param scheme - `http` or `https`, for the default port
 * @returns the authority
 */
export function formatAuthority(name: string, port: string, scheme: string): string {
  const host = name.includes(':') && !name.startsWith('[') ? `[${name}]` : name
  return port === '' || port === DEFAULT_PORTS[scheme] ? host : `${host}:${port}`
}

/** Whether a `Host` value is `host[:port]` with a host name, IPv4 address or bracketed IPv6. */
export function isValidHost(host: string): boolean {
  if (!HOST_HEADER.test(host)) return false
  const colon = host.lastIndexOf(':')
  if (colon < 0 || host.endsWith(']')) return true
  return isValidPort(host.slice(colon + 1))
}

/**
 * Whether a decoded path has a segment a server would resolve as `.` or `..`: the segment itself,
 * or `.` / `..` followed by `;` path parameters (`/base/..;x/admin`), which Tomcat and Jetty strip
 * before resolving, so the request lands outside `/base`. Linear time.
 *
 * @param path - a decoded path (`PATH_INFO`, or a whole decoded request path)
 * @returns whether a segment is `.`, `..`, `.;...` or `..;...`
 */
export function hasDotSegment(path: string): boolean {
  const length = path.length
  let i = 0
  for (;;) {
    let dots = 0
    while (i < length && path.charCodeAt(i) === DOT) {
      dots++
      i++
    }
    const next = i < length ? path.charCodeAt(i) : SLASH
    if ((dots === 1 || dots === 2) && (next === SLASH || next === SEMICOLON)) return true
    const slash = path.indexOf('/', i)
    if (slash === -1) return false
    i = slash + 1
  }
}

/** Whether `SERVER_NAME` and `SERVER_PORT` name a place to connect to. */
export function isValidServer(name: string, port: string): boolean {
  return SERVER_NAME.test(name) && isValidPort(port) && port !== ''
}

/** Splits `host[:port]` (IPv6 in brackets) into a bare name and a port (the scheme's default when absent). */
export function parseHost(host: string, scheme: string): [string, string] {
  let name = host
  let port = ''
  if (host.startsWith('[')) {
    const end = host.indexOf(']')
    if (end > 0) {
      name = host.slice(1, end)
      if (host[end + 1] === ':') port = host.slice(end + 2)
    }
  } else {
    const colon = host.lastIndexOf(':')
    if (colon >= 0) {
      name = host.slice(0, colon)
      port = host.slice(colon + 1)
    }
  }
  return [name, port || (DEFAULT_PORTS[scheme] ?? '80')]
}

function normalizeScriptName(scriptName: string): string {
  return trimTrailingSlashes(scriptName)
}
