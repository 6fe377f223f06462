// The environ app of a spawner: a request (or WebSocket upgrade) takes the ready backend or waits
// for one, is forwarded, and stays in flight until its response body or upgraded connection ends,
// so that an idle stop never cuts it. Failures become responses, never exceptions (docs/design.md §8).
import { errorResponse, problemResponse, WsgiProxyError } from '@wsgiproxy/core'
import { isAppResponse, onBodyEnd } from '@wsgiproxy/core/adapter'
import type { AppResponse, Environ, ErrorHook, UpgradableApp, UpgradeTarget } from '@wsgiproxy/core'
import type { BackendProcess } from './_backend-process.ts'
import { SpawnerError } from './spawner-error.ts'

/** What a request is forwarded through: a backend's proxy app, once it is ready. */
export interface Forwarder {
  /** The proxy app forwarding to the backend. */
  proxy: UpgradableApp | undefined
}

/** The spawner's side of its app (a leased app's: `B` is a lease with its proxy app). */
export interface Admission<B extends Forwarder = BackendProcess> {
  /** The ready backend, counted in flight; waits for a start when there is none. */
  acquire(signal: AbortSignal | undefined): Promise<B>
  /** Ends one request (or upgraded connection) in flight to `backend`. */
  release(backend: B): void
  /** The response for a failure. */
  respond(error: unknown, environ: Environ): Promise<AppResponse>
}

/** The app that forwards to the backend `admission` gives; its `prepareUpgrade` too. */
export function createSpawnerApp<B extends Forwarder>(admission: Admission<B>): UpgradableApp {
  return Object.assign((environ: Environ) => handle(admission, environ), {
    prepareUpgrade: (environ: Environ) => handleUpgrade(admission, environ),
  })
}

/**
 * The response for a failure: the error hook's, or a problem response that carries the backend's
 * last output lines only with `exposeErrors`, and `Retry-After` when the error gives one.
 */
export async function failureResponse(
  error: unknown,
  environ: Environ,
  onError: ErrorHook<Environ>,
  exposeErrors: boolean,
): Promise<AppResponse> {
  const problem =
    error instanceof WsgiProxyError
      ? error
      : new WsgiProxyError('APP_ERROR', 'the spawner failed', { cause: error })
  try {
    const replacement = await onError(problem, environ)
    if (replacement !== undefined) return replacement
  } catch {
    return errorResponse(new WsgiProxyError('APP_ERROR', 'the error hook failed'))
  }
  const spawnerError = problem instanceof SpawnerError ? problem : undefined
  const logs = spawnerError?.recentLogs ?? []
  // The output may name paths, addresses and secrets: only with exposeErrors (docs/design.md §8).
  const response =
    exposeErrors && logs.length > 0
      ? problemResponse(
          problem.status,
          `${problem.message}; last output:\n${logs.join('\n')}`,
          problem.code,
        )
      : errorResponse(problem, exposeErrors)
  if (spawnerError?.retryAfter !== undefined) {
    response.headers.push(['retry-after', String(spawnerError.retryAfter)])
  }
  return response
}

async function handle<B extends Forwarder>(
  admission: Admission<B>,
  environ: Environ,
): Promise<AppResponse> {
  let backend: B
  try {
    backend = await admission.acquire(environ['wsgiproxy.signal'])
  } catch (error) {
    return admission.respond(error, environ)
  }
  let response: AppResponse
  try {
    response = await (backend.proxy as UpgradableApp)(environ)
  } catch (error) {
    admission.release(backend)
    return admission.respond(error, environ)
  }
  if (response.body === null) {
    admission.release(backend)
    return response
  }
  // In flight until the body has been read, cancelled or failed: idle shutdown waits for it.
  return { ...response, body: trackBody(response.body, () => admission.release(backend)) }
}

/**
 * Forwards a WebSocket upgrade to the backend `admission` gives; it stays in flight until the
 * client connection closes. (A pool's upgrades take this path too: once the upstream connection
 * is being opened, nothing can be sent again.)
 */
export async function handleUpgrade<B extends Forwarder>(
  admission: Admission<B>,
  environ: Environ,
): Promise<UpgradeTarget | AppResponse> {
  let backend: B
  try {
    backend = await admission.acquire(environ['wsgiproxy.signal'])
  } catch (error) {
    return admission.respond(error, environ)
  }
  let target: UpgradeTarget | AppResponse
  try {
    target = await (backend.proxy as UpgradableApp).prepareUpgrade(environ)
  } catch (error) {
    admission.release(backend)
    return admission.respond(error, environ)
  }
  if (isAppResponse(target)) {
    admission.release(backend)
    return target
  }
  // An upgraded connection is in flight until the client connection closes, which aborts the
  // environ's signal (toNodeUpgradeListener keeps it armed for the connection's life).
  const signal = environ['wsgiproxy.signal']
  if (signal === undefined || signal.aborted) admission.release(backend)
  else signal.addEventListener('abort', () => admission.release(backend), { once: true })
  return target
}

/**
 * Wraps a response body to call `done` once when it ends, fails or is cancelled (core's
 * `onBodyEnd`). `return()` is passed on at once, even while a read is pending.
 */
export function trackBody(
  body: AsyncIterable<Uint8Array>,
  done: () => void,
): AsyncIterable<Uint8Array> {
  return onBodyEnd(body, () => done())
}
