// The proxy app of a pool: each try takes a target from the pool (waiting in its queue when every
// target is at its limit), prepares the request for that target (Host, path, signature), sends
// it, reports the outcome for passive health, and tries another target when the rules of
// docs/pools.md allow; the target stays counted in flight until the response body ends.
import { asWsgiProxyError, WsgiProxyError } from '../errors.ts'
import type { CancelHook } from '../forward/cancellation.ts'
import { clientCancellation } from '../forward/cancellation.ts'
import type { ForwardSettings } from '../forward/_forward.ts'
import { failure, send } from '../forward/_forward.ts'
import type { PrepareSettings } from '../forward/_prepare-request.ts'
import { prepareRequest } from '../forward/_prepare-request.ts'
import { onBodyEnd } from '../streams.ts'
import type { AppResponse, Environ } from '../types.ts'
import type { Pool, PoolTarget } from './upstream-pool.ts'
import { mayTryElsewhere, neverReached, TrackedBody } from './retry-rules.ts'

/** Per target: its prepare settings and how its responses are mapped (Location rewriting). */
export interface TargetRoute {
  prepare: PrepareSettings
  respond: (response: AppResponse, scriptName: string) => AppResponse
}

// Failures that say something about the target (passive health counts them); a client that
// left or a request that cannot be sent says nothing about it.
const TARGET_FAILURES: ReadonlySet<string> = new Set([
  'UPSTREAM_UNREACHABLE',
  'UPSTREAM_CONNECT_TIMEOUT',
  'UPSTREAM_RESET',
  'UPSTREAM_INVALID_RESPONSE',
  'UPSTREAM_HEADERS_TIMEOUT',
  'UPSTREAM_BODY_TIMEOUT',
  'UPSTREAM_TLS_FAILED',
])

/**
 * The environ app over a pool.
 *
 * @param pool - the pool
 * @param routes - per target (by the pool's target), its prepare settings and response mapping
 * @param settings - the forwarding settings
 * @returns the app
 */
