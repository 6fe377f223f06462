// The byte-copying design of issue 20, as an experiment the benchmark measures: a proxy that
// parses the request head and the response head, rewrites them, and copies each body between the
// client and upstream sockets as it comes, counting its bytes, with no `ServerResponse`, no undici
// and no stream objects in between (the way nginx and Envoy move an unrewritten body). It is
// bench-only and deliberately small: HTTP/1.1 with Content-Length framing (a chunked request or
// response is refused), one request at a time per connection, a pool of idle upstream sockets.
// Its head parsing is a few string splits, not a hardened parser: it shows what the design could
// gain on this machine, and is not a proxy to put in front of anything.
import { connect, createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { HOP_BY_HOP } from './servers.ts'
import type { RunningServer } from './servers.ts'

const HEAD_END = Buffer.from('\r\n\r\n')
const MAX_HEAD_BYTES = 16 * 1024
/** Connection-specific fields (RFC 9110 §7.6.1) and the ones the byte copies write themselves. */
export const DROPPED: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
])

interface Head {
  /** The first line, without its CRLF. */
  start: string
  /** Header lines kept as they came (name and value), without the dropped ones. */
  lines: string[]
  contentLength: number
  host: string | undefined
  close: boolean
}

// Parses a head (without its blank line); undefined when the framing is not one this experiment
// copies (chunked, or a Content-Length that is missing where needed, repeated or not a number).
function parseHead(text: string, needLength: boolean): Head | undefined {
  const all = text.split('\r\n')
  const start = all[0] ?? ''
  const lines: string[] = []
  let contentLength = needLength ? -1 : 0
  let seenLength = false
  let host: string | undefined
  let close = false
  for (let i = 1; i < all.length; i++) {
    const line = all[i] as string
    const colon = line.indexOf(':')
    if (colon <= 0) return undefined
    const name = line.slice(0, colon).toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (name === 'content-length') {
      if (seenLength || !/^\d{1,15}$/.test(value)) return undefined
      seenLength = true
      contentLength = Number(value)
    } else if (name === 'transfer-encoding') {
      return undefined
    } else if (name === 'connection') {
      close = /(^|,)\s*close\s*(,|$)/i.test(value)
    } else if (name === 'host') {
      host = value
    }
    if (!DROPPED.has(name)) lines.push(line)
  }
  if (contentLength < 0) return undefined
  return { start, lines, contentLength, host, close }
}

