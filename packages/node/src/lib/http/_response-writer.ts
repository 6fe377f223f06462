import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http'
import { constants as http2Constants } from 'node:http2'
import type { Http2Stream } from 'node:http2'
import { problemResponse } from '@wsgiproxy/core'
import {
  HTTP2_CONNECTION_FIELDS,
  isAppResponse,
  isDirectBody,
  readTrailers,
} from '@wsgiproxy/core/adapter'
import type { AppResponse } from '@wsgiproxy/core'
import { noop, release } from './_node-util.ts'

/**
 * What the writer uses of a `ServerResponse`; a test can give a fake with these members instead
 * of a response on a socket.
 */
export interface ResponseSink {
  /** Makes `write`/`end` throw when the body does not match its `Content-Length`. */
  strictContentLength: boolean
  /** `false` closes the connection after the response. */
  shouldKeepAlive: boolean
  /** `removeHeader('connection')` makes Node send neither `Connection` nor `Keep-Alive`. */
  removeHeader(name: string): unknown
  writeHead(status: number, reason: string, headers: string[]): unknown
  /** An HTTP/2 response (`node:http2`'s compatibility API) has its stream. */
  readonly stream?: unknown
  /**
   * Sets the trailer fields sent after the body; HTTP/1.1 sends them only with chunked framing.
   * Absent: trailers are dropped.
   */
  addTrailers?(trailers: Array<[string, string]>): unknown
  /** `false` when the buffer is full: wait for `drain`. */
  write(chunk: Uint8Array): boolean
  end(): unknown
  destroy(): unknown
  on(event: 'drain' | 'close', listener: () => void): unknown
  off(event: 'drain' | 'close', listener: () => void): unknown
}

// An HTTP/2 response (node:http2's compatibility API): a head without a reason phrase, sent at
// once by `writeHead`, or with the end of the stream when `end()` comes first; trailers by name.
interface Http2Sink {
  statusCode: number
  writeHead(status: number, headers: string[]): unknown
  setHeader(name: string, value: string | string[]): unknown
  addTrailers(trailers: Record<string, string | string[]>): unknown
}

/** Whether the client went away, and the writer's wake-up for a read pending meanwhile. */
export interface ResponseClient {
  /** True once the client went away. */
  readonly aborted: boolean
  /** Called when the client goes away; the writer sets it while it waits for the body. */
  wake: (() => void) | undefined
}

// Responses that never carry a body (RFC 9110 §15.3.5, §15.4.5).
const NO_BODY_STATUS: ReadonlySet<number> = new Set([204, 304])

// RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]+$/

// RFC 9112 §9.6: the `close` connection option.
const CLOSE_OPTION = /(?:^|,)[\t ]*close[\t ]*(?:,|$)/i

/**
 * Writes an {@link AppResponse} with backpressure; never throws. What cannot be sent as it is
 * becomes a problem response before anything is written: something that is not a response
 * record 500, a status outside 200–999 or a header line Node refuses 502. A response to `HEAD`,
 * a 204 or 304, or one whose client already left is sent without its body (which is released).
 * A body that fails mid-stream, or does not match its `Content-Length`, cuts the connection, so
 * the client never sees a clean end; a client that leaves stops the body. The response's trailers
 * follow a body that ended (`readTrailers`: without the fields a trailer must not carry) where the
 * response can carry them: HTTP/2, or HTTP/1.1 with chunked framing. An HTTP/2 response with
 * neither body nor trailers ends its stream with its headers.
 *
 * With `bare`, the response has no `Connection` or `Keep-Alive` line: neither Node's own
 * (`Connection: keep-alive`, `Keep-Alive: timeout=N`, `Connection: close`) nor the app's. An
 * app's `Connection: close` still closes the connection after the response; otherwise the
 * connection persists as HTTP/1.1 has it by default (RFC 9112 §9.3).
 *
 * @param method - the request method (`HEAD` gets no body)
 * @param res - the response to write to
 * @param response - what the app answered
 * @param client - the client's state
 * @param bare - send no connection headers (for a WSGIProxy 0.1 front). Default `false`.
 * @returns once the response ended or was cut
 */
