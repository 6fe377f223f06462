// Node only: loaded through the `node` condition of `#default-transport` (core's default transport
// on Node) and the `@wsgiproxy/core/undici` entry (which `@wsgiproxy/node` re-exports). The rest
// of core stays on Web globals; this folder is the one place that may use Node and undici.
import { IncomingMessage, STATUS_CODES } from 'node:http'
import type { Readable } from 'node:stream'
import type { buildConnector, Dispatcher } from 'undici'
import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import type { CancelHook } from '../forward/cancellation.ts'
import { cancellationOf, subscribeToCancellation } from '../forward/cancellation.ts'
import { HTTP2_CONNECTION_FIELDS } from '../forward/_hop-by-hop.ts'
import { mayRetry, toUpstreamError } from '../forward/upstream-error.ts'
import { parseOptions } from '../options.ts'
import { callback, optionsObject, wholeNumber } from '../schemas.ts'
import type { AppResponse, OutboundRequest, Transport } from '../types.ts'
import type { BodyWatch, DirectBody } from '../streams.ts'
import {
  createTlsConnector,
  refusalBehind,
  toConnectOptions,
  UPSTREAM_TLS,
} from './_upstream-tls.ts'
import { Agent } from './_undici-parts.ts'

/**
 * TLS to `https://` upstreams: which certificates to trust, the client certificate to show (mutual
 * TLS), and the name to check. PEM is read when the transport is made: a certificate Node cannot
 * read, or a key that does not fit its certificate, is `INVALID_OPTIONS`.
 */
export interface UndiciTransportTls {
  /**
   * The CA certificates (PEM; a string or Buffer may hold several) that an upstream's certificate
   * must chain to, such as a private CA's. They replace Node's default trust (its Mozilla roots and
   * `NODE_EXTRA_CA_CERTS`); add `rootCertificates` from `node:tls` to the list to trust public CAs
   * as well. Default: Node's default trust.
   */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>
  /**
   * The client certificate (PEM, any intermediates after it) shown to upstreams that ask for one
   * (mutual TLS). Needs `key`. Default: none.
   */
  cert?: string | Buffer
  /** The private key of `cert` (PEM, not encrypted). Needs `cert`. Default: none. */
  key?: string | Buffer
  /**
   * The name sent as SNI and checked against every upstream certificate of this transport, for an
   * upstream reached by address or under another name. Default: the name of the request's `Host`
   * (so an exact proxy with `resolve` checks the name it was asked for, not the address it
   * connects to), and for an IP address no SNI and a check against the address.
   */
  servername?: string
  /**
   * Refuse an upstream whose certificate does not chain to a trusted CA or is not for the server
   * name ([RFC 9110 §4.3.4](https://www.rfc-editor.org/rfc/rfc9110#section-4.3.4)). Default
   * `true`. `false` accepts any certificate, so anyone on the network path can read and change the
   * traffic; the transport then warns once (`onWarning`). Trust the upstream's CA with `ca`
   * instead.
   */
  rejectUnauthorized?: boolean
}

