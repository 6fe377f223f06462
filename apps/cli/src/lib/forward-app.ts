import { exactProxy, WsgiProxyError } from '@wsgiproxy/core'
import type { EnvironApp } from '@wsgiproxy/core'
import { createSelfCheck } from '@wsgiproxy/node'
import type { Resources } from './apps.ts'
import { logProxyError } from './apps.ts'
import type { DestinationGuard } from './destination-guard.ts'
import { refusalProblem } from './destination-guard.ts'
import { usageError } from './errors.ts'
import { toProblemResponse } from './problem.ts'
import type { ProxyAuth } from './proxy-auth.ts'
import { logAuthFailure, PROXY_AUTH_REQUIRED, PROXY_AUTHENTICATE } from './proxy-auth.ts'

/** Options of {@link createForwardApp}. */
export interface ForwardAppOptions {
  /** Where requests may go (the same guard as CONNECT tunnels). */
  guard: DestinationGuard
  /** Credentials to require (407 without them). Default: none. */
  auth?: ProxyAuth | undefined
}

// The exact proxy below may reach every address: the guard has checked the one it is given.
// A host name reaching it would be refused (no resolver, no `public` entry to vouch for it).
const EVERY_ADDRESS: readonly string[] = ['0.0.0.0/0', '::/0']

/**
 * The plain (absolute-form `http://`) side of `wsgiproxy forward`: credentials first (407 with
 * `Proxy-Authenticate`), then the destination guard (403, 508, 502 for a name that does not
 * resolve), then the exact proxy, sent to the address the guard checked with the client's `Host`
 * unchanged. `Proxy-Authorization` is never forwarded, and the exact proxy's `Via` loop guard
 * still applies.
 *
 * @param resources - transport, logger and the server's own address
 * @param options - the guard and the credentials
 * @returns the app
 */
export function createForwardApp(resources: Resources, options: ForwardAppOptions): EnvironApp {
  const { logger } = resources
  const { guard, auth } = options
  const onError = logProxyError(logger)
  let exact: EnvironApp
  try {
    exact = exactProxy({
      transport: resources.transport,
      allow: EVERY_ADDRESS,
      isSelf: createSelfCheck(() => resources.self),
      onError,
    })
  } catch (error) {
    throw error instanceof WsgiProxyError ? usageError(error.message) : error
  }
  return async (environ) => {
    if (auth !== undefined) {
      const result = await auth.check(environ.HTTP_PROXY_AUTHORIZATION)
      if (!result.ok) {
        logAuthFailure(logger, result)
        return toProblemResponse(PROXY_AUTH_REQUIRED, [PROXY_AUTHENTICATE])
      }
    }
    // Hop-by-hop (RFC 9110 §11.7.2): the exact proxy drops it too; it never leaves this proxy.
    const { HTTP_PROXY_AUTHORIZATION: _credentials, ...request } = environ
    if (environ.REQUEST_METHOD === 'CONNECT') {
      // HTTP/1.1 CONNECT never reaches the app (the server's `connect` event takes it).
      return toProblemResponse({
        status: 501,
        code: 'METHOD_NOT_SUPPORTED',
        detail: 'CONNECT is served over HTTP/1.1 only',
      })
    }
    const checked = await guard.check(environ.SERVER_NAME, Number(environ.SERVER_PORT))
    if (checked instanceof WsgiProxyError) {
      onError(checked)
      return toProblemResponse(refusalProblem(checked))
    }
    return exact({ ...request, SERVER_NAME: checked.addresses[0] ?? '' })
  }
}
