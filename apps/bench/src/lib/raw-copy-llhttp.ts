// The byte-copying design of issue 20 with Node's own HTTP/1.1 parser (llhttp, through the
// `HTTPParser` of `node:_http_common`, the one `node:http` uses, strict: no lenient flags) on both
// sides instead of `raw-copy.ts`'s string splits: what a version of the design that could go in
// front of traffic would keep of the gain. Heads are parsed into llhttp's flat header lists and
// rewritten as text; bodies reach the other socket as llhttp hands them over (Content-Length
// bodies as they are, chunked ones framed again), with no `IncomingMessage`, `ServerResponse`,
// undici or stream objects in between. Still bench-only: one exchange at a time per client
// connection (pipelined requests wait, buffered), no upgrades, no timeouts, no 1xx responses.
import { createRequire } from 'node:module'
import { connect, createServer } from 'node:net'
import type { Socket } from 'node:net'
import { DROPPED, listenRaw } from './raw-copy.ts'
import type { RunningServer } from './servers.ts'

// The parser node:http uses; `_http_common` is Node's own module for its HTTP parts.
interface Parser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): number | Error
  finish(): number | Error | undefined
  close(): void
  [slot: number]: unknown
}
interface ParserClass {
  new (): Parser
  REQUEST: number
  RESPONSE: number
  kOnHeaders: number
  kOnHeadersComplete: number
  kOnBody: number
  kOnMessageComplete: number
}
const { HTTPParser, methods } = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: ParserClass
  methods: string[]
}

const MAX_HEADER_BYTES = 16 * 1024

// The kept header lines of llhttp's flat [name, value, name, value, ...] list, and what framing
// and host they name.
function rewrite(flat: readonly string[]): {
  lines: string
  chunked: boolean
  length: boolean
  host: string
} {
  let lines = ''
  let chunked = false
  let length = false
  let host = ''
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i] as string
    const value = flat[i + 1] as string
    const lower = name.toLowerCase()
    if (lower === 'transfer-encoding') chunked = /(^|,)\s*chunked\s*$/i.test(value)
    else if (lower === 'content-length') length = true
    else if (lower === 'host') host = value
    if (!DROPPED.has(lower)) lines += `${name}: ${value}\r\n`
  }
  return { lines, chunked, length, host }
}

// A chunk's size line in chunked framing.
const bodyLength = (b: Buffer): string => `${b.length.toString(16)}\r\n`

/** One request and what has come of its body, waiting for (or in) its exchange. */
interface Pending {
  head: string
  chunked: boolean
  method: string
  body: Buffer[]
  complete: boolean
  close: boolean
  /** Set while its exchange runs: where its body goes. */
  sink?: (chunk: Buffer) => void
  ended?: () => void
}

/** An idle upstream connection with its response parser. */
interface Upstream {
  socket: Socket
  parser: Parser
}

