import { trimOws } from '../_text.ts'

// RFC 9110 §7.8: `Upgrade = #protocol`, `protocol = protocol-name ["/" protocol-version]`, both
// tokens (§5.6.2); empty list elements are ignored (§5.6.1).
const PROTOCOL = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)?$/

/**
 * The protocols a client's Upgrade offers, as a list to send on, or why it is refused.
 *
 * @param value - the client's `Upgrade` header (`HTTP_UPGRADE`)
 * @returns the protocols joined with `, `, or the problem for a 400
 */
export function upgradeProtocols(value: string | undefined): string | { problem: string } {
  const protocols: string[] = []
  for (const element of (value ?? '').split(',')) {
    // Linear time: /^[ \t]+|[ \t]+$/g is quadratic on a long run of inner spaces.
    const protocol = trimOws(element)
    if (protocol === '') continue
    if (!PROTOCOL.test(protocol)) {
      return {
        problem:
          'the Upgrade header must be a list of protocols, each a token or token/version (RFC 9110 §7.8)',
      }
    }
    protocols.push(protocol)
  }
  if (protocols.length === 0) return { problem: 'an upgrade request needs an Upgrade header' }
  return protocols.join(', ')
}
