// The upstream's side of an Upgrade request: the request sent for the app's upgrade target, its
// connect and headers timers, and the answer: a 101 joins the two connections into a tunnel,
// anything else is passed on as an ordinary answer and both connections are closed after it.

import { request as httpRequest, STATUS_CODES } from 'node:http'
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { RequestOptions as HttpsRequestOptions } from 'node:https'
import { isIP } from 'node:net'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { errorResponse, WsgiProxyError } from '@wsgiproxy/core'
import type { UpgradeTarget } from '@wsgiproxy/core'
import { noop } from './_node-util.ts'
import type { EarlyBytes } from './_upgrade-client.ts'
import {
  closeAfterAnswer,
  HOP_BY_HOP,
  protocolName,
  upgradeTokens,
  writeAnswer,
} from './_upgrade-client.ts'

/** The timers and error exposure of one forwarded upgrade. */
export interface TunnelSettings {
  connectTimeout: number
  headersTimeout: number
  idleTimeout: number
  exposeErrors: boolean
  /** Told how the upstream answered: its status, or why there was no answer (for tracing). */
  onAnswer?: ((answer: number | WsgiProxyError) => void) | undefined
}

/**
 * Sends the upgrade request upstream and waits for its answer: a `101` naming one of the
 * forwarded protocols joins the connections, another answer is passed on, and a failure before
 * any answer (connect error, a timer) is answered with a problem. Both connections are closed
 * when not joined.
 *
 * @param socket - the client's socket
 * @param early - what the client sent after its request, held until the switch
 * @param target - the app's upgrade target
 * @param forwarded - the protocols offered upstream
 * @param settings - timers and error exposure
 */
export function tunnel(
  socket: Duplex,
  early: EarlyBytes,
  target: UpgradeTarget,
  forwarded: readonly string[],
  settings: TunnelSettings,
): void {
  const opened = openUpstream(socket, target, settings)
  if (opened === undefined) return
  const upstream: ClientRequest = opened
  const secure = target.url.protocol === 'https:'
  let settled = false

  const connectTimer = setTimeout(() => {
    answer(
      new WsgiProxyError(
        'UPSTREAM_CONNECT_TIMEOUT',
        `connecting upstream took longer than ${settings.connectTimeout} ms`,
      ),
    )
  }, settings.connectTimeout)
  const headersTimer = setTimeout(() => {
    answer(
      new WsgiProxyError(
        'UPSTREAM_HEADERS_TIMEOUT',
        `the upstream did not answer the upgrade within ${settings.headersTimeout} ms`,
      ),
    )
  }, settings.headersTimeout)
  const settle = (): boolean => {
    if (settled) return false
    settled = true
    clearTimeout(connectTimer)
    clearTimeout(headersTimer)
    return true
  }
  // Every way of failing before the upstream answered: a problem response, then both closed.
  function answer(error: WsgiProxyError): void {
    if (!settle()) return
    target.onResult?.(false)
    settings.onAnswer?.(error)
    upstream.destroy()
    void writeAnswer(socket, errorResponse(error, settings.exposeErrors))
  }

  socket.once('close', () => {
    if (!settle()) return
    settings.onAnswer?.(new WsgiProxyError('CLIENT_ABORTED', 'the client closed the connection'))
    upstream.destroy()
  })
  upstream.once('socket', (connection: Socket) => {
    connection.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer))
  })
  upstream.on('error', (error) => {
    if (settled) socket.destroy()
    else
      answer(
        new WsgiProxyError(
          'UPSTREAM_UNREACHABLE',
          `the upgrade could not be forwarded: ${error.message}`,
        ),
      )
  })
  upstream.once('upgrade', (res: IncomingMessage, upSocket: Socket, upHead: Buffer) => {
    upSocket.on('error', noop)
    if (!settle()) {
      upSocket.destroy()
      return
    }
    target.onResult?.(true)
    settings.onAnswer?.(res.statusCode ?? 101)
    join(socket, early, forwarded, settings, res, upSocket, upHead)
  })
  upstream.once('response', (res: IncomingMessage) => {
    if (!settle()) {
      upstream.destroy()
      return
    }
    target.onResult?.((res.statusCode ?? 0) < 500)
    settings.onAnswer?.(res.statusCode ?? 0)
    passOrdinaryAnswer(socket, early, upstream, target, settings, res)
  })
  upstream.end()
}

// The upstream request, or `undefined` (with the client answered) when Node refused a header
// name or value the app gave.
function openUpstream(
  socket: Duplex,
  target: UpgradeTarget,
  settings: TunnelSettings,
): ClientRequest | undefined {
  try {
    return (target.url.protocol === 'https:' ? httpsRequest : httpRequest)(requestOptions(target))
  } catch (error) {
    const refused = new WsgiProxyError(
      'INVALID_UPSTREAM',
      'the upgrade request could not be sent',
      { cause: error },
    )
    settings.onAnswer?.(refused)
    void writeAnswer(socket, errorResponse(refused, settings.exposeErrors))
    return undefined
  }
}

