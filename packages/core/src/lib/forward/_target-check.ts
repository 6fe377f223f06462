import { WsgiProxyError } from '../errors.ts'
import { hostAddress, isLocalhostName, LOCALHOST_ADDRESSES, parseAddress } from './_allow-list.ts'
import type { CompiledAllowList } from './_allow-list.ts'

/** Resolves a host name to the addresses to check, then connect to (`exactProxy`'s `resolve`). */
export type ResolveHost = (hostname: string) => readonly string[] | Promise<readonly string[]>

/** What {@link checkTarget} needs from the options. */
export interface TargetGuard {
  /** The compiled `allow` list. */
  allow: CompiledAllowList
  /** `exactProxy`'s `resolve`, if any. */
  resolve: ResolveHost | undefined
  /** `exactProxy`'s `isSelf`, if any. */
  isSelf: ((address: string, port: number) => boolean) | undefined
}

/** The address to connect to (a name was resolved), `undefined` for the URL as is, or why not. */
export type Checked = string | undefined | WsgiProxyError

/**
 * Checks the target the URL names against the loop guard and the allow list.
 *
 * @param url - the upstream URL
 * @param guard - allow list, resolver and self check
 * @returns the result; a promise only when a name is looked up
 */
export function checkTarget(url: URL, guard: TargetGuard): Checked | Promise<Checked> {
  const { allow, resolve, isSelf } = guard
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80))
  const hostname = url.hostname
  const literal = hostAddress(hostname)
  if (literal !== undefined) {
    const address = literal.toString()
    if (isSelf?.(address, port) === true) return loop(url, address)
    return allow.allowsAddress(literal, port) ? undefined : notAllowed(url, port, address, false)
  }
  const named = allow.namesHost(hostname, port)
  if (isLocalhostName(hostname)) {
    return checkAddresses(url, port, guard, named, LOCALHOST_ADDRESSES, false)
  }
  if (resolve !== undefined && (named ? isSelf !== undefined : allow.hasAddressRules)) {
    return resolveAndCheck(url, port, guard, named, resolve)
  }
  if (named) return undefined
  // Not looked up: only `public` vouches for a name, as the name of a public host.
  return allow.publicPort(port) ? undefined : notAllowed(url, port, undefined, false)
}

async function resolveAndCheck(
  url: URL,
  port: number,
  guard: TargetGuard,
  named: boolean,
  resolve: ResolveHost,
): Promise<Checked> {
  const hostname = url.hostname
  let answer: readonly string[]
  try {
    // As the transport would resolve it (with the root dot, if any: no search domains then).
    answer = await resolve(hostname)
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    return new WsgiProxyError('UPSTREAM_UNREACHABLE', `cannot resolve ${hostname}: ${message}`, {
      cause: error,
    })
  }
  if (!Array.isArray(answer) || answer.length === 0) {
    return new WsgiProxyError('UPSTREAM_UNREACHABLE', `${hostname} resolves to no address`)
  }
  const addresses = answer.map((text) => parseAddress(text))
  return checkAddresses(url, port, guard, named, addresses, !named)
}

/** Checks the addresses a name stands for; `connect`: answer the first, to connect to it. */
function checkAddresses(
  url: URL,
  port: number,
  guard: TargetGuard,
  named: boolean,
  addresses: readonly (ReturnType<typeof parseAddress> | undefined)[],
  connect: boolean,
): Checked {
  const { allow, isSelf } = guard
  if (isSelf !== undefined) {
    for (const address of addresses) {
      if (address !== undefined && isSelf(address.toString(), port)) {
        return loop(url, address.toString())
      }
    }
  }
  if (named) return undefined
  for (const address of addresses) {
    if (address === undefined || !allow.allowsAddress(address, port)) {
      return notAllowed(url, port, address?.toString() ?? 'something not an address', true)
    }
  }
  return connect ? addresses[0]?.toString() : undefined
}

function loop(url: URL, address: string): WsgiProxyError {
  const same = url.hostname === address || url.hostname === `[${address}]`
  return new WsgiProxyError(
    'LOOP_DETECTED',
    `the target ${url.host}${same ? '' : ` (${address})`} is this proxy itself: the request would come back`,
  )
}

// The message names the target for the operator's log (never the client's response body).
function notAllowed(
  url: URL,
  port: number,
  address: string | undefined,
  resolved: boolean,
): WsgiProxyError {
  const host = resolved || address === undefined ? withoutRootDot(url.hostname) : address
  const entry = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
  const via = resolved ? `, which resolves to ${address},` : ''
  return new WsgiProxyError(
    'TARGET_NOT_ALLOWED',
    `the target ${url.host}${via} is not in the exactProxy allow list (add ${JSON.stringify(entry)} to allow to permit it)`,
  )
}

function withoutRootDot(hostname: string): string {
  return hostname.endsWith('.') ? hostname.slice(0, -1) : hostname
}
