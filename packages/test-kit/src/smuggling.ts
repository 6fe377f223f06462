// Test support (not built) for the Upgrade smuggling regressions: an upstream that records every
// request and connection, and a raw client that asks for a WebSocket upgrade and then tries to
// send a second request on the same connection, the way an attacker slips a request past a front.
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, Server } from 'node:http'
import { connect } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'

/** The request an attacker hopes reaches the backend raw, past the front. */
export const SMUGGLED_PATH = '/admin'
const SMUGGLED =
  `GET ${SMUGGLED_PATH} HTTP/1.1\r\nHost: backend\r\nX-Forwarded-For: 6.6.6.6\r\n` +
  'X-Forwarded-Scheme: https\r\nX-WSGIProxy-Version: 0.2\r\nX-WSGIProxy-Str-1: REMOTE_USER admin\r\n\r\n'

/** An upstream on 127.0.0.1 that answers 200 to everything and records what reaches it. */
export interface Recorder {
  port: number
  /** Request targets in arrival order. */
  urls: string[]
  /** Headers of each request, in arrival order. */
  headers: IncomingHttpHeaders[]
  /**
   * Resolves once at least one connection was accepted and every accepted one has closed (then
   * nothing more can arrive), or as soon as the smuggled request arrives: the caller checks `urls`.
   */
  settled(): Promise<void>
  close(): Promise<void>
}

/**
 * Starts a recording upstream: a plain `node:http` server with no `upgrade` listener, so it
 * answers an Upgrade request with an ordinary 200 and keeps the connection alive, as most
 * backends do.
 */
export async function startRecorder(): Promise<Recorder> {
  const urls: string[] = []
  const headers: IncomingHttpHeaders[] = []
  const sockets = new Set<Socket>()
  let accepted = 0
  const waiters = new Set<() => void>()
  const check = (): void => {
    if (accepted > 0 && sockets.size === 0) for (const waiter of waiters.values()) waiter()
  }
  const server: Server = createServer((req, res) => {
    urls.push(req.url ?? '')
    if (req.url === SMUGGLED_PATH) for (const waiter of waiters.values()) waiter()
    headers.push(req.headers)
    res.setHeader('content-type', 'text/plain')
    res.end(`seen ${req.url ?? ''}`)
  })
  server.on('connection', (socket: Socket) => {
    accepted++
    sockets.add(socket)
    socket.once('close', () => {
      sockets.delete(socket)
      check()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    urls,
    headers,
    settled: () =>
      new Promise<void>((resolve) => {
        waiters.add(resolve)
        check()
      }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** What the attacking client got. */
export interface SmuggleResult {
  /** Everything the front sent back, as text. */
  received: string
  /** Whether the front ended the connection itself (rather than the test giving up). */
  closedByFront: boolean
}

/**
 * Sends `GET <path>` with `Upgrade: <upgrade>` and a second request pipelined behind it, and again
 * once the answer arrives; resolves when the front closes the connection.
 *
 * @param port - the front's port on 127.0.0.1
 * @param options - the path and the Upgrade value (default `/public/x`, `websocket`)
 */
export function attemptSmuggle(
  port: number,
  options: { path?: string; upgrade?: string; connection?: string } = {},
): Promise<SmuggleResult> {
  const { path = '/public/x', upgrade = 'websocket', connection = 'Upgrade' } = options
  const request =
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: ${connection}\r\n` +
    `Upgrade: ${upgrade}\r\nSec-WebSocket-Version: 13\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n'
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let received = ''
    let closedByFront = false
    let sentAgain = false
    socket.setEncoding('latin1')
    socket.on('connect', () => socket.write(request + SMUGGLED))
    socket.on('data', (chunk: string) => {
      received += chunk
      if (!sentAgain && received.includes('\r\n\r\n')) {
        sentAgain = true
        // The connection may already be closing: a failed write is the front refusing it.
        socket.write(SMUGGLED, () => {})
      }
    })
    socket.on('end', () => {
      closedByFront = true
      socket.end()
    })
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // A reset after the answer is the front closing too.
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') closedByFront = true
      else reject(error)
    })
    socket.on('close', () => resolve({ received, closedByFront }))
  })
}