/** Options of {@link undiciTransport}. */
export interface UndiciTransportOptions {
  /** Connect timeout in milliseconds; a miss gives 504 `UPSTREAM_CONNECT_TIMEOUT`. Default 10000. */
  connectTimeout?: number
  /** Send every request over this unix socket instead of TCP (the URL still gives Host and path). */
  socketPath?: string
  /**
   * Idle keep-alive sockets are closed after this many milliseconds. Default 4000, below the
   * 5 s keep-alive of a Node server, so a request is never sent on a socket the server is closing.
   */
  keepAliveTimeout?: number
  /** The most sockets per upstream origin. Default: unlimited. */
  connections?: number
  /**
   * TLS to `https://` upstreams; see {@link UndiciTransportTls}. Default: Node's default trust, no
   * client certificate, the server name from `Host`.
   */
  tls?: UndiciTransportTls
  /**
   * Speak HTTP/2 to upstreams, as gRPC needs.
   *
   * - `true`: offer HTTP/2 by ALPN to `https://` upstreams; one that picks it is spoken to in
   *   HTTP/2, one that does not in HTTP/1.1. `http://` upstreams stay HTTP/1.1.
   * - `'h2c'`: as `true`, and every `http://` upstream is spoken to in HTTP/2 over plain TCP with
   *   prior knowledge ([RFC 9113 §3.3](https://www.rfc-editor.org/rfc/rfc9113#section-3.3)), so
   *   each must speak it: an HTTP/1.1-only server answers nothing undici can read (502). Use
   *   another transport for those.
   *
   * With either, connection-specific request headers (`Connection`, `Keep-Alive`,
   * `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, `HTTP2-Settings`, and `TE` other than
   * `trailers`) are never sent, to any upstream
   * ([RFC 9113 §8.2.2](https://www.rfc-editor.org/rfc/rfc9113#section-8.2.2)). Each connection
   * carries one request at a time, as over HTTP/1.1; more open as needed (up to `connections`).
   * Default `false`: HTTP/1.1 only.
   */
  http2?: boolean | 'h2c'
  /**
   * Called with what the transport warns about: once, at the first `https://` request, that
   * `tls.rejectUnauthorized: false` leaves upstream certificates unchecked. Default: one
   * `console.warn` line (`wsgiproxy: ...`).
   */
  onWarning?: (message: string) => void
  /**
   * Use this undici Dispatcher (`Agent`, `Pool`, ...) instead of an own `Agent`; the other options
   * then do not apply and `close()` leaves it open.
   */
  dispatcher?: Dispatcher
}

/** A {@link Transport} with a pool of keep-alive sockets to close. */
export interface UndiciTransport extends Transport {
  /** Closes the pooled sockets, waiting for in-flight requests. */
  close(): Promise<void>
}

const DEFAULT_CONNECT_TIMEOUT = 10_000
const DEFAULT_KEEP_ALIVE_TIMEOUT = 4_000

const positive = (): z.ZodOptional<z.ZodType<number>> =>
  wholeNumber(1, Number.MAX_SAFE_INTEGER, 'a positive whole number').optional()

const undiciTransportOptions = optionsObject({
  connectTimeout: positive(),
  socketPath: z
    .custom<string>((value) => typeof value === 'string' && value !== '', {
      error: (issue) => `expected a non-empty string (got ${JSON.stringify(issue.input)})`,
    })
    .optional(),
  keepAliveTimeout: positive(),
  connections: positive(),
  tls: UPSTREAM_TLS.optional(),
  http2: z
    .union([z.boolean(), z.literal('h2c')], {
      error: (issue) => `expected true, false or 'h2c' (got ${JSON.stringify(issue.input)})`,
    })
    .optional(),
  onWarning: callback<NonNullable<UndiciTransportOptions['onWarning']>>().optional(),
  dispatcher: z
    .custom<Dispatcher>(
      (value) => typeof (value as { request?: unknown } | null)?.request === 'function',
      { error: 'expected an undici Dispatcher (Agent, Pool, ...)' },
    )
    .optional(),
}).superRefine((options, context) => {
  if (options.dispatcher === undefined) return
  for (const [key, value] of Object.entries(options)) {
    if (key === 'dispatcher' || value === undefined) continue
    context.addIssue({
      code: 'custom',
      path: [key],
      message: 'cannot be combined with dispatcher (configure the dispatcher instead)',
    })
  }
})

