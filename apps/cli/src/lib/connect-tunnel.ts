import type { IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WsgiProxyError } from '@wsgiproxy/core'
import type { DestinationGuard } from './destination-guard.ts'
import { refusalProblem } from './destination-guard.ts'
import type { Logger } from './log.ts'
import type { Problem } from './problem.ts'
import { toRawProblem } from './problem.ts'
import type { ProxyAuth } from './proxy-auth.ts'
import { logAuthFailure, PROXY_AUTH_REQUIRED, PROXY_AUTHENTICATE } from './proxy-auth.ts'

// CONNECT tunnels (RFC 9110 §9.3.6) for `wsgiproxy forward`: how clients reach https:// (and any
// TLS) through an HTTP proxy. The destination is checked like a plain request's, then a TCP
// connection is opened to the address checked, the client gets `200 Connection Established`,
// and bytes are spliced both ways until both sides have finished.

/** Options of {@link createConnectListener}. */
export interface ConnectListenerOptions {
  /** Where tunnels may go. */
  guard: DestinationGuard
  /**
   * Destination ports a tunnel may go to; any other gets 403 before a lookup. Default `[443]`:
   * a tunnel carries any protocol, so a proxy restricts it to known ports
   * ([RFC 9110 §9.3.6](https://www.rfc-editor.org/rfc/rfc9110#section-9.3.6); squid's
   * `SSL_ports` and tinyproxy's `ConnectPort` default to 443 too), or it relays mail and
   * anything else.
   */
  ports?: readonly number[]
  /** Credentials to require (407 without them). Default: none. */
  auth?: ProxyAuth | undefined
  /**
   * A tunnel with no bytes either way for this long is closed, in milliseconds; `0` keeps idle
   * tunnels open. Default `300_000` (5 minutes).
   */
  idleTimeout?: number
  /**
   * Tunnels open at once (those being checked or connecting included); one more gets 503 with
   * `Retry-After`. Default `1_000`.
   */
  maxTunnels?: number
  /** How long connecting to the destination may take before the client gets 504. Default `10_000`. */
  connectTimeout?: number
  /** Where the request line (and the reason of a refusal) is logged. */
  logger: Logger
}

/** The `connect` event listener of a server, with its tunnels. */
export interface ConnectListener {
  /** For `server.on('connect', ...)`. */
  listener: (req: IncomingMessage, socket: Duplex, head: Buffer) => void
  /** Tunnels open now, those being checked or connecting included. */
  open(): number
  /**
   * Takes no more tunnels (503), and cuts those still open after `graceMs`.
   *
   * @param graceMs - how long open tunnels may go on
   */
  close(graceMs: number): void
}

interface Settings {
  guard: DestinationGuard
  ports: ReadonlySet<number>
  auth: ProxyAuth | undefined
  idleTimeout: number
  maxTunnels: number
  connectTimeout: number
  logger: Logger
  /** Client sockets of tunnels open, from the limit check to their close. */
  tunnels: Set<Duplex>
  closing: boolean
}

// How long a refused client may keep its connection open after the answer.
const LINGER_MS = 5_000
const ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n'
// RFC 9110 §9.3.6: authority-form, host and port (IPv6 in brackets).
const AUTHORITY = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:/?#@[\]\\]+)):([0-9]{1,5})$/

/**
 * Creates the CONNECT listener of the forward proxy. A request is checked in this order, each
 * failure answered with a problem+json body and `Connection: close`, and no connection made:
 * credentials (407 with `Proxy-Authenticate`), the authority-form target (400), the tunnel
 * limit (503), the port list (403), the guard (403, 508 for this proxy itself, 502 for a name
 * that does not resolve). Connecting tries each address checked in turn (502 refused, 504 after
 * `connectTimeout`). The listener never throws.
 *
 * @param options - guard, ports, credentials, idle timeout, limit, logger
 * @returns the listener and its tunnels
 * @example
 * const tunnels = createConnectListener({ guard, logger })
 * served.server.on('connect', tunnels.listener)
 */
