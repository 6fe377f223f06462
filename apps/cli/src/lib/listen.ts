import { usageError } from './errors.ts'
import type { TlsFiles } from './tls-files.ts'

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
 * Where a listen address came from, which says how the user picks another one: the `--listen`
 * flag (or its default), or the config file's `listen` (set, or not set and defaulted).
 */
export type ListenSource =
  { readonly from: 'flag' } | { readonly from: 'config' | 'default'; readonly file: string }

/** A listen address and where it came from. */
export interface ListenChoice {
  /** The address. */
  address: ListenAddress
  /** Where it came from, for the message when it cannot be listened on. */
  source: ListenSource
  /** Serve HTTPS with these certificate files. */
  tls?: TlsFiles | undefined
  /** Also speak HTTP/2 (`true`, with `tls`), or only cleartext HTTP/2 (`'h2c'`, without). */
  http2?: boolean | 'h2c' | undefined
}

/**
 * The one line that says why an address cannot be listened on and how to choose another.
 *
 * @param error - what listening threw (`code` EADDRINUSE, EACCES, EADDRNOTAVAIL, ENOTFOUND...)
 * @param choice - the address and where it came from
 * @returns the message, without the `wsgiproxy:` prefix
 * @example
 * listenProblem({ code: 'EADDRINUSE' }, { address, source: { from: 'flag' } })
 * // 'port 8080 is in use on 127.0.0.1; pass --listen host:port (for example --listen 127.0.0.1:9000)'
 */
export function listenProblem(error: unknown, choice: ListenChoice): string {
  const { address, source } = choice
  const { hostname, port } = address
  const at = (other: number): string => formatListen({ hostname, port: other })
  const local = `${formatListen({ hostname: '127.0.0.1', port })}, or ${formatListen({ hostname: '0.0.0.0', port })} for every address`
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  switch (code) {
    case 'EADDRINUSE':
      return `port ${port} is in use on ${hostname}; ${changeListen(source, at(port === 9000 ? 9001 : 9000))}`
    case 'EACCES':
      return port > 0 && port < 1024
        ? `port ${port} on ${hostname} needs root privileges (ports below 1024 do); ${changeListen(source, at(8080))}`
        : `no permission to listen on ${formatListen(address)}; ${changeListen(source, at(port === 9000 ? 9001 : 9000))}`
    case 'EADDRNOTAVAIL':
      return `${hostname} is not an address of this host; ${changeListen(source, local)}`
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot resolve the host name ${JSON.stringify(hostname)}; ${changeListen(source, local)}`
    default:
      return `cannot listen on ${formatListen(address)}: ${code ?? (error instanceof Error ? error.message : String(error))}`
  }
}

// How the user picks another address, with an example of one.
function changeListen(source: ListenSource, example: string): string {
  switch (source.from) {
    case 'flag':
      return `pass --listen host:port (for example --listen ${example})`
    case 'config':
      return `change "listen" in ${source.file} or pass --listen host:port (for example ${example})`
    case 'default':
      return `pass --listen host:port (for example --listen ${example}) or set "listen" in ${source.file}`
  }
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
