// `serve({ byteCopy: true })`: HTTP/1.1 on cleartext connections with no `IncomingMessage`,
// `ServerResponse` or undici objects in between. llhttp (Node's own parser, strict) reads the
// client's request head; the app prepares the upstream request from the head alone
// (`prepareCopy`); the request body goes upstream as llhttp hands it over (Content-Length bodies as
// they are, chunked ones framed again), and the response comes back the same way, its head mapped
// as the app maps any response. One exchange at a time per client connection: a pipelined request
// waits, parsed no further than its head, until the one before it has finished both ways.
//
// What this path does not do is left to node:http, whole: a request that needs something else
// (an Upgrade or CONNECT, `Expect`, HTTP/1.0, a WSGIProxy 0.1 front, tracing, a signer that must
// digest the body, an https upstream) hands the connection over to the node:http server at that
// request's head, with the head written again as llhttp read it and every byte after it.
import { maxHeaderSize, STATUS_CODES } from 'node:http'
import type { Server } from 'node:http'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { errorResponse, logErrors, WsgiProxyError } from '@wsgiproxy/core'
import type {
  AppResponse,
  CopyableApp,
  CopyTarget,
  Environ,
  ErrorHook,
  ToEnvironOptions,
} from '@wsgiproxy/core'
import {
  asWsgiProxyError,
  environFromParts,
  readTrailers,
  stripHopByHop,
  toUpstreamError,
} from '@wsgiproxy/core/adapter'
import { llhttp, PAUSE, SKIP_BODY } from './_llhttp.ts'
import type { Parser, ParseError } from './_llhttp.ts'
import { headerLines, noop, release, TOKEN } from './_node-util.ts'
import { answerHeaderText, closeAfterAnswer } from './_upgrade-client.ts'

/** What the byte-copying front needs from `serve`. */
export interface ByteCopySettings {
  app: CopyableApp
  /** Gives a connection to the node:http server (its bytes unread, or put back). */
  handOff: (socket: Socket) => void
  environOptions: ToEnvironOptions
  /**
   * The node:http server's client timeouts, read when used, so a change to the server's own
   * properties holds here too: `headersTimeout` (from a request's first byte to its whole head),
   * `requestTimeout` (to its whole body) and `keepAliveTimeout` (idle between requests); 0 for
   * none.
   */
  timeouts: Pick<Server, 'headersTimeout' | 'requestTimeout' | 'keepAliveTimeout'>
  exposeErrors: boolean
  onError: ErrorHook | undefined
}

/** The connections of one server's byte-copying front. */
export interface ByteCopyFront {
  /** Takes a new client connection. */
  accept(socket: Socket): void
  /** Closes the connections between requests now, the others once their exchange finished. */
  closeIdle(): void
  /** Answers every further response with `Connection: close`; idle connections time out. */
  drain(): void
  /** Destroys every connection. */
  closeAll(): void
}

// How long an upstream connection is kept between requests (undici's default keep-alive).
const UPSTREAM_IDLE_MS = 4_000
// The bytes kept behind a request head that waits (for its app, or for the exchange before it)
// before the client's socket stops reading: pausing and resuming the socket costs two system
// calls, so it is kept for what a client sends ahead, not done on every request.
const HOLD_BYTES = 64 * 1024
// What an upstream connection reads at once (Node's own read size). Its connection reads into one
// such buffer over and over: a body copied without a new allocation for every read, where
// allocating and freeing 64 KiB per read made the allocator hand pages back to the system and
// fault them in again, which doubled the CPU time of a large download in some processes.
const READ_BYTES = 64 * 1024
// The methods a request may be sent again with when a kept upstream connection turned out closed
// before any answer (RFC 9110 §9.2.2 allows PUT and DELETE too; undici sends those again, but a
// proxy does not know whether the upstream acted on them).
const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
// A header value that must not be written to a socket.
const BAD_VALUE = /[\0\r\n]/

/** `wsgi.input` of a request whose body is copied: the app sees the head only. */
const COPIED_BODY: AsyncIterable<Uint8Array> = {
  [Symbol.asyncIterator]() {
    throw new WsgiProxyError(
      'APP_ERROR',
      'the byte-copying front copies this body upstream; the app cannot read it',
    )
  },
}

/** A request head as llhttp read it. */
interface Head {
  /** The method; `undefined` for one llhttp numbers but node:http does not name. */
  method: string | undefined
  url: string
  major: number
  minor: number
  /** Header lines, flat: name, value, name, value, ... */
  flat: string[]
  upgrade: boolean
  keepAlive: boolean
}

/** What an upstream connection's parser and socket report to: the exchange it serves. */
interface UpstreamUser {
  readonly responseDone: boolean
  fields(flat: string[]): void
  headEnd(flat: string[] | undefined, status: number, reason: string, keepAlive: boolean): number
  bodyChunk(chunk: Buffer): void
  messageEnd(): void
  upstreamData(chunk: Buffer): void
  upstreamEnded(error: Error | undefined): void
}

/** An upstream connection with its response parser. */
interface Upstream {
  socket: Socket
  parser: Parser
  key: string
  /** The exchange it serves, or `undefined` while idle. */
  exchange: UpstreamUser | undefined
  /** The socket's error, if it failed. */
  error: Error | undefined
  /** It sent bytes past the end of its response: never reused. */
  poisoned: boolean
  /** Closes it after it sat in the pool for `UPSTREAM_IDLE_MS`. */
  idle: Deadline
  /** What the socket reads into. */
  reads: ReadBuffer
}