/** Starts the byte-copying proxy in front of `upstream` (plain HTTP). */
export function startRawCopy(upstream: URL): Promise<RunningServer> {
  const port = Number(upstream.port || 80)
  const idle: Socket[] = []
  const take = (): Socket => {
    const reused = idle.pop()
    if (reused !== undefined) return reused
    const socket = connect({ host: upstream.hostname, port, noDelay: true })
    socket.on('error', () => socket.destroy())
    socket.on('close', () => {
      const at = idle.indexOf(socket)
      if (at >= 0) idle.splice(at, 1)
    })
    return socket
  }

  const clients = new Set<Socket>()
  const server = createServer({ noDelay: true }, (client) => {
    clients.add(client)
    client.on('close', () => clients.delete(client))
    client.on('error', () => client.destroy())
    let pending: Buffer | undefined
    // The request body of the exchange under way, when some of it has still to come.
    let body: ((chunk: Buffer) => void) | undefined
    let exchanging = false

    client.on('data', (chunk: Buffer) => {
      if (body !== undefined) {
        body(chunk)
        return
      }
      pending = pending === undefined ? chunk : Buffer.concat([pending, chunk])
      // A pipelined request waits for the exchange under way, without reading on.
      if (exchanging) client.pause()
      else next()
    })

    const fail = (status: number, reason: string): void => {
      client.end(`HTTP/1.1 ${status} ${reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`)
    }

    // Starts the next exchange when a whole request head has come.
    function next(): void {
      if (pending === undefined) return
      const end = pending.indexOf(HEAD_END)
      if (end < 0) {
        if (pending.length > MAX_HEAD_BYTES) fail(431, 'Request Header Fields Too Large')
        return
      }
      const head = parseHead(pending.toString('latin1', 0, end), false)
      const rest = pending.subarray(end + HEAD_END.length)
      pending = rest.length > 0 ? rest : undefined
      if (head === undefined) {
        fail(400, 'Bad Request')
        return
      }
      exchange(head)
    }

    function exchange(request: Head): void {
      exchanging = true
      const up = take()
      const method = request.start.slice(0, request.start.indexOf(' '))
      const forwarded =
        `${request.start}\r\nhost: ${upstream.host}\r\n` +
        (request.lines.length > 0 ? `${request.lines.join('\r\n')}\r\n` : '') +
        `x-forwarded-for: ${client.remoteAddress ?? ''}\r\nx-forwarded-proto: http\r\n` +
        `x-forwarded-host: ${request.host ?? ''}\r\n\r\n`
      let bodyLeft = request.contentLength
      let responseHead: Buffer | undefined
      let responseLeft = -1
      let done = false

      const finish = (reusable: boolean): void => {
        done = true
        up.off('data', onUpstreamData)
        up.off('close', onUpstreamClose)
        client.off('close', onClientClose)
        body = undefined
        up.resume()
        client.resume()
        if (reusable && bodyLeft === 0) idle.push(up)
        else up.destroy()
        exchanging = false
        if (request.close) {
          client.end()
          return
        }
        next()
      }

      // The request body: the bytes already read after the head, then what comes.
      const sendBody = (chunk: Buffer): void => {
        const part = chunk.length <= bodyLeft ? chunk : chunk.subarray(0, bodyLeft)
        bodyLeft -= part.length
        if (chunk.length > part.length) {
          const extra = chunk.subarray(part.length)
          pending = pending === undefined ? extra : Buffer.concat([pending, extra])
        }
        if (part.length > 0 && !up.write(part)) {
          client.pause()
          up.once('drain', () => client.resume())
        }
        if (bodyLeft === 0) body = undefined
      }

      const copyResponse = (chunk: Buffer): void => {
        const part = chunk.length <= responseLeft ? chunk : chunk.subarray(0, responseLeft)
        responseLeft -= part.length
        if (part.length > 0 && !client.write(part)) {
          up.pause()
          client.once('drain', () => up.resume())
        }
        if (responseLeft === 0) finish(chunk.length === part.length)
      }

      const onUpstreamData = (chunk: Buffer): void => {
        if (responseLeft >= 0) {
          copyResponse(chunk)
          return
        }
        responseHead = responseHead === undefined ? chunk : Buffer.concat([responseHead, chunk])
        const end = responseHead.indexOf(HEAD_END)
        if (end < 0) {
          if (responseHead.length > MAX_HEAD_BYTES) onUpstreamClose()
          return
        }
        const status = Number(responseHead.toString('latin1', 9, 12))
        const noBody = method === 'HEAD' || status === 204 || status === 304 || status < 200
        const head = parseHead(responseHead.toString('latin1', 0, end), !noBody)
        if (head === undefined || status < 200) {
          onUpstreamClose()
          return
        }
        const rest = responseHead.subarray(end + HEAD_END.length)
        responseLeft = noBody ? 0 : head.contentLength
        const lines = head.lines.length > 0 ? `${head.lines.join('\r\n')}\r\n` : ''
        client.cork()
        client.write(`${head.start}\r\n${lines}\r\n`, 'latin1')
        copyResponse(rest)
        process.nextTick(() => client.uncork())
      }

      // The upstream went away (or sent what this experiment does not copy): a 502 when the
      // client has had nothing yet, else its connection closes, as the body is cut short.
      const onUpstreamClose = (): void => {
        if (done) return
        done = true
        up.destroy()
        if (responseLeft < 0) fail(502, 'Bad Gateway')
        else client.destroy()
      }
      const onClientClose = (): void => {
        if (!done) up.destroy()
      }

      up.on('data', onUpstreamData)
      up.on('close', onUpstreamClose)
      client.on('close', onClientClose)
      up.write(forwarded, 'latin1')
      const already = pending
      pending = undefined
      if (bodyLeft > 0) body = sendBody
      if (already !== undefined) sendBody(already)
    }
  })
  return listenRaw(server, () => [...idle, ...clients])
}

/**
 * Listens on a free port of 127.0.0.1; closing destroys the sockets `open` lists (idle upstream
 * connections and clients) so the server's close does not wait for keep-alive.
 */
export function listenRaw(server: Server, open: () => Iterable<Socket>): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((closed) => {
            for (const socket of open()) socket.destroy()
            server.close(() => closed())
          }),
      })
    })
  })
}
