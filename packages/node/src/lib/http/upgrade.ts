import { request as httpRequest, ServerResponse, STATUS_CODES } from 'node:http'
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { RequestOptions as HttpsRequestOptions } from 'node:https'
import { isIP } from 'node:net'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import {
  environFromParts,
  errorResponse,
  isAppResponse,
  problemResponse,
  WsgiProxyError,
} from '@wsgiproxy/core'
import type {
  AppResponse,
  EnvironApp,
  ToEnvironOptions,
  UpgradableApp,
  UpgradeTarget,
} from '@wsgiproxy/core'
import { toNodeListener } from './node-listener.ts'
import { headerLines, noop, release } from './_node-util.ts'

/** Options of {@link toNodeUpgradeListener}. */
export interface NodeUpgradeListenerOptions {
  /** The mount prefix that becomes `SCRIPT_NAME`. Default `''`. */
  scriptName?: string
  /** Header lines accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
  /** Show error messages in problem bodies (development only). Default `false`. */
  exposeErrors?: boolean
  /**
   * The `Upgrade` protocols forwarded, compared without regard to case (`websocket`, `h2c`, ...).
   * A request offering none of them is served as an ordinary request with its `Upgrade` ignored
   * (RFC 9110 §7.8 lets a server ignore it) and its connection closed after the response.
   * Default `['websocket']`: `h2c` and others are only tunnelled when named.
   */
  protocols?: readonly string[]
  /** How long connecting upstream may take before the client gets 504, in milliseconds. Default `10_000`. */
  connectTimeout?: number
  /**
   * How long the upstream may take to answer the upgrade (connecting included) before the client
   * gets 504, in milliseconds, when the app's upgrade target names no timeout of its own
   * (`createProxyApp` passes its `timeouts.headers`). Default `60_000`.
   */
  headersTimeout?: number
  /**
   * An upgraded tunnel with no bytes in either direction for this long is closed, in
   * milliseconds; `0` keeps idle tunnels open. Default `300_000` (5 minutes).
   */
  idleTimeout?: number
  /**
   * Upgraded tunnels open at once (those waiting for the upstream's answer included); one more
   * gets 503 with `Retry-After`. Default `1_000`.
   */
  maxConnections?: number
  /**
   * Serves the requests whose `Upgrade` is not forwarded, as ordinary requests. Default
   * `toNodeListener(app)` with this listener's `scriptName`, `maxHeaders` and `exposeErrors`.
   */
  requestListener?: (req: IncomingMessage, res: ServerResponse) => void
}

/** The `upgrade` event listener of a `node:http` server. */
export type NodeUpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void

// An answer given instead of the upgrade is small (a problem document): bound what is read of it.
const MAX_ANSWER_BODY = 64 * 1024
// Bytes a client may send after its upgrade request and before the upstream's 101.
const MAX_EARLY_BYTES = 64 * 1024
// After an answer with `Connection: close`, how long the client may take to close its side while
// what it still sends is discarded (so the kernel does not reset the connection under the answer).
const LINGER_MS = 2_000
const MAX_TIMER_MS = 2_147_483_647

// RFC 9110 §7.6.1: hop-by-hop fields, never passed on. The listener sets its own framing.
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

// RFC 9110 §5.6.2: a token.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * Forwards WebSocket (and other named) `Upgrade` requests through an app with `prepareUpgrade`
 * (the proxy app): the environ is built like a normal request's, the app gives the upstream
 * request (protocol headers and signature included), the listener sends it upstream and waits for
 * the answer. The listener never throws.
 *
 * - Only a `101 Switching Protocols` naming the requested protocol joins the two connections.
 *   Any other answer is passed on as an ordinary response with `Connection: close`, and both
 *   connections are closed after it: nothing the client sends after its upgrade request reaches
 *   the upstream unless the upstream switched protocols (no request smuggling past the front).
 * - A request whose `Upgrade` names no forwarded protocol (`protocols`) is an ordinary request.
 * - An answer instead of a target (a 400 or 401 problem) is written with `Connection: close`.
 *   An app without `prepareUpgrade` answers 501.
 * - Connecting upstream fails with 502, or 504 after `connectTimeout`; an upstream that does not
 *   answer within the headers timeout gives 504.
 * - A tunnel idle for `idleTimeout` is closed; past `maxConnections` tunnels the client gets 503.
 * - The environ's `wsgiproxy.signal` aborts when the client connection closes, also after the
 *   connections were joined, so an app can tell when a forwarded connection ends.
 *
 * @param app - the app; `createProxyApp` returns one with `prepareUpgrade`
 * @param options - forwarded protocols, timeouts, the tunnel cap, mount prefix, header cap
 * @returns a listener for the server's `upgrade` event
 * @throws WsgiProxyError `INVALID_OPTIONS` for a bad option
 * @example
 * const server = createServer(toNodeListener(app))
 * server.on('upgrade', toNodeUpgradeListener(app))
 */
