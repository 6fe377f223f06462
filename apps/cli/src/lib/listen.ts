import { usageError } from './errors.ts'

/** Where a server listens. */
export interface ListenAddress {
  /** The host name or address. */
  hostname: string
  /** The port, 0 for any free one. */
  port: number
}

/** The default listen address of every subcommand. */
export const DEFAULT_LISTEN: ListenAddress = { hostname: '127.0.0.1', port: 8080 }

/**
 * Parses `host:port`, `[v6]:port`, `:port` (loopback) or `port`.
 *
 * @param text - the address as written
 * @returns the address, or `undefined` when it is not one
 */
export function parseListen(text: string): ListenAddress | undefined {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]*):)?(\d{1,5})$/.exec(text.trim())
  if (match === null) return undefined
  const port = Number(match[2])
  if (port > 65535) return undefined
  let hostname = match[1] ?? ''
  if (hostname.startsWith('[')) hostname = hostname.slice(1, -1)
  return { hostname: hostname === '' ? DEFAULT_LISTEN.hostname : hostname, port }
}

/**
 * Parses a `--listen` value or the config file's `listen`.
 *
 * @param where - the flag or config path, for the message
 * @param text - the value
 * @returns the address
 * @throws CliError (exit 1) naming the accepted forms
 */
export function listenFlag(where: string, text: string): ListenAddress {
  const address = parseListen(text)
  if (address === undefined) {
    throw usageError(
      `${where} must be host:port, [ipv6]:port or a port such as 127.0.0.1:8080 (got ${JSON.stringify(text)})`,
    )
  }
  return address
}

/**
 * Formats an address as `host:port` (IPv6 in brackets).
 *
 * @param address - the address
 * @returns the text
 */
export function formatListen(address: ListenAddress): string {
  const host = address.hostname.includes(':') ? `[${address.hostname}]` : address.hostname
  return `${host}:${address.port}`
}
