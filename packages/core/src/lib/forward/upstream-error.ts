// One reading of what an HTTP client threw while sending a request upstream, for every transport:
// core's `fetchTransport` (Node's, Bun's and Deno's fetch) and `undiciTransport` in
// @wsgiproxy/node (undici's dispatcher). They report the same failures in different places, so
// the error code is looked for on the error and on its cause, and Deno's only in the message.

import { WsgiProxyError } from '../errors.ts'

/** The state of a request's cancellation, as an `AbortSignal` or core's `CancelHook` show it. */
export interface UpstreamCancel {
  /** True once cancelled. */
  readonly aborted: boolean
  /** Why; core sets a `WsgiProxyError`. */
  readonly reason: unknown
}

// Nothing answered at the address: DNS, routing, no listener, no unix socket (ENOENT) or one this
// process may not open (EACCES).
const UNREACHABLE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'ENOENT',
  'EACCES',
])

// The connection closed or was reset under the request: a pooled keep-alive socket the upstream
// closed just as the request went out.
const SOCKET_CLOSED_CODES: ReadonlySet<string> = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'])

// RFC 9110 §9.2.2: idempotent methods whose bodiless request may be sent again. PUT and DELETE
// are idempotent too but usually carry or change state an application may not expect twice.
const RETRY_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

/** How many times a request is sent again at most (see {@link mayRetry}). */
const MAX_RETRIES = 1

// Deno: "error sending request for url (…): client error (Connect): tcp connect error: Connection
// refused (os error 111)", or "… (Connect): dns error: …": the connection was never made.
const DENO_CONNECT_FAILURE = /client error \(Connect\)/

// Deno: "Fetch failed: Requests to port 6000 are blocked" (https://fetch.spec.whatwg.org/#bad-port).
const BLOCKED_PORT = /Requests to port \d+ are blocked/

/**
 * Maps what a transport's HTTP client threw to the error taxonomy (docs/design.md §8): unreachable
 * 502, connect and headers timeouts 504, an invalid answer 502, a request body that does not
 * match its `Content-Length` 400, anything else a reset 502. A cancelled request gives the
 * cancellation's reason (a `CLIENT_ABORTED` for a reason that is not a `WsgiProxyError`).
 *
 * Where the system error code is: on the error for undici's dispatcher and Bun's fetch, on its
 * `cause` for Node's fetch, and only in the cause's message for Deno's fetch.
 *
 * @param error - what the client threw
 * @param url - the upstream URL; messages name its origin
 * @param cancel - the request's cancellation (`signal` or `cancellationOf(outbound)`)
 * @returns the error to throw from the transport
 * @example
 * try {
 *   return await fetch(url, init)
 * } catch (error) {
 *   throw toUpstreamError(error, url, init.signal)
 * }
 */
export function toUpstreamError(error: unknown, url: URL, cancel?: UpstreamCancel): WsgiProxyError {
  if (cancel?.aborted === true) {
    return cancel.reason instanceof WsgiProxyError
      ? cancel.reason
      : new WsgiProxyError('CLIENT_ABORTED', 'the request was aborted', { cause: error })
  }
  if (error instanceof WsgiProxyError) return error
  const code = upstreamErrorCode(error)
  const source = failureOf(error)
  const detail = messageOf(source)
  const options = { cause: error }
  if (code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
    return new WsgiProxyError('BAD_REQUEST', 'the request body does not match its Content-Length', {
      ...options,
      expose: true,
    })
  }
  if (code === 'UND_ERR_INVALID_ARG') {
    return new WsgiProxyError('BAD_REQUEST', `the request cannot be sent: ${detail}`, options)
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT') {
    return new WsgiProxyError(
      'UPSTREAM_HEADERS_TIMEOUT',
      `no response headers from ${url.origin}`,
      options,
    )
  }
  if (detail === 'bad port' || BLOCKED_PORT.test(messageOf(error))) {
    return new WsgiProxyError(
      'UPSTREAM_UNREACHABLE',
      `fetch refuses to connect to port ${url.port} (https://fetch.spec.whatwg.org/#bad-port); use undiciTransport() from @wsgiproxy/node`,
      options,
    )
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new WsgiProxyError(
      'UPSTREAM_CONNECT_TIMEOUT',
      `connecting to ${url.origin} timed out`,
      options,
    )
  }
  if (UNREACHABLE_CODES.has(code) || (code === '' && DENO_CONNECT_FAILURE.test(detail))) {
    return new WsgiProxyError(
      'UPSTREAM_UNREACHABLE',
      `cannot reach ${url.origin}: ${detail}`,
      options,
    )
  }
  // undici's HTTPParserError has an `HPE_*` code only for some llhttp errors.
  if (code.startsWith('HPE_') || (source instanceof Error && source.name === 'HTTPParserError')) {
    return new WsgiProxyError(
      'UPSTREAM_INVALID_RESPONSE',
      `${url.origin} sent an invalid response: ${detail}`,
      options,
    )
  }
  return new WsgiProxyError('UPSTREAM_RESET', `request to ${url.origin} failed: ${detail}`, options)
}

/**
 * Whether a failed upstream request may be sent once more: its connection closed or was reset
 * before any answer (a pooled keep-alive socket the upstream closed just as the request went
 * out), the method is `GET`, `HEAD` or `OPTIONS`, it has no body (a body may be half read), it was
 * not cancelled, and it was sent only once so far. RFC 9110 §9.2.2 allows the retry; undici's own
 * retries cover only requests not yet written.
 *
 * @param method - the request method
 * @param hasBody - whether the request sends a body
 * @param error - what the failed attempt threw
 * @param attempts - how many times the request was sent, the failed attempt included
 * @param cancel - the request's cancellation; a cancelled request is never sent again
 * @returns `true` to send the request again
 * @example
 * for (let attempts = 1; ; attempts++) {
 *   try {
 *     return await send()
 *   } catch (error) {
 *     if (!mayRetry(method, false, error, attempts, signal)) throw toUpstreamError(error, url, signal)
 *   }
 * }
 */
export function mayRetry(
  method: string,
  hasBody: boolean,
  error: unknown,
  attempts: number,
  cancel?: UpstreamCancel,
): boolean {
  return (
    attempts <= MAX_RETRIES &&
    !hasBody &&
    cancel?.aborted !== true &&
    RETRY_METHODS.has(method) &&
    SOCKET_CLOSED_CODES.has(upstreamErrorCode(error))
  )
}

/**
 * The system or undici error code of a failure (`ECONNREFUSED`, `UND_ERR_SOCKET`, ...): the
 * error's own `code`, else its cause's; `''` when neither has a string code.
 */
function upstreamErrorCode(error: unknown): string {
  const own = (error as { code?: unknown } | null | undefined)?.code
  if (typeof own === 'string') return own
  const cause = (error as { cause?: { code?: unknown } | null } | null | undefined)?.cause?.code
  return typeof cause === 'string' ? cause : ''
}

/**
 * The error that describes the failure: a fetch's `TypeError('fetch failed')` only wraps it in
 * its `cause` (Node, Deno); an error with a code of its own (undici, Bun) is the failure itself.
 */
function failureOf(error: unknown): unknown {
  if (typeof (error as { code?: unknown } | null | undefined)?.code === 'string') return error
  const cause = (error as { cause?: unknown } | null | undefined)?.cause
  return typeof (cause as { message?: unknown } | null | undefined)?.message === 'string'
    ? cause
    : error
}

function messageOf(error: unknown): string {
  const message = (error as { message?: unknown } | null | undefined)?.message
  return typeof message === 'string' ? message : String(error)
}