/**
 * A {@link Transport} on undici's keep-alive pool for Node: sends `Host` exactly as given (which
 * runtime `fetch` cannot), passes bodies through without decoding them, streams both ways, never
 * follows redirects, and can reach a unix-socket upstream. Headers and body-idle timeouts are the
 * forwarding app's (through the signal); undici's own are turned off so errors keep one taxonomy.
 * `https://` upstreams are checked against `tls.ca` (default: Node's trust) and may be shown a
 * client certificate; a failed handshake is 502 `UPSTREAM_TLS_FAILED` naming the reason. With
 * `http2`, upstreams are spoken to in HTTP/2 (by ALPN, or h2c), request and response bodies stream
 * at the same time (full duplex, as bidirectional gRPC needs), and the response's trailers come
 * with it (`AppResponse.trailers`, over HTTP/1.1 too).
 *
 * @param options - connect timeout, unix socket, keep-alive, TLS, or an own dispatcher
 * @returns the transport, with `close()` for its pool
 * @example
 * const transport = undiciTransport({ connectTimeout: 2_000 })
 * const app = exactProxy({ transport })
 * // on shutdown
 * await transport.close()
 * @example
 * // mutual TLS with an upstream whose certificate a private CA issued
 * const transport = undiciTransport({
 *   tls: {
 *     ca: readFileSync('internal-ca.pem'),
 *     cert: readFileSync('proxy.pem'),
 *     key: readFileSync('proxy-key.pem'),
 *   },
 * })
 * const app = createProxyApp({ href: 'https://10.0.0.5:8443', transport })
 * @example
 * // gRPC: HTTP/2 to an h2c upstream
 * const app = createProxyApp({
 *   href: 'http://127.0.0.1:50051',
 *   transport: undiciTransport({ http2: 'h2c' }),
 * })
 */
export function undiciTransport(options: UndiciTransportOptions = {}): UndiciTransport {
  const opts = parseOptions(undiciTransportOptions, options, 'undiciTransport')
  const own = opts.dispatcher === undefined
  const dispatcher = opts.dispatcher ?? createAgent(opts)
  const servername = opts.tls?.servername
  const http2 = (opts.http2 ?? false) !== false
  let unverified = opts.tls?.rejectUnauthorized === false
  let closing: Promise<void> | undefined

  const transport = (outbound: OutboundRequest): Promise<AppResponse> => {
    const { url, method } = outbound
    if (unverified && url.protocol === 'https:') {
      unverified = false
      warn(opts.onWarning, unverifiedWarning(url.origin))
    }
    const cancel = cancellationOf(outbound)
    const hasBody = outbound.body !== null
    let attempts = 0
    return new Promise((resolve, reject) => {
      const send = (): void => {
        attempts++
        const handler = new ResponseHandler(method, outbound.body, cancel, resolve, (reported) => {
          const error = refusalBehind(reported)
          // Sent once more when its connection failed before any answer (core's retry rule).
          if (mayRetry(method, hasBody, error, attempts, cancel)) send()
          else reject(toUpstreamError(error, url, cancel))
        })
        if (handler.settled) return
        const request: Dispatcher.DispatchOptions & { servername?: string } = {
          origin: url.origin,
          path: url.pathname + url.search,
          method: method as Dispatcher.HttpMethod,
          // A flat [name, value, ...] list keeps repeated headers and a Host that is not the
          // connect address.
          headers: http2 ? toHttp2Headers(outbound.headers) : outbound.headers.flat(),
          // undici streams any async iterable and checks it against Content-Length.
          body: outbound.body as Readable | null,
          // The forwarding app runs the headers and body-idle timers through the signal.
          headersTimeout: 0,
          bodyTimeout: 0,
        }
        // Per request, as undici's own dns interceptor does: otherwise undici takes the name
        // from Host before the connector's default.
        if (servername !== undefined) request.servername = servername
        try {
          dispatcher.dispatch(request, handler)
        } catch (error) {
          handler.onError(error as Error)
        }
      }
      send()
    })
  }

  // Tells core's forward() to hand over its cancellation instead of creating a signal.
  subscribeToCancellation(transport)
  return Object.assign(transport, {
    close(): Promise<void> {
      if (!own) return Promise.resolve()
      closing ??= dispatcher.close()
      return closing
    },
  })
}