export async function writeResponse(
  method: string | undefined,
  res: ResponseSink,
  response: AppResponse,
  client: ResponseClient,
  bare = false,
): Promise<void> {
  if (!isAppResponse(response)) {
    response = problemResponse(500, 'the application did not answer a response record', 'APP_ERROR')
  }
  let { body } = response
  const { status } = response
  // HTTP/2 carries a status of three digits from 100 to 599 (RFC 9113 §8.3.2, Node's check).
  const highest = res.stream === undefined ? 999 : 599
  if (!Number.isInteger(status) || status < 200 || status > highest) {
    release(body)
    return writeResponse(
      method,
      res,
      problemResponse(
        502,
        `the upstream answered with status ${status}, which cannot be sent as a final response`,
        'UPSTREAM_INVALID_RESPONSE',
      ),
      client,
      bare,
    )
  }
  const bodiless = method === 'HEAD' || NO_BODY_STATUS.has(status) || client.aborted
  // Known with the head when there is no body; else read once the body has ended.
  const trailers = body === null && !bodiless ? readTrailers(response) : []
  const head = writeHead(res, response, bare, (body === null || bodiless) && trailers.length === 0)
  if (head === 'destroyed') {
    release(body)
    return
  }
  if (!head) {
    release(body)
    return writeResponse(
      method,
      res,
      problemResponse(502, 'the upstream sent an invalid header line', 'UPSTREAM_INVALID_RESPONSE'),
      client,
      bare,
    )
  }
  if (bodiless) {
    release(body)
    body = null
  }
  // A body longer or shorter than the app's Content-Length throws instead of desyncing the
  // connection (https://nodejs.org/api/http.html#responsestrictcontentlength).
  res.strictContentLength = true
  if (body === null) {
    writeTrailers(res, trailers)
    endOrDestroy(res)
    return
  }
  if (await writeBody(res, body, client)) {
    writeTrailers(res, readTrailers(response))
    endOrDestroy(res)
  }
}

/**
 * Writes the body chunk by chunk, waiting for `drain` when the buffer is full; `true` when it
 * ended and the response may end, `false` when the client left or the body failed (the response
 * is then cut).
 */
async function writeBody(
  res: ResponseSink,
  body: AsyncIterable<Uint8Array>,
  client: ResponseClient,
): Promise<boolean> {
  // A body that has all come already (a small response, as a rule) is written at once, with the
  // head: no read to wait for.
  const whole = isDirectBody(body) ? body.takeIfComplete?.() : undefined
  if (whole !== undefined) {
    try {
      if (whole.byteLength > 0) res.write(whole)
      return true
    } catch {
      // Longer than its Content-Length (strictContentLength): cut, never a clean end.
      cut(res)
      return false
    }
  }
  // One wake-up callback, re-pointed at each pending read: racing every read against one
  // long-lived promise would keep a reaction per chunk alive until the response ends.
  const iterator = body[Symbol.asyncIterator]()
  try {
    for (;;) {
      const next = client.aborted
        ? undefined
        : await new Promise<IteratorResult<Uint8Array> | undefined>((resolve, reject) => {
            client.wake = () => resolve(undefined)
            iterator.next().then(resolve, reject)
          })
      if (next === undefined) {
        // The client left: stop the source. Not awaited, since an async generator runs
        // `return()` only once its pending `next()` settles.
        Promise.resolve(iterator.return?.()).catch(noop)
        return false
      }
      if (next.done) return true
      if (next.value.byteLength > 0 && !res.write(next.value)) await drained(res, client)
    }
  } catch {
    // Headers are sent: the only honest signal left is a cut connection, never a clean end.
    Promise.resolve(iterator.return?.()).catch(noop)
    cut(res)
    return false
  } finally {
    client.wake = undefined
  }
}

/**
 * Cuts a response whose head is sent: HTTP/1.x closes the connection; HTTP/2 resets the stream
 * with INTERNAL_ERROR (RFC 9113 §7), since node:http2 resets a stream destroyed without an error
 * with NO_ERROR, which clients take for the end of a complete response (RFC 9113 §8.1).
 */
function cut(res: ResponseSink): void {
  if (res.stream === undefined) res.destroy()
  else (res.stream as Http2Stream).close(http2Constants.NGHTTP2_INTERNAL_ERROR)
}

function endOrDestroy(res: ResponseSink): void {
  try {
    res.end()
  } catch {
    // A body shorter than its Content-Length (strictContentLength): cut, never a clean end.
    res.destroy()
  }
}