export function toNodeUpgradeListener(
  app: EnvironApp | UpgradableApp,
  options: NodeUpgradeListenerOptions = {},
): NodeUpgradeListener {
  const {
    connectTimeout = 10_000,
    headersTimeout = 60_000,
    idleTimeout = 300_000,
    maxConnections = 1_000,
    exposeErrors = false,
  } = options
  checkWholeNumber('connectTimeout', connectTimeout, 1, MAX_TIMER_MS)
  checkWholeNumber('headersTimeout', headersTimeout, 1, MAX_TIMER_MS)
  checkWholeNumber('idleTimeout', idleTimeout, 0, MAX_TIMER_MS)
  checkWholeNumber('maxConnections', maxConnections, 1, Number.MAX_SAFE_INTEGER)
  const protocols = checkProtocols(options.protocols ?? ['websocket'])
  const environOptions: ToEnvironOptions = Object.freeze({
    ...(options.scriptName === undefined ? {} : { scriptName: options.scriptName }),
    ...(options.maxHeaders === undefined ? {} : { maxHeaders: options.maxHeaders }),
  })
  const requestListener =
    options.requestListener ??
    toNodeListener(app, {
      ...environOptions,
      ...(options.exposeErrors === undefined ? {} : { exposeErrors: options.exposeErrors }),
    })
  const prepareUpgrade = (app as Partial<UpgradableApp>).prepareUpgrade
  let open = 0

  async function handle(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const offered = upgradeTokens(req.rawHeaders)
    const forwarded = offered.filter((token) => protocols.has(protocolName(token)))
    if (forwarded.length === 0) {
      serveOrdinary(req, socket, requestListener)
      return
    }
    if (typeof prepareUpgrade !== 'function') {
      await writeAnswer(
        socket,
        problemResponse(
          501,
          'this server does not forward Upgrade requests',
          'METHOD_NOT_SUPPORTED',
        ),
      )
      return
    }
    if (open >= maxConnections) {
      const answer = problemResponse(
        503,
        `too many upgraded connections are open (at most ${maxConnections}); try again later`,
        'UPGRADE_LIMIT',
      )
      await writeAnswer(socket, { ...answer, headers: [...answer.headers, ['retry-after', '1']] })
      return
    }
    open++
    socket.once('close', () => open--)
    const early = earlyBytes(socket, head)
    const controller = new AbortController()
    socket.once('close', () => {
      controller.abort(new WsgiProxyError('CLIENT_ABORTED', 'the client closed the connection'))
    })
    let prepared: UpgradeTarget | AppResponse
    try {
      const environ = environFromParts(
        {
          method: req.method ?? 'GET',
          target: req.url ?? '/',
          // Only the forwarded protocols are offered upstream.
          headers: withUpgrade(headerLines(req.rawHeaders), forwarded.join(', ')),
          scheme: (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http',
          input: null,
          signal: controller.signal,
          ...(req.socket.remoteAddress === undefined
            ? {}
            : { remoteAddr: req.socket.remoteAddress }),
        },
        environOptions,
      )
      prepared = await prepareUpgrade.call(app, environ)
    } catch (error) {
      prepared = errorResponse(error, exposeErrors)
    }
    // The abort listener stays: the signal also tells the app when a forwarded connection ends
    // (the spawner counts an upgraded connection in flight until then).
    if (socket.destroyed) {
      if (isAppResponse(prepared)) release(prepared.body)
      return
    }
    if (isAppResponse(prepared)) {
      await writeAnswer(socket, prepared)
      return
    }
    tunnel(socket, early, prepared, forwarded, {
      connectTimeout,
      headersTimeout: prepared.headersTimeout ?? headersTimeout,
      idleTimeout,
      exposeErrors,
    })
  }

  return (req, socket, head) => {
    // Neither side may crash the process with an unhandled 'error'.
    socket.on('error', noop)
    req.on('error', noop)
    handle(req, socket, head).catch(() => socket.destroy())
  }
}

interface TunnelSettings {
  connectTimeout: number
  headersTimeout: number
  idleTimeout: number
  exposeErrors: boolean
}

/** What the client sent after its upgrade request, held until the upstream switches protocols. */
interface EarlyBytes {
  /** Stops holding and returns what was held. */
  take(): Buffer[]
}

// Reads (so that a client that leaves is noticed) and holds what the client sends before the
// upstream answers; too much closes the connection.
function earlyBytes(socket: Duplex, head: Buffer): EarlyBytes {
  const held: Buffer[] = head.byteLength > 0 ? [head] : []
  let size = head.byteLength
  const onData = (chunk: Buffer): void => {
    size += chunk.byteLength
    if (size > MAX_EARLY_BYTES) socket.destroy()
    else held.push(chunk)
  }
  // A client that ends its side before the answer has left.
  const onEnd = (): void => void socket.destroy()
  socket.on('data', onData)
  socket.once('end', onEnd)
  return {
    take() {
      socket.off('data', onData)
      socket.off('end', onEnd)
      return held.splice(0)
    },
  }
}

function tunnel(
  socket: Duplex,
  early: EarlyBytes,
  target: UpgradeTarget,
  forwarded: readonly string[],
  settings: TunnelSettings,
): void {
  const { url, method } = target
  const headers: string[] = []
  for (const [name, value] of target.headers) headers.push(name, value)
  const secure = url.protocol === 'https:'
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  const options: RequestOptions & HttpsRequestOptions = {
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
  const fail = (code: 'UPSTREAM_UNREACHABLE' | 'UPSTREAM_INVALID_RESPONSE', message: string) =>
    void answer(new WsgiProxyError(code, message))
  let settled = false
  let upstream: ClientRequest
  try {
    upstream = (secure ? httpsRequest : httpRequest)(options)
  } catch (error) {
    // Node refused a header name or value the app gave.
    void writeAnswer(
      socket,
      errorResponse(
        new WsgiProxyError('INVALID_UPSTREAM', 'the upgrade request could not be sent', {
          cause: error,
        }),
        settings.exposeErrors,
      ),
    )
    return
  }

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
    upstream.destroy()
    void writeAnswer(socket, errorResponse(error, settings.exposeErrors))
  }

  socket.once('close', () => {
    if (settle()) upstream.destroy()
  })
  upstream.once('socket', (connection: Socket) => {
    connection.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer))
  })
  upstream.on('error', (error) => {
    if (settled) socket.destroy()
    else fail('UPSTREAM_UNREACHABLE', `the upgrade could not be forwarded: ${error.message}`)
  })

  upstream.once('upgrade', (res: IncomingMessage, upSocket: Socket, upHead: Buffer) => {
    upSocket.on('error', noop)
    if (!settle()) {
      upSocket.destroy()
      return
    }
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
  })

  upstream.once('response', (res: IncomingMessage) => {
    if (!settle()) {
      upstream.destroy()
      return
    }
    // Not switched: an ordinary answer. Nothing the client sent after its request goes upstream,
    // and neither connection is used again.
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
    passAnswer(socket, res, method, target.answerHeaders, () => upstream.destroy())
  })
  upstream.end()
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

