// The client's side of an Upgrade request: what it sends before the upstream answers, the answers
// written to its socket instead of a tunnel, and the close after them.

import { ServerResponse, STATUS_CODES } from 'node:http'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { problemResponse } from '@wsgiproxy/core'
import type { AppResponse } from '@wsgiproxy/core'
import { noop, TOKEN } from './_node-util.ts'

// An answer given instead of the upgrade is small (a problem document): bound what is read of it.
const MAX_ANSWER_BODY = 64 * 1024
// Bytes a client may send after its upgrade request and before the upstream's 101.
const MAX_EARLY_BYTES = 64 * 1024
// After an answer with `Connection: close`, how long the client may take to close its side while
// what it still sends is discarded (so the kernel does not reset the connection under the answer).
const LINGER_MS = 2_000

// RFC 9110 §7.6.1: hop-by-hop fields, never passed on. The listener sets its own framing.
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/** What the client sent after its upgrade request, held until the upstream switches protocols. */
export interface EarlyBytes {
  /** Stops holding and returns what was held. */
  take(): Buffer[]
}

/**
 * Reads (so that a client that leaves is noticed) and holds what the client sends before the
 * upstream answers; too much closes the connection.
 *
 * @param socket - the client's socket
 * @param head - the bytes Node read past the upgrade request's head
 * @returns the held bytes
 */
export function earlyBytes(socket: Duplex, head: Buffer): EarlyBytes {
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

/**
 * Ends the client connection after an answer: its side is read and discarded until it closes, for
 * at most LINGER_MS, so that the kernel does not reset the connection before the answer is read.
 *
 * @param socket - the client's socket
 */
export function closeAfterAnswer(socket: Duplex): void {
  if (socket.destroyed) return
  socket.removeAllListeners('data')
  socket.on('data', noop)
  socket.resume()
  const timer = setTimeout(() => socket.destroy(), LINGER_MS)
  socket.once('close', () => clearTimeout(timer))
  socket.once('end', () => socket.destroy())
  socket.end()
}

/**
 * An Upgrade offering no forwarded protocol: served by the request listener as an ordinary
 * request, on a response of its own, and the connection closed after it.
 *
 * @param req - the upgrade request
 * @param socket - the client's socket
 * @param listener - the request listener
 */
export function serveOrdinary(
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

/**
 * An answer's header lines as text for a socket: hop-by-hop fields, lines that are not a valid
 * name and value, and `Content-Length` unless `keepLength` (the writer frames the body) left out.
 *
 * @param headers - the app's header lines, unchecked
 * @param keepLength - keep `Content-Length` (an answer without a body, to HEAD say)
 * @returns `name: value\r\n` per line kept
 */
export function answerHeaderText(headers: unknown, keepLength: boolean): string {
  let lines = ''
  for (const line of headers as unknown[]) {
    if (!Array.isArray(line)) continue
    const [name, value] = line as unknown[]
    if (typeof name !== 'string' || typeof value !== 'string') continue
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || (lower === 'content-length' && !keepLength)) continue
    if (!TOKEN.test(name) || /[\0\r\n]/.test(value)) continue
    lines += `${name}: ${value}\r\n`
  }
  return lines
}

/**
 * Writes an answer given instead of the upgrade (a problem, the app's own answer) with
 * `Connection: close`, its body read up to 64 KiB, then closes the connection.
 *
 * @param socket - the client's socket
 * @param response - the answer
 * @returns once the answer is written
 */
export async function writeAnswer(socket: Duplex, response: AppResponse): Promise<void> {
  const status =
    Number.isInteger(response.status) && response.status >= 200 && response.status <= 999
      ? response.status
      : 502
  const lines = answerHeaderText(response.headers, false)
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

/**
 * The protocols an `Upgrade` field offers (all its lines), each as sent.
 *
 * @param rawHeaders - the message's raw header list
 * @returns the protocol tokens
 */
export function upgradeTokens(rawHeaders: readonly string[]): string[] {
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

/**
 * `websocket` of `WebSocket` or `h2c` of `h2c/1`: the protocol name, lower-case.
 *
 * @param token - a protocol token
 * @returns its name
 */
export function protocolName(token: string): string {
  const slash = token.indexOf('/')
  return (slash === -1 ? token : token.slice(0, slash)).toLowerCase()
}
