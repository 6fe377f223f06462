import * as z from 'zod'
import { environHost, hasDotSegment } from '../environ/environ.ts'
import { WsgiProxyError } from '../errors.ts'
import type { ForwardOptions } from './forward-options.ts'
import { forwardOptionsSchema, forwardSettings } from './forward-options.ts'
import { failure, forward } from './_forward.ts'
import type { PickleCodec } from '../protocol/header-codec.ts'
import { assertExtraKey, encodeExtraKeys } from '../protocol/header-codec.ts'
import { forwardedRequestHeaders, SPOOFABLE_REQUEST_HEADERS } from './_hop-by-hop.ts'
import { rewriteLocation } from './_location.ts'
import { fn, parseOptions } from '../_options.ts'
import { trimOws, trimTrailingSlashes } from '../_text.ts'
import { isProtocolHeader, PROTOCOL_HEADERS, PROTOCOL_VERSION } from '../protocol/protocol.ts'
import type { AppResponse, Environ, UpgradableApp, UpgradeTarget } from '../types.ts'
import type { Signer } from '../signing/signing.ts'
import { MAX_COVERED_COMPONENTS } from '../signing/signing.ts'
import { environPath } from '../environ/url-path.ts'

/** Options of {@link createProxyApp}. */
export interface ProxyAppOptions extends ForwardOptions {
  /**
   * Where to forward: scheme, host, port, optional path and query
   * (`http://127.0.0.1:8080/myapp?some=querystring`). Required.
   */
  href: string | URL
  /** Environ keys sent as byte strings (`X-WSGIProxy-Str-N`), when present. Default none. */
  stringKeys?: readonly string[]
  /** Environ keys sent as text, UTF-8 (`X-WSGIProxy-Unicode-N`). Default none. */
  unicodeKeys?: readonly string[]
  /** Environ keys sent as JSON (`X-WSGIProxy-Json-N`). Default none. */
  jsonKeys?: readonly string[]
  /** Environ keys sent through `pickleCodec` (`X-WSGIProxy-Pickle-N`); needs `pickleCodec`. */
  pickleKeys?: readonly string[]
  /** Serializes `pickleKeys` values (for example devalue's `stringify` / `parse`). */
  pickleCodec?: PickleCodec
  /** Also send an RFC 7239 `Forwarded` header. Default `false`. */
  forwarded?: boolean
  /**
   * Rewrite `Location` / `Content-Location` that name the backend to a path-absolute reference on
   * the public side (href path swapped for the script name: `http://backend/myapp/x` →
   * `/front/x`), and drop the backend's origin from one outside the href path
   * (`http://backend/admin` → `/admin`). The result never names a host: the public host would
   * come from the client's `Host`, which the client chooses, and a relative `Location` resolves
   * against the URL the client asked for
   * ([RFC 9110 §10.2.2](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.2)). Default `true`.
   */
  rewriteLocation?: boolean
  /**
   * Routing and identity headers to forward as the client sent them, from those the front deletes
   * by default: client-address headers (`X-Real-IP`, `True-Client-IP`, `CF-Connecting-IP`,
   * `Fastly-Client-IP`, `X-Client-IP`, `X-Cluster-Client-IP`, ...), path headers (`X-Original-URL`,
   * `X-Rewrite-URL`), host headers (`X-Host`, `X-Original-Host`) and method overrides
   * (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`). A backend framework that
   * believes one of them could be steered by any client past the front's mount and address, so
   * name one only when something in front of this proxy (a CDN) always sets it. Names are
   * case-insensitive; another name throws. Protocol headers (`X-Forwarded-*`, `Forwarded`) are
   * always replaced. Default none: all are deleted.
   */
  trustClientHeaders?: readonly string[]
  /**
   * Signs every forwarded request (RFC 9421 HMAC, see `createSigner`) after all headers are set,
   * on the URL the transport connects to. Default: unsigned.
   */
  signer?: Signer
}

const keyList = z.array(z.string()).optional()
const proxyAppOptions = forwardOptionsSchema({
  href: z.union([z.string(), z.instanceof(URL)]),
  stringKeys: keyList,
  unicodeKeys: keyList,
  jsonKeys: keyList,
  pickleKeys: keyList,
  pickleCodec: z
    .object({ stringify: fn<PickleCodec['stringify']>(), parse: fn<PickleCodec['parse']>() })
    .optional(),
  forwarded: z.boolean().optional(),
  signer: z
    .custom<Signer>(
      (v) => typeof (v as Partial<Signer> | null)?.sign === 'function',
      'expected a signer from createSigner()',
    )
    .optional(),
  rewriteLocation: z.boolean().optional(),
  trustClientHeaders: keyList,
})