// Ends the client connection after an answer: its side is read and discarded until it closes, for
// at most LINGER_MS, so that the kernel does not reset the connection before the answer is read.
function closeAfterAnswer(socket: Duplex): void {
  if (socket.destroyed) return
  socket.removeAllListeners('data')
  socket.on('data', noop)
  socket.resume()
  const timer = setTimeout(() => socket.destroy(), LINGER_MS)
  socket.once('close', () => clearTimeout(timer))
  socket.once('end', () => socket.destroy())
  socket.end()
}

// An Upgrade offering no forwarded protocol: served by the request listener as an ordinary
// request, on a response of its own, and the connection closed after it.
function serveOrdinary(
  req: IncomingMessage,
  socket: Duplex,
  listener: (req: IncomingMessage, res: ServerResponse) => void,
): void {
  // Node stops parsing at an upgrade request's head: its body, if any, was never framed.
  const length = req.headers['content-length']
  if (req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')) {
    void writeAnswer(
      socket,
      problemResponse(
        400,
        'a request with a body cannot ask for a protocol upgrade this server does not forward; send it without Upgrade',
        'BAD_REQUEST',
      ),
    )
    return
  }
  const res = new ServerResponse(req)
  res.shouldKeepAlive = false
  res.assignSocket(socket as Socket)
  res.once('finish', () => {
    res.detachSocket(socket as Socket)
    closeAfterAnswer(socket)
  })
  listener(req, res)
}