// A response body holds at most this many bytes before undici is paused (as a Readable's
// default highWaterMark for bytes).
const BODY_HIGH_WATER_MARK = 64 * 1024

type Resume = () => void
type Pending = {
  resolve: (result: IteratorResult<Uint8Array>) => void
  reject: (error: unknown) => void
}

/**
 * undici's dispatch handler for one request, and the response body it produces: no Readable, no
 * AsyncResource, headers read once. The body is an async iterable over a small queue; undici is
 * paused while the queue holds `BODY_HIGH_WATER_MARK` bytes and resumed as they are read.
 */
class ResponseHandler implements Dispatcher.DispatchHandler, DirectBody {
  settled = false
  #method: string
  #requestBody: unknown
  #cancel: CancelHook
  #resolve: (response: AppResponse) => void
  #reject: (error: unknown) => void
  #abort: ((reason?: Error) => void) | undefined
  #resume: Resume | undefined
  #queue: Uint8Array[] = []
  #queued = 0
  #paused = false
  #ended = false
  #error: unknown = undefined
  #pending: Pending | undefined
  #iterated = false
  // Set when the body is read as a ReadableStream (the fetch path's direct route): chunks go
  // straight into its queue, and `#watch` is told of each step.
  #stream: ReadableStreamDefaultController<Uint8Array> | undefined
  #watch: BodyWatch | undefined
  #data = false
  #trailers: Array<[string, string]> = []
  #readTrailers = (): Array<[string, string]> => this.#trailers
  #onAbort = (): void => this.#abortRequest(this.#cancel.reason as Error)