export function createPooledApp(
  pool: Pool,
  routes: ReadonlyMap<PoolTarget, TargetRoute>,
  settings: ForwardSettings,
): (environ: Environ) => Promise<AppResponse> {
  const { retries, limits } = pool.settings
  const attempts = retries === false ? 1 : retries.attempts
  const triesHeader = retries === false ? undefined : retries.header

  const answerFailure = async (
    error: WsgiProxyError,
    environ: Environ,
    tries: number,
  ): Promise<AppResponse> => {
    const response = await failure(error, environ, settings)
    const extra: Array<[string, string]> = []
    if (error.code === 'UPSTREAM_OVERLOADED' && !hasHeader(response, 'retry-after')) {
      extra.push(['retry-after', String(limits.retryAfter)])
    }
    if (triesHeader !== undefined && tries > 0) extra.push([triesHeader, String(tries)])
    // A copy: the error hook's response may be shared or frozen.
    return extra.length === 0 ? response : { ...response, headers: [...response.headers, ...extra] }
  }

  return async (environ) => {
    const input = environ['wsgi.input']
    const body = input === null || input === undefined ? null : new TrackedBody(input)
    if (body !== null) environ['wsgi.input'] = body
    const method = environ.REQUEST_METHOD
    const key = pool.keyOf(environ)
    const cancel = cancellationOf(environ)
    const tried: PoolTarget[] = []
    let lastError: WsgiProxyError | undefined
    // Whether the try under way is a retry the budget counts (until it has an answer).
    let retrying = false
    const endRetry = (): void => {
      if (retrying) pool.endRetry()
      retrying = false
    }
    pool.begin()
    try {
      for (;;) {
        const taken = await pool.acquire(key, tried, cancel)
        // No target left to try: the last try's failure is the answer.
        if (taken === undefined)
          return await answerFailure(lastError as WsgiProxyError, environ, tried.length)
        // Overloaded (the queue full or its wait over), or the client left while waiting.
        if (taken instanceof WsgiProxyError)
          return await answerFailure(taken, environ, tried.length)
        const target = taken
        tried.push(target)
        // For a request log: the target this try went to.
        environ['wsgiproxy.upstream'] = target.name
        const route = routes.get(target) as TargetRoute
        let prepared: Awaited<ReturnType<typeof prepareRequest>>
        try {
          prepared = await prepareRequest(environ, undefined, route.prepare)
        } catch (error) {
          // Only an environ user code broke gets here; the slot must not leak.
          pool.release(target)
          throw error
        }
        if ('response' in prepared) {
          pool.release(target)
          return withTries(prepared.response, triesHeader, tried.length)
        }
        const { url, headers } = prepared
        // Counted as it is sent: a retry with no target left to go to is no retry.
        if (tried.length > 1) pool.countRetry()
        const sent = await send(
          { url, method, headers, body: prepared.body },
          environ,
          settings,
          tried.length - 1,
        )
        endRetry()
        if (sent.error === undefined) {
          const { response } = sent
          // A 5xx is a failure at once; any other answer once its body has come whole.
          if (response.status >= 500) pool.report(target, false)
          const watched = releaseOnEnd(response, (error) => {
            pool.release(target)
            if (response.status >= 500) return
            if (error === undefined) pool.report(target, true)
            else if (TARGET_FAILURES.has(error.code)) pool.report(target, false)
          })
          return route.respond(withTries(watched, triesHeader, tried.length), prepared.scriptName)
        }
        pool.release(target)
        const error = sent.error
        if (TARGET_FAILURES.has(error.code)) pool.report(target, false, isConnectError(error))
        lastError = error
        let again =
          tried.length < attempts &&
          mayTryElsewhere(error, method, body) &&
          cancel?.aborted !== true
        // A try that never reached its target put no load on one: its retry is not budgeted.
        if (again && !neverReached(error)) again = retrying = pool.beginRetry()
        if (!again) return await answerFailure(error, environ, tried.length)
      }
    } finally {
      endRetry()
      pool.end()
    }
  }
}

// The client's cancellation as a hook: the adapter's, or one over `wsgiproxy.signal`.
function cancellationOf(environ: Environ): CancelHook | undefined {
  const hook = clientCancellation(environ)
  if (hook !== undefined) return hook
  const signal = environ['wsgiproxy.signal']
  if (signal === undefined) return undefined
  return {
    get aborted() {
      return signal.aborted
    },
    get reason() {
      return signal.reason as unknown
    },
    add: (listener) => signal.addEventListener('abort', listener, { once: true }),
    delete: (listener) => signal.removeEventListener('abort', listener),
  }
}

// Calls `done` once when the response body has ended (no error), failed (its error) or been
// abandoned by the client (a CLIENT_ABORTED error); at once for a response without a body.
function releaseOnEnd(
  response: AppResponse,
  done: (error: WsgiProxyError | undefined) => void,
): AppResponse {
  const { body } = response
  if (body === null) {
    done(undefined)
    return response
  }
  const watched = onBodyEnd(body, (error) =>
    done(error === undefined ? undefined : asWsgiProxyError(error, 'the response body failed')),
  )
  return { ...response, body: watched }
}

// The response with the number of tries in `header`, when one is configured.
function withTries(response: AppResponse, header: string | undefined, tries: number): AppResponse {
  if (header === undefined) return response
  return { ...response, headers: [...response.headers, [header, String(tries)]] }
}

function hasHeader(response: AppResponse, name: string): boolean {
  return response.headers.some(([key]) => key.toLowerCase() === name)
}

// A try that never reached its target, for `connectErrors`: no connection, or no TLS session.
function isConnectError(error: WsgiProxyError): boolean {
  return neverReached(error) || error.code === 'UPSTREAM_TLS_FAILED'
}