export function createConnectListener(options: ConnectListenerOptions): ConnectListener {
  const settings: Settings = {
    guard: options.guard,
    ports: new Set(options.ports ?? [443]),
    auth: options.auth,
    idleTimeout: options.idleTimeout ?? 300_000,
    maxTunnels: options.maxTunnels ?? 1_000,
    connectTimeout: options.connectTimeout ?? 10_000,
    logger: options.logger,
    tunnels: new Set(),
    closing: false,
  }
  return {
    listener: (req, socket, head) => {
      // Neither side may crash the process with an unhandled 'error'.
      socket.on('error', () => socket.destroy())
      handle(req, socket, head, settings).catch((error: unknown) => {
        settings.logger.error(
          `CONNECT failed: ${error instanceof Error ? error.message : String(error)}`,
        )
        socket.destroy()
      })
    },
    open: () => settings.tunnels.size,
    close: (graceMs) => {
      settings.closing = true
      const cut = setTimeout(() => {
        for (const socket of settings.tunnels) socket.destroy()
      }, graceMs)
      cut.unref()
    },
  }
}

async function handle(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  settings: Settings,
): Promise<void> {
  const started = performance.now()
  const target = req.url ?? ''
  const { logger } = settings
  const log = (status: number, upstream = '-'): void => {
    logger.request({
      method: 'CONNECT',
      path: target,
      status,
      ms: Math.round(performance.now() - started),
      upstream,
    })
  }
  const refuse = (problem: Problem, headers: ReadonlyArray<[string, string]> = []): void => {
    answer(socket, problem, headers)
    log(problem.status)
  }
  const fail = (error: WsgiProxyError): void => {
    logError(logger, error)
    refuse(refusalProblem(error))
  }

  if (settings.auth !== undefined) {
    const result = await settings.auth.check(proxyAuthorization(req.rawHeaders))
    if (!result.ok) {
      logAuthFailure(logger, result)
      refuse(PROXY_AUTH_REQUIRED, [PROXY_AUTHENTICATE])
      return
    }
  }
  // Gone while its credentials were checked: nothing to answer, no slot to take.
  if (socket.destroyed) return
  const match = AUTHORITY.exec(target)
  const port = Number(match?.[3])
  if (match === null || !(port >= 1 && port <= 65535)) {
    fail(new WsgiProxyError('BAD_REQUEST', 'the CONNECT target must be host:port'))
    return
  }
  const host = match[1] ?? match[2] ?? ''
  if (settings.closing || settings.tunnels.size >= settings.maxTunnels) {
    refuse(
      { status: 503, code: 'UPGRADE_LIMIT', detail: 'too many tunnels are open; try again later' },
      [['retry-after', '1']],
    )
    return
  }
  settings.tunnels.add(socket)
  socket.once('close', () => settings.tunnels.delete(socket))
  if (!settings.ports.has(port)) {
    fail(
      new WsgiProxyError(
        'TARGET_NOT_ALLOWED',
        `CONNECT to port ${port} is not allowed (add --connect-port ${port} to permit it)`,
      ),
    )
    return
  }
  const checked = await settings.guard.check(host, port)
  if (socket.destroyed) return
  if (checked instanceof WsgiProxyError) {
    fail(checked)
    return
  }
  const upstream = await connectFirst(checked.addresses, port, socket, settings.connectTimeout)
  if (upstream instanceof WsgiProxyError) {
    if (!socket.destroyed) fail(upstream)
    return
  }
  if (socket.destroyed) {
    upstream.destroy()
    return
  }
  const address = upstream.remoteAddress ?? checked.addresses[0] ?? ''
  socket.write(ESTABLISHED)
  log(200, `tcp://${address.includes(':') ? `[${address}]` : address}:${port}`)
  splice(socket, upstream, head, settings.idleTimeout)
}