function writeFixedLine(status: number, headers: string, length: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${headers}content-length: ${length}\r\nconnection: close\r\n\r\n`
}

async function writeAnswer(socket: Duplex, response: AppResponse): Promise<void> {
  const status =
    Number.isInteger(response.status) && response.status >= 200 && response.status <= 999
      ? response.status
      : 502
  let lines = ''
  for (const line of response.headers as unknown[]) {
    if (!Array.isArray(line)) continue
    const [name, value] = line as unknown[]
    if (typeof name !== 'string' || typeof value !== 'string') continue
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || lower === 'content-length') continue
    if (!TOKEN.test(name) || /[\0\r\n]/.test(value)) continue
    lines += `${name}: ${value}\r\n`
  }
  const chunks: Uint8Array[] = []
  let size = 0
  if (response.body !== null) {
    try {
      for await (const chunk of response.body) {
        if (size + chunk.byteLength > MAX_ANSWER_BODY) {
          chunks.push(chunk.subarray(0, MAX_ANSWER_BODY - size))
          size = MAX_ANSWER_BODY
          break
        }
        chunks.push(chunk)
        size += chunk.byteLength
      }
    } catch {
      // A failed body: send what was read.
    }
  }
  if (socket.destroyed) return
  socket.write(writeFixedLine(status, lines, size))
  for (const chunk of chunks) socket.write(chunk)
  closeAfterAnswer(socket)
}

/** The protocols an `Upgrade` field offers (all its lines), each as sent. */
function upgradeTokens(rawHeaders: readonly string[]): string[] {
  const tokens: string[] = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() !== 'upgrade') continue
    for (const part of (rawHeaders[i + 1] ?? '').split(',')) {
      const token = part.trim()
      if (token !== '') tokens.push(token)
    }
  }
  return tokens
}

/** `websocket` of `WebSocket` or `h2c` of `h2c/1`: the protocol name, lower-case. */
function protocolName(token: string): string {
  const slash = token.indexOf('/')
  return (slash === -1 ? token : token.slice(0, slash)).toLowerCase()
}

function withUpgrade(lines: Array<[string, string]>, upgrade: string): Array<[string, string]> {
  const out = lines.filter(([name]) => name.toLowerCase() !== 'upgrade')
  out.push(['upgrade', upgrade])
  return out
}

function checkWholeNumber(name: string, value: unknown, min: number, max: number): void {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: toNodeUpgradeListener.${name}: expected a whole number from ${min} to ${max} (got ${String(value)})`,
      { expose: true },
    )
  }
}

function checkProtocols(protocols: unknown): ReadonlySet<string> {
  if (!Array.isArray(protocols) || protocols.some((p) => typeof p !== 'string' || !TOKEN.test(p))) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: toNodeUpgradeListener.protocols: expected a list of protocol names such as ["websocket"] (got ${JSON.stringify(protocols)})`,
      { expose: true },
    )
  }
  return new Set((protocols as string[]).map((p) => p.toLowerCase()))
}
