import {
  Cancellation,
  clientCancellation,
  LazyOutbound,
  subscribesToCancellation,
} from './cancellation.ts'
import { WsgiProxyError } from '../errors.ts'
import { stripHopByHop } from './_hop-by-hop.ts'
import { discardBody, isDirectBody, onBodyEnd } from '../streams.ts'
import type { DirectBody } from '../streams.ts'
import { errorResponse } from '../problem.ts'
import { noteAttempt } from '../log.ts'
import { toUpstreamError } from './upstream-error.ts'
import { startClientTrace } from '../telemetry/tracing.ts'
import type { ClientTrace } from '../telemetry/tracing.ts'
import type { AppResponse, Environ, OutboundRequest, ErrorHook, Transport } from '../types.ts'

/** What the forwarding step needs, resolved from validated options. */
export interface ForwardSettings {
  transport: Transport
  headersTimeout: number | false
  bodyTimeout: number | false
  exposeErrors: boolean
  onError: ErrorHook<Environ>
}

/**
 * Sends one request through the transport with the client's abort signal and the timeouts, and
 * answers with the upstream response (hop-by-hop headers removed, body watched) or a problem
 * response. Never throws.
 */
export async function forward(
  outbound: Omit<OutboundRequest, 'signal'>,
  environ: Environ,
  settings: ForwardSettings,
): Promise<AppResponse> {
  const sent = await send(outbound, environ, settings)
  return sent.error === undefined ? sent.response : failure(sent.error, environ, settings)
}

/** What {@link send} gives: the upstream response, or why there is none. */
export type Sent =
  { response: AppResponse; error?: undefined } | { error: WsgiProxyError; response?: undefined }

/**
 * {@link forward} without answering a failure: the upstream response, or the error for the caller
 * to answer or retry. Never throws. With tracing on, each call is one client span
 * (`resendCount`: the tries before this one).
 */
export async function send(
  outbound: Omit<OutboundRequest, 'signal'>,
  environ: Environ,
  settings: ForwardSettings,
  resendCount = 0,
): Promise<Sent> {
  const trace = startClientTrace(
    environ,
    outbound.method,
    outbound.url,
    outbound.headers,
    resendCount,
  )
  if (trace === undefined) return sendOnce(outbound, environ, settings)
  const sent = await sendOnce({ ...outbound, headers: trace.headers }, environ, settings)
  return traced(sent, trace)
}

// The span ends with the response body, or at once without one.
function traced(sent: Sent, trace: ClientTrace): Sent {
  if (sent.error !== undefined) {
    trace.end(sent.error)
    return sent
  }
  const { response } = sent
  trace.respond(response.status)
  if (response.body === null) {
    trace.end()
    return sent
  }
  return { response: { ...response, body: onBodyEnd(response.body, (error) => trace.end(error)) } }
}

async function sendOnce(
  outbound: Omit<OutboundRequest, 'signal'>,
  environ: Environ,
  settings: ForwardSettings,
): Promise<Sent> {
  const start = performance.now()
  const controller = new Cancellation()
  const onClientAbort = (): void =>
    controller.abort(new WsgiProxyError('CLIENT_ABORTED', 'the client closed the request'))
  let release: () => void
  const hook = clientCancellation(environ)
  if (hook !== undefined) {
    if (hook.aborted) onClientAbort()
    else hook.add(onClientAbort)
    release = () => hook.delete(onClientAbort)
  } else {
    const clientSignal = environ['wsgiproxy.signal']
    if (clientSignal?.aborted) onClientAbort()
    else clientSignal?.addEventListener('abort', onClientAbort, { once: true })
    release = () => clientSignal?.removeEventListener('abort', onClientAbort)
  }

  const { headersTimeout } = settings
  const timer =
    headersTimeout === false
      ? undefined
      : setTimeout(() => {
          controller.abort(
            new WsgiProxyError(
              'UPSTREAM_HEADERS_TIMEOUT',
              `no response headers from ${outbound.url.origin} within ${headersTimeout} ms`,
            ),
          )
        }, headersTimeout)

  let response: AppResponse
  try {
    // A transport that subscribes to the cancellation never needs a signal (cancellation.ts).
    response = await settings.transport(
      subscribesToCancellation(settings.transport)
        ? new LazyOutbound(outbound, controller)
        : { ...outbound, signal: controller.signal },
    )
  } catch (error) {
    clearTimeout(timer)
    release()
    const problem = toProxyError(error, controller, outbound.url)
    noteAttempt(problem, outbound.url.origin, start)
    return { error: problem }
  }
  clearTimeout(timer)
  if (controller.aborted) {
    // The transport answered although the request was cancelled meanwhile.
    release()
    void discardBody(response.body)
    const problem = toProxyError(undefined, controller, outbound.url)
    noteAttempt(problem, outbound.url.origin, start)
    return { error: problem }
  }
  const headers = stripHopByHop(response.headers, 'response')
  if (response.body === null) {
    release()
    return { response: { ...response, headers } }
  }
  const body = watchBody(response.body, controller, outbound.url, settings, environ, () => {
    release()
    return start
  })
  return { response: { ...response, headers, body } }
}

