import type { IncomingMessage, ServerResponse } from 'node:http'
import type * as z from 'zod'
import { errorResponse, logErrors } from '@wsgiproxy/core'
import type { AppResponse, Environ, EnvironApp, ErrorHook, ToEnvironOptions } from '@wsgiproxy/core'
import {
  asWsgiProxyError,
  environFromParts,
  parseOptions,
  startServerTrace,
  traceResponse,
} from '@wsgiproxy/core/adapter'
import type { ServerTrace, TraceTrust } from '@wsgiproxy/core/adapter'
import { compileTrust } from '@wsgiproxy/core/protocol'
import { ClientState } from './_client-state.ts'
import { headerLines, noop } from './_node-util.ts'
import { callback, flag, optionsObject, scriptName, trustList, wholeNumber } from './_options.ts'
import { writeResponse } from './_response-writer.ts'

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
   * Called when the app throws or the request cannot be turned into an environ (then `environ` is
   * `undefined`); see {@link ErrorHook}. Return a response to send instead of the default problem
   * response. If it throws, a fixed 500 is sent. Default: log errors with status ≥ 500 to
   * `console.error`.
   */
  onError?: ErrorHook
  /**
   * Peers (addresses, CIDR ranges, or `loopback` / `linklocal` / `uniquelocal`, as `trustIps`)
   * whose W3C `traceparent` the request's span continues, with OpenTelemetry tracing on. Any
   * other client's `traceparent` becomes a link of a new trace, never its parent. Default `[]`:
   * no client is trusted (docs/operations.md, "Tracing").
   */
  trustTraceparent?: readonly string[]
}

/** The schemas of {@link NodeListenerOptions}' fields, which `serve` takes too. */
export const NODE_LISTENER_FIELDS: {
  scriptName: z.ZodOptional<z.ZodType<string>>
  maxHeaders: z.ZodOptional<z.ZodType<number>>
  exposeErrors: z.ZodOptional<z.ZodType<boolean>>
  onError: z.ZodOptional<z.ZodType<ErrorHook>>
  trustTraceparent: z.ZodOptional<z.ZodType<readonly string[]>>
} = {
  scriptName: scriptName().optional(),
  maxHeaders: wholeNumber(1, Infinity, 'a whole number ≥ 1').optional(),
  exposeErrors: flag().optional(),
  onError: callback<ErrorHook>().optional(),
  trustTraceparent: trustList().optional(),
}

const nodeListenerOptions = optionsObject(NODE_LISTENER_FIELDS)

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
 * - The response's trailers (`AppResponse.trailers`) follow its body over HTTP/2, and over
 *   HTTP/1.1 when the body is chunked (no `Content-Length`); fields a trailer must not carry are
 *   dropped. A request's trailers are not passed to the app.
 * - A response to a request with `X-WSGIProxy-Version: 0.1` (from an old Python WSGIProxy front)
 *   has no `Connection` or `Keep-Alive` header, error responses included: that front copies every
 *   response header into its WSGI response, and WSGI servers refuse hop-by-hop headers from an
 *   app (PEP 3333), so wsgiref and waitress would answer 500 instead. The connection still
 *   persists as the request's HTTP version has it by default (RFC 9112 §9.3).
 *
 * @param app - the environ app to serve
 * @param options - mount prefix, header cap, error handling
 * @returns a `request` listener for `http.createServer` or `https.createServer`
 * @throws WsgiProxyError `INVALID_OPTIONS` naming the bad option
 * @example
 * import { createServer } from 'node:http'
 * createServer(toNodeListener(exactProxy({ transport: undiciTransport() }))).listen(8080)
 */
