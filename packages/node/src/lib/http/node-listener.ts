import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import {
  environFromParts,
  errorResponse,
  isAppResponse,
  problemResponse,
  WsgiProxyError,
} from '@wsgiproxy/core'
import type { AppResponse, Environ, EnvironApp, ToEnvironOptions } from '@wsgiproxy/core'
import { headerLines, noop, release } from './_node-util.ts'

/** Options of {@link toNodeListener}. */
export interface NodeListenerOptions {
  /** The mount prefix that becomes `SCRIPT_NAME`. Default `''`. */
  scriptName?: string
  /**
   * Header lines accepted per request (repeats count one each); more gives 431. Default 100, as
   * Apache httpd's `LimitRequestFields`.
   */
  maxHeaders?: number
  /** Show error messages in problem bodies (development only: they may name internal addresses). Default `false`. */
  exposeErrors?: boolean
  /**
   * Called when the app throws or the request cannot be turned into an environ. Return a response
   * to send instead of the default problem response. If it throws, a fixed 500 is sent.
   * Default: log errors with status ≥ 500 to `console.error`.
   */
  onError?: (
    error: unknown,
    req: IncomingMessage,
  ) => AppResponse | void | Promise<AppResponse | void>
}

// Responses that never carry a body (RFC 9110 §15.3.5, §15.4.5).
const NO_BODY_STATUS: ReadonlySet<number> = new Set([204, 304])

const FIXED_500_TEXT = new TextEncoder().encode('Internal Server Error')
const FIXED_500: Readonly<AppResponse> = {
  status: 500,
  headers: [
    ['content-type', 'text/plain; charset=utf-8'],
    ['content-length', String(FIXED_500_TEXT.byteLength)],
  ],
  // A new iterator per response: the record is shared.
  body: {
    async *[Symbol.asyncIterator]() {
      yield FIXED_500_TEXT
    },
  },
}

/**
 * Serves an {@link EnvironApp} on `node:http` with no `Request`/`Response` objects on the way: the
 * environ is built straight from the `IncomingMessage` (with the same validation and mapping as
 * `toEnviron`) and the `AppResponse` is written straight to the `ServerResponse`, with
 * backpressure. The listener never throws: failures become problem+json responses.
 *
 * - `REMOTE_ADDR` is the socket's peer address; `wsgi.url_scheme` is `https` on a TLS socket.
 * - `wsgi.input` is the `IncomingMessage` itself when the request has a body, else `null`.
 * - `wsgiproxy.signal` aborts when the response closes before it finished (the client left).
 * - Statuses 200–999 pass through; a 1xx final status or a head Node refuses becomes 502.
 * - A body that fails mid-stream cuts the connection, so the client never sees a clean end.
 *
 * @param app - the environ app to serve
 * @param options - mount prefix, header cap, error handling
 * @returns a `request` listener for `http.createServer` or `https.createServer`
 * @example
 * import { createServer } from 'node:http'
 * createServer(toNodeListener(exactProxy({ transport: undiciTransport() }))).listen(8080)
 */