/**
 * Maps a problem to a response through the error hook; a failing hook gives a fixed 500.
 */
export async function failure(
  error: WsgiProxyError,
  environ: Environ,
  settings: Pick<ForwardSettings, 'onError' | 'exposeErrors'>,
): Promise<AppResponse> {
  try {
    const replacement = await settings.onError(error, environ)
    return replacement ?? errorResponse(error, settings.exposeErrors)
  } catch {
    return errorResponse(new WsgiProxyError('APP_ERROR', 'the error hook failed'))
  }
}

// A transport's failure in the error taxonomy: a cancellation's reason, a WsgiProxyError as it
// is, anything else read as toUpstreamError reads a client's error (its code, or its cause's): a
// plain error is a reset, never "unreachable", which would let a pool send it again.
function toProxyError(error: unknown, cancel: Cancellation, url: URL): WsgiProxyError {
  if (cancel.aborted && cancel.reason instanceof WsgiProxyError) return cancel.reason
  return toUpstreamError(error, url)
}

/**
 * Wraps the upstream body: a body-idle timer per chunk, errors mapped to `WsgiProxyError`, and an
 * early `return()` (the client went away) that aborts the upstream request at once, even while a
 * read is pending (an async generator would wait for that read to settle first). A
 * {@link DirectBody} stays one: handed over as a stream, it is watched through its hooks, with
 * one idle timer per body instead of one per chunk.
 */
function watchBody(
  body: AsyncIterable<Uint8Array>,
  controller: Cancellation,
  url: URL,
  settings: ForwardSettings,
  environ: Environ,
  release: () => number,
): AsyncIterable<Uint8Array> {
  const { bodyTimeout } = settings
  let iterator: AsyncIterator<Uint8Array> | undefined
  let done = false
  let start = 0
  const finish = (): void => {
    done = true
    start = release()
  }
  const stalled = (): WsgiProxyError =>
    new WsgiProxyError(
      'UPSTREAM_BODY_TIMEOUT',
      `the response body from ${url.origin} stalled for ${bodyTimeout} ms`,
    )
  // The body failed: mapped, the upstream request aborted, the attempt noted and the hook told.
  const failed = (error: unknown): WsgiProxyError => {
    finish()
    const problem = controller.aborted
      ? toProxyError(error, controller, url)
      : new WsgiProxyError('UPSTREAM_RESET', `the response body from ${url.origin} failed`, {
          cause: error,
        })
    controller.abort(problem)
    noteAttempt(problem, url.origin, start)
    try {
      void Promise.resolve(settings.onError(problem, environ)).catch(() => {})
    } catch {
      // the hook's failure must not replace the body error
    }
    return problem
  }
  const cancelled = (): void => {
    if (done) return
    finish()
    controller.abort(new WsgiProxyError('CLIENT_ABORTED', 'the client stopped reading'))
  }
  const watched: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]: () => ({
      async next(): Promise<IteratorResult<Uint8Array>> {
        if (done) return { done: true, value: undefined }
        iterator ??= body[Symbol.asyncIterator]()
        const timer =
          bodyTimeout === false
            ? undefined
            : setTimeout(() => controller.abort(stalled()), bodyTimeout)
        try {
          const result = await iterator.next()
          if (result.done) finish()
          return result
        } catch (error) {
          throw failed(error)
        } finally {
          clearTimeout(timer)
        }
      },
      async return(): Promise<IteratorResult<Uint8Array>> {
        if (!done) {
          cancelled()
          // Not awaited: a source with a read pending settles that read before `return()`.
          if (iterator === undefined) void discardBody(body)
          else void Promise.resolve(iterator.return?.()).catch(() => {})
        }
        return { done: true, value: undefined }
      },
    }),
  }
  if (!isDirectBody(body)) return watched
  const direct: DirectBody = Object.assign(watched, {
    readableStream: (): ReadableStream<Uint8Array> => {
      // One timer per body: when it fires, the time since the last chunk decides, and a source
      // paused because the reader is behind is not stalled.
      let last = performance.now()
      let paused = false
      let timer: ReturnType<typeof setTimeout> | undefined
      const check = (): void => {
        if (done || bodyTimeout === false) return
        const idle = performance.now() - last
        if (paused || idle < bodyTimeout)
          timer = setTimeout(check, paused ? bodyTimeout : bodyTimeout - idle)
        else controller.abort(stalled())
      }
      if (bodyTimeout !== false) timer = setTimeout(check, bodyTimeout)
      return body.readableStream({
        chunk: () => {
          last = performance.now()
        },
        paused: (now) => {
          paused = now
          last = performance.now()
        },
        end: (error) => {
          clearTimeout(timer)
          if (done) return error
          if (error === undefined) {
            finish()
            return undefined
          }
          return failed(error)
        },
        cancelled: () => {
          clearTimeout(timer)
          cancelled()
        },
      })
    },
    takeIfComplete: (): Uint8Array | undefined => {
      if (done) return undefined
      const bytes = body.takeIfComplete?.()
      if (bytes !== undefined) finish()
      return bytes
    },
  })
  return direct
}
