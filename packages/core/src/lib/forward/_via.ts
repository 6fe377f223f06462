import { trimOws } from '../_text.ts'

let pseudonymOfProcess: string | undefined

/**
 * One random pseudonym per process (per copy of this module): 64 bits, so another proxy's entry
 * never matches by chance.
 *
 * @returns `wsgiproxy-` and 16 hex digits, the same on every call
 */
export function processPseudonym(): string {
  if (pseudonymOfProcess === undefined) {
    const bytes = crypto.getRandomValues(new Uint8Array(8))
    pseudonymOfProcess = `wsgiproxy-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`
  }
  return pseudonymOfProcess
}

/**
 * Whether a `Via` value has an entry received by `pseudonym`. RFC 9110 §7.6.3:
 * `Via = #( received-protocol RWS received-by [ RWS comment ] )`; compared without regard to
 * case. Linear time: the value is client input.
 *
 * @param via - the client's `Via` header
 * @param pseudonym - this proxy's pseudonym
 * @returns whether the request has passed through this proxy already
 */
export function viaNames(via: string, pseudonym: string): boolean {
  const wanted = pseudonym.toLowerCase()
  for (const element of via.split(',')) {
    const entry = trimOws(element)
    let start = 0
    while (start < entry.length && !isWhitespace(entry.charCodeAt(start))) start++
    while (start < entry.length && isWhitespace(entry.charCodeAt(start))) start++
    let end = start
    while (end < entry.length && !isWhitespace(entry.charCodeAt(end))) end++
    if (end - start === wanted.length && entry.slice(start, end).toLowerCase() === wanted) {
      return true
    }
  }
  return false
}

function isWhitespace(code: number): boolean {
  return code === 0x20 || code === 0x09
}

/**
 * The client's `Via` with this proxy's entry appended (RFC 9110 §7.6.3).
 *
 * @param via - the client's `Via` header, if any
 * @param serverProtocol - the environ's `SERVER_PROTOCOL`
 * @param pseudonym - this proxy's pseudonym
 * @returns the `Via` value to send
 */
export function appendVia(
  via: string | undefined,
  serverProtocol: string,
  pseudonym: string,
): string {
  // received-protocol: the version alone when the protocol is HTTP.
  const protocol = /^HTTP\/([0-9](?:\.[0-9])?)$/.exec(serverProtocol)?.[1] ?? '1.1'
  const entry = `${protocol} ${pseudonym}`
  const previous = typeof via === 'string' ? trimOws(via) : ''
  return previous === '' ? entry : `${previous}, ${entry}`
}