export function toNodeListener(
  app: EnvironApp,
  options?: NodeListenerOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  const opts = parseOptions(nodeListenerOptions, options, 'toNodeListener')
  // One frozen object for every request: core validates it once, the first time it sees it.
  const environOptions: ToEnvironOptions = Object.freeze({
    ...(opts.scriptName === undefined ? {} : { scriptName: opts.scriptName }),
    ...(opts.maxHeaders === undefined ? {} : { maxHeaders: opts.maxHeaders }),
  })
  const exposeErrors = opts.exposeErrors ?? false
  const onError = opts.onError ?? logErrors()
  const traceTrust = toTraceTrust(opts.trustTraceparent)

  async function fail(error: unknown, environ: Environ | undefined): Promise<AppResponse> {
    try {
      // The default response is the original error's (as core's toFetchHandler does).
      return (await onError(asWsgiProxyError(error), environ)) ?? errorResponse(error, exposeErrors)
    } catch {
      return FIXED_500
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const client = new ClientState()
    res.once('close', () => {
      // node:http2's compatibility response reports its stream's writableFinished, which a reset
      // stream (the client's RST_STREAM) has too, since closing it ends its writable side: there
      // whether the response was ended tells whether the client left before it finished.
      if (!(req.httpVersionMajor === 2 ? res.writableEnded : res.writableFinished)) client.close()
    })
    // A client that leaves mid-upload makes `req` fail with "aborted"; whoever reads the body
    // sees that error, and nothing else may crash on it.
    req.on('error', noop)
    const bare = fromWsgiProxy01(req)
    // HTTP/1.0 persists only when the response says `Connection: keep-alive`, which is not sent.
    if (bare && req.httpVersionMajor === 1 && req.httpVersionMinor === 0) {
      res.shouldKeepAlive = false
    }
    let environ: Environ | undefined
    let response: AppResponse
    let trace: ServerTrace | undefined
    const http2 = req.httpVersionMajor === 2
    try {
      environ = environFromParts(
        {
          method: req.method ?? 'GET',
          target: req.url ?? '/',
          headers: http2 ? http2HeaderLines(req.rawHeaders) : headerLines(req.rawHeaders),
          scheme: (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http',
          input: (http2 ? !http2EndedWithHeaders(req) : hasBody(req))
            ? (req as AsyncIterable<Uint8Array>)
            : null,
          ...(req.socket.remoteAddress === undefined
            ? {}
            : { remoteAddr: req.socket.remoteAddress }),
        },
        environOptions,
      )
      if (http2) environ.SERVER_PROTOCOL = 'HTTP/2'
      client.attach(environ)
      trace = startServerTrace(environ, traceTrust)
      if (trace === undefined) response = await app(environ)
      else {
        const env = environ
        response = traceResponse(await trace.run(() => app(env)), trace)
      }
    } catch (error) {
      response = await fail(error, environ)
      if (trace !== undefined) response = traceResponse(response, trace)
    }
    await writeResponse(req.method, res, response, client, bare)
  }

  return (req, res) => {
    handle(req, res).catch(() => {
      // Not reached (writeResponse does not throw); a last guard so the process keeps serving.
      res.destroy()
    })
  }
}

/**
 * The trust of `trustTraceparent`: which peers' `traceparent` continues their trace.
 *
 * @param entries - the list; default none
 * @returns the predicate
 */
export function toTraceTrust(entries: readonly string[] | undefined): TraceTrust {
  if (entries === undefined || entries.length === 0) return () => false
  const trusted = compileTrust(entries)
  return (address) => address !== undefined && trusted(address)
}

/**
 * Whether the request comes from a WSGIProxy 0.1 front (Paste WSGIProxy's `WSGIProxyApp`), which
 * passes every response header but `Transfer-Encoding` to `start_response`: a hop-by-hop header
 * there is an AssertionError in wsgiref (https://peps.python.org/pep-3333/#other-http-features).
 */
function fromWsgiProxy01(req: IncomingMessage): boolean {
  return req.headers['x-wsgiproxy-version'] === '0.1'
}

// RFC 9113 §8.3.1: an HTTP/2 request's pseudo-header fields are not headers; `:authority` is
// its Host when it sent none (a client may send both; then they name the same authority).
function http2HeaderLines(raw: string[]): Array<[string, string]> {
  const lines: Array<[string, string]> = []
  let authority: string | undefined
  let host = false
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? ''
    const value = raw[i + 1] ?? ''
    if (name.startsWith(':')) {
      if (name === ':authority') authority = value
      continue
    }
    if (name === 'host') host = true
    lines.push([name, value])
  }
  if (!host && authority !== undefined) lines.unshift(['host', authority])
  return lines
}

// An HTTP/2 request without a body ends its stream with its headers (RFC 9113 §8.1).
function http2EndedWithHeaders(req: IncomingMessage): boolean {
  return (
    (req as unknown as { stream?: { endAfterHeaders?: boolean } }).stream?.endAfterHeaders === true
  )
}

// RFC 9112 §6.3: a request has a body when it has Transfer-Encoding or a non-zero Content-Length.
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}