  constructor(
    method: string,
    requestBody: unknown,
    cancel: CancelHook,
    resolve: (response: AppResponse) => void,
    reject: (error: unknown) => void,
  ) {
    this.#method = method
    this.#requestBody = requestBody
    this.#cancel = cancel
    this.#resolve = resolve
    this.#reject = reject
    if (cancel.aborted) {
      this.settled = true
      reject(cancel.reason)
    } else {
      cancel.add(this.#onAbort)
    }
  }

  onConnect(abort: (reason?: Error) => void): void {
    if (this.#cancel.aborted) abort(this.#cancel.reason as Error)
    else this.#abort = abort
  }

  onHeaders(status: number, raw: Buffer[], resume: Resume, statusText: string): boolean {
    // Interim responses (100 Continue, 103 Early Hints) are not forwarded.
    if (status < 200) return true
    this.#resume = resume
    const headers: Array<[string, string]> = []
    for (let i = 0; i + 1 < raw.length; i += 2) {
      headers.push([
        (raw[i] as Buffer).toString('latin1'),
        (raw[i + 1] as Buffer).toString('latin1'),
      ])
    }
    const method = this.#method
    const empty = method === 'HEAD' || status === 204 || status === 304
    const response: AppResponse = { status, headers, body: empty ? null : this }
    if (!empty) response.trailers = this.#readTrailers
    const text = statusText || STATUS_CODES[status]
    if (text) response.statusText = text
    this.settled = true
    // Given after what undici reports in the same turn: an HTTP/2 response that ended with its
    // headers (gRPC's trailers-only answer) has completed by then, and goes on without a body, so
    // that an HTTP/2 server in front ends its stream with the headers as well.
    queueMicrotask(() => {
      if (this.#ended && this.#error === undefined && !this.#data && !this.#iterated) {
        response.body = null
      }
      this.#resolve(response)
    })
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.#ended) return true
    this.#data = true
    const stream = this.#stream
    if (stream !== undefined) {
      this.#watch?.chunk()
      stream.enqueue(chunk)
      if ((stream.desiredSize ?? 1) > 0) return true
      this.#paused = true
      this.#watch?.paused(true)
      return false
    }
    const pending = this.#pending
    if (pending !== undefined && this.#queued === 0) {
      this.#pending = undefined
      pending.resolve({ done: false, value: chunk })
      return true
    }
    this.#queue.push(chunk)
    this.#queued += chunk.byteLength
    if (this.#queued < BODY_HIGH_WATER_MARK) return true
    this.#paused = true
    return false
  }

  onComplete(trailers: unknown): void {
    this.#trailers = toTrailerLines(trailers)
    this.#finish(undefined)
  }

  onError(error: Error): void {
    if (!this.settled) {
      this.settled = true
      this.#cancel.delete(this.#onAbort)
      // As undici's own request(): a request body that will not be sent is destroyed; but not a
      // server's incoming request (the node listener's `wsgi.input`), whose destroy() would close
      // the client's connection before the answer to this failure reaches it. node:http discards
      // what is left of it once the answer is sent.
      const body = this.#requestBody as { destroy?: (error?: Error) => void } | null
      if (typeof body?.destroy === 'function' && !(body instanceof IncomingMessage)) {
        ;(body as { on?: (event: string, fn: () => void) => void }).on?.('error', () => {})
        body.destroy(error)
      }
      this.#reject(error)
      return
    }
    this.#finish(error)
  }

  #finish(error: unknown): void {
    if (this.#ended) return
    this.#ended = true
    this.#error = error
    this.#cancel.delete(this.#onAbort)
    const stream = this.#stream
    if (stream !== undefined) {
      const failure = this.#watch === undefined ? error : this.#watch.end(error)
      if (error === undefined) stream.close()
      else stream.error(failure)
      return
    }
    const pending = this.#pending
    if (pending === undefined || this.#queued > 0) return
    this.#pending = undefined
    if (error === undefined) pending.resolve({ done: true, value: undefined })
    else pending.reject(error)
  }

  #abortRequest(reason: Error): void {
    const abort = this.#abort
    this.#abort = undefined
    if (abort !== undefined) abort(reason)
  }

  // Only a body that came in at most one chunk: joining several would copy them (a 64 KiB echo
  // measured slower so), and they are as well written one by one.
  takeIfComplete(): Uint8Array | undefined {
    if (this.#iterated || !this.#ended || this.#error !== undefined) return undefined
    if (this.#queue.length > 1) return undefined
    this.#iterated = true
    const chunk = this.#queue[0] ?? new Uint8Array(0)
    this.#queue = []
    this.#queued = 0
    return chunk
  }

  readableStream(watch?: BodyWatch): ReadableStream<Uint8Array> {
    if (this.#iterated) throw new TypeError('the response body can be read only once')
    this.#iterated = true
    this.#watch = watch
    return new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.#stream = controller
          // What came before the stream was asked for (nothing, as a rule: it is asked for as
          // the response is answered).
          for (const chunk of this.#queue) controller.enqueue(chunk)
          this.#queue = []
          this.#queued = 0
          if (this.#ended) {
            const failure = watch === undefined ? this.#error : watch.end(this.#error)
            if (this.#error === undefined) controller.close()
            else controller.error(failure)
          }
        },
        pull: () => {
          if (!this.#paused) return
          this.#paused = false
          this.#watch?.paused(false)
          this.#resume?.()
        },
        cancel: () => {
          if (this.#ended) return
          this.#ended = true
          this.#cancel.delete(this.#onAbort)
          this.#watch?.cancelled()
          this.#abortRequest(
            new WsgiProxyError('CLIENT_ABORTED', 'the response body was abandoned'),
          )
        },
      },
      { highWaterMark: BODY_HIGH_WATER_MARK, size: (chunk) => chunk.byteLength },
    )
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    if (this.#iterated) throw new TypeError('the response body can be read only once')
    this.#iterated = true
    return {
      next: () => this.#next(),
      return: () => {
        this.#queue = []
        this.#queued = 0
        const pending = this.#pending
        this.#pending = undefined
        pending?.resolve({ done: true, value: undefined })
        if (!this.#ended) {
          this.#ended = true
          this.#cancel.delete(this.#onAbort)
          this.#abortRequest(
            new WsgiProxyError('CLIENT_ABORTED', 'the response body was abandoned'),
          )
        }
        return Promise.resolve({ done: true, value: undefined })
      },
    }
  }

  #next(): Promise<IteratorResult<Uint8Array>> {
    const chunk = this.#queue.shift()
    if (chunk !== undefined) {
      this.#queued -= chunk.byteLength
      if (this.#paused && this.#queued < BODY_HIGH_WATER_MARK) {
        this.#paused = false
        this.#resume?.()
      }
      return Promise.resolve({ done: false, value: chunk })
    }
    if (this.#ended) {
      return this.#error === undefined
        ? Promise.resolve({ done: true, value: undefined })
        : Promise.reject(this.#error)
    }
    if (this.#pending !== undefined)
      return Promise.reject(new TypeError('a read is already pending'))
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject }
    })
  }
}

function createAgent(options: UndiciTransportOptions): Agent {
  const keepAliveTimeout = options.keepAliveTimeout ?? DEFAULT_KEEP_ALIVE_TIMEOUT
  const http2 = options.http2 ?? false
  // The connector is built once, so ALPN (`allowH2`) and h2c (`useH2c`: every plain socket is
  // marked as speaking h2) are set here; undici hands a custom connector neither per call.
  const connect: buildConnector.BuildOptions & { useH2c?: boolean } = {
    timeout: options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT,
    ...toConnectOptions(options.tls),
    allowH2: http2 !== false,
  }
  if (http2 === 'h2c') connect.useH2c = true
  if (options.socketPath !== undefined) connect.socketPath = options.socketPath
  return new Agent({
    connect: createTlsConnector(connect, options.tls?.cert !== undefined),
    keepAliveTimeout,
    // A server's `Keep-Alive: timeout=` hint may shorten the idle time, never lengthen it.
    keepAliveMaxTimeout: keepAliveTimeout,
    connections: options.connections ?? null,
    allowH2: http2 !== false,
  })
}

/** Header lines as undici's flat list, without what an HTTP/2 request must not carry. */
function toHttp2Headers(lines: Array<[string, string]>): string[] {
  const flat: string[] = []
  for (const [name, value] of lines) {
    const lower = name.toLowerCase()
    if (HTTP2_CONNECTION_FIELDS.has(lower)) continue
    if (lower === 'te' && value.trim().toLowerCase() !== 'trailers') continue
    flat.push(name, value)
  }
  return flat
}

/**
 * undici's trailers as lines: HTTP/1.1 gives a flat `[name, value, ...]` list of Buffers, HTTP/2
 * Node's header object (a repeated name as an array of values); `[]` for none.
 */
function toTrailerLines(raw: unknown): Array<[string, string]> {
  if (typeof raw !== 'object' || raw === null) return []
  const lines: Array<[string, string]> = []
  if (Array.isArray(raw)) {
    for (let i = 0; i + 1 < raw.length; i += 2) {
      lines.push([latin1(raw[i]), latin1(raw[i + 1])])
    }
    return lines
  }
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (Array.isArray(value)) for (const each of value) lines.push([name, String(each)])
    else if (value !== undefined) lines.push([name, String(value)])
  }
  return lines
}

function latin1(value: unknown): string {
  return Buffer.isBuffer(value) ? value.toString('latin1') : String(value)
}

function unverifiedWarning(origin: string): string {
  return `undiciTransport: tls.rejectUnauthorized is false, so no upstream certificate is checked (${origin} is the first) and anyone on the network path can read and change the traffic; trust the upstream's CA with tls.ca (and name the upstream with tls.servername) instead of turning the check off`
}

function warn(onWarning: ((message: string) => void) | undefined, message: string): void {
  if (onWarning === undefined) {
    console.warn(`wsgiproxy: ${message}`)
    return
  }
  try {
    onWarning(message)
  } catch {
    // a failing hook must not fail the request
  }
}
