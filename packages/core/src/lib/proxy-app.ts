import * as z from 'zod'
import { environHost, hasDotSegment } from './environ.ts'
import { WsgiProxyError } from './errors.ts'
import type { ForwardOptions } from './forward-options.ts'
import { forwardOptionsSchema, forwardSettings } from './forward-options.ts'
import { failure, forward } from './_forward.ts'
import type { PickleCodec } from './header-codec.ts'
import { assertExtraKey, encodeExtraKeys } from './header-codec.ts'
import { forwardedRequestHeaders } from './_hop-by-hop.ts'
import { rewriteLocation } from './_location.ts'
import { fn, parseOptions } from './_options.ts'
import { isProtocolHeader, PROTOCOL_HEADERS, PROTOCOL_VERSION } from './protocol.ts'
import type { AppResponse, Environ, UpgradableApp, UpgradeTarget } from './types.ts'
import type { Signer } from './signing.ts'
import { MAX_COVERED_COMPONENTS } from './signing.ts'
import { environPath } from './url-path.ts'

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
   * Rewrite `Location` / `Content-Location` that point at the backend to the public URL (script
   * name and href path swapped). Default `true`.
   */
  rewriteLocation?: boolean
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
})

/**
 * The WSGIProxyApp: forwards every request to `href`, telling the backend how the client made
 * it. Request `/article/1?a=b` to href `http://127.0.0.1:8080/myapp?x=1` goes to
 * `/myapp/article/1?a=b&x=1` with `Host: 127.0.0.1:8080` and the protocol headers of
 * DESIGN.md §6: every `X-Forwarded-*`, `Forwarded`, `X-Traversal-*`, `X-WSGIProxy-*`, `Signature`
 * and `Signature-Input` header the client sent is deleted first, then `X-Forwarded-For`,
 * `-Server`, `-Scheme`, `-Script-Name`, `X-Traversal-Path`, `X-Traversal-Query-String`,
 * `X-WSGIProxy-Version` and one `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N` per configured key
 * present in the environ are set. A backend running `proxyMiddleware` restores the request.
 *
 * @param options - the href, keys to forward, transport, timeouts, error handling
 * @returns the environ app; its `prepareUpgrade` builds the upstream request of an Upgrade
 *   (WebSocket) request the same way, for `@wsgiproxy/node`'s upgrade listener
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

  type Prepared =
    | { response: AppResponse }
    | {
        url: URL
        method: string
        headers: Array<[string, string]>
        body: Outbound['body']
        publicHost: string
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
    const headers = forwardedRequestHeaders(environ, [['host', href.host]], isProtocolHeader)
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
    return { url, method, ...outbound, publicHost, scriptName }
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
      publicOrigin: `${environ['wsgi.url_scheme']}://${prepared.publicHost}`,
      publicPath: prepared.scriptName,
    })
  }

  const prepareUpgrade = async (environ: Environ): Promise<UpgradeTarget | AppResponse> => {
    const upgrade = environ.HTTP_UPGRADE
    if (typeof upgrade !== 'string' || upgrade.trim() === '') {
      const error = new WsgiProxyError(
        'BAD_REQUEST',
        'an upgrade request needs an Upgrade header',
        {
          expose: true,
        },
      )
      return failure(error, environ, settings)
    }
    const prepared = await prepare(environ, upgrade)
    if ('response' in prepared) return prepared.response
    return { url: prepared.url, method: prepared.method, headers: prepared.headers }
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
    path: url.pathname.replace(/\/+$/, ''),
    query: url.search.slice(1),
  }
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
