import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { fn, parseOptions } from '../_options.ts'
import type { RuntimeKind } from '../_runtime.ts'
import { runtimeKind } from '../_runtime.ts'
import { toReadableStream } from '../_streams.ts'
import type { AppResponse, OutboundRequest, Transport } from '../types.ts'

/** Options of {@link fetchTransport}. */
export interface FetchTransportOptions {
  /**
   * The fetch implementation to call. Default: the runtime's global `fetch`, with what the
   * runtime offers beyond the standard (Bun: `decompress: false`; Deno: a client with
   * `allowHost`). A fetch given here gets only standard `RequestInit` fields.
   */
  fetch?: typeof fetch
}

const fetchTransportOptions = z.strictObject({
  fetch: fn<typeof fetch>().optional(),
})

// Content codings every runtime's fetch decodes (gzip, deflate, br): a response in one of them
// arrives decoded, so its Content-Encoding and Content-Length no longer describe the body.
// https://fetch.spec.whatwg.org/#http-network-fetch (step "codings"), undici #2514.
// https://fetch.spec.whatwg.org/#forbidden-method
const FORBIDDEN_METHODS: ReadonlySet<string> = new Set(['CONNECT', 'TRACE', 'TRACK'])

const DECODED_CODINGS: ReadonlySet<string> = new Set(['gzip', 'x-gzip', 'deflate', 'br'])

/**
 * A {@link Transport} on the runtime's `fetch`: redirects passed through (`redirect: 'manual'`),
 * bodies streamed (`duplex: 'half'`), the client's abort and timeouts through the signal.
 *
 * What `fetch` cannot do, and how this transport handles it (DESIGN.md §5, §8; docs/runtimes.md):
 * - Node's fetch cannot send a `Host` other than the URL's authority: such a request fails with
 *   `HOST_OVERRIDE_UNSUPPORTED` instead of silently sending another Host (use `undiciTransport()`
 *   from `@wsgiproxy/node`). Bun's fetch sends it as given; on Deno the transport sends it
 *   through a `Deno.createHttpClient({ allowHost: true })` client;
 * - Node's and Deno's fetch decode gzip, deflate and br bodies: `Accept-Encoding` is narrowed to
 *   those codings and a decoded response loses `Content-Encoding` and `Content-Length` (kept for
 *   `HEAD` and `304`). On Bun the transport asks for `decompress: false`, so the bytes pass
 *   through untouched with their headers and the client's `Accept-Encoding` goes as it is;
 * - a `GET` or `HEAD` request cannot carry a body: the body is dropped;
 * - the connect timeout is the runtime's (10 s on Node); the exact proxy's headers timeout
 *   covers connecting too.
 *
 * @param options - the fetch implementation
 * @returns the transport
 */
export function fetchTransport(options?: FetchTransportOptions): Transport {
  const opts = parseOptions(fetchTransportOptions, options, 'fetchTransport')
  const fetchImpl = opts.fetch ?? ((input, init) => globalThis.fetch(input, init))
  // Runtime extras apply to the runtime's own fetch only.
  const runtime: RuntimeKind = opts.fetch === undefined ? runtimeKind() : 'other'
  const passesEncodedBytes = runtime === 'bun'
  let hostClient: unknown
  return async (outbound: OutboundRequest): Promise<AppResponse> => {
    const { url, method, body, signal } = outbound
    if (FORBIDDEN_METHODS.has(method.toUpperCase())) {
      throw new WsgiProxyError(
        'METHOD_NOT_SUPPORTED',
        `fetch cannot send ${method} requests (https://fetch.spec.whatwg.org/#forbidden-method)`,
        { expose: true },
      )
    }
    const headers = new Headers()
    const withBody = body !== null && method !== 'GET' && method !== 'HEAD'
    let hostOverride = false
    for (const [name, value] of outbound.headers) {
      const lower = name.toLowerCase()
      if (lower === 'host') {
        if (sameAuthority(value, url)) continue
        if (runtime === 'bun' || runtime === 'deno') {
          hostOverride = true
          headers.set('host', value)
          continue
        }
        throw new WsgiProxyError(
          'HOST_OVERRIDE_UNSUPPORTED',
          `fetchTransport cannot send Host ${JSON.stringify(value)} to ${url.host}: Node's fetch ` +
            `always sends the URL's host. Use undiciTransport() from @wsgiproxy/node, or make ` +
            `HTTP_HOST match SERVER_NAME:SERVER_PORT`,
        )
      }
      if (lower === 'content-length' && !withBody) continue
      try {
        headers.append(name, value)
      } catch (error) {
        throw new WsgiProxyError('BAD_REQUEST', `request header ${name} has an invalid value`, {
          cause: error,
          expose: true,
        })
      }
    }
    if (!passesEncodedBytes) narrowAcceptEncoding(headers)
    const init: RequestInit & { duplex?: 'half'; decompress?: boolean; client?: unknown } = {
      method,
      headers,
      redirect: 'manual',
      signal,
    }
    // https://bun.sh/docs/api/fetch: `decompress: false` hands over the bytes as they came.
    if (passesEncodedBytes) init.decompress = false
    // https://docs.deno.com/api/deno/~/Deno.createHttpClient: `allowHost` lets a Host through.
    if (hostOverride && runtime === 'deno') init.client = hostClient ??= createDenoHostClient()
    if (withBody) {
      init.body = toReadableStream(body)
      // https://fetch.spec.whatwg.org/#dom-requestinit-duplex: required for a streamed body.
      init.duplex = 'half'
    }
    let response: Response
    try {
      response = await fetchImpl(url, init)
    } catch (error) {
      // Sent once more when nothing answered on a pooled keep-alive socket the upstream closed
      // just as the request went out: no body, an idempotent method (RFC 9110 §9.2.2).
      if (!withBody && RETRY_METHODS.has(method) && !signal.aborted && socketClosed(error)) {
        try {
          response = await fetchImpl(url, init)
        } catch (again) {
          throw fetchError(again, signal, url)
        }
      } else {
        throw fetchError(error, signal, url)
      }
    }
    if (response.type === 'opaqueredirect' || response.status === 0) {
      throw new WsgiProxyError(
        'UPSTREAM_INVALID_RESPONSE',
        `the runtime's fetch hid the upstream redirect from ${url.origin}`,
      )
    }
    const decoded =
      !passesEncodedBytes &&
      response.body !== null &&
      method !== 'HEAD' &&
      response.status !== 304 &&
      isDecodedByFetch(response.headers.get('content-encoding'))
    const responseHeaders: Array<[string, string]> = []
    for (const line of response.headers) {
      if (decoded && (line[0] === 'content-encoding' || line[0] === 'content-length')) continue
      responseHeaders.push(line)
    }
    const result: AppResponse = {
      status: response.status,
      headers: responseHeaders,
      body: response.body,
    }
    if (response.statusText) result.statusText = response.statusText
    return result
  }
}

