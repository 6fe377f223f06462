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
      for (const token of value.split(',')) {
        const nominee = token.trim().toLowerCase()
        if (!PROTECTED.has(nominee)) nominated.add(nominee)
      }
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