export function toNodeListener(
  app: EnvironApp,
  options?: NodeListenerOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  const opts = checkOptions(options)
  // One frozen object for every request: core validates it once, the first time it sees it.
  const environOptions: ToEnvironOptions = Object.freeze({
    ...(opts.scriptName === undefined ? {} : { scriptName: opts.scriptName }),
    ...(opts.maxHeaders === undefined ? {} : { maxHeaders: opts.maxHeaders }),
  })
  const exposeErrors = opts.exposeErrors ?? false
  const onError = opts.onError ?? logError

  async function fail(error: unknown, req: IncomingMessage): Promise<AppResponse> {
    try {
      return (await onError(error, req)) ?? errorResponse(error, exposeErrors)
    } catch {
      return FIXED_500
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const client = new ClientState()
    res.once('close', () => {
      if (!res.writableFinished) client.close()
    })
    // A client that leaves mid-upload makes `req` fail with "aborted"; whoever reads the body
    // sees that error, and nothing else may crash on it.
    req.on('error', noop)
    let response: AppResponse
    try {
      const environ = environFromParts(
        {
          method: req.method ?? 'GET',
          target: req.url ?? '/',
          headers: headerLines(req.rawHeaders),
          scheme: (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http',
          input: hasBody(req) ? (req as AsyncIterable<Uint8Array>) : null,
          ...(req.socket.remoteAddress === undefined
            ? {}
            : { remoteAddr: req.socket.remoteAddress }),
        },
        environOptions,
      )
      client.attach(environ)
      response = await app(environ)
    } catch (error) {
      response = await fail(error, req)
    }
    await writeResponse(req, res, response, client)
  }

  return (req, res) => {
    handle(req, res).catch(() => {
      // Not reached (writeResponse does not throw); a last guard so the process keeps serving.
      res.destroy()
    })
  }
}

// The environ key `forward()` in core reads to learn that the client left, without an
// AbortSignal listener per request (core's `_client-close.ts` describes it).
const CLIENT_CLOSE = Symbol.for('wsgiproxy.clientClose')

/**
 * `wsgiproxy.signal` as one accessor shared by every environ, reading the request's
 * {@link ClientState} from the close hook. Accessor functions created per request would give every
 * environ a hidden class of its own: V8 allocates those in the old generation, so each request
 * left garbage only a full collection frees (measured on the listener alone: 16x the
 * old-generation growth, 10 % less throughput and twice the p99 latency of a shared accessor).
 */
const SIGNAL_PROPERTY: PropertyDescriptor = {
  get(this: Record<symbol, unknown>): AbortSignal | undefined {
    const state = this[CLIENT_CLOSE]
    return state instanceof ClientState ? state.signal : undefined
  },
  // An app may replace the signal (as `toEnviron`'s environ allows); it is then a plain value.
  set(this: object, value: unknown) {
    Object.defineProperty(this, 'wsgiproxy.signal', {
      value,
      writable: true,
      enumerable: true,
      configurable: true,
    })
  },
  enumerable: true,
  configurable: true,
}

/**
 * Whether the client of one request went away before its response finished. `wsgiproxy.signal`
 * is created only when something reads it: an AbortSignal per request costs about as much as the
 * rest of the listener's bookkeeping, and the proxy apps learn of a closed client through the
 * hook instead.
 */
class ClientState {
  closed = false
  /** Wakes the response writer when the client goes away during a read. */
  wake: (() => void) | undefined
  #controller: AbortController | undefined
  #listeners: Array<() => void> | undefined

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.closed) this.#controller.abort(clientClosed())
    }
    return this.#controller.signal
  }

  /** Gives the environ its `wsgiproxy.signal` (created on first read) and the close hook. */
  attach(environ: Environ): void {
    ;(environ as unknown as Record<symbol, unknown>)[CLIENT_CLOSE] = this
    Object.defineProperty(environ, 'wsgiproxy.signal', SIGNAL_PROPERTY)
  }

  add(listener: () => void): void {
    ;(this.#listeners ??= []).push(listener)
  }

  delete(listener: () => void): void {
    const listeners = this.#listeners
    const index = listeners === undefined ? -1 : listeners.indexOf(listener)
    if (index >= 0) listeners?.splice(index, 1)
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.#controller?.abort(clientClosed())
    const listeners = this.#listeners
    this.#listeners = undefined
    for (const listener of listeners ?? []) listener()
    this.wake?.()
  }
}

function clientClosed(): WsgiProxyError {
  return new WsgiProxyError('CLIENT_ABORTED', 'the client closed the connection')
}

async function writeResponse(
  req: IncomingMessage,
  res: ServerResponse,
  response: AppResponse,
  client: ClientState,
): Promise<void> {
  if (!isAppResponse(response)) {
    response = problemResponse(500, 'the application did not answer a response record', 'APP_ERROR')
  }
  let { body } = response
  const { status } = response
  if (!Number.isInteger(status) || status < 200 || status > 999) {
    release(body)
    return writeResponse(
      req,
      res,
      problemResponse(
        502,
        `the upstream answered with status ${status}, which cannot be sent as a final response`,
        'UPSTREAM_INVALID_RESPONSE',
      ),
      client,
    )
  }
  const head = writeHead(res, response)
  if (head === 'destroyed') {
    release(body)
    return
  }
  if (!head) {
    release(body)
    return writeResponse(
      req,
      res,
      problemResponse(502, 'the upstream sent an invalid header line', 'UPSTREAM_INVALID_RESPONSE'),
      client,
    )
  }
  if (req.method === 'HEAD' || NO_BODY_STATUS.has(status) || client.closed) {
    release(body)
    body = null
  }
  // A body longer or shorter than the app's Content-Length throws instead of desyncing the
  // connection (https://nodejs.org/api/http.html#responsestrictcontentlength).
  res.strictContentLength = true
  if (body === null) {
    endOrDestroy(res)
    return
  }
  // One wake-up callback, re-pointed at each pending read: racing every read against one
  // long-lived promise would keep a reaction per chunk alive until the response ends.
  const iterator = body[Symbol.asyncIterator]()
  try {
    for (;;) {
      const next = client.closed
        ? undefined
        : await new Promise<IteratorResult<Uint8Array> | undefined>((resolve, reject) => {
            client.wake = () => resolve(undefined)
            iterator.next().then(resolve, reject)
          })
      if (next === undefined) {
        // The client left: stop the source. Not awaited, since an async generator runs
        // `return()` only once its pending `next()` settles.
        Promise.resolve(iterator.return?.()).catch(noop)
        return
      }
      if (next.done) break
      if (next.value.byteLength > 0 && !res.write(next.value)) await drained(res, client)
    }
  } catch {
    // Headers are sent: the only honest signal left is a cut connection, never a clean end.
    Promise.resolve(iterator.return?.()).catch(noop)
    res.destroy()
    return
  } finally {
    client.wake = undefined
  }
  endOrDestroy(res)
}

