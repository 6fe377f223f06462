// The exact proxy's allow list (the SSRF guard): which hosts, addresses and ports it may connect
// to. Entries are operator configuration; the hosts checked come from the client's `Host`, after
// the URL parser normalised them (the same parser the transport connects with).
import ipaddr from 'ipaddr.js'
import { TRUST_PRESETS } from '../protocol/trust.ts'

type Address = ipaddr.IPv4 | ipaddr.IPv6

/** A set of ports, or every port. */
type Ports = ReadonlySet<number> | 'any'

type Rule =
  | { kind: 'public'; ports: Ports }
  | { kind: 'range'; network: Address; bits: number; ports: Ports }
  | { kind: 'name'; name: string; wildcard: boolean; ports: Ports }

/** The named groups of addresses an allow entry may give. */
export const ALLOW_PRESETS: readonly string[] = ['public', ...Object.keys(TRUST_PRESETS)]

/** What an allow entry may be, for messages. */
export const ALLOW_ENTRY_HINT: string = `expected a host name (example.com, *.example.com), an IP address or CIDR range (10.0.0.0/8, ::1, [fd00::/8]) or a preset (${ALLOW_PRESETS.join(', ')}), optionally with a port, a port list or * (example.com:443, 127.0.0.1:8080,8081, [::1]:*)`

// Entries are configuration, not client input, but stay bounded all the same.
const MAX_ENTRY_LENGTH = 300
const BRACKETED = /^\[([0-9A-Fa-f:.]+(?:\/[0-9]{1,3})?)\](?::([^:]*))?$/
const PORT = /^[1-9][0-9]{0,4}$/
const PREFIX_LENGTH = /^[0-9]{1,3}$/
// RFC 1123 §2.1 labels (letters, digits, "-"), plus "_" found in real names; lower-case as the URL
// parser writes them, an optional trailing dot for the root.
const HOST_NAME =
  /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.?$/
// The global unicast IPv6 addresses (RFC 4291 §2.4): ipaddr.js calls everything it has no range
// for "unicast", including the deprecated IPv4-compatible ::a.b.c.d.
const GLOBAL_UNICAST_V6 = ipaddr.IPv6.parseCIDR('2000::/3')

/** A compiled allow list. */
export interface CompiledAllowList {
  /** Whether the list allows this address (canonical: IPv4-mapped IPv6 read as IPv4) at `port`. */
  allowsAddress(address: Address, port: number): boolean
  /** Whether a host-name entry names `hostname` (as the URL parser writes it) at `port`. */
  namesHost(hostname: string, port: number): boolean
  /** Whether `public` covers `port`: a host name no resolver checked is then believed public. */
  publicPort(port: number): boolean
  /** Whether any entry is an address, a range or a preset, so resolving a name may help. */
  readonly hasAddressRules: boolean
}

/**
 * Compiles allow entries; each must have passed {@link allowEntryProblem}.
 *
 * @param entries - the entries
 * @returns the compiled list
 */
export function compileAllowList(entries: readonly string[]): CompiledAllowList {
  const rules: Rule[] = []
  for (const entry of entries) {
    const parsed = parseEntry(entry)
    if (typeof parsed === 'string') throw new TypeError(parsed)
    rules.push(...parsed)
  }
  const names = rules.filter((rule) => rule.kind === 'name')
  const addresses = rules.filter((rule) => rule.kind !== 'name')
  return {
    hasAddressRules: addresses.length > 0,
    allowsAddress: (address, port) =>
      addresses.some((rule) => hasPort(rule.ports, port) && matchesAddress(rule, address)),
    namesHost: (hostname, port) => {
      const host = withoutRootDot(hostname)
      return names.some(
        (rule) =>
          hasPort(rule.ports, port) &&
          (rule.wildcard ? host.endsWith(`.${rule.name}`) : host === rule.name),
      )
    },
    publicPort: (port) =>
      addresses.some((rule) => rule.kind === 'public' && hasPort(rule.ports, port)),
  }
}

