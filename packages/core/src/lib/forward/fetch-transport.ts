import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { fn, parseOptions } from '../options.ts'
import type { RuntimeKind } from '../_runtime.ts'
import { runtimeKind } from '../_runtime.ts'
import { toReadableStream } from '../streams.ts'
import { mayRetry, toUpstreamError } from './upstream-error.ts'
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

// https://fetch.spec.whatwg.org/#forbidden-method
const FORBIDDEN_METHODS: ReadonlySet<string> = new Set(['CONNECT', 'TRACE', 'TRACK'])

// Content codings every runtime's fetch decodes (gzip, deflate, br): a response in one of them
// arrives decoded, so its Content-Encoding and Content-Length no longer describe the body.
// https://fetch.spec.whatwg.org/#http-network-fetch (step "codings"), undici #2514.
const DECODED_CODINGS: ReadonlySet<string> = new Set(['gzip', 'x-gzip', 'deflate', 'br'])

/**
 * A {@link Transport} on the runtime's `fetch`: redirects passed through (`redirect: 'manual'`),
 * bodies streamed (`duplex: 'half'`), the client's abort and timeouts through the signal.
 *
 * What `fetch` cannot do, and how this transport handles it (docs/design.md §5, §8; docs/runtimes.md):
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
    const withBody = body !== null && method !== 'GET' && method !== 'HEAD'
    const { headers, hostOverride } = toFetchHeaders(outbound, withBody, runtime)
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
    for (let attempts = 1; ; attempts++) {
      try {
        response = await fetchImpl(url, init)
        break
      } catch (error) {
        if (!mayRetry(method, withBody, error, attempts, signal)) {
          throw toUpstreamError(error, url, signal)
        }
      }
    }
    return fromFetchResponse(response, url, method, passesEncodedBytes, signal)
  }
}

/**
 * The outbound header lines as fetch `Headers`: a `Host` that names the URL's authority is left
 * to fetch, another is sent where the runtime can (Bun, Deno) and refused on Node; a
 * `Content-Length` goes only with a body; `TE` never goes.
 */
function toFetchHeaders(
  outbound: OutboundRequest,
  withBody: boolean,
  runtime: RuntimeKind,
): { headers: Headers; hostOverride: boolean } {
  const { url } = outbound
  const headers = new Headers()
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
    // A fetch Response gives no trailers back, so `TE: trailers` would promise the upstream
    // something this transport cannot keep (RFC 9110 §10.1.4).
    if (lower === 'te') continue
    try {
      headers.append(name, value)
    } catch (error) {
      throw new WsgiProxyError('BAD_REQUEST', `request header ${name} has an invalid value`, {
        cause: error,
        expose: true,
      })
    }
  }
  return { headers, hostOverride }
}

/**
 * The fetch `Response` as an {@link AppResponse}: a redirect fetch hid is refused, and a body
 * fetch decoded loses the `Content-Encoding` and `Content-Length` that described the coded bytes.
 */
function fromFetchResponse(
  response: Response,
  url: URL,
  method: string,
  passesEncodedBytes: boolean,
  signal: AbortSignal,
): AppResponse {
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
    body: response.body === null ? null : abortableBody(response.body, signal),
  }
  if (response.statusText) result.statusText = response.statusText
  return result
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

/**
 * The body of a fetch response, read through a reader that is cancelled when `signal` aborts: the
 * upstream connection closes and a pending read ends with the abort reason. The runtime's fetch
 * should do this itself on abort, but Deno sometimes leaves a pending body read (and the upstream
 * connection) open after the request signal aborts, which held a stalled response open past the
 * body timeout and left the upstream connected after the client went away.
 */
function abortableBody(
  body: ReadableStream<Uint8Array>,
  signal: AbortSignal,
): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]: () => {
      const reader = body.getReader()
      const cancel = (): void => {
        void reader.cancel(signal.reason).catch(() => {})
      }
      const release = (): void => signal.removeEventListener('abort', cancel)
      if (signal.aborted) cancel()
      else signal.addEventListener('abort', cancel, { once: true })
      return {
        async next(): Promise<IteratorResult<Uint8Array>> {
          let result: ReadableStreamReadResult<Uint8Array>
          try {
            result = await reader.read()
          } catch (error) {
            release()
            throw error
          }
          if (signal.aborted) {
            release()
            throw signal.reason
          }
          if (result.done) {
            release()
            return { done: true, value: undefined }
          }
          return { done: false, value: result.value }
        },
        async return(): Promise<IteratorResult<Uint8Array>> {
          release()
          void reader.cancel().catch(() => {})
          return { done: true, value: undefined }
        },
      }
    },
  }
}
