import { isIP } from 'node:net'
import { parseAllowList, WsgiProxyError } from '@wsgiproxy/core'
import type { Problem } from './problem.ts'

// Where `wsgiproxy forward` may connect, for plain requests and CONNECT tunnels alike: the allow
// list (exactProxy's entries, default `public`), the deny list (the same entries; deny wins), the
// loop guard, and the addresses to connect to. A name is resolved once and every address it has
// is checked; the connection goes to one of those addresses, never to the name, so a second
// lookup (DNS rebinding) cannot send it elsewhere.

/** Options of {@link createDestinationGuard}. */
export interface DestinationGuardOptions {
  /**
   * Where the proxy may connect: entries as `exactProxy`'s `allow` (host names, addresses, CIDR
   * ranges, the presets `public`, `loopback`, `linklocal`, `uniquelocal`, each optionally with
   * ports). A name a name entry lists is connected to whatever it resolves to (deny still
   * applies); any other target must have every address allowed. Default `['public']`: a proxy
   * open to clients must not reach loopback and internal services (SSRF; squid and tinyproxy
   * refuse them by default too).
   */
  allow?: readonly string[]
  /**
   * Where the proxy never connects, even when `allow` lists it: the same entries. A name entry
   * refuses the name before any lookup; an address entry refuses a target any of whose addresses
   * it covers. Default `[]`.
   */
  deny?: readonly string[]
  /** Resolves a host name to every address it has (`resolveHost` from `@wsgiproxy/node`). */
  resolve: (hostname: string) => Promise<readonly string[]>
  /**
   * Whether an address and port are this proxy itself (`createSelfCheck` from
   * `@wsgiproxy/node`): such a target is a loop (508). Default: none.
   */
  isSelf?: (address: string, port: number) => boolean
}

/** A destination that passed the guard. */
export interface Destination {
  /** The host as the URL parser writes it (IPv6 without brackets). */
  host: string
  /** The port. */
  port: number
  /**
   * The addresses checked, in the resolver's order (at least one): connect to these only.
   */
  addresses: readonly string[]
}

/** Checks destinations. */
export interface DestinationGuard {
  /**
   * Checks a host and port.
   *
   * @param host - a host name or address as the client wrote it (IPv6 with or without brackets)
   * @param port - the port
   * @returns the destination, or why not: `TARGET_NOT_ALLOWED` (403), `LOOP_DETECTED` (508),
   * `UPSTREAM_UNREACHABLE` (502: the name does not resolve), `BAD_REQUEST` (400); the error's
   * message names the target and the flag that would change the answer, for the log
   */
  check(host: string, port: number): Promise<Destination | WsgiProxyError>
}

const DEFAULT_ALLOW: readonly string[] = ['public']
// RFC 6761 §6.3: localhost names are loopback, and are not looked up.
const LOCALHOST_ADDRESSES: readonly string[] = ['127.0.0.1', '::1']
// The URL parser's spelling of an IPv4-mapped IPv6 address (::ffff:127.0.0.1).
const MAPPED = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/

/**
 * Creates the guard of the forward proxy; the entries must have passed `allowEntryProblem`.
 *
 * @param options - allow and deny lists, resolver, self check
 * @returns the guard
 * @throws WsgiProxyError `INVALID_OPTIONS` for a bad entry
 * @example
 * const guard = createDestinationGuard({ deny: ['10.0.0.0/8'], resolve: resolveHost })
 * const checked = await guard.check('example.com', 443)
 */
export function createDestinationGuard(options: DestinationGuardOptions): DestinationGuard {
  const allow = parseAllowList(options.allow ?? DEFAULT_ALLOW)
  // One list per entry, so that the log can name the entry that refused a target.
  const deny = (options.deny ?? []).map((entry) => ({ entry, list: parseAllowList([entry]) }))
  const { resolve, isSelf } = options

  const checkAddresses = (
    target: Target,
    addresses: readonly string[],
    named: boolean,
  ): Destination | WsgiProxyError => {
    for (const address of addresses) {
      if (isIP(withoutZone(address)) === 0)
        return notAllowed(target, address, 'something that is not an address')
    }
    if (isSelf !== undefined) {
      for (const address of addresses) {
        if (isSelf(address, target.port)) return loop(target, address)
      }
    }
    for (const address of addresses) {
      const entry = deny.find(({ list }) => list.allowsAddress(address, target.port))?.entry
      if (entry !== undefined) return denied(target, address, entry)
    }
    if (!named) {
      for (const address of addresses) {
        if (!allow.allowsAddress(address, target.port)) return notAllowed(target, address)
      }
    }
    return { host: target.hostname, port: target.port, addresses }
  }

  return {
    async check(host, port) {
      const hostname =
        Number.isInteger(port) && port >= 1 && port <= 65535 ? normalise(host, port) : undefined
      if (hostname === undefined) {
        return new WsgiProxyError('BAD_REQUEST', 'the target is not a host name or address')
      }
      const target: Target = { hostname, port, literal: false }
      const literal = literalAddress(hostname)
      if (literal !== undefined) {
        return checkAddresses({ ...target, hostname: literal, literal: true }, [literal], false)
      }
      const deniedName = deny.find(({ list }) => list.namesHost(hostname, port))?.entry
      if (deniedName !== undefined) return denied(target, undefined, deniedName)
      const named = allow.namesHost(hostname, port)
      if (isLocalhostName(hostname)) return checkAddresses(target, LOCALHOST_ADDRESSES, named)
      let addresses: readonly string[]
      try {
        // As the system would resolve it (with the root dot, if any: no search domains then).
        addresses = await resolve(hostname)
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        return new WsgiProxyError(
          'UPSTREAM_UNREACHABLE',
          `cannot resolve ${hostname}: ${message}`,
          {
            cause: error,
          },
        )
      }
      if (addresses.length === 0) {
        return new WsgiProxyError('UPSTREAM_UNREACHABLE', `${hostname} resolves to no address`)
      }
      return checkAddresses(target, addresses, named)
    },
  }
}

