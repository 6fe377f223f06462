/**
 * Stable error codes, each with the HTTP status a request path answers with
 * (docs/design.md §8: upstream unreachable 502, timeouts 504, client gone 499; §9: a spawned backend
 * that exits or cannot start 502, starts too slowly 504, is unavailable 503).
 */
export const ERROR_STATUS = {
  INVALID_OPTIONS: 500,
  INVALID_KEY_FILE: 500,
  APP_ERROR: 500,
  INVALID_EXTRA_VALUE: 500,
  HOST_OVERRIDE_UNSUPPORTED: 500,
  BAD_REQUEST: 400,
  SIGNATURE_INVALID: 401,
  REPLAY_STORE_FULL: 503,
  // The shared replay store (Redis) cannot be reached or failed: the nonce cannot be checked.
  REPLAY_STORE_UNAVAILABLE: 503,
  INVALID_SIGNATURE_BASE: 400,
  BODY_TOO_LARGE: 413,
  TOO_MANY_SIGNED_FIELDS: 500,
  NOT_FOUND: 404,
  TOO_MANY_HEADERS: 431,
  HEADER_TOO_LARGE: 431,
  CLIENT_ABORTED: 499,
  METHOD_NOT_SUPPORTED: 501,
  // A target the exact proxy's allow list does not name (SSRF guard).
  TARGET_NOT_ALLOWED: 403,
  // A request that would come back to this proxy (RFC 5842 §7.2).
  LOOP_DETECTED: 508,
  // More upgraded (WebSocket) tunnels open than the listener allows.
  UPGRADE_LIMIT: 503,
  UNSUPPORTED_SCHEME: 502,
  INVALID_UPSTREAM: 502,
  UPSTREAM_UNREACHABLE: 502,
  UPSTREAM_RESET: 502,
  UPSTREAM_INVALID_RESPONSE: 502,
  // The TLS handshake with the upstream failed: its certificate is not trusted, or it refused ours.
  UPSTREAM_TLS_FAILED: 502,
  UPSTREAM_CONNECT_TIMEOUT: 504,
  UPSTREAM_HEADERS_TIMEOUT: 504,
  UPSTREAM_BODY_TIMEOUT: 504,
  // Every target of a pool is at its concurrency limit and the wait queue is full or timed out.
  UPSTREAM_OVERLOADED: 503,
  // The backend spawner (@wsgiproxy/node, docs/design.md §9).
  BACKEND_SPAWN_FAILED: 502,
  BACKEND_EXITED: 502,
  BACKEND_PORT_IN_USE: 502,
  BACKEND_START_TIMEOUT: 504,
  BACKEND_QUEUE_FULL: 503,
  BACKEND_BACKOFF: 503,
  BACKEND_CLOSED: 503,
} as const

/** A stable machine-readable error code; callers branch on it. */
export type WsgiProxyErrorCode = keyof typeof ERROR_STATUS

/** Options of {@link WsgiProxyError}. */
export interface WsgiProxyErrorOptions {
  /** The underlying error, kept as `cause`. */
  cause?: unknown
  /**
   * Whether the message is safe to show to clients in a problem+json `detail`. Default `false`:
   * messages that may name internal addresses are replaced by a generic detail.
   */
  expose?: boolean
}

/**
 * The one base error of wsgiproxy, with a stable `code` and the HTTP `status` it maps to.
 *
 * @example
 * try { createThing(opts) } catch (e) {
 *   if (e instanceof WsgiProxyError && e.code === 'INVALID_OPTIONS') console.error(e.message)
 * }
 */
export class WsgiProxyError extends Error {
  override name: string = 'WsgiProxyError'
  /** Stable code; see {@link ERROR_STATUS}. */
  readonly code: WsgiProxyErrorCode
  /** The HTTP status a request path answers with. */
  readonly status: number
  /** Whether `message` may be shown to clients. */
  readonly expose: boolean

  /**
   * @param code - stable error code
   * @param message - lower-case, saying what was expected and what was got
   * @param options - cause and exposure
   */
  constructor(code: WsgiProxyErrorCode, message: string, options: WsgiProxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.status = ERROR_STATUS[code]
    this.expose = options.expose ?? false
  }
}

/**
 * A thrown value as a {@link WsgiProxyError}, for the error hook: itself when it is one, else an
 * `APP_ERROR` with it as `cause`.
 *
 * @param error - what was thrown
 * @param message - the message of the wrapping error (default: the thrown error's message)
 * @returns the error to report
 */
export function asWsgiProxyError(error: unknown, message?: string): WsgiProxyError {
  if (error instanceof WsgiProxyError) return error
  const text = message ?? (error instanceof Error ? error.message : String(error))
  return new WsgiProxyError('APP_ERROR', text, { cause: error })
}
