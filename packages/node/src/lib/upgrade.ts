import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { connect as netConnect } from 'node:net'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import { environFromParts, errorResponse, isAppResponse, WsgiProxyError } from '@wsgiproxy/core'
import type { AppResponse, EnvironApp, ToEnvironOptions, UpgradableApp } from '@wsgiproxy/core'
import { headerLines, noop, release } from './_node-util.ts'

/** Options of {@link toNodeUpgradeListener}. */
export interface NodeUpgradeListenerOptions {
  /** The mount prefix that becomes `SCRIPT_NAME`. Default `''`. */
  scriptName?: string
  /** Header lines accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
  /** Show error messages in problem bodies (development only). Default `false`. */
  exposeErrors?: boolean
  /** How long connecting upstream may take before the client gets 504, in milliseconds. Default `10_000`. */
  connectTimeout?: number
}

/** The `upgrade` event listener of a `node:http` server. */
export type NodeUpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void

// An answer given instead of the upgrade is small (a problem document): bound what is read of it.
const MAX_ANSWER_BODY = 64 * 1024
const MAX_TIMER_MS = 2_147_483_647

/**
 * Forwards WebSocket and any other `Upgrade` request through an app with `prepareUpgrade` (the
 * proxy app): the environ is built like a normal request's, the app gives the upstream request
 * (protocol headers and signature included), the listener connects upstream, sends it and splices
 * the two sockets. An app without `prepareUpgrade` answers 501. The listener never throws.
 *
 * - An answer instead of a target (a 400 or 401 problem) is written with `Connection: close`.
 * - Connecting upstream fails with 502, or 504 after `connectTimeout`; once connected, whatever
 *   the upstream sends (its `101` or a refusal) goes to the client as is.
 * - An error or close on either side destroys the other.
 * - The environ's `wsgiproxy.signal` aborts when the client connection closes, also after the
 *   sockets were spliced, so an app can tell when a forwarded connection ends.
 *
 * @param app - the app; `createProxyApp` returns one with `prepareUpgrade`
 * @param options - mount prefix, header cap, connect timeout
 * @returns a listener for the server's `upgrade` event
 * @example
 * const server = createServer(toNodeListener(app))
 * server.on('upgrade', toNodeUpgradeListener(app))
 */
export function toNodeUpgradeListener(
  app: EnvironApp | UpgradableApp,
  options: NodeUpgradeListenerOptions = {},
): NodeUpgradeListener {
  const { connectTimeout = 10_000, exposeErrors = false } = options
  if (!Number.isInteger(connectTimeout) || connectTimeout < 1 || connectTimeout > MAX_TIMER_MS) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: toNodeUpgradeListener.connectTimeout: expected whole milliseconds from 1 to ${MAX_TIMER_MS} (got ${String(connectTimeout)})`,
      { expose: true },
    )
  }
  const environOptions: ToEnvironOptions = Object.freeze({
    ...(options.scriptName === undefined ? {} : { scriptName: options.scriptName }),
    ...(options.maxHeaders === undefined ? {} : { maxHeaders: options.maxHeaders }),
  })
  const prepareUpgrade = (app as Partial<UpgradableApp>).prepareUpgrade

  async function handle(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    if (typeof prepareUpgrade !== 'function') {
      writeFixed(socket, 501)
      return
    }
    const controller = new AbortController()
    const onGone = (): void => {
      controller.abort(new WsgiProxyError('CLIENT_ABORTED', 'the client closed the connection'))
    }
    socket.once('close', onGone)
    let prepared: Awaited<ReturnType<UpgradableApp['prepareUpgrade']>>
    try {
      const environ = environFromParts(
        {
          method: req.method ?? 'GET',
          target: req.url ?? '/',
          headers: headerLines(req.rawHeaders),
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
    // `onGone` stays: the signal also tells the app when a forwarded connection ends (the spawner
    // counts an upgraded connection in flight until then).
    if (socket.destroyed) {
      if (isAppResponse(prepared)) release(prepared.body)
      return
    }
    if (isAppResponse(prepared)) {
      await writeAnswer(socket, prepared)
      return
    }
    splice(socket, head, prepared, connectTimeout)
  }

  return (req, socket, head) => {
    // Neither side may crash the process with an unhandled 'error'.
    socket.on('error', noop)
    req.on('error', noop)
    handle(req, socket, head).catch(() => socket.destroy())
  }
}

function splice(
  socket: Duplex,
  head: Buffer,
  target: { url: URL; method: string; headers: Array<[string, string]> },
  connectTimeout: number,
): void {
  const { url, method } = target
  let request = `${method} ${url.pathname}${url.search} HTTP/1.1\r\n`
  for (const [name, value] of target.headers) {
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch {
      writeFixed(socket, 502)
      return
    }
    request += `${name}: ${value}\r\n`
  }
  request += '\r\n'
  const secure = url.protocol === 'https:'
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  const port = url.port === '' ? (secure ? 443 : 80) : Number(url.port)
  let connected = false
  const upstream: Socket = secure
    ? tlsConnect({ host, port, servername: host, ALPNProtocols: ['http/1.1'] })
    : netConnect({ host, port })
  const timer = setTimeout(() => {
    upstream.destroy()
    writeFixed(socket, 504)
  }, connectTimeout)
  const onClientGone = (): void => {
    clearTimeout(timer)
    upstream.destroy()
  }
  socket.once('close', onClientGone)
  upstream.on('error', () => {
    clearTimeout(timer)
    if (connected) socket.destroy()
    else writeFixed(socket, 502)
  })
  upstream.once(secure ? 'secureConnect' : 'connect', () => {
    clearTimeout(timer)
    if (socket.destroyed) {
      upstream.destroy()
      return
    }
    connected = true
    upstream.write(request)
    if (head.byteLength > 0) upstream.write(head)
    socket.pipe(upstream)
    upstream.pipe(socket)
    upstream.once('close', () => socket.destroy())
  })
}

function writeFixed(socket: Duplex, status: number): void {
  if (socket.destroyed) return
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`,
  )
}

// Framing and connection headers are the listener's to set.
const SKIPPED: ReadonlySet<string> = new Set([
  'connection',
  'content-length',
  'transfer-encoding',
  'keep-alive',
  'upgrade',
])

async function writeAnswer(socket: Duplex, response: AppResponse): Promise<void> {
  const status =
    Number.isInteger(response.status) && response.status >= 200 && response.status <= 999
      ? response.status
      : 502
  const lines: string[] = []
  for (const line of response.headers as unknown[]) {
    if (!Array.isArray(line)) continue
    const [name, value] = line as unknown[]
    if (typeof name !== 'string' || typeof value !== 'string') continue
    if (SKIPPED.has(name.toLowerCase())) continue
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch {
      continue
    }
    lines.push(`${name}: ${value}\r\n`)
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
  const reason = STATUS_CODES[status] ?? ''
  socket.write(
    `HTTP/1.1 ${status} ${reason}\r\n${lines.join('')}content-length: ${size}\r\nconnection: close\r\n\r\n`,
  )
  for (const chunk of chunks) socket.write(chunk)
  socket.end()
}