/**
 * The fixed answer to a target the guard refused: it names nothing the client sent (the error's
 * message, which does, is for the log).
 *
 * @param error - the guard's (or a connection's) error
 * @returns the problem
 */
export function refusalProblem(error: WsgiProxyError): Problem {
  const { status, code } = error
  return { status, code, detail: REFUSAL_DETAILS[code] ?? GENERIC_DETAILS[status] ?? 'failed' }
}

const REFUSAL_DETAILS: Partial<Record<string, string>> = {
  TARGET_NOT_ALLOWED:
    'this proxy does not connect to the target (the proxy operator decides where it may connect)',
  LOOP_DETECTED:
    'the request would come back to this proxy: it names this proxy itself or has passed through it already',
}

const GENERIC_DETAILS: Partial<Record<number, string>> = {
  400: 'the request is malformed',
  502: 'the target could not be reached',
  503: 'the proxy is busy; try again later',
  504: 'the target did not answer in time',
}

/** A target being checked: its host as the URL parser writes it, and its port. */
interface Target {
  hostname: string
  port: number
  /** Whether the host is an address (messages then name no resolution). */
  literal: boolean
}

// The host as the URL parser (and so the connection) reads it: 127.1, 2130706433, 0x7f000001 and
// 127.000.000.001 are 127.0.0.1; IPv6 in brackets; names lower-case, IDNA as punycode.
function normalise(host: string, port: number): string | undefined {
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
  const url = URL.parse(`http://${bracketed}:${port}/`)
  if (url === null || url.username !== '' || url.pathname !== '/' || url.hostname === '') {
    return undefined
  }
  return url.hostname
}

// The address a normalised host is, IPv4-mapped IPv6 as IPv4; `undefined` for a name.
function literalAddress(hostname: string): string | undefined {
  if (isIP(hostname) === 4) return hostname
  if (!hostname.startsWith('[')) return undefined
  const inner = hostname.slice(1, -1)
  const mapped = MAPPED.exec(inner)
  if (mapped === null) return inner
  const high = Number.parseInt(mapped[1] ?? '0', 16)
  const low = Number.parseInt(mapped[2] ?? '0', 16)
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
}

function isLocalhostName(hostname: string): boolean {
  const host = withoutRootDot(hostname)
  return host === 'localhost' || host.endsWith('.localhost')
}

function withoutRootDot(hostname: string): string {
  return hostname.endsWith('.') ? hostname.slice(0, -1) : hostname
}

// A zone id (fe80::1%eth0) says which link, not which host.
function withoutZone(address: string): string {
  return address.split('%', 1)[0] ?? ''
}

function authority(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

// ", which resolves to 10.0.0.1," when a name was resolved, for the messages.
function resolvedTo(target: Target, address: string | undefined): string {
  return target.literal || address === undefined ? '' : `, which resolves to ${address},`
}

function notAllowed(target: Target, address: string, what?: string): WsgiProxyError {
  const entry = authority(withoutRootDot(target.hostname), target.port)
  const resolved = what === undefined ? resolvedTo(target, address) : `, which resolves to ${what},`
  return new WsgiProxyError(
    'TARGET_NOT_ALLOWED',
    `the target ${authority(target.hostname, target.port)}${resolved} is not in the allow list (add --allow ${entry} to permit it)`,
  )
}

function denied(target: Target, address: string | undefined, entry: string): WsgiProxyError {
  return new WsgiProxyError(
    'TARGET_NOT_ALLOWED',
    `the target ${authority(target.hostname, target.port)}${resolvedTo(target, address)} is denied by --deny ${entry}`,
  )
}

function loop(target: Target, address: string): WsgiProxyError {
  const same = target.literal || target.hostname === address
  return new WsgiProxyError(
    'LOOP_DETECTED',
    `the target ${authority(target.hostname, target.port)}${same ? '' : ` (${address})`} is this proxy itself: the request would come back`,
  )
}