function requestOptions(target: UpgradeTarget): RequestOptions & HttpsRequestOptions {
  const { url, method } = target
  const headers: string[] = []
  for (const [name, value] of target.headers) headers.push(name, value)
  const secure = url.protocol === 'https:'
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  return {
    host,
    port: url.port === '' ? (secure ? 443 : 80) : Number(url.port),
    method,
    path: `${url.pathname}${url.search}`,
    headers,
    // The target's headers carry `host` (the signed authority).
    setHost: false,
    // A connection of its own: it becomes the tunnel or is closed after the answer.
    agent: false,
    ...(secure
      ? { ALPNProtocols: ['http/1.1'], ...(isIP(host) === 0 ? { servername: host } : {}) }
      : {}),
  }
}

// The upstream switched protocols: only a switch to one protocol the client asked for joins the
// two connections, with what the client sent meanwhile passed on first.
function join(
  socket: Duplex,
  early: EarlyBytes,
  forwarded: readonly string[],
  settings: TunnelSettings,
  res: IncomingMessage,
  upSocket: Socket,
  upHead: Buffer,
): void {
  const switched = upgradeTokens(res.rawHeaders).map(protocolName)
  if (switched.length !== 1 || !forwarded.some((token) => protocolName(token) === switched[0])) {
    upSocket.destroy()
    void writeAnswer(
      socket,
      errorResponse(
        new WsgiProxyError(
          'UPSTREAM_INVALID_RESPONSE',
          'the upstream switched to a protocol the client did not ask for',
        ),
        settings.exposeErrors,
      ),
    )
    return
  }
  if (socket.destroyed) {
    upSocket.destroy()
    return
  }
  let lines = 'HTTP/1.1 101 Switching Protocols\r\n'
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    lines += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
  }
  socket.write(`${lines}\r\n`)
  if (upHead.byteLength > 0) socket.write(upHead)
  for (const chunk of early.take()) upSocket.write(chunk)
  socket.pipe(upSocket)
  upSocket.pipe(socket)
  upSocket.once('close', () => socket.destroy())
  socket.once('close', () => upSocket.destroy())
  if (settings.idleTimeout > 0) {
    const idle = (): void => {
      upSocket.destroy()
      socket.destroy()
    }
    // A socket's timeout counts reads and writes: either side's silence in both directions.
    upSocket.setTimeout(settings.idleTimeout, idle)
    ;(socket as Partial<Socket>).setTimeout?.(settings.idleTimeout, idle)
  }
}

// Not switched: an ordinary answer. Nothing the client sent after its request goes upstream, and
// neither connection is used again.
function passOrdinaryAnswer(
  socket: Duplex,
  early: EarlyBytes,
  upstream: ClientRequest,
  target: UpgradeTarget,
  settings: TunnelSettings,
  res: IncomingMessage,
): void {
  early.take()
  res.on('error', () => socket.destroy())
  if ((res.statusCode ?? 0) < 200) {
    // A 1xx that is not a real switch (a 101 without `Connection: upgrade`): never passed on.
    res.resume()
    void writeAnswer(
      socket,
      errorResponse(
        new WsgiProxyError(
          'UPSTREAM_INVALID_RESPONSE',
          'the upstream answered the upgrade with an interim status',
        ),
        settings.exposeErrors,
      ),
    ).finally(() => upstream.destroy())
    return
  }
  // An answer that streams on or stalls must not hold its connections (and a tunnel slot)
  // forever: the idle timeout applies to it, or the headers timeout when idle ones are kept.
  const idle = settings.idleTimeout > 0 ? settings.idleTimeout : settings.headersTimeout
  const cut = (): void => {
    upstream.destroy()
    socket.destroy()
  }
  ;(socket as Partial<Socket>).setTimeout?.(idle, cut)
  res.socket.setTimeout(idle, cut)
  passAnswer(socket, res, target.method, target.answerHeaders, () => upstream.destroy())
}

// Writes an upstream's ordinary answer to an upgrade request, then closes the client connection.
function passAnswer(
  socket: Duplex,
  res: IncomingMessage,
  method: string,
  mapHeaders: UpgradeTarget['answerHeaders'],
  done: () => void,
): void {
  const status = res.statusCode ?? 502
  const pairs: Array<[string, string]> = []
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    pairs.push([res.rawHeaders[i] ?? '', res.rawHeaders[i + 1] ?? ''])
  }
  const raw = (mapHeaders === undefined ? pairs : mapHeaders(pairs)).flat()
  const nominated = new Set<string>()
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]?.toLowerCase() === 'connection') {
      for (const name of (raw[i + 1] ?? '').split(',')) nominated.add(name.trim().toLowerCase())
    }
  }
  const chunked = res.headers['transfer-encoding'] !== undefined
  let lines = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? ''
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || nominated.has(lower)) continue
    // Without its chunked framing the body ends when the connection closes.
    if (chunked && lower === 'content-length') continue
    lines += `${name}: ${raw[i + 1] ?? ''}\r\n`
  }
  socket.write(`${lines}connection: close\r\n\r\n`)
  const bodiless = method === 'HEAD' || status === 204 || status === 304
  const finish = (): void => {
    done()
    closeAfterAnswer(socket)
  }
  if (bodiless) {
    res.resume()
    res.once('end', finish)
    return
  }
  res.pipe(socket, { end: false })
  res.once('end', finish)
  res.once('aborted', () => socket.destroy())
  socket.once('close', done)
}