/**
 * The WSGIProxyApp: forwards every request to `href`, telling the backend how the client made
 * it. Request `/article/1?a=b` to href `http://127.0.0.1:8080/myapp?x=1` goes to
 * `/myapp/article/1?a=b&x=1` with `Host: 127.0.0.1:8080` and the protocol headers of
 * DESIGN.md §6: every `X-Forwarded-*`, `Forwarded`, `X-Traversal-*`, `X-WSGIProxy-*`, `Signature`
 * and `Signature-Input` header the client sent is deleted first, and so are the routing and
 * identity headers backend frameworks believe (`X-Real-IP`, `X-Original-URL`,
 * `X-HTTP-Method-Override`, ...; see `trustClientHeaders`), then `X-Forwarded-For`, `-Server`,
 * `-Scheme`, `-Script-Name`, `X-Traversal-Path`, `X-Traversal-Query-String`,
 * `X-WSGIProxy-Version` and one `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N` per configured key
 * present in the environ are set. A backend running `proxyMiddleware` restores the request.
 * Redirects naming the backend are rewritten to host-less paths (see `rewriteLocation`).
 *
 * @param options - the href, keys to forward, transport, timeouts, error handling
 * @returns the environ app; its `prepareUpgrade` builds the upstream request of an Upgrade
 *   (WebSocket) request the same way, for `@wsgiproxy/node`'s upgrade listener: 400 unless
 *   `Upgrade` is a list of protocol tokens (RFC 9110 §7.8), which is sent on as the client gave
 *   it, with the `timeouts.headers` the upstream has to answer in
 * @throws WsgiProxyError `INVALID_OPTIONS` for a bad href, key or option combination
 * @example
 * const app = createProxyApp({ href: 'http://127.0.0.1:8080/myapp', stringKeys: ['REMOTE_USER'] })
 * export default { fetch: toFetchHandler(app, { scriptName: '/front' }) }
 */