// The one Proxy-Authorization line; none, or several, is no credentials.
function proxyAuthorization(rawHeaders: readonly string[]): string | undefined {
  let found: string | undefined
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() !== 'proxy-authorization') continue
    if (found !== undefined) return undefined
    found = rawHeaders[i + 1]
  }
  return found
}

/**
 * Connects to the first of the addresses that answers, within `timeout` in all; gives up when
 * the client goes away.
 */
function connectFirst(
  addresses: readonly string[],
  port: number,
  client: Duplex,
  timeout: number,
): Promise<Socket | WsgiProxyError> {
  return new Promise((resolve) => {
    let attempt: Socket | undefined
    let index = 0
    let lastError = 'no address'
    let done = false
    const finish = (result: Socket | WsgiProxyError): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      client.off('close', onClientClose)
      resolve(result)
    }
    const onClientClose = (): void => {
      attempt?.destroy()
      finish(new WsgiProxyError('CLIENT_ABORTED', 'the client closed the connection'))
    }
    const timer = setTimeout(() => {
      attempt?.destroy()
      finish(
        new WsgiProxyError(
          'UPSTREAM_CONNECT_TIMEOUT',
          `connecting to ${addresses.join(', ')} port ${port} took longer than ${timeout} ms`,
        ),
      )
    }, timeout)
    const next = (): void => {
      const address = addresses[index++]
      if (address === undefined) {
        finish(
          new WsgiProxyError(
            'UPSTREAM_UNREACHABLE',
            `cannot connect to ${addresses.join(', ')} port ${port}: ${lastError}`,
          ),
        )
        return
      }
      // An address, never a name: the connection goes where the guard looked.
      const socket = connect({ host: address, port, allowHalfOpen: true, noDelay: true })
      attempt = socket
      const onError = (error: NodeJS.ErrnoException): void => {
        socket.destroy()
        lastError = error.code ?? error.message
        if (!done) next()
      }
      socket.once('error', onError)
      socket.once('connect', () => {
        socket.off('error', onError)
        socket.on('error', () => socket.destroy())
        if (done) socket.destroy()
        else finish(socket)
      })
    }
    client.once('close', onClientClose)
    next()
  })
}

// Joins the two connections. Each direction ends on its own (a FIN is passed on, the other
// direction goes on: half-close); when either connection is gone for good (both directions
// done, an error, a reset) the other is closed too.
function splice(client: Duplex, upstream: Socket, head: Buffer, idleTimeout: number): void {
  upstream.on('error', () => upstream.destroy())
  upstream.once('close', () => client.destroy())
  client.once('close', () => upstream.destroy())
  if (head.byteLength > 0) upstream.write(head)
  client.pipe(upstream)
  upstream.pipe(client)
  const clientSocket = client as Partial<Socket>
  if (idleTimeout > 0) {
    const idle = (): void => {
      upstream.destroy()
      client.destroy()
    }
    // A socket's timeout counts its reads and writes: a byte either way resets both.
    upstream.setTimeout(idleTimeout, idle)
    clientSocket.setTimeout?.(idleTimeout, idle)
  } else {
    clientSocket.setTimeout?.(0)
  }
}

// Writes the answer and closes: the client may read it, then has a moment to hang up itself.
function answer(socket: Duplex, problem: Problem, headers: ReadonlyArray<[string, string]>): void {
  if (socket.destroyed) return
  socket.end(toRawProblem(problem, headers))
  // What the client sent after its request is read and dropped, so that its FIN is seen.
  socket.resume()
  const linger = setTimeout(() => socket.destroy(), LINGER_MS)
  linger.unref()
  socket.once('close', () => clearTimeout(linger))
}

function logError(logger: Logger, error: WsgiProxyError): void {
  if (error.code === 'CLIENT_ABORTED' || error.code === 'BAD_REQUEST') return
  logger.error(`${error.code}: ${error.message}`)
}
