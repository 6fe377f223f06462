import ipaddr from 'ipaddr.js'
import { WsgiProxyError } from '../errors.ts'
import { trimOws } from '../_text.ts'

type Address = ipaddr.IPv4 | ipaddr.IPv6

/**
 * A named group of addresses, the same presets as proxy-addr: `loopback` (127.0.0.0/8, ::1/128),
 * `linklocal` (169.254.0.0/16, fe80::/10) and `uniquelocal` (10.0.0.0/8, 172.16.0.0/12,
 * 192.168.0.0/16, fc00::/7).
 */
export type TrustPreset = 'loopback' | 'linklocal' | 'uniquelocal'

/**
 * The ranges behind each {@link TrustPreset}, as CIDR strings {@link compileTrust} accepts.
 *
 * @example
 * TRUST_PRESETS.loopback // ['127.0.0.0/8', '::1/128']
 */
export const TRUST_PRESETS: Readonly<Record<TrustPreset, readonly string[]>> = Object.freeze({
  // RFC 1122 §3.2.1.3 (127.0.0.0/8), RFC 4291 §2.5.3 (::1).
  loopback: Object.freeze(['127.0.0.0/8', '::1/128']),
  // RFC 3927 §2.1 (169.254.0.0/16), RFC 4291 §2.5.6 (fe80::/10).
  linklocal: Object.freeze(['169.254.0.0/16', 'fe80::/10']),
  // RFC 1918 §3 (private IPv4), RFC 4193 §3.1 (fc00::/7 unique local IPv6).
  uniquelocal: Object.freeze(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']),
})

// The longest textual address is 45 characters (IPv6 ending in dotted IPv4); the rest is room
// for a zone id. Longer input is refused before it reaches a regular expression.
const MAX_ADDRESS_LENGTH = 100
const PRESET_NAMES = Object.keys(TRUST_PRESETS).join(', ')
const PREFIX_LENGTH = /^\d{1,3}$/
const BRACKETED = /^\[([^\]]*)\](?::(\d{1,5}))?$/
const HOST_PORT = /^([^:]+):(\d{1,5})$/

/**
 * Compiles a trust list into a predicate that says whether an address is trusted.
 *
 * An entry is an address (`10.0.0.1`, `::1`), a CIDR range in IPv4 or IPv6 notation (including
 * IPv4-mapped IPv6 such as `::ffff:10.0.0.0/104`) or a {@link TrustPreset} name. Matching treats
 * an IPv4-mapped IPv6 address as its IPv4 address and the other way round, so `10.0.0.0/8`
 * trusts `::ffff:10.1.2.3` and `::ffff:10.0.0.0/104` trusts `10.1.2.3`. Zone ids (`fe80::1%eth0`)
 * are ignored. IPv4 must be dotted decimal without leading zeros: `0177.0.0.1` and `127.1` read
 * differently in different parsers, so they are refused as entries and never trusted as
 * addresses. The predicate never throws: an address that does not parse is not trusted. An
 * empty list trusts nothing.
 *
 * @param entries - addresses, CIDR ranges and preset names
 * @returns a predicate that is `true` for an address inside one of the entries
 * @throws WsgiProxyError `INVALID_OPTIONS` naming the first entry that is not a string, an
 * address, a range with a valid prefix length or a preset name
 * @example
 * const isTrusted = compileTrust(['loopback', '10.0.0.0/8'])
 * isTrusted('::ffff:127.0.0.1') // true
 * isTrusted('11.0.0.1') // false
 */
export function compileTrust(entries: readonly string[]): (address: string) => boolean {
  if (!Array.isArray(entries)) {
    throw invalid(`trust list must be an array of strings (got ${typeName(entries)})`)
  }
  const ranges: Array<[Address, number]> = []
  for (const [index, entry] of (entries as readonly unknown[]).entries()) {
    if (typeof entry !== 'string') {
      throw invalid(`trust entry ${index} must be a string (got ${typeName(entry)})`)
    }
    const preset = Object.hasOwn(TRUST_PRESETS, entry)
      ? TRUST_PRESETS[entry as TrustPreset]
      : undefined
    for (const range of preset ?? [entry]) ranges.push(parseRange(range))
  }
  if (ranges.length === 0) return () => false
  return (address) => {
    const parsed = typeof address === 'string' ? parseAddress(address) : undefined
    if (parsed === undefined) return false
    const ip = toCanonical(parsed)
    return ranges.some(([network, bits]) => contains(network, bits, ip))
  }
}

