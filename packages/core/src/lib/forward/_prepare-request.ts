import { environHost, hasDotSegment } from '../environ/environ.ts'
import { environPath } from '../environ/url-path.ts'
import { asWsgiProxyError, WsgiProxyError } from '../errors.ts'
import type { ForwardSettings } from './_forward.ts'
import { failure } from './_forward.ts'
import { forwardedRequestHeaders } from './_hop-by-hop.ts'
import type { PickleCodec } from '../protocol/header-codec.ts'
import { encodeExtraKeys } from '../protocol/header-codec.ts'
import { PROTOCOL_HEADERS, PROTOCOL_VERSION } from '../protocol/protocol.ts'
import type { Signer } from '../signing/signer.ts'
import type { AppResponse, Environ } from '../types.ts'

/** The href of `createProxyApp`, split as the outbound request needs it. */
export interface Href {
  /** The backend's origin (`http://127.0.0.1:8080`). */
  origin: string
  /** The URL's authority, as the transport connects and the signer signs `@authority`. */
  host: string
  /** The href's path, encoded, no trailing `/` (`/myapp`, or `''`). */
  path: string
  /** The href's query, without `?` (`''` for none). */
  query: string
}

/** The extra keys of validated proxy app options, by encoding. */
export interface ExtraKeys {
  str: string[]
  unicode: string[]
  json: string[]
  pickle: string[]
}

/** What {@link prepareRequest} needs from the options of `createProxyApp`, read once. */
export interface PrepareSettings {
  /** Where to forward. */
  href: Href
  /** The extra keys to send; `undefined` when none is configured. */
  extraKeys: ExtraKeys | undefined
  /** Serializes `pickle` keys. */
  pickleCodec: PickleCodec | undefined
  /** Whether to send an RFC 7239 `Forwarded` header. */
  forwarded: boolean
  /** Whether to send `X-Forwarded-Host` and `X-Forwarded-Proto`. */
  xForwarded: boolean
  /** Send WSGIProxy 0.1 (`'wsgiproxy-0.1'`) instead of 0.2. */
  compat: 'wsgiproxy-0.1' | undefined
  /** Signs the request after all headers are set. */
  signer: Signer | undefined
  /** Client headers not to forward (protocol headers and the spoofable ones not trusted). */
  skipHeader: (name: string) => boolean
  /** The forwarding settings, for answering a failure. */
  forward: ForwardSettings
}

/** The outbound request, with the public script name for Location rewriting. */
export interface PreparedRequest {
  url: URL
  method: string
  headers: Array<[string, string]>
  body: AsyncIterable<Uint8Array> | null
  scriptName: string
}

/**
 * Builds the outbound url and headers (protocol headers, extra keys, signature): one path for a
 * normal request and an Upgrade request, which keeps `Upgrade` and sends `Connection: upgrade`.
 *
 * @param environ - the request
 * @param upgrade - the protocols of an Upgrade request to send on; `undefined` for a normal one
 * @param settings - from the options
 * @returns the request to send, or the response to answer instead
 */
export async function prepareRequest(
  environ: Environ,
  upgrade: string | undefined,
  settings: PrepareSettings,
): Promise<PreparedRequest | { response: AppResponse }> {
  if (hasDotSegment(environ.PATH_INFO)) {
    // It would resolve outside the href's path on the backend.
    const error = new WsgiProxyError('BAD_REQUEST', 'PATH_INFO has a "." or ".." segment', {
      expose: true,
    })
    return { response: await failure(error, environ, settings.forward) }
  }
  const { href, signer } = settings
  const headers = forwardedRequestHeaders(environ, [['host', href.host]], settings.skipHeader)
  if (upgrade !== undefined) headers.push(['connection', 'upgrade'], ['upgrade', upgrade])
  const publicHost = environHost(environ)
  const { scriptName, pathInfo } = publicPath(environ)
  headers.push(...protocolHeaders(environ, publicHost, scriptName, settings))
  if (settings.extraKeys !== undefined) {
    try {
      const { extraKeys, pickleCodec, compat } = settings
      headers.push(...encodeExtraKeys(environ, extraKeys, pickleCodec, compat !== undefined))
    } catch (error) {
      return notPrepared(error, environ, settings)
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
      return notPrepared(error, environ, settings)
    }
  }
  return { url, method, ...outbound, scriptName }
}

interface Outbound {
  headers: Array<[string, string]>
  body: AsyncIterable<Uint8Array> | null
}

// The protocol headers of docs/design.md §6, in the order they are sent.
function protocolHeaders(
  environ: Environ,
  publicHost: string,
  scriptName: string,
  settings: PrepareSettings,
): Array<[string, string]> {
  const { href } = settings
  const headers: Array<[string, string]> = []
  const scheme = environ['wsgi.url_scheme']
  const remoteAddr = environ.REMOTE_ADDR
  if (typeof remoteAddr === 'string' && remoteAddr !== '') {
    headers.push([PROTOCOL_HEADERS.forwardedFor, remoteAddr])
  }
  headers.push([PROTOCOL_HEADERS.forwardedServer, publicHost])
  headers.push([PROTOCOL_HEADERS.forwardedScheme, scheme])
  if (scriptName !== '') headers.push([PROTOCOL_HEADERS.forwardedScriptName, scriptName])
  // The WSGIProxy 0.1 middleware reads the script name from X-Script-Name.
  const v01 = settings.compat === 'wsgiproxy-0.1'
  if (v01 && scriptName !== '') headers.push(['x-script-name', scriptName])
  if (href.path !== '') headers.push([PROTOCOL_HEADERS.traversalPath, href.path])
  if (href.query !== '') headers.push([PROTOCOL_HEADERS.traversalQueryString, href.query])
  headers.push([PROTOCOL_HEADERS.version, v01 ? '0.1' : PROTOCOL_VERSION])
  if (settings.forwarded) {
    headers.push([PROTOCOL_HEADERS.forwarded, forwardedValue(remoteAddr, publicHost, scheme)])
  }
  if (settings.xForwarded) {
    headers.push(['x-forwarded-host', publicHost], ['x-forwarded-proto', scheme])
  }
  return headers
}

async function notPrepared(
  error: unknown,
  environ: Environ,
  settings: PrepareSettings,
): Promise<{ response: AppResponse }> {
  return {
    response: await failure(
      asWsgiProxyError(error, 'the request could not be prepared'),
      environ,
      settings.forward,
    ),
  }
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
