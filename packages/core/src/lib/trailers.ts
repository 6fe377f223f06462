import type { AppResponse } from './types.ts'

// RFC 9110 §6.5.1 (and the list of RFC 7230 §4.1.2 it replaced): fields whose meaning is needed
// before the content, which a trailer must not carry. Content-* fields and pseudo-header fields
// are refused by prefix in readTrailers.
const FORBIDDEN_TRAILER_FIELDS: ReadonlySet<string> = new Set([
  // Message framing.
  'content-length',
  'transfer-encoding',
  'trailer',
  // Connection-specific fields (RFC 9110 §7.6.1, RFC 9113 §8.2.2).
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'upgrade',
  'http2-settings',
  // Routing.
  'host',
  // Request modifiers: controls and conditionals (RFC 9110 §7, §13; RFC 9111 §5.2).
  'cache-control',
  'expect',
  'max-forwards',
  'pragma',
  'range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'if-range',
  // Authentication (RFC 9110 §11, RFC 6265).
  'authorization',
  'proxy-authorization',
  'www-authenticate',
  'proxy-authenticate',
  'authentication-info',
  'proxy-authentication-info',
  'cookie',
  'set-cookie',
  // Response control data.
  'age',
  'date',
  'expires',
  'location',
  'retry-after',
  'vary',
  'warning',
])

/**
 * The trailer lines to send after a response's body: what `response.trailers()` answers, without
 * the fields a trailer must not carry (framing, routing, request modifiers, authentication,
 * response control data and every `Content-*` field,
 * [RFC 9110 §6.5.1](https://www.rfc-editor.org/rfc/rfc9110#section-6.5.1)), pseudo-header fields
 * and lines that are not two strings. Never throws: a `trailers` that throws or answers something
 * else gives none. Call it once the body has ended.
 *
 * @param response - the response whose body has ended
 * @returns the lines to send, in order; `[]` for none
 * @example
 * // in a server adapter, after the last body chunk was written
 * const trailers = readTrailers(response)
 * if (trailers.length > 0) res.addTrailers(trailers)
 */
export function readTrailers(response: AppResponse): Array<[string, string]> {
  const read = (response as { trailers?: unknown }).trailers
  if (typeof read !== 'function') return []
  let lines: unknown
  try {
    lines = read.call(response)
  } catch {
    return []
  }
  if (!Array.isArray(lines)) return []
  const sendable: Array<[string, string]> = []
  for (const line of lines as unknown[]) {
    if (!Array.isArray(line)) continue
    const [name, value] = line as unknown[]
    if (typeof name !== 'string' || typeof value !== 'string') continue
    const lower = name.toLowerCase()
    if (lower.startsWith(':') || lower.startsWith('content-')) continue
    if (FORBIDDEN_TRAILER_FIELDS.has(lower)) continue
    sendable.push([name, value])
  }
  return sendable
}