/**
 * Why an allow entry is not valid, or `undefined` when it is.
 *
 * @param entry - the entry as written
 * @returns a message saying what was expected and what was got
 */
export function allowEntryProblem(entry: string): string | undefined {
  const parsed = parseEntry(entry)
  return typeof parsed === 'string' ? parsed : undefined
}

/**
 * An IP address as the URL parser writes a host (`127.0.0.1`, `[::1]`), read canonically:
 * IPv4-mapped IPv6 as its IPv4 address. `undefined` for a host name.
 *
 * @param hostname - `URL.hostname`
 * @returns the address, or `undefined`
 */
export function hostAddress(hostname: string): Address | undefined {
  if (hostname.startsWith('[')) {
    const inner = hostname.slice(1, -1)
    return ipaddr.IPv6.isValid(inner) ? canonical(ipaddr.IPv6.parse(inner)) : undefined
  }
  return ipaddr.IPv4.isValidFourPartDecimal(hostname) ? ipaddr.IPv4.parse(hostname) : undefined
}

/**
 * An address a resolver gave, read canonically; `undefined` when it is not an IP address.
 *
 * @param text - `10.0.0.1`, `::1`, `::ffff:10.0.0.1`, `fe80::1%eth0`
 * @returns the address, or `undefined`
 */
export function parseAddress(text: string): Address | undefined {
  if (typeof text !== 'string' || text.length > 100) return undefined
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text)
  if (!ipaddr.IPv6.isValid(text)) return undefined
  // A zone id (fe80::1%eth0) says which link, not which host.
  return canonical(ipaddr.IPv6.parse(text.split('%', 1)[0] ?? ''))
}

/**
 * Whether a host is a localhost name: `localhost` or a name under it, with or without the root
 * dot, which resolve to loopback
 * ([RFC 6761 §6.3](https://www.rfc-editor.org/rfc/rfc6761#section-6.3)).
 *
 * @param hostname - `URL.hostname` (lower-case)
 * @returns whether it is one
 */
export function isLocalhostName(hostname: string): boolean {
  const host = withoutRootDot(hostname)
  return host === 'localhost' || host.endsWith('.localhost')
}

/** The loopback addresses a localhost name stands for (RFC 6761 §6.3). */
export const LOCALHOST_ADDRESSES: readonly Address[] = [
  ipaddr.IPv4.parse('127.0.0.1'),
  ipaddr.IPv6.parse('::1'),
]

function canonical(address: Address): Address {
  return address instanceof ipaddr.IPv6 && address.isIPv4MappedAddress()
    ? address.toIPv4Address()
    : address
}

function withoutRootDot(hostname: string): string {
  return hostname.endsWith('.') ? hostname.slice(0, -1) : hostname
}

function hasPort(ports: Ports, port: number): boolean {
  return ports === 'any' || ports.has(port)
}

function matchesAddress(rule: Exclude<Rule, { kind: 'name' }>, address: Address): boolean {
  if (rule.kind === 'public') return isPublic(address)
  const { network, bits } = rule
  if (network.kind() === address.kind()) return address.match(network, bits)
  // RFC 4291 §2.5.5.2: an IPv4 address lies in an IPv6 range through its IPv4-mapped form.
  return address instanceof ipaddr.IPv4 && address.toIPv4MappedAddress().match(network, bits)
}

// `public`: what ipaddr.js calls unicast, i.e. no loopback, private (RFC 1918), carrier-grade NAT,
// link-local, unique-local, multicast, broadcast, unspecified, reserved or documentation range;
// for IPv6 also inside 2000::/3, which leaves out NAT64 (64:ff9b::/96), 6to4, Teredo and the
// IPv4-compatible ::a.b.c.d that may reach an internal IPv4 address.
function isPublic(address: Address): boolean {
  if (address.range() !== 'unicast') return false
  return address instanceof ipaddr.IPv4 || address.match(GLOBAL_UNICAST_V6)
}

