import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import type { AddressInfo } from 'node:net'
import { networkInterfaces } from 'node:os'

/**
 * Resolves a host name to every address it has, with the system resolver (`getaddrinfo`, as
 * connecting does), in the resolver's order. For `exactProxy`'s `resolve` option: the proxy
 * checks each address against its allow list and its own addresses, then connects to the first,
 * so a name that resolves to an internal address is refused however it is spelled, and a second
 * lookup at connect time (DNS rebinding) cannot send the request elsewhere.
 *
 * @param hostname - a host name as the URL parser writes it
 * @returns the addresses, IPv4 dotted and IPv6 without brackets
 * @throws the resolver's error (`ENOTFOUND`, `EAI_AGAIN`, ...); `exactProxy` answers 502
 * @example
 * const app = exactProxy({ transport: undiciTransport(), resolve: resolveHost })
 */
export async function resolveHost(hostname: string): Promise<string[]> {
  const answers = await lookup(hostname, { all: true, order: 'verbatim' })
  return answers.map((answer) => answer.address)
}

/**
 * Where a server listens, as `server.address()` reports it: an address and port, a unix socket
 * path, or `null` before it listens.
 */
export type ListenerAddress = AddressInfo | string | null | undefined

/**
 * Makes `exactProxy`'s `isSelf` check from the address a server listens on, so the exact proxy
 * answers 508 instead of sending a request to itself. An address is this server when the port is
 * its port and the address is
 *
 * - the address it listens on (IPv4-mapped IPv6 read as IPv4);
 * - unspecified (`0.0.0.0`, `::`), which connects to this host;
 * - for a server on every interface (`0.0.0.0`, `::`): any loopback address (127.0.0.0/8, ::1)
 *   and any address of a local interface (`os.networkInterfaces()`, read at each check).
 *
 * @param address - reads the listener's address, e.g. `() => server.address()`; called at each
 * check, so it may be given before the server listens
 * @returns the check
 * @example
 * let server: Server | undefined
 * const app = exactProxy({
 *   transport: undiciTransport(),
 *   resolve: resolveHost,
 *   isSelf: createSelfCheck(() => server?.address()),
 * })
 * server = (await serve(app, { port: 8080 })).server
 */
export function createSelfCheck(
  address: () => ListenerAddress,
): (address: string, port: number) => boolean {
  return (target, port) => {
    const listener = address()
    if (listener === null || listener === undefined || typeof listener === 'string') return false
    if (listener.port !== port) return false
    const ip = canonicalAddress(target)
    const own = canonicalAddress(listener.address)
    if (ip === undefined || own === undefined) return false
    if (ip === own || isUnspecified(ip)) return true
    if (!isUnspecified(own)) return false
    return isLoopback(ip) || interfaceAddresses().has(ip)
  }
}

/**
 * An IP address in one spelling for comparing: IPv4 dotted decimal (IPv4-mapped IPv6 as IPv4),
 * IPv6 lower-case and compressed as the URL parser writes it, without a zone id.
 */
function canonicalAddress(text: string): string | undefined {
  const bare = text.split('%', 1)[0] ?? ''
  const family = isIP(bare)
  if (family === 4) return URL.parse(`http://${bare}/`)?.hostname
  if (family !== 6) return undefined
  const host = URL.parse(`http://[${bare}]/`)?.hostname.slice(1, -1)
  if (host === undefined) return undefined
  // ::ffff:a.b.c.d, which the URL parser writes ::ffff:XXXX:XXXX.
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host)
  if (mapped === null) return host
  const high = Number.parseInt(mapped[1] ?? '0', 16)
  const low = Number.parseInt(mapped[2] ?? '0', 16)
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
}

function isUnspecified(address: string): boolean {
  return address === '0.0.0.0' || address === '::'
}

// RFC 1122 §3.2.1.3 (127.0.0.0/8), RFC 4291 §2.5.3 (::1).
function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1'
}

function interfaceAddresses(): Set<string> {
  const addresses = new Set<string>()
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      const address = canonicalAddress(entry.address)
      if (address !== undefined) addresses.add(address)
    }
  }
  return addresses
}
