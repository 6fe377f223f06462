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

// TLS failures (UPSTREAM_TLS_FAILED) are connect-phase failures: the handshake did not complete,
// so no request reached the upstream's application. They are still not read as "unreachable"
// (UPSTREAM_UNREACHABLE, which pools may send anywhere, a POST too): under TLS 1.3 a server
// refuses a client certificate only after the client's handshake is over, when the request may
// already be on the wire, and such a refusal cannot always be told from a server that closed the
// connection on purpose. A pool treats them as it treats a reset (`mayTryElsewhere` in
// ../pool/retry-rules.ts), and the transports never send them again to the same upstream: the
// next handshake would fail the same way.

// The upstream's certificate failed the client's checks: OpenSSL's verification results as Node
// and Bun name them (https://nodejs.org/api/tls.html#x509-certificate-error-codes).
const UNTRUSTED_CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
])

// The certificate is fine but for another name (Node checks the name itself, RFC 6125 §6).
const WRONG_NAME_CODES: ReadonlySet<string> = new Set([
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
])

const OUT_OF_DATE_CODES: ReadonlySet<string> = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID'])

// OpenSSL alerts the upstream sent about our client certificate (RFC 8446 §6.2), as Node names
// them: ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED, ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE,
// ERR_SSL_TLSV1_ALERT_UNKNOWN_CA, ...; and Deno's (rustls) "received fatal alert: BadCertificate".
const CLIENT_CERTIFICATE_REQUIRED = /CERTIFICATE_REQUIRED|CertificateRequired/
const CLIENT_CERTIFICATE_REFUSED =
  /_ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED)|fatal alert: (BadCertificate|UnknownCA|CertificateUnknown|CertificateExpired|CertificateRevoked|UnsupportedCertificate|AccessDenied)/

// The generic alert (RFC 8446 §6.2): what a TLS 1.2 server sends for a missing client
// certificate, and for no common version or cipher.
const HANDSHAKE_FAILURE = /ALERT_HANDSHAKE_FAILURE|fatal alert: HandshakeFailure/

// What a TLS client reads when the port answers in plain HTTP.
const NOT_TLS = /WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|HTTP_REQUEST/

// Node: the upstream closed or reset the connection before the handshake was over, as a TLS 1.2
// server does that refuses the client certificate.
const HANDSHAKE_RESET = /before secure TLS connection was established/

// Deno (rustls): "… client error (Connect): invalid peer certificate: UnknownIssuer",
// "… received fatal alert: CertificateRequired".
const DENO_UNTRUSTED = /invalid peer certificate/
const DENO_TLS_ALERT = /received fatal alert/

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
 * 502, connect and headers timeouts 504, a failed TLS handshake (a certificate not trusted, a
 * client certificate refused) 502 `UPSTREAM_TLS_FAILED` with what to change, an invalid answer
 * 502, a request body that does not match its `Content-Length` 400, anything else a reset 502. A
 * cancelled request gives the cancellation's reason (a `CLIENT_ABORTED` for a reason that is not
 * a `WsgiProxyError`).
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
  // Before "unreachable": Deno's TLS failures also say "client error (Connect)".
  const tls = readTlsFailure(code, detail)
  if (tls !== undefined) {
    const reason = (source as { reason?: unknown } | null | undefined)?.reason
    const what = typeof reason === 'string' && reason !== '' ? reason : detail
    const fix = tls.fix === undefined ? '' : `; ${tls.fix}`
    return new WsgiProxyError(
      'UPSTREAM_TLS_FAILED',
      `the TLS handshake with ${url.origin} failed: ${tls.problem} (${code === '' ? '' : `${code}: `}${what})${fix}`,
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
 * retries cover only requests not yet written. A connection reset during the TLS handshake is not
 * retried: it is a TLS failure, and the next handshake would fail the same way.
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
    SOCKET_CLOSED_CODES.has(upstreamErrorCode(error)) &&
    !HANDSHAKE_RESET.test(messageOf(failureOf(error)))
  )
}

/** What a failed TLS handshake means for the reader, and what to change. */
interface TlsFailure {
  problem: string
  fix?: string
}

/**
 * Reads a failure as a failed TLS handshake: the upstream's certificate failed our checks, or the
 * upstream refused the handshake (an alert, or a reset before it was over); `undefined` for any
 * other failure.
 */
function readTlsFailure(code: string, detail: string): TlsFailure | undefined {
  if (WRONG_NAME_CODES.has(code)) {
    return {
      problem: 'its certificate is not for the name asked for',
      fix: 'connect by a name it lists, or name one with undiciTransport({ tls: { servername } })',
    }
  }
  if (OUT_OF_DATE_CODES.has(code)) {
    return { problem: 'its certificate is out of date', fix: 'renew it on the upstream' }
  }
  if (UNTRUSTED_CERTIFICATE_CODES.has(code) || DENO_UNTRUSTED.test(detail)) {
    return {
      problem: 'its certificate is not trusted',
      fix: 'trust the CA that issued it with undiciTransport({ tls: { ca } })',
    }
  }
  const alert = code.startsWith('ERR_SSL_') || code === 'EPROTO' || DENO_TLS_ALERT.test(detail)
  const said = `${code} ${detail}`
  if (alert && CLIENT_CERTIFICATE_REQUIRED.test(said)) {
    return {
      problem: 'it requires a client certificate',
      fix: 'give one with undiciTransport({ tls: { cert, key } })',
    }
  }
  if (alert && CLIENT_CERTIFICATE_REFUSED.test(said)) {
    return {
      problem: 'it refused the client certificate',
      fix: 'give one that its CA issued with undiciTransport({ tls: { cert, key } })',
    }
  }
  if (alert && NOT_TLS.test(said)) {
    return {
      problem: 'it does not speak TLS on this port',
      fix: 'forward to http:// if it is a plain HTTP upstream',
    }
  }
  if (alert && HANDSHAKE_FAILURE.test(said)) {
    return {
      problem: 'it refused the handshake',
      fix: 'it may require a client certificate (undiciTransport({ tls: { cert, key } })), or accept no TLS version or cipher that the client offers',
    }
  }
  if (SOCKET_CLOSED_CODES.has(code) && HANDSHAKE_RESET.test(detail)) {
    return {
      problem:
        'it closed the connection during the handshake, as a server does that refuses the client certificate',
      fix: 'give one that its CA issued with undiciTransport({ tls: { cert, key } })',
    }
  }
  if (alert || code.startsWith('ERR_TLS_')) return { problem: 'the handshake failed' }
  return undefined
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