/**
 * The client address of a request, proxy-addr style: starting from the peer (the socket
 * address), each `X-Forwarded-For` entry from the right is believed only when the hop that
 * reported it is trusted. The walk stops at the first address that is not trusted, so a client
 * cannot spoof its address by sending the header itself, and the left-most entry is taken only
 * when every hop after it is trusted. An entry that is empty or not an IP address also stops the
 * walk, leaving the last valid address reached.
 *
 * Entries are comma-separated with optional whitespace; a port is removed (`1.2.3.4:5678`,
 * `[2001:db8::1]:443`) and so are brackets around IPv6. An address taken from the header is
 * normalized: IPv4-mapped IPv6 becomes plain IPv4 and IPv6 is written as RFC 5952 text. The peer
 * is returned as given when it is the result.
 *
 * @param peer - the address of the socket the request came from
 * @param forwardedFor - the `X-Forwarded-For` header, `undefined` when absent
 * @param isTrusted - which hops are trusted, usually from {@link compileTrust}
 * @returns the client address
 * @example
 * const isTrusted = compileTrust(['loopback', '10.0.0.0/8'])
 * clientAddress('127.0.0.1', '203.0.113.9, 10.0.0.2', isTrusted) // '203.0.113.9'
 * clientAddress('198.51.100.7', '203.0.113.9', isTrusted) // '198.51.100.7'
 */
export function clientAddress(
  peer: string,
  forwardedFor: string | undefined,
  isTrusted: (address: string) => boolean,
): string {
  if (forwardedFor === undefined || forwardedFor === '') return peer
  const entries = forwardedFor.split(',')
  let result = peer
  for (let i = entries.length - 1; i >= 0 && isTrusted(result); i--) {
    const address = parseForwardedEntry(entries[i] ?? '')
    if (address === undefined) break
    result = address
  }
  return result
}

/** Parses one trust entry (address or CIDR range) into a network and a prefix length. */
function parseRange(entry: string): [Address, number] {
  const slash = entry.lastIndexOf('/')
  const text = slash === -1 ? entry : entry.slice(0, slash)
  const address = parseAddress(text)
  if (address === undefined) {
    throw invalid(
      `trust entry ${JSON.stringify(entry)} must be an IP address, a CIDR range or one of the presets ${PRESET_NAMES}`,
    )
  }
  const max = address.kind() === 'ipv4' ? 32 : 128
  let bits = max
  if (slash !== -1) {
    const prefix = entry.slice(slash + 1)
    bits = PREFIX_LENGTH.test(prefix) ? Number(prefix) : Number.NaN
    if (!(bits <= max)) {
      const family = max === 32 ? 'IPv4' : 'IPv6'
      throw invalid(
        `trust entry ${JSON.stringify(entry)} must have a prefix length 0–${max} for ${family} (got ${JSON.stringify(prefix)})`,
      )
    }
  }
  return [address, bits]
}

/**
 * Parses an address with ipaddr.js, refusing the IPv4 spellings it accepts beyond dotted decimal
 * (`127.1`, `0x7f.0.0.1`, `0177.0.0.1`), also inside IPv6. Returns `undefined` for anything else.
 */
function parseAddress(text: string): Address | undefined {
  if (text.length > MAX_ADDRESS_LENGTH) return undefined
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text)
  if (!ipaddr.IPv6.isValid(text)) return undefined
  const host = text.split('%', 1)[0] ?? ''
  if (host.includes('.')) {
    const embedded = host.slice(host.lastIndexOf(':') + 1)
    if (!ipaddr.IPv4.isValidFourPartDecimal(embedded)) return undefined
  }
  return ipaddr.IPv6.parse(text)
}

/** IPv4-mapped IPv6 as IPv4; anything else as it is. */
function toCanonical(address: Address): Address {
  return address instanceof ipaddr.IPv6 && address.isIPv4MappedAddress()
    ? address.toIPv4Address()
    : address
}

/** Whether `ip` (canonical) lies in `network/bits`, comparing IPv4 with IPv6 ranges as mapped. */
function contains(network: Address, bits: number, ip: Address): boolean {
  if (network.kind() === ip.kind()) return ip.match(network, bits)
  // RFC 4291 §2.5.5.2: an IPv4 address lies in an IPv6 range through its IPv4-mapped form
  // (::ffff:10.0.0.0/104, ::ffff:0:0/96, ::/0).
  return ip instanceof ipaddr.IPv4 && ip.toIPv4MappedAddress().match(network, bits)
}

/** One `X-Forwarded-For` element without whitespace, port and brackets, normalized; or `undefined`. */
function parseForwardedEntry(entry: string): string | undefined {
  // RFC 9110 §5.6.1: list elements are separated by OWS "," OWS; trimmed in linear time, as the
  // header is client input.
  let host = trimOws(entry)
  // "[" address "]:" port at most; anything longer is no address and meets no regular expression.
  if (host.length > MAX_ADDRESS_LENGTH + 8) return undefined
  let port: string | undefined
  const bracketed = BRACKETED.exec(host)
  if (bracketed !== null) {
    host = bracketed[1] ?? ''
    port = bracketed[2]
    // Brackets belong to IPv6 only (RFC 3986 §3.2.2 IP-literal).
    if (!host.includes(':')) return undefined
  } else {
    const hostPort = HOST_PORT.exec(host)
    if (hostPort !== null) {
      host = hostPort[1] ?? ''
      port = hostPort[2]
    }
  }
  if (port !== undefined && Number(port) > 65535) return undefined
  const address = parseAddress(host)
  return address === undefined ? undefined : toCanonical(address).toString()
}

function invalid(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', message, { expose: true })
}

function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  return typeof value
}
