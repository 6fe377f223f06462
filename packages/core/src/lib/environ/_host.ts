/**
 * A `Host` value, `host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2), restricted to the names
 * URLs accept: an IPv6 literal in brackets, or letters, digits, "-", ".", "_", "~" (names and
 * IPv4). The port's range is checked apart ({@link isValidPort}).
 */
export const HOST_HEADER: RegExp = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~]+)(?::[0-9]{0,5})?$/

/** A `SERVER_NAME`: a name, an IPv4 address or a bare IPv6 address. */
export const SERVER_NAME: RegExp = /^(?:[0-9A-Fa-f:.]+|[A-Za-z0-9\-._~]+)$/

/** The default port of each scheme. */
export const DEFAULT_PORTS: Record<string, string> = { http: '80', https: '443' }

/**
 * Whether a port is empty or a decimal number 0–65535 of at most five digits.
 *
 * @param port - the port text
 * @returns whether it is acceptable
 */
export function isValidPort(port: string): boolean {
  return port === '' || (/^[0-9]{1,5}$/.test(port) && Number(port) <= 65535)
}