/** What an upstream socket reads into (`onread`), used again for every read while nothing holds it. */
class ReadBuffer {
  buffer = Buffer.allocUnsafeSlow(READ_BYTES)
  /** A write to the client may still hold bytes of `buffer`: the next read gets a new one. */
  lent = false

  /** The buffer for the next read. */
  next(): Buffer {
    if (this.lent) {
      this.lent = false
      this.buffer = Buffer.allocUnsafeSlow(READ_BYTES)
    }
    return this.buffer
  }
}

/**
 * Starts a byte-copying front for `serve`.
 *
 * @param settings - the app, the hand-over to node:http, limits and timeouts
 * @returns the front, to accept connections and close them
 */
export function createByteCopyFront(settings: ByteCopySettings): ByteCopyFront {
  const { HTTPParser, methods } = llhttp()
  const onError = settings.onError ?? logErrors()
  const idle = new Map<string, Upstream[]>()
  const connections = new Set<ClientConnection>()
  let draining = false
  let closing = false

  async function fail(error: unknown, environ: Environ | undefined): Promise<AppResponse> {
    try {
      return (
        (await onError(asWsgiProxyError(error), environ)) ??
        errorResponse(error, settings.exposeErrors)
      )
    } catch {
      return errorResponse(new WsgiProxyError('APP_ERROR', 'the error hook failed'))
    }
  }

  function takeUpstream(url: URL): { upstream: Upstream; reused: boolean } {
    const key = url.host
    const reused = idle.get(key)?.pop()
    if (reused !== undefined) {
      reused.idle.disarm()
      return { upstream: reused, reused: true }
    }
    const reads = new ReadBuffer()
    const socket = connect({
      host: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: Number(url.port || 80),
      noDelay: true,
      onread: {
        buffer: () => reads.next(),
        callback: (length: number, buffer: Uint8Array): boolean => {
          const chunk = buffer as Buffer
          if (upstream.exchange === undefined)
            socket.destroy() // bytes nobody asked for
          else upstream.exchange.upstreamData(chunk.subarray(0, length))
          return true
        },
      },
    })
    const parser = new HTTPParser()
    parser.initialize(HTTPParser.RESPONSE, {}, maxHeaderSize, 0)
    const upstream: Upstream = {
      socket,
      parser,
      key,
      exchange: undefined,
      error: undefined,
      poisoned: false,
      idle: new Deadline(() => socket.destroy()),
      reads,
    }
    // The parser's callbacks are set once: they go to the exchange the connection serves.
    // Anything the upstream sends past its (final) response is not a client's: the connection is
    // dropped instead of going back to the pool, and nothing of it is passed on.
    parser[HTTPParser.kOnMessageBegin] = (): void => {
      if (upstream.exchange === undefined || upstream.exchange.responseDone)
        upstream.poisoned = true
    }
    parser[HTTPParser.kOnHeaders] = (flat: string[]): void => upstream.exchange?.fields(flat)
    parser[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      flat: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      reason: string,
      _upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      const exchange = upstream.exchange
      if (exchange === undefined) {
        upstream.poisoned = true
        return 0
      }
      return exchange.headEnd(flat, status, reason, keepAlive)
    }
    parser[HTTPParser.kOnBody] = (chunk: Buffer): void => upstream.exchange?.bodyChunk(chunk)
    parser[HTTPParser.kOnMessageComplete] = (): void => upstream.exchange?.messageEnd()
    socket.on('error', (error: Error) => {
      upstream.error = error
    })
    socket.once('close', () => {
      const list = idle.get(key)
      const at = list?.indexOf(upstream) ?? -1
      if (at >= 0) list?.splice(at, 1)
      upstream.idle.close()
      upstream.exchange?.upstreamEnded(upstream.error)
      parser.close()
    })
    return { upstream, reused: false }
  }

  function releaseUpstream(upstream: Upstream): void {
    upstream.exchange = undefined
    if (closing || upstream.socket.destroyed) {
      upstream.socket.destroy()
      return
    }
    upstream.idle.arm(UPSTREAM_IDLE_MS)
    upstream.socket.resume()
    const list = idle.get(upstream.key)
    if (list === undefined) idle.set(upstream.key, [upstream])
    else list.push(upstream)
  }

  class ClientConnection {
    readonly socket: Socket
    readonly parser: Parser
    /** Reading a head, waiting for the next one, or running an exchange. */
    state: 'head' | 'idle' | 'exchange' | 'gone' = 'head'
    /** The head llhttp stopped at, during `feed`. */
    captured: Head | undefined
    partialFlat: string[] = []
    partialUrl = ''
    /** Bytes after a held head, not parsed yet. */
    held: Buffer | undefined
    /** Where the request body being parsed goes. */
    body: RequestBody | undefined
    /** From a request's first byte to its whole head (`headersTimeout`): 408. */
    readonly headDeadline = new Deadline(() => this.refuse(408, 'Request Timeout'))
    /** Between requests (the keep-alive timeout): the connection closes. */
    readonly idleDeadline = new Deadline(() => this.socket.destroy())
    /** From a request's first byte to the end of its body (`requestTimeout`). */
    readonly requestDeadline = new Deadline(() => {
      const exchange = this.exchange
      if (exchange?.answered === true) {
        exchange.abort()
        return
      }
      exchange?.drop()
      this.refuse(408, 'Request Timeout')
    })
    /** The upstream's headers timeout, then its body timeout, for the exchange running. */
    readonly upstreamDeadline = new Deadline(() => this.exchange?.timedOut())
    readonly pausedFor = new Set<string>()
    readonly onData = (chunk: Buffer): void => this.receive(chunk)
    readonly onEnd = (): void => {
      this.socket.destroy()
    }

    constructor(socket: Socket) {
      this.socket = socket
      const parser = new HTTPParser()
      parser.initialize(HTTPParser.REQUEST, {}, maxHeaderSize, 0)
      this.parser = parser
      parser[HTTPParser.kOnHeaders] = (flat: string[], url: string): void => {
        // Fields after a body are its trailer, which is dropped (RequestBody.end).
        if (this.body === undefined) {
          this.partialFlat.push(...flat)
          this.partialUrl += url
        }
      }
      parser[HTTPParser.kOnHeadersComplete] = (
        major: number,
        minor: number,
        flat: string[] | undefined,
        method: number,
        url: string | undefined,
        _status: unknown,
        _message: unknown,
        upgrade: boolean,
        keepAlive: boolean,
      ): number => {
        this.captured = {
          method: methods[method],
          url: url ?? this.partialUrl,
          major,
          minor,
          flat: flat ?? this.partialFlat,
          upgrade,
          keepAlive,
        }
        this.partialFlat = []
        this.partialUrl = ''
        return PAUSE
      }
      parser[HTTPParser.kOnMessageBegin] = (): void => {
        // The first byte of a request after one that ended inside the same read (a body the
        // upstream answered early): its head and request are timed from here, not the idle gap.
        if (this.state === 'idle') {
          this.state = 'head'
          this.startRequest()
        }
      }
      parser[HTTPParser.kOnBody] = (chunk: Buffer): void => this.body?.chunk(chunk)
      parser[HTTPParser.kOnMessageComplete] = (): void => {
        const body = this.body
        this.body = undefined
        body?.end()
      }
      socket.on('data', this.onData)
      socket.on('error', noop)
      socket.once('close', () => this.gone())
      // node:http servers accept half-open connections and abort the requests of a client that
      // ended its side (unless `httpAllowHalfOpen`): the same here.
      socket.once('end', this.onEnd)
      this.startRequest()
    }

    /** A request's first byte came: its head and its whole request are timed. */
    startRequest(): void {
      this.idleDeadline.disarm()
      this.headDeadline.arm(settings.timeouts.headersTimeout)
      this.requestDeadline.arm(settings.timeouts.requestTimeout)
    }

    /** The request's body has come whole. */
    requestComplete(): void {
      this.requestDeadline.disarm()
    }

    /** Every timer stops: the connection is gone or handed over. */
    stopTimers(): void {
      this.headDeadline.close()
      this.idleDeadline.close()
      this.requestDeadline.close()
      this.upstreamDeadline.close()
    }

    pause(reason: string): void {
      this.pausedFor.add(reason)
      this.socket.pause()
    }

    resume(reason: string): void {
      // Not paused for it: nothing to do (no resume, which would wait a tick to read again).
      if (!this.pausedFor.delete(reason)) return
      if (this.pausedFor.size === 0 && this.state !== 'gone') this.socket.resume()
    }

    receive(chunk: Buffer): void {
      if (this.state === 'gone') return
      if (this.held !== undefined) {
        // Behind a held head: kept, up to a limit, then the socket stops reading.
        this.held = Buffer.concat([this.held, chunk])
        if (this.held.length >= HOLD_BYTES) this.pause('held')
        return
      }
      if (this.state === 'idle') {
        this.state = 'head'
        this.startRequest()
      }
      const upstream = this.exchange?.upstream?.socket
      upstream?.cork()
      this.feed(chunk)
      upstream?.uncork()
      if (upstream !== undefined) this.holdForUpstream(upstream)
    }

    /** Waiting for the upstream's socket to drain: the client's is not read meanwhile. */
    waitingForUpstream = false

    /** Backpressure: the client waits while the upstream's socket has more than it can take. */
    holdForUpstream(upstream: Socket): void {
      if (!backedUp(upstream) || this.waitingForUpstream || upstream.destroyed) return
      this.waitingForUpstream = true
      this.pause('upstream')
      whenWritable(upstream, () => {
        this.waitingForUpstream = false
        this.resume('upstream')
      })
    }

    /** Bytes of a Content-Length request body still to pass on without the parser. */
    bodyLeft = 0

    feed(chunk: Buffer): void {
      if (this.bodyLeft > 0) {
        // A Content-Length body goes on as it is read, without llhttp (which copies every piece
        // of a body into a new buffer); the parser starts over at the request after it.
        const take = Math.min(chunk.length, this.bodyLeft)
        this.bodyLeft -= take
        // Nothing to pass on after a head that ended its read: an empty piece would count as
        // body sent, and keep a GET with a body from being sent again on a stale connection.
        if (take > 0) this.body?.chunk(take === chunk.length ? chunk : chunk.subarray(0, take))
        if (this.bodyLeft > 0) return
        this.parser.initialize(HTTPParser.REQUEST, {}, maxHeaderSize, 0)
        const body = this.body
        this.body = undefined
        body?.end()
        if (take === chunk.length || this.state === 'gone') return
        chunk = chunk.subarray(take)
      }
      const result = this.parser.execute(chunk)
      const head = this.captured
      if (head === undefined) {
        if (typeof result !== 'number') this.broken(result)
        return
      }
      this.captured = undefined
      if (typeof result !== 'number' && result.code !== 'HPE_PAUSED') {
        this.broken(result)
        return
      }
      // The exchange that just ended (inside `execute`) may have closed the connection.
      if (this.state === 'gone') return
      this.held = chunk.subarray(typeof result === 'number' ? result : result.bytesParsed)
      if (this.held.length >= HOLD_BYTES) this.pause('held')
      if (this.state !== 'exchange') this.begin(head)
      else this.next = head
    }

    /** The head held while an exchange runs. */
    next: Head | undefined

    /** A request llhttp refused: 431 for a head too large, else 400, then the connection closes. */
    broken(error: ParseError): void {
      const exchange = this.exchange
      if (exchange !== undefined) {
        if (exchange.answered) {
          exchange.abort()
          return
        }
        exchange.drop()
      }
      if (error.code === 'HPE_HEADER_OVERFLOW') this.refuse(431, 'Request Header Fields Too Large')
      else this.refuse(400, 'Bad Request')
    }

    refuse(status: number, reason: string): void {
      this.state = 'gone'
      this.stopTimers()
      this.socket.end(
        `HTTP/1.1 ${status} ${reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`,
      )
      this.socket.destroySoon()
    }

    exchange: Exchange | undefined

    begin(head: Head): void {
      this.headDeadline.disarm()
      this.state = 'exchange'
      const method = head.method
      if (method === undefined) {
        this.refuse(400, 'Bad Request')
        return
      }
      if (needsNodeHttp(head)) {
        this.handOff(head)
        return
      }
      void this.prepare(head, method)
    }

    async prepare(head: Head, method: string): Promise<void> {
      const chunked = isChunked(head.flat)
      const length = chunked ? undefined : headerValue(head.flat, 'content-length')
      const hasBody = chunked || (length !== undefined && length !== '0')
      let environ: Environ | undefined
      let prepared: CopyTarget | AppResponse | undefined
      try {
        environ = environFromParts(
          {
            method,
            target: head.url,
            headers: headerLines(head.flat),
            scheme: 'http',
            input: hasBody ? COPIED_BODY : null,
            ...(this.socket.remoteAddress === undefined
              ? {}
              : { remoteAddr: this.socket.remoteAddress }),
          },
          settings.environOptions,
        )
        prepared = await settings.app.prepareCopy(environ)
      } catch (error) {
        prepared = await fail(error, environ)
      }
      if (this.state === 'gone') return
      if (prepared === undefined || ('url' in prepared && prepared.url.protocol !== 'http:')) {
        this.handOff(head)
      } else if (!('url' in prepared)) this.answer(prepared, method)
      else {
        const exchange = new Exchange(this, head, prepared, chunked, length)
        this.exchange = exchange
        exchange.start()
      }
    }

    /** An answer of the app's or of a failure, then the connection closes. */
    answer(response: AppResponse, method: string): void {
      this.state = 'gone'
      this.stopTimers()
      this.socket.off('data', this.onData)
      void writeAppAnswer(this.socket, method, response)
    }

    /** The exchange has finished both ways. */
    finished(close: boolean): void {
      this.exchange = undefined
      if (this.state === 'gone') return
      if (close || closing) {
        this.state = 'gone'
        this.stopTimers()
        // The socket accepts half-open connections: it closes once the answer is out.
        this.socket.end()
        this.socket.destroySoon()
        return
      }
      const head = this.next
      this.next = undefined
      if (head !== undefined) {
        this.requestDeadline.arm(settings.timeouts.requestTimeout)
        this.begin(head)
        return
      }
      const held = this.held
      this.held = undefined
      this.state = 'idle'
      this.idleDeadline.arm(settings.timeouts.keepAliveTimeout)
      this.resume('held')
      if (held !== undefined && held.length > 0) this.receive(held)
    }

    /** Gives the connection to node:http at `head`, which it reads again. */
    handOff(head: Head): void {
      this.state = 'gone'
      this.stopTimers()
      connections.delete(this)
      this.socket.off('data', this.onData)
      this.socket.off('end', this.onEnd)
      this.socket.removeListener('error', noop)
      this.parser.close()
      let text = `${head.method} ${head.url} HTTP/${head.major}.${head.minor}\r\n`
      for (let i = 0; i + 1 < head.flat.length; i += 2) {
        text += `${head.flat[i]}: ${head.flat[i + 1]}\r\n`
      }
      const rest = this.held ?? Buffer.alloc(0)
      this.held = undefined
      this.socket.unshift(Buffer.concat([Buffer.from(`${text}\r\n`, 'latin1'), rest]))
      settings.handOff(this.socket)
      this.socket.resume()
    }

    gone(): void {
      if (this.state !== 'gone' || connections.has(this)) {
        this.state = 'gone'
        connections.delete(this)
        this.stopTimers()
        this.exchange?.abort()
        this.parser.close()
      }
    }

    isIdle(): boolean {
      return this.state === 'idle' || (this.state === 'head' && this.held === undefined)
    }
  }

  /** One request and its response, copied. */
  class Exchange {
    readonly client: ClientConnection
    readonly head: Head
    readonly target: CopyTarget
    readonly chunked: boolean
    readonly length: string | undefined
    upstream: Upstream | undefined
    reused = false
    requestDone = false
    responseDone = false
    /** The response head went to the client. */
    answered = false
    /** Bytes came from the upstream. */
    heard = false
    closeAfter = false
    responseChunked = false
    upstreamKeepAlive = false
    interim = false
    /** Waiting for the client to drain (the upstream is paused meanwhile). */
    waitingForClient = false
    /** The response's head fields llhttp handed over before the head ended (32 or more). */
    partial: string[] = []
    /** Whether the head of the message being parsed has ended: later fields are trailers. */
    headEnded = false
    trailers: string[] = []
    done = false
    /** Inside the upstream parser's `execute`: settling waits until it returned. */
    executing = false
    settleLater = false

    constructor(
      client: ClientConnection,
      head: Head,
      target: CopyTarget,
      chunked: boolean,
      length: string | undefined,
    ) {
      this.client = client
      this.head = head
      this.target = target
      this.chunked = chunked
      this.length = length
    }

    /** The request head to send upstream, or `undefined` for a header no socket may carry. */
    requestHead(): string | undefined {
      const { target } = this
      let text = `${target.method} ${target.url.pathname}${target.url.search} HTTP/1.1\r\n`
      for (const [name, value] of target.headers) {
        if (!TOKEN.test(name) || BAD_VALUE.test(value)) return undefined
        text += `${name}: ${value}\r\n`
      }
      if (this.chunked) text += 'transfer-encoding: chunked\r\n'
      else if (this.length !== undefined) text += `content-length: ${this.length}\r\n`
      return `${text}\r\n`
    }

    start(): void {
      const { target } = this
      const text = this.requestHead()
      if (text === undefined) {
        void this.failed(
          new WsgiProxyError('INVALID_UPSTREAM', 'the app gave a header line Node refuses'),
        )
        return
      }
      const { upstream, reused } = takeUpstream(target.url)
      this.upstream = upstream
      this.reused = reused
      this.bind(upstream)
      this.watchHeaders()
      // The head and the body bytes that came with it leave in one write.
      upstream.socket.cork()
      upstream.socket.write(text, 'latin1')
      this.client.body = new RequestBody(this)
      // The bytes after the head: the body, and maybe the next request.
      const held = this.client.held
      this.client.held = undefined
      const length = this.chunked ? 0 : Number(this.length ?? 0)
      if (length > 0 && length <= Number.MAX_SAFE_INTEGER) this.client.bodyLeft = length
      this.client.parser.resume()
      this.client.resume('held')
      if (this.client.state !== 'gone') this.client.feed(held ?? Buffer.alloc(0))
      upstream.socket.uncork()
      this.client.holdForUpstream(upstream.socket)
    }

    watchHeaders(): void {
      this.client.upstreamDeadline.arm(this.target.headersTimeout)
    }

    /** The upstream's headers timeout or body timeout passed. */
    timedOut(): void {
      if (this.done) return
      const ms = this.answered ? this.target.bodyTimeout : this.target.headersTimeout
      if (!this.answered) {
        void this.failed(
          new WsgiProxyError(
            'UPSTREAM_HEADERS_TIMEOUT',
            `no response headers from ${this.target.url.origin} within ${String(ms)} ms`,
          ),
        )
        return
      }
      this.target
        .fail(
          new WsgiProxyError(
            'UPSTREAM_BODY_TIMEOUT',
            `the response body from ${this.target.url.origin} stalled for ${String(ms)} ms`,
          ),
        )
        .catch(noop)
      this.abort()
    }

    bind(upstream: Upstream): void {
      upstream.exchange = this
    }

    /** Head fields llhttp handed over early (32 or more), or trailer fields. */
    fields(flat: string[]): void {
      if (this.headEnded) this.trailers.push(...flat)
      else this.partial.push(...flat)
    }

    headEnd(
      flat: string[] | undefined,
      status: number,
      reason: string,
      keepAlive: boolean,
    ): number {
      const lines = flat ?? this.partial
      this.partial = []
      this.headEnded = true
      if (this.responseDone || this.done) {
        if (this.upstream !== undefined) this.upstream.poisoned = true
        return 0
      }
      return this.respond(lines, status, reason, keepAlive)
    }

    bodyChunk(chunk: Buffer): void {
      if (this.answered && !this.responseDone && !this.done) this.responseChunk(chunk)
    }

    messageEnd(): void {
      this.headEnded = false
      if (!this.responseDone) this.responseEnd()
    }

    upstreamData(chunk: Buffer): void {
      const upstream = this.upstream
      if (upstream === undefined) return
      this.heard = true
      // What one read carries (a head, body bytes, a last chunk) leaves in one write.
      const client = this.client.socket
      client.cork()
      let result: number | ParseError = 0
      if (this.bodyLeft > 0) this.passBody(chunk)
      else {
        this.executing = true
        result = upstream.parser.execute(chunk)
        this.executing = false
        if (typeof result !== 'number' && result.code === 'HPE_PAUSED' && this.bodyLeft > 0) {
          // Paused after a head with a Content-Length body: the rest of the read is body.
          this.passBody(chunk.subarray(result.bytesParsed))
          result = 0
        }
      }
      client.uncork()
      // Bytes of the read buffer may wait in the client's socket: the next read gets a new one.
      if (client.writableLength > 0) upstream.reads.lent = true
      // Backpressure: the upstream waits while the client's socket has more than it can take.
      if (backedUp(client) && !this.waitingForClient && !this.done) {
        this.waitingForClient = true
        upstream.socket.pause()
        whenWritable(client, () => {
          this.waitingForClient = false
          // By now the connection may serve another exchange, paused for its own client, or sit
          // in the pool (resumed there): only this exchange's pause is undone here.
          if (upstream.exchange === this) upstream.socket.resume()
        })
      }
      if (typeof result !== 'number') {
        if (this.responseDone) upstream.poisoned = true
        else {
          void this.failed(
            new WsgiProxyError(
              'UPSTREAM_INVALID_RESPONSE',
              `the response from ${this.target.url.origin} is not valid HTTP/1.1 (${result.code})`,
            ),
          )
        }
      }
      if (this.settleLater) {
        this.settleLater = false
        this.settle()
      }
    }

    upstreamEnded(error: Error | undefined): void {
      // A response framed by the connection's end ends here.
      if (!this.responseDone && this.answered && this.bodyLeft === 0) this.upstream?.parser.finish()
      if (this.responseDone || this.done) return
      if (
        this.reused &&
        !this.heard &&
        !this.bodySent &&
        SAFE_METHODS.has(this.target.method) &&
        this.client.state !== 'gone'
      ) {
        // A kept connection the upstream closed meanwhile: once more on a new one.
        this.retry()
        return
      }
      void this.failed(
        error === undefined
          ? new WsgiProxyError(
              'UPSTREAM_RESET',
              `${this.target.url.origin} closed the connection before the response ended`,
            )
          : toUpstreamError(error, this.target.url),
      )
    }

    /** Whether any request body byte went upstream (then it cannot be sent again). */
    bodySent = false

    retry(): void {
      const { upstream } = takeUpstream(this.target.url)
      this.upstream = upstream
      this.reused = false
      this.bind(upstream)
      this.watchHeaders()
      upstream.socket.write(this.requestHead() ?? '', 'latin1')
      if (this.chunked && this.requestDone) upstream.socket.write('0\r\n\r\n', 'latin1')
    }

    respond(flat: string[], status: number, reason: string, keepAlive: boolean): number {
      if (status < 200) {
        if (status < 100 || status === 101) {
          void this.failed(
            new WsgiProxyError(
              'UPSTREAM_RESET',
              status === 101
                ? `${this.target.url.origin} switched protocols on a request without Upgrade`
                : `${this.target.url.origin} answered status ${status}`,
            ),
          )
          return SKIP_BODY
        }
        this.interim = true // 1xx: not passed on (as undici does on the other path)
        return 0
      }
      this.answered = true
      this.upstreamKeepAlive = keepAlive
      const noBody = this.head.method === 'HEAD' || status === 204 || status === 304
      const framed = isChunked(flat) || headerValue(flat, 'content-length') === undefined
      this.responseChunked = !noBody && framed
      let lines = ''
      for (const [name, value] of this.target.answerHeaders(
        stripHopByHop(headerLines(flat), 'response'),
      )) {
        if (!TOKEN.test(name) || BAD_VALUE.test(value)) continue
        if (this.responseChunked && name.length === 14 && name.toLowerCase() === 'content-length')
          continue
        lines += `${name}: ${value}\r\n`
      }
      if (this.responseChunked) lines += 'transfer-encoding: chunked\r\n'
      this.closeAfter = !this.head.keepAlive || draining || closing
      if (this.closeAfter) lines += 'connection: close\r\n'
      this.client.socket.write(`HTTP/1.1 ${status} ${reason}\r\n${lines}\r\n`, 'latin1')
      // From here the timer is the body timeout, pushed back by every chunk.
      this.client.upstreamDeadline.arm(this.target.bodyTimeout)
      if (this.head.method === 'HEAD') return SKIP_BODY
      if (noBody || framed) return 0
      // A Content-Length body is passed on as it is read, without llhttp (which copies every
      // piece of a body into a new buffer): the parser stops after the head and starts over
      // once the body's bytes are counted (`passBody`).
      const length = Number(headerValue(flat, 'content-length'))
      if (!(length > 0 && length <= Number.MAX_SAFE_INTEGER)) return 0
      this.bodyLeft = length
      return PAUSE
    }

    /** Bytes of a Content-Length response body still to pass on without the parser. */
    bodyLeft = 0

    /** Passes on bytes of a Content-Length response body; what lies past its end is not. */
    passBody(chunk: Buffer): void {
      const upstream = this.upstream
      if (upstream === undefined || this.done) return
      const take = Math.min(chunk.length, this.bodyLeft)
      if (take > 0) this.responseChunk(take === chunk.length ? chunk : chunk.subarray(0, take))
      this.bodyLeft -= take
      if (this.bodyLeft > 0) return
      // The body ended: the parser reads the next response on this connection from its start,
      // and bytes past this one (no request asked for them) keep the connection from the pool.
      upstream.parser.initialize(HTTPParser.RESPONSE, {}, maxHeaderSize, 0)
      if (take < chunk.length) upstream.poisoned = true
      this.messageEnd()
    }

    responseChunk(chunk: Buffer): void {
      this.client.upstreamDeadline.touch()
      // The client's socket is corked around the read (`upstreamData`), which then checks
      // whether it must drain: `write`'s answer inside a cork says nothing about the socket.
      writeChunk(this.client.socket, chunk, this.responseChunked)
    }

    responseEnd(): void {
      if (this.done) return
      if (this.interim) {
        this.interim = false
        this.trailers = []
        return
      }
      this.client.upstreamDeadline.disarm()
      if (this.responseChunked) {
        this.client.socket.write(lastChunk(this.trailers), 'latin1')
      }
      this.responseDone = true
      this.settle()
    }

    /** The request body's end came (or there was none). */
    requestEnd(): void {
      this.requestDone = true
      this.client.requestComplete()
      this.settle()
    }

    settle(): void {
      if (!this.responseDone || !this.requestDone || this.done) return
      if (this.executing) {
        // What follows the response in the same read decides whether the connection is kept.
        this.settleLater = true
        return
      }
      this.done = true
      const upstream = this.upstream
      if (upstream !== undefined) {
        if (this.upstreamKeepAlive && !upstream.poisoned) releaseUpstream(upstream)
        else {
          upstream.exchange = undefined
          upstream.socket.destroy()
        }
      }
      this.client.finished(this.closeAfter)
    }

    /** A failure before the response head: the app's answer; after it: the client is cut off. */
    async failed(error: WsgiProxyError): Promise<void> {
      if (this.done) return
      this.done = true
      this.client.upstreamDeadline.disarm()
      this.dropUpstream()
      if (this.answered) {
        this.client.socket.destroy()
        return
      }
      const response = await this.target.fail(error)
      this.client.body = undefined
      if (this.client.state !== 'gone') this.client.answer(response, this.head.method ?? 'GET')
    }

    /** Both connections are cut: the client left, or a timeout. */
    abort(): void {
      if (this.done) return
      this.done = true
      this.client.upstreamDeadline.disarm()
      this.dropUpstream()
      this.client.socket.destroy()
    }

    /** Ends the exchange before its response: the upstream connection is closed. */
    drop(): void {
      this.done = true
      this.client.upstreamDeadline.disarm()
      this.dropUpstream()
    }

    dropUpstream(): void {
      const upstream = this.upstream
      if (upstream === undefined) return
      upstream.exchange = undefined
      upstream.socket.destroy()
    }
  }

  /** Where the request body llhttp parses goes: upstream, framed as it came. */
  class RequestBody {
    readonly exchange: Exchange

    constructor(exchange: Exchange) {
      this.exchange = exchange
    }

    chunk(chunk: Buffer): void {
      const { exchange } = this
      const upstream = exchange.upstream
      // After an early response the upstream may have closed: the rest is read and dropped.
      if (upstream === undefined || exchange.done || upstream.socket.destroyed) return
      exchange.bodySent = true
      // Corked around the read (`receive`), which then checks whether it must drain.
      writeChunk(upstream.socket, chunk, exchange.chunked)
    }

    end(): void {
      const { exchange } = this
      const upstream = exchange.upstream
      // A request's trailer fields are dropped, as the node listener drops them: the app never
      // saw them, so none of its header rules (protocol headers, spoofable ones) could apply.
      if (exchange.chunked && upstream !== undefined && !exchange.done) {
        if (!upstream.socket.destroyed) upstream.socket.write('0\r\n\r\n', 'latin1')
      }
      exchange.requestEnd()
    }
  }

  return {
    accept(socket) {
      socket.setNoDelay(true)
      const connection = new ClientConnection(socket)
      connections.add(connection)
    },
    closeIdle() {
      closing = true
      for (const connection of connections) {
        if (connection.isIdle()) connection.socket.destroy()
      }
      for (const list of idle.values()) for (const upstream of list) upstream.socket.destroy()
      idle.clear()
    },
    drain() {
      draining = true
    },
    closeAll() {
      closing = true
      for (const connection of connections) connection.socket.destroy()
      for (const list of idle.values()) for (const upstream of list) upstream.socket.destroy()
      idle.clear()
    },
  }
}