/** Starts the llhttp byte-copying proxy in front of `upstream` (plain HTTP). */
export function startRawCopyLlhttp(upstream: URL): Promise<RunningServer> {
  const port = Number(upstream.port || 80)
  const idle: Upstream[] = []
  const clients = new Set<Socket>()

  const take = (): Upstream => {
    const reused = idle.pop()
    if (reused !== undefined) return reused
    const socket = connect({ host: upstream.hostname, port, noDelay: true })
    const parser = new HTTPParser()
    parser.initialize(HTTPParser.RESPONSE, {}, MAX_HEADER_BYTES, 0)
    const conn: Upstream = { socket, parser }
    socket.on('error', () => socket.destroy())
    socket.on('close', () => {
      const at = idle.indexOf(conn)
      if (at >= 0) idle.splice(at, 1)
      parser.close()
    })
    return conn
  }

  const server = createServer({ noDelay: true }, (client) => {
    clients.add(client)
    client.on('error', () => client.destroy())
    const queue: Pending[] = []
    let running = false
    const parser = new HTTPParser()
    parser.initialize(HTTPParser.REQUEST, {}, MAX_HEADER_BYTES, 0)
    let partialHeaders: string[] = []
    let partialUrl = ''

    const fail = (status: number, reason: string): void => {
      client.end(`HTTP/1.1 ${status} ${reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`)
    }

    parser[HTTPParser.kOnHeaders] = (headers: string[], url: string): void => {
      partialHeaders = partialHeaders.concat(headers)
      partialUrl += url
    }
    parser[HTTPParser.kOnHeadersComplete] = (
      major: number,
      minor: number,
      headers: string[] | undefined,
      method: number,
      url: string | undefined,
      _status: unknown,
      _message: unknown,
      upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      const flat = headers ?? partialHeaders
      const target = url ?? partialUrl
      partialHeaders = []
      partialUrl = ''
      const name = methods[method] ?? 'GET'
      if (upgrade || name === 'CONNECT') {
        fail(501, 'Not Implemented')
        return 1
      }
      const { lines, chunked, host } = rewrite(flat)
      const head =
        `${name} ${target} HTTP/1.1\r\nhost: ${upstream.host}\r\n${lines}` +
        (chunked ? 'transfer-encoding: chunked\r\n' : '') +
        `x-forwarded-for: ${client.remoteAddress ?? ''}\r\nx-forwarded-proto: http\r\n` +
        `x-forwarded-host: ${host}\r\n\r\n`
      queue.push({
        head,
        chunked,
        method: name,
        body: [],
        complete: false,
        close: !keepAlive || major !== 1 || minor !== 1,
      })
      if (queue.length > 1) client.pause()
      return 0
    }
    parser[HTTPParser.kOnBody] = (chunk: Buffer): void => {
      const request = queue[queue.length - 1]
      if (request === undefined) return
      if (request.sink !== undefined) request.sink(chunk)
      else request.body.push(Buffer.from(chunk))
    }
    parser[HTTPParser.kOnMessageComplete] = (): void => {
      const request = queue[queue.length - 1]
      if (request === undefined) return
      request.complete = true
      request.ended?.()
      if (!running) next()
    }

    let broken = false
    client.on('data', (chunk: Buffer) => {
      if (broken) return
      const parsed = parser.execute(chunk)
      if (parsed instanceof Error) {
        broken = true
        fail(400, 'Bad Request')
      }
    })
    client.on('close', () => {
      clients.delete(client)
      parser.close()
    })

    function next(): void {
      const request = queue[0]
      if (request === undefined || running) return
      running = true
      exchange(request)
    }

    function exchange(request: Pending): void {
      const up = take()
      const { socket, parser: responses } = up
      let answered = false
      let chunkedOut = false
      let done = false

      // The request body: what has come, then what comes.
      const send = (chunk: Buffer): void => {
        if (request.chunked) socket.write(bodyLength(chunk), 'latin1')
        if (!socket.write(chunk)) {
          client.pause()
          socket.once('drain', () => client.resume())
        }
        if (request.chunked) socket.write('\r\n', 'latin1')
      }
      const ended = (): void => {
        if (request.chunked) socket.write('0\r\n\r\n', 'latin1')
      }
      socket.cork()
      socket.write(request.head, 'latin1')
      for (const chunk of request.body) send(chunk)
      request.body = []
      if (request.complete) ended()
      else {
        request.sink = send
        request.ended = ended
      }
      process.nextTick(() => socket.uncork())

      const finish = (reusable: boolean): void => {
        done = true
        socket.off('data', onData)
        socket.off('close', onClose)
        client.off('close', onClientClose)
        socket.resume()
        if (reusable && request.complete) idle.push(up)
        else socket.destroy()
        queue.shift()
        running = false
        if (request.close) client.end()
        else {
          client.resume()
          next()
        }
      }

      responses[HTTPParser.kOnHeaders] = (): void => {}
      responses[HTTPParser.kOnHeadersComplete] = (
        _major: number,
        _minor: number,
        headers: string[],
        _method: unknown,
        _url: unknown,
        status: number,
        message: string,
      ): number => {
        answered = true
        const { lines, chunked, length } = rewrite(headers)
        const noBody = request.method === 'HEAD' || status === 204 || status === 304
        chunkedOut = !noBody && chunked
        const framing = chunkedOut
          ? 'transfer-encoding: chunked\r\n'
          : noBody || length
            ? ''
            : 'connection: close\r\n'
        client.cork()
        client.write(`HTTP/1.1 ${status} ${message}\r\n${lines}${framing}\r\n`, 'latin1')
        process.nextTick(() => client.uncork())
        // llhttp: 1 means this response has no body (a HEAD's).
        return request.method === 'HEAD' ? 1 : 0
      }
      responses[HTTPParser.kOnBody] = (chunk: Buffer): void => {
        if (chunkedOut) client.write(bodyLength(chunk), 'latin1')
        if (!client.write(chunk)) {
          socket.pause()
          client.once('drain', () => socket.resume())
        }
        if (chunkedOut) client.write('\r\n', 'latin1')
      }
      responses[HTTPParser.kOnMessageComplete] = (): void => {
        if (chunkedOut) client.write('0\r\n\r\n', 'latin1')
        finish(true)
      }

      const onData = (chunk: Buffer): void => {
        const parsed = responses.execute(chunk)
        if (parsed instanceof Error && !done) onClose()
      }
      // The upstream went away: a 502 when the client has had nothing yet, else its connection
      // closes, as the body is cut short.
      const onClose = (): void => {
        if (done) return
        done = true
        socket.destroy()
        if (!answered) fail(502, 'Bad Gateway')
        else client.destroy()
      }
      const onClientClose = (): void => {
        if (!done) socket.destroy()
      }
      socket.on('data', onData)
      socket.on('close', onClose)
      client.on('close', onClientClose)
    }
  })

  return listenRaw(server, () => [...idle.map(({ socket }) => socket), ...clients])
}