function createDenoHostClient(): unknown {
  const deno = (globalThis as { Deno?: { createHttpClient(options: object): unknown } }).Deno
  return deno?.createHttpClient({ allowHost: true })
}

function sameAuthority(host: string, url: URL): boolean {
  try {
    return new URL(`${url.protocol}//${host}`).host === url.host
  } catch {
    return false
  }
}

function isDecodedByFetch(contentEncoding: string | null): boolean {
  if (contentEncoding === null) return false
  const codings = contentEncoding
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '')
  return codings.length > 0 && codings.every((c) => DECODED_CODINGS.has(c))
}

function narrowAcceptEncoding(headers: Headers): void {
  const accept = headers.get('accept-encoding')
  if (accept === null) return
  const kept = accept.split(',').filter((part) => {
    const coding = part.split(';')[0]?.trim().toLowerCase() ?? ''
    return coding === 'identity' || DECODED_CODINGS.has(coding)
  })
  if (kept.length > 0) headers.set('accept-encoding', kept.map((p) => p.trim()).join(', '))
  else headers.set('accept-encoding', 'identity')
}

const UNREACHABLE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
])

// Deno: "error sending request for url (…): client error (Connect): tcp connect error: Connection
// refused (os error 111)", or "… (Connect): dns error: …": the connection was never made.
const DENO_CONNECT_FAILURE = /client error \(Connect\)/

// Deno: "Fetch failed: Requests to port 6000 are blocked" (https://fetch.spec.whatwg.org/#bad-port).
const BLOCKED_PORT = /Requests to port \d+ are blocked/

// Methods sent once more (without a body) when the connection closed under them, and the
// error codes (Node's fetch puts them on the cause) that mean so.
const RETRY_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])
const SOCKET_CLOSED_CODES: ReadonlySet<string> = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'])

function socketClosed(error: unknown): boolean {
  const code = (error as { cause?: { code?: unknown } } | undefined)?.cause?.code
  return typeof code === 'string' && SOCKET_CLOSED_CODES.has(code)
}

function fetchError(error: unknown, signal: AbortSignal, url: URL): WsgiProxyError {
  if (signal.aborted && signal.reason instanceof WsgiProxyError) return signal.reason
  if (error instanceof WsgiProxyError) return error
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause
  // Node (undici) puts a system error code on the cause, Bun on the error itself, and Deno only
  // describes the failure in the cause's message.
  const ownCode = (error as { code?: unknown } | undefined)?.code
  const code =
    typeof cause?.code === 'string' ? cause.code : typeof ownCode === 'string' ? ownCode : ''
  const detail = typeof cause?.message === 'string' ? cause.message : String(error)
  if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
    return new WsgiProxyError('BAD_REQUEST', 'the request body does not match its Content-Length', {
      cause: error,
      expose: true,
    })
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT') {
    return new WsgiProxyError(
      'UPSTREAM_HEADERS_TIMEOUT',
      `no response headers from ${url.origin}`,
      {
        cause: error,
      },
    )
  }
  if (detail === 'bad port' || BLOCKED_PORT.test(String(error))) {
    return new WsgiProxyError(
      'UPSTREAM_UNREACHABLE',
      `fetch refuses to connect to port ${url.port} (https://fetch.spec.whatwg.org/#bad-port); use undiciTransport() from @wsgiproxy/node`,
      { cause: error },
    )
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new WsgiProxyError('UPSTREAM_CONNECT_TIMEOUT', `connecting to ${url.origin} timed out`, {
      cause: error,
    })
  }
  if (UNREACHABLE_CODES.has(code) || (code === '' && DENO_CONNECT_FAILURE.test(detail))) {
    return new WsgiProxyError('UPSTREAM_UNREACHABLE', `cannot reach ${url.origin}: ${detail}`, {
      cause: error,
    })
  }
  return new WsgiProxyError('UPSTREAM_RESET', `request to ${url.origin} failed: ${detail}`, {
    cause: error,
  })
}