/**
 * A timer made once and armed again for each use (`refresh`), instead of a new one per request:
 * a connection's head, idle, request and upstream deadlines.
 */
class Deadline {
  #timer: NodeJS.Timeout | undefined
  #ms = 0
  #armed = false
  readonly #fire: () => void

  constructor(fire: () => void) {
    this.#fire = fire
  }

  /** Calls `fire` in `ms` unless disarmed first; `false` or ≤ 0: never. */
  arm(ms: number | false): void {
    if (ms === false || ms <= 0) {
      this.#armed = false
      return
    }
    this.#armed = true
    if (this.#timer !== undefined && this.#ms === ms) {
      this.#timer.refresh()
      return
    }
    clearTimeout(this.#timer)
    this.#ms = ms
    this.#timer = setTimeout(() => {
      if (!this.#armed) return
      this.#armed = false
      this.#fire()
    }, ms)
  }

  /** Starts the armed deadline over (activity). */
  touch(): void {
    if (this.#armed) this.#timer?.refresh()
  }

  disarm(): void {
    this.#armed = false
  }

  close(): void {
    this.#armed = false
    clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

/** Whether node:http must take the request: what the byte-copying front does not do. */
function needsNodeHttp(head: Head): boolean {
  if (head.upgrade || head.major !== 1 || head.minor !== 1) return true
  for (let i = 0; i < head.flat.length; i += 2) {
    const name = (head.flat[i] as string).toLowerCase()
    if (name === 'expect') return true
    if (name === 'x-wsgiproxy-version' && head.flat[i + 1] === '0.1') return true
  }
  return false
}

function headerValue(flat: readonly string[], lower: string): string | undefined {
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i] as string
    if (name.length === lower.length && name.toLowerCase() === lower) return flat[i + 1]
  }
  return undefined
}

// llhttp (strict) accepts Transfer-Encoding only with chunked last, and never beside
// Content-Length, so its presence means a chunked body.
function isChunked(flat: readonly string[]): boolean {
  return headerValue(flat, 'transfer-encoding') !== undefined
}

/**
 * Writes an answer of the app's (a problem, a failure before the upstream answered) as the node
 * listener would: the status line with `statusText`, a `Date`, no body to HEAD or with 204/304,
 * the body streamed chunked with backpressure; then the connection closes (the request's body,
 * if any, was not read to its end).
 *
 * @param socket - the client's socket
 * @param method - the request's method
 * @param answer - the app's response
 */
async function writeAppAnswer(socket: Socket, method: string, answer: AppResponse): Promise<void> {
  const body = answer.body as unknown
  const response =
    body === null || (typeof body === 'object' && Symbol.asyncIterator in body)
      ? answer
      : errorResponse(new WsgiProxyError('APP_ERROR', 'the app answered a body it cannot stream'))
  const status =
    Number.isInteger(response.status) && response.status >= 200 && response.status <= 999
      ? response.status
      : 502
  const given = response.statusText
  const reason =
    typeof given === 'string' && given !== '' && !BAD_VALUE.test(given)
      ? given
      : (STATUS_CODES[status] ?? '')
  const noBody = method === 'HEAD' || status === 204 || status === 304
  let lines = `date: ${new Date().toUTCString()}\r\n${answerHeaderText(response.headers, noBody)}`
  const streamed = !noBody && response.body !== null
  if (streamed) lines += 'transfer-encoding: chunked\r\n'
  else if (!noBody) lines += 'content-length: 0\r\n'
  if (socket.destroyed) {
    release(response.body)
    return
  }
  socket.write(`HTTP/1.1 ${status} ${reason}\r\n${lines}connection: close\r\n\r\n`, 'latin1')
  if (!streamed || response.body === null) release(response.body)
  else {
    try {
      for await (const chunk of response.body) {
        if (socket.destroyed) break
        if (chunk.byteLength === 0) continue
        socket.cork()
        writeChunk(socket, chunk, true)
        socket.uncork()
        if (backedUp(socket)) {
          await new Promise<void>((resolve) => whenWritable(socket, resolve))
        }
      }
      socket.write('0\r\n\r\n', 'latin1')
    } catch {
      // A body that fails mid-stream cuts the connection: the client never sees a clean end.
      socket.destroy()
      return
    }
  }
  closeAfterAnswer(socket)
}

/** Writes body bytes as they are, or as one chunk of chunked framing (RFC 9112 §7.1). */
function writeChunk(socket: Socket, chunk: Uint8Array, chunked: boolean): void {
  if (chunked) {
    socket.write(`${chunk.byteLength.toString(16)}\r\n`, 'latin1')
    socket.write(chunk)
    socket.write('\r\n', 'latin1')
  } else socket.write(chunk)
}

/**
 * Whether a socket holds more than its high-water mark unwritten, so that a reader feeding it
 * must wait for 'drain'. Read after the corked writes: `writableNeedDrain` alone stays true until
 * the next tick even when the kernel took every byte at once on uncork (the 'drain' event is
 * deferred), which paused and resumed the other socket on every chunk of a large body.
 */
function backedUp(socket: Socket): boolean {
  return socket.writableNeedDrain && socket.writableLength >= socket.writableHighWaterMark
}

/** Calls `then` once the socket drained its buffer, or closed (then nothing will drain). */
function whenWritable(socket: Socket, then: () => void): void {
  const done = (): void => {
    socket.off('drain', done)
    socket.off('close', done)
    then()
  }
  socket.once('drain', done)
  socket.once('close', done)
}

/**
 * The last chunk of a chunked body with its trailer section: the fields a trailer may carry, as
 * the other writers keep them (`readTrailers`).
 */
function lastChunk(flat: readonly string[]): string {
  let text = '0\r\n'
  if (flat.length > 0) {
    const lines = readTrailers({
      status: 200,
      headers: [],
      body: null,
      trailers: () => headerLines([...flat]),
    })
    for (const [name, value] of lines) {
      if (TOKEN.test(name) && !BAD_VALUE.test(value)) text += `${name}: ${value}\r\n`
    }
  }
  return `${text}\r\n`
}