function parseEntry(entry: unknown): Rule[] | string {
  if (typeof entry !== 'string') return `${ALLOW_ENTRY_HINT} (got ${typeof entry})`
  const got = ` (got ${JSON.stringify(entry.length > 60 ? `${entry.slice(0, 57)}...` : entry)})`
  if (entry.length === 0 || entry.length > MAX_ENTRY_LENGTH) return `${ALLOW_ENTRY_HINT}${got}`
  let host: string
  let portText: string | undefined
  let bracketed = false
  const brackets = BRACKETED.exec(entry)
  if (brackets !== null) {
    host = brackets[1] ?? ''
    portText = brackets[2]
    bracketed = true
  } else if (entry.indexOf(':') !== entry.lastIndexOf(':')) {
    // Two colons or more: a bare IPv6 address or range, which cannot carry a port.
    host = entry
  } else {
    const colon = entry.indexOf(':')
    host = colon === -1 ? entry : entry.slice(0, colon)
    portText = colon === -1 ? undefined : entry.slice(colon + 1)
  }
  const ports = parsePorts(portText)
  if (ports === undefined) {
    return `allow entry ports must be * or a list of 1–65535 such as 80,443${got}`
  }
  const lower = host.toLowerCase()
  if (!bracketed && ALLOW_PRESETS.includes(lower)) {
    if (lower === 'public') return [{ kind: 'public', ports }]
    const ranges = TRUST_PRESETS[lower as keyof typeof TRUST_PRESETS]
    return ranges.map((range) => {
      const [network, bits] = ipaddr.parseCIDR(range)
      return { kind: 'range', network, bits, ports }
    })
  }
  const slash = host.indexOf('/')
  const addressText = slash === -1 ? host : host.slice(0, slash)
  const address = strictAddress(addressText)
  if (address !== undefined) {
    const max = address.kind() === 'ipv4' ? 32 : 128
    const prefix = slash === -1 ? String(max) : host.slice(slash + 1)
    const bits = PREFIX_LENGTH.test(prefix) ? Number(prefix) : Number.NaN
    if (!(bits <= max)) return `allow entry prefix length must be 0–${max}${got}`
    if (address.kind() === 'ipv6' && !bracketed && portText !== undefined) {
      return `an IPv6 allow entry with a port needs brackets such as [::1]:8080${got}`
    }
    return [{ kind: 'range', network: address, bits, ports }]
  }
  if (bracketed || slash !== -1 || host.includes(':')) return `${ALLOW_ENTRY_HINT}${got}`
  const wildcard = lower.startsWith('*.')
  const name = wildcard ? lower.slice(2) : lower
  // The URL parser's spelling: IDNA to punycode, and numbers it reads as IPv4 (127.1, 0x7f.1).
  const normalised = URL.parse(`http://${name}/`)?.hostname
  if (normalised === undefined || !HOST_NAME.test(normalised)) return `${ALLOW_ENTRY_HINT}${got}`
  if (ipaddr.IPv4.isValidFourPartDecimal(normalised)) {
    return `an IPv4 allow entry must be dotted decimal such as 127.0.0.1${got}`
  }
  return [{ kind: 'name', name: withoutRootDot(normalised), wildcard, ports }]
}

// Dotted-decimal IPv4 only (127.1 or 0177.0.0.1 read differently in different parsers), also
// inside IPv6; no zone id.
function strictAddress(text: string): Address | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text)
  if (text.includes('%') || !ipaddr.IPv6.isValid(text)) return undefined
  if (text.includes('.')) {
    const embedded = text.slice(text.lastIndexOf(':') + 1)
    if (!ipaddr.IPv4.isValidFourPartDecimal(embedded)) return undefined
  }
  return ipaddr.IPv6.parse(text)
}

function parsePorts(text: string | undefined): Ports | undefined {
  if (text === undefined || text === '*') return 'any'
  const ports = new Set<number>()
  for (const part of text.split(',')) {
    if (!PORT.test(part) || Number(part) > 65535) return undefined
    ports.add(Number(part))
  }
  return ports
}