function endOrDestroy(res: ServerResponse): void {
  try {
    res.end()
  } catch {
    // A body shorter than its Content-Length (strictContentLength): cut, never a clean end.
    res.destroy()
  }
}

// RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]+$/

/**
 * Writes the status line and headers; `false` when a header line is invalid, checked before
 * anything is written, because Node applies framing headers as it goes and a failed `writeHead`
 * would leave a half-framed response behind.
 */
function writeHead(res: ServerResponse, response: AppResponse): boolean | 'destroyed' {
  const { status, statusText } = response
  const flat: string[] = []
  for (const line of response.headers as unknown[]) {
    if (!Array.isArray(line)) return false
    const [name, value] = line as unknown[]
    if (typeof name !== 'string' || typeof value !== 'string') return false
    // Node frames the body itself (RFC 9112 §6.1): an app's Transfer-Encoding would be sent
    // beside Node's own framing, or leave the body unframed on a keep-alive connection.
    if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') continue
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch {
      return false
    }
    // A flat array keeps repeated names as separate lines (several Set-Cookie).
    flat.push(name, value)
  }
  const reason =
    statusText !== undefined && REASON_PHRASE.test(statusText)
      ? statusText
      : (STATUS_CODES[status] ?? '')
  try {
    res.writeHead(status, reason, flat)
  } catch {
    // Checked above, so not expected; the response state cannot be trusted any more.
    res.destroy()
    return 'destroyed'
  }
  return true
}

function drained(res: ServerResponse, client: ClientState): Promise<void> {
  return new Promise((resolve) => {
    if (client.closed) {
      resolve()
      return
    }
    const done = (): void => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

// RFC 9112 §6.3: a request has a body when it has Transfer-Encoding or a non-zero Content-Length.
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

function logError(error: unknown): void {
  const status = (error as Partial<WsgiProxyError> | undefined)?.status ?? 500
  if (status >= 500) console.error('wsgiproxy:', error)
}

function invalidOptions(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', `invalid options: ${message}`, { expose: true })
}

const LISTENER_KEYS = ['scriptName', 'maxHeaders', 'exposeErrors', 'onError']

// @wsgiproxy/node does not depend on zod, so the options are checked by hand, with the same
// message shape as core's option errors.
function checkOptions(options: unknown): NodeListenerOptions {
  const what = 'toNodeListener'
  if (options === undefined) return {}
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidOptions(`${what}: expected an object`)
  }
  const record = options as Record<string, unknown>
  for (const key of Object.keys(record)) {
    if (!LISTENER_KEYS.includes(key)) throw invalidOptions(`${what}: unknown option "${key}"`)
  }
  const { scriptName, maxHeaders, exposeErrors, onError } = record
  if (
    scriptName !== undefined &&
    (typeof scriptName !== 'string' || !/^(?:$|\/)/.test(scriptName))
  ) {
    throw invalidOptions(
      `${what}.scriptName: expected "" or a path starting with "/" (got ${JSON.stringify(scriptName)})`,
    )
  }
  if (
    maxHeaders !== undefined &&
    (typeof maxHeaders !== 'number' || !Number.isInteger(maxHeaders) || maxHeaders < 1)
  ) {
    throw invalidOptions(
      `${what}.maxHeaders: expected a whole number ≥ 1 (got ${String(maxHeaders)})`,
    )
  }
  if (exposeErrors !== undefined && typeof exposeErrors !== 'boolean') {
    throw invalidOptions(`${what}.exposeErrors: expected a boolean (got ${typeof exposeErrors})`)
  }
  if (onError !== undefined && typeof onError !== 'function') {
    throw invalidOptions(`${what}.onError: expected a function (got ${typeof onError})`)
  }
  return record as NodeListenerOptions
}
