// RFC 9110 §7.6.1: connection-specific fields a proxy must not forward, plus the obsolete
// Proxy-Connection and HTTP2-Settings (RFC 9113 §8.2.2); `Expect` is answered by the server
// in front of us (RFC 9110 §10.1.1) and never forwarded.
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
])

// Connection may not name these away: the request would lose its Host or its framing.
const PROTECTED: ReadonlySet<string> = new Set(['host', 'content-length', 'content-type'])

import type { Environ } from '../types.ts'

/**
 * Request headers that name the client's address, the request's host, path or method outside
 * the protocol, which backend frameworks believe when they come from a proxy: nginx `real_ip`,
 * Rails `Client-IP`, CDN client-address headers, Symfony/Laravel/IIS `X-Original-URL` /
 * `X-Rewrite-URL`, Express `method-override`. Sent by a client, they steer the backend past the
 * front's mount and address, so `createProxyApp` deletes them unless `trustClientHeaders` names
 * them. Lower-case; `X-Forwarded-*` and `Forwarded` are protocol headers, deleted anyway.
 */
export const SPOOFABLE_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  // The client's address.
  'x-real-ip',
  'x-client-ip',
  'client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'fastly-client-ip',
  'fly-client-ip',
  'x-cluster-client-ip',
  'cluster-client-ip',
  'x-original-forwarded-for',
  'x-envoy-external-address',
  'x-forwarded',
  'forwarded-for',
  'x-remote-ip',
  'x-remote-addr',
  'x-originating-ip',
  'x-proxyuser-ip',
  // The request's host.
  'x-host',
  'x-original-host',
  'x-http-host-override',
  // The request's path.
  'x-original-url',
  'x-original-uri',
  'x-rewrite-url',
  'x-envoy-original-path',
  // The request's method.
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-method',
])

function nominees(connection: string): Set<string> {
  const nominated = new Set<string>()
  for (const token of connection.split(',')) {
    const nominee = token.trim().toLowerCase()
    if (!PROTECTED.has(nominee)) nominated.add(nominee)
  }
  return nominated
}

/**
 * Removes hop-by-hop headers and every header the `Connection` header names.
 *
 * @param headers - header lines, names in any case
 * @param direction - `request` also drops `Expect`
 * @returns a new list without them
 */
export function stripHopByHop(
  headers: Array<[string, string]>,
  direction: 'request' | 'response',
): Array<[string, string]> {
  let nominated: Set<string> | undefined
  for (const [name, value] of headers) {
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      nominated ??= new Set()
      for (const nominee of nominees(value)) nominated.add(nominee)
    }
  }
  const out: Array<[string, string]> = []
  for (const line of headers) {
    const name = line[0].toLowerCase()
    if (HOP_BY_HOP.has(name) || nominated?.has(name)) continue
    if (direction === 'request' && name === 'expect') continue
    out.push(line)
  }
  return out
}

/**
 * The environ's request headers a proxy forwards, in one pass (this runs on every request): the
 * `HTTP_*` keys as lower-case names and `CONTENT_TYPE` / `CONTENT_LENGTH`, without hop-by-hop
 * headers, the headers `Connection` names, `Expect`, `Host`, and those `skip` rejects. A `TE`
 * that lists `trailers` is sent as `TE: trailers` alone.
 *
 * @param environ - the request
 * @param first - lines to put first (the `Host` the proxy sends)
 * @param skip - more lower-case names to drop
 * @returns a new list of lines
 */
export function forwardedRequestHeaders(
  environ: Environ,
  first: Array<[string, string]>,
  skip?: (name: string) => boolean,
): Array<[string, string]> {
  const connection = environ.HTTP_CONNECTION
  const nominated = typeof connection === 'string' ? nominees(connection) : undefined
  const headers = first
  for (const key in environ) {
    if (!key.startsWith('HTTP_')) continue
    const value = environ[key]
    if (typeof value !== 'string') continue
    const name = key.slice(5).toLowerCase().replaceAll('_', '-')
    if (name === 'te') {
      // `TE: trailers` says the recipient keeps trailer fields (RFC 9110 §10.1.4); gRPC servers
      // refuse a request without it. This proxy passes trailers on, so it says so for its own
      // hop, whatever Connection named; transfer codings in TE are for this hop only.
      if (acceptsTrailers(value)) headers.push(['te', 'trailers'])
      continue
    }
    if (name === 'host' || name === 'expect' || HOP_BY_HOP.has(name)) continue
    if (nominated?.has(name) || skip?.(name)) continue
    headers.push([name, value])
  }
  if (typeof environ.CONTENT_TYPE === 'string') headers.push(['content-type', environ.CONTENT_TYPE])
  if (typeof environ.CONTENT_LENGTH === 'string') {
    headers.push(['content-length', environ.CONTENT_LENGTH])
  }
  return headers
}

// RFC 9110 §10.1.4: TE = #t-codings, t-codings = "trailers" / ( transfer-coding [ weight ] ).
function acceptsTrailers(te: string): boolean {
  for (const token of te.split(',')) {
    if (token.trim().toLowerCase() === 'trailers') return true
  }
  return false
}

/**
 * RFC 9113 §8.2.2: the connection-specific fields an HTTP/2 message must not carry (undici refuses
 * some in a request, Node's HTTP/2 client and server the others); `TE` may only say `trailers`.
 */
export const HTTP2_CONNECTION_FIELDS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
])