export function createProxyApp(options: ProxyAppOptions): UpgradableApp {
  const opts = parseOptions(proxyAppOptions, options, 'createProxyApp')
  const href = parseHref(opts.href)
  const keys = {
    str: checkKeys(opts.stringKeys, 'stringKeys'),
    unicode: checkKeys(opts.unicodeKeys, 'unicodeKeys'),
    json: checkKeys(opts.jsonKeys, 'jsonKeys'),
    pickle: checkKeys(opts.pickleKeys, 'pickleKeys'),
  }
  if (keys.pickle.length > 0 && opts.pickleCodec === undefined) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      'invalid options: createProxyApp.pickleKeys needs createProxyApp.pickleCodec ' +
        '(an object with stringify and parse, for example devalue): JavaScript has no pickle',
      { expose: true },
    )
  }
  const pickleCodec = opts.pickleCodec
  const hasExtraKeys =
    keys.str.length + keys.unicode.length + keys.json.length + keys.pickle.length > 0
  const settings = forwardSettings(opts)
  const emitForwarded = opts.forwarded ?? false
  const signer = opts.signer
  const extraCount = keys.str.length + keys.unicode.length + keys.json.length + keys.pickle.length
  // 4 derived components, up to 3 content fields and 8 protocol headers are signed besides the keys.
  const maxSignedKeys = MAX_COVERED_COMPONENTS - 15
  if (signer !== undefined && extraCount > maxSignedKeys) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: a signed createProxyApp forwards at most ${maxSignedKeys} extra keys (got ${extraCount}); send related values as one jsonKeys entry`,
      { expose: true },
    )
  }
  const rewrite = opts.rewriteLocation ?? true
  const deleted = deletedClientHeaders(opts.trustClientHeaders)
  const skipHeader = (name: string): boolean => isProtocolHeader(name) || deleted.has(name)
  const upgradeTimeout =
    settings.headersTimeout === false ? {} : { headersTimeout: settings.headersTimeout }

  type Prepared =
    | { response: AppResponse }
    | {
        url: URL
        method: string
        headers: Array<[string, string]>
        body: Outbound['body']
        scriptName: string
      }

  // Builds the outbound url and headers (protocol headers, extra keys, signature): one path for
  // a normal request and an Upgrade request, which keeps `Upgrade` and sends `Connection: upgrade`.
  async function prepare(environ: Environ, upgrade: string | undefined): Promise<Prepared> {
    if (hasDotSegment(environ.PATH_INFO)) {
      // It would resolve outside the href's path on the backend.
      const error = new WsgiProxyError('BAD_REQUEST', 'PATH_INFO has a "." or ".." segment', {
        expose: true,
      })
      return { response: await failure(error, environ, settings) }
    }
    const headers = forwardedRequestHeaders(environ, [['host', href.host]], skipHeader)
    if (upgrade !== undefined) headers.push(['connection', 'upgrade'], ['upgrade', upgrade])
    const scheme = environ['wsgi.url_scheme']
    const publicHost = environHost(environ)
    const { scriptName, pathInfo } = publicPath(environ)
    const remoteAddr = environ.REMOTE_ADDR
    if (typeof remoteAddr === 'string' && remoteAddr !== '') {
      headers.push([PROTOCOL_HEADERS.forwardedFor, remoteAddr])
    }
    headers.push([PROTOCOL_HEADERS.forwardedServer, publicHost])
    headers.push([PROTOCOL_HEADERS.forwardedScheme, scheme])
    if (scriptName !== '') headers.push([PROTOCOL_HEADERS.forwardedScriptName, scriptName])
    if (href.path !== '') headers.push([PROTOCOL_HEADERS.traversalPath, href.path])
    if (href.query !== '') headers.push([PROTOCOL_HEADERS.traversalQueryString, href.query])
    headers.push([PROTOCOL_HEADERS.version, PROTOCOL_VERSION])
    if (emitForwarded) {
      headers.push([PROTOCOL_HEADERS.forwarded, forwardedValue(remoteAddr, publicHost, scheme)])
    }
    if (hasExtraKeys) {
      try {
        headers.push(...encodeExtraKeys(environ, keys, pickleCodec))
      } catch (error) {
        return { response: await failure(asProxyError(error), environ, settings) }
      }
    }

    const ownQuery = environ.QUERY_STRING ?? ''
    const query =
      href.query === '' ? ownQuery : ownQuery === '' ? href.query : `${ownQuery}&${href.query}`
    const url = new URL(`${href.origin}${href.path}${pathInfo}${query === '' ? '' : `?${query}`}`)

    const method = environ.REQUEST_METHOD
    let outbound: Outbound = { headers, body: upgrade === undefined ? environ['wsgi.input'] : null }
    if (signer !== undefined) {
      try {
        outbound = await signer.sign({ method, url, ...outbound })
      } catch (error) {
        return { response: await failure(asProxyError(error), environ, settings) }
      }
    }
    return { url, method, ...outbound, scriptName }
  }

  const app = async (environ: Environ): Promise<AppResponse> => {
    const prepared = await prepare(environ, undefined)
    if ('response' in prepared) return prepared.response
    const { url, method, headers, body } = prepared
    const response = await forward({ url, method, headers, body }, environ, settings)
    if (!rewrite) return response
    return rewriteLocations(response, {
      backendOrigin: href.origin,
      backendPath: href.path,
      publicPath: prepared.scriptName,
    })
  }

  const prepareUpgrade = async (environ: Environ): Promise<UpgradeTarget | AppResponse> => {
    const upgrade = upgradeProtocols(environ.HTTP_UPGRADE)
    if (typeof upgrade !== 'string') {
      const error = new WsgiProxyError('BAD_REQUEST', upgrade.problem, { expose: true })
      return failure(error, environ, settings)
    }
    const prepared = await prepare(environ, upgrade)
    if ('response' in prepared) return prepared.response
    const { url, method, headers } = prepared
    const mapping = {
      backendOrigin: href.origin,
      backendPath: href.path,
      publicPath: prepared.scriptName,
    }
    // An ordinary answer instead of a 101 gets the same Location rewriting as any response.
    const answerHeaders = rewrite
      ? {
          answerHeaders: (lines: Array<[string, string]>): Array<[string, string]> =>
            rewriteLocations({ status: 200, headers: lines, body: null }, mapping).headers,
        }
      : {}
    return { url, method, headers, ...upgradeTimeout, ...answerHeaders }
  }

  return Object.assign(app, { prepareUpgrade })
}

interface Outbound {
  headers: Array<[string, string]>
  body: AsyncIterable<Uint8Array> | null
}

interface Href {
  origin: string
  host: string
  path: string
  query: string
}

function parseHref(value: string | URL): Href {
  const url = URL.parse(String(value))
  const problem =
    url === null
      ? 'is not a URL'
      : url.protocol !== 'http:' && url.protocol !== 'https:'
        ? `must use http or https (got ${JSON.stringify(url.protocol.slice(0, -1))})`
        : url.username !== '' || url.password !== ''
          ? 'must not contain credentials'
          : url.hash !== ''
            ? 'must not contain a fragment'
            : undefined
  if (url === null || problem !== undefined) {
    throw new WsgiProxyError('INVALID_OPTIONS', `invalid options: createProxyApp.href ${problem}`, {
      expose: true,
    })
  }
  return {
    origin: url.origin,
    // The URL's authority, as the transport connects and the signer signs `@authority`.
    host: url.host,
    path: trimTrailingSlashes(url.pathname),
    query: url.search.slice(1),
  }
}

// The client headers deleted: all spoofable ones but those the options trust.
function deletedClientHeaders(trusted: readonly string[] | undefined): Set<string> {
  const deleted = new Set(SPOOFABLE_REQUEST_HEADERS)
  for (const name of trusted ?? []) {
    const lower = name.toLowerCase()
    if (!SPOOFABLE_REQUEST_HEADERS.has(lower)) {
      const why = isProtocolHeader(lower)
        ? 'a protocol header, which the front always replaces'
        : `not one the front deletes; expected one of ${[...SPOOFABLE_REQUEST_HEADERS].join(', ')}`
      throw new WsgiProxyError(
        'INVALID_OPTIONS',
        `invalid options: createProxyApp.trustClientHeaders names ${JSON.stringify(name)}, ${why}`,
        { expose: true },
      )
    }
    deleted.delete(lower)
  }
  return deleted
}

// RFC 9110 §7.8: `Upgrade = #protocol`, `protocol = protocol-name ["/" protocol-version]`, both
// tokens (§5.6.2); empty list elements are ignored (§5.6.1).
const PROTOCOL = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)?$/

