// When a failed try may go to another target (docs/pools.md, "Retries"): one rule for core's
// pools and @wsgiproxy/node's spawner pools.
import type { WsgiProxyError } from '../errors.ts'

// The request never reached the target: no connection was made. Not UPSTREAM_TLS_FAILED: under
// TLS 1.3 a refused client certificate shows only after the request went out, and such a refusal
// cannot always be told from a server closing the connection (../forward/upstream-error.ts).
const NEVER_REACHED: ReadonlySet<string> = new Set([
  'UPSTREAM_UNREACHABLE',
  'UPSTREAM_CONNECT_TIMEOUT',
])

// Failed before any answer, after the request may have gone out: tried elsewhere only when
// sending it twice is harmless (RETRY_METHODS, no body).
const NO_ANSWER: ReadonlySet<string> = new Set(['UPSTREAM_RESET', 'UPSTREAM_TLS_FAILED'])

// RFC 9110 §9.2.2: idempotent methods whose bodiless request may be sent again after it may have
// reached a target (PUT and DELETE change state an application may not expect twice; core's
// transports retry the same set on one target).
const RETRY_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * A request body that remembers whether anyone began to read it: a body never read can be sent
 * to another target; one partly sent cannot. Hand it to the transport instead of the body.
 *
 * @example
 * const body = input === null ? null : new TrackedBody(input)
 * // ... a try failed:
 * if (mayTryElsewhere(error, method, body)) retry()
 */
export class TrackedBody implements AsyncIterable<Uint8Array> {
  /** Whether reading has begun. */
  touched = false
  readonly #source: AsyncIterable<Uint8Array>

  /**
   * @param source - the request body
   */
  constructor(source: AsyncIterable<Uint8Array>) {
    this.#source = source
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    this.touched = true
    return this.#source[Symbol.asyncIterator]()
  }
}

/**
 * Whether a failed try never reached its target (no connection was made): it put no load on
 * any target, so trying another one adds none either (pools do not count such a retry against
 * their budget).
 *
 * @param error - why the try failed
 * @returns `true` for `UPSTREAM_UNREACHABLE` and `UPSTREAM_CONNECT_TIMEOUT`
 */
export function neverReached(error: WsgiProxyError): boolean {
  return NEVER_REACHED.has(error.code)
}

/**
 * Whether a failed try may go to another target: it never reached its target (no connection)
 * and its body was not read, whatever the method; or it is a `GET`, `HEAD` or `OPTIONS` without a
 * body that was reset, or whose TLS handshake failed, before any answer (another target may have
 * a valid certificate). Never a request whose body was read, never after an answer (a
 * `WsgiProxyError` here means there was none), never a timeout.
 *
 * @param error - why the try failed
 * @param method - the request method
 * @param body - the request body as sent (a {@link TrackedBody}), or `null` for none
 * @returns `true` to try another target
 */
export function mayTryElsewhere(
  error: WsgiProxyError,
  method: string,
  body: TrackedBody | null,
): boolean {
  if (NEVER_REACHED.has(error.code)) return body === null || !body.touched
  return NO_ANSWER.has(error.code) && body === null && RETRY_METHODS.has(method)
}