/**
 * Writes the trailer fields (already without those a trailer must not carry) that Node accepts,
 * before the response ends; lower-case and a repeated name as a list for HTTP/2 (RFC 9113
 * §8.2.1). Node sends them over HTTP/1.1 only with chunked framing: a response with a
 * `Content-Length`, or to an HTTP/1.0 client, drops them.
 */
function writeTrailers(res: ResponseSink, lines: Array<[string, string]>): void {
  if (lines.length === 0 || res.addTrailers === undefined) return
  const valid = lines.filter(([name, value]) => isValidField(name, value))
  if (valid.length === 0) return
  try {
    if (res.stream === undefined) {
      res.addTrailers(valid)
      return
    }
    const fields: Record<string, string | string[]> = Object.create(null)
    for (const [name, value] of valid) {
      const lower = name.toLowerCase()
      const had = fields[lower]
      fields[lower] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value]
    }
    ;(res as unknown as Http2Sink).addTrailers(fields)
  } catch {
    // Checked above, so not expected: the trailers are dropped and the response ends as it is.
  }
}

function isValidField(name: string, value: string): boolean {
  try {
    validateHeaderName(name)
    validateHeaderValue(name, value)
    return true
  } catch {
    return false
  }
}

/**
 * Writes the status line and headers; `false` when a header line is invalid, checked before
 * anything is written, because Node applies framing headers as it goes and a failed `writeHead`
 * would leave a half-framed response behind. With `bare`, no connection header is written (see
 * {@link writeResponse}). With `headOnly` (nothing follows the head), an HTTP/2 head is only set
 * here and goes with the end of the stream, as one HEADERS frame that ends it (RFC 9113 §8.1):
 * gRPC's trailers-only answer must arrive so.
 */
function writeHead(
  res: ResponseSink,
  response: AppResponse,
  bare: boolean,
  headOnly: boolean,
): boolean | 'destroyed' {
  const { status, statusText } = response
  const http2 = res.stream !== undefined
  const flat: string[] = []
  let close = false
  for (const line of response.headers as unknown[]) {
    if (!Array.isArray(line)) return false
    const [name, value] = line as unknown[]
    if (typeof name !== 'string' || typeof value !== 'string') return false
    // Node frames the body itself (RFC 9112 §6.1): an app's Transfer-Encoding would be sent
    // beside Node's own framing, or leave the body unframed on a keep-alive connection.
    if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') continue
    if (http2 && HTTP2_CONNECTION_FIELDS.has(name.toLowerCase())) continue
    if (bare && name.length === 10) {
      const lower = name.toLowerCase()
      if (lower === 'connection') {
        close ||= CLOSE_OPTION.test(value)
        continue
      }
      if (lower === 'keep-alive') continue
    }
    if (!isValidField(name, value)) return false
    // A flat array keeps repeated names as separate lines (several Set-Cookie).
    flat.push(name, value)
  }
  const reason =
    statusText !== undefined && REASON_PHRASE.test(statusText)
      ? statusText
      : (STATUS_CODES[status] ?? '')
  try {
    if (bare) {
      // Node adds `Connection` (and `Keep-Alive: timeout=N`) itself unless the header was
      // removed; removed, it sends neither and the connection persists by the version's default.
      res.removeHeader('connection')
      if (close) res.shouldKeepAlive = false
    }
    // HTTP/2 has no reason phrase (RFC 9113 §8.3.2); Node warns when given one.
    if (http2 && headOnly) setHead(res as unknown as Http2Sink, status, flat)
    else if (http2) (res as unknown as Http2Sink).writeHead(status, flat)
    else res.writeHead(status, reason, flat)
  } catch {
    // Checked above, so not expected; the response state cannot be trusted any more.
    res.destroy()
    return 'destroyed'
  }
  return true
}

// Node's HTTP/2 compatibility API sends the head with `END_STREAM` only when `end()` finds it
// unsent: set it here, a repeated name as a list, and leave the sending to `end()`.
function setHead(res: Http2Sink, status: number, flat: string[]): void {
  const fields = new Map<string, string[]>()
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = (flat[i] as string).toLowerCase()
    const values = fields.get(name)
    if (values === undefined) fields.set(name, [flat[i + 1] as string])
    else values.push(flat[i + 1] as string)
  }
  res.statusCode = status
  for (const [name, values] of fields)
    res.setHeader(name, values.length === 1 ? values[0]! : values)
}

function drained(res: ResponseSink, client: ResponseClient): Promise<void> {
  return new Promise((resolve) => {
    if (client.aborted) {
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