// The protocols a client's Upgrade offers, as a list to send on, or why it is refused.
function upgradeProtocols(value: string | undefined): string | { problem: string } {
  const protocols: string[] = []
  for (const element of (value ?? '').split(',')) {
    // Linear time: /^[ \t]+|[ \t]+$/g is quadratic on a long run of inner spaces.
    const protocol = trimOws(element)
    if (protocol === '') continue
    if (!PROTOCOL.test(protocol)) {
      return {
        problem:
          'the Upgrade header must be a list of protocols, each a token or token/version (RFC 9110 §7.8)',
      }
    }
    protocols.push(protocol)
  }
  if (protocols.length === 0) return { problem: 'an upgrade request needs an Upgrade header' }
  return protocols.join(', ')
}

function checkKeys(keys: readonly string[] | undefined, option: string): string[] {
  for (const key of keys ?? []) assertExtraKey(key, `createProxyApp.${option}`)
  return [...(keys ?? [])]
}

function pathKeys(environ: Environ): Environ {
  return {
    SCRIPT_NAME: environ.SCRIPT_NAME,
    PATH_INFO: environ.PATH_INFO,
    'wsgiproxy.raw_path': environ['wsgiproxy.raw_path'],
  } as Environ
}

/** The public script name and the path below it, each as sent (raw where the client sent it). */
function publicPath(environ: Environ): { scriptName: string; pathInfo: string } {
  // Served at the root, the whole path is PATH_INFO: one look at the raw path is enough.
  if (environ.SCRIPT_NAME === '') return { scriptName: '', pathInfo: environPath(environ) }
  return {
    scriptName: environPath({ ...pathKeys(environ), PATH_INFO: '' }),
    pathInfo: environPath({ ...pathKeys(environ), SCRIPT_NAME: '' }),
  }
}

// RFC 7239 §4: node and host values that are not tokens (IPv6, host:port) are quoted strings.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

function forwardedValue(remoteAddr: string | undefined, host: string, scheme: string): string {
  const node =
    remoteAddr === undefined || remoteAddr === ''
      ? 'unknown'
      : remoteAddr.includes(':')
        ? `[${remoteAddr}]`
        : remoteAddr
  const pairs = [`for=${quoteIfNeeded(node)}`, `host=${quoteIfNeeded(host)}`, `proto=${scheme}`]
  return pairs.join(';')
}

function quoteIfNeeded(value: string): string {
  return TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`
}

function rewriteLocations(
  response: AppResponse,
  mapping: Parameters<typeof rewriteLocation>[1],
): AppResponse {
  let changed = false
  const headers = response.headers.map((line): [string, string] => {
    const name = line[0].toLowerCase()
    if (name !== 'location' && name !== 'content-location') return line
    const value = rewriteLocation(line[1], mapping)
    if (value === line[1]) return line
    changed = true
    return [line[0], value]
  })
  return changed ? { ...response, headers } : response
}

function asProxyError(error: unknown): WsgiProxyError {
  return error instanceof WsgiProxyError
    ? error
    : new WsgiProxyError('APP_ERROR', 'the request could not be prepared', { cause: error })
}
