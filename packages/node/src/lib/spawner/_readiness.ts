// Readiness checks of a starting backend: a TCP connect on both loopback families, optionally an
// HTTP request, polled with a growing delay until the caller's signal aborts.
import { request } from 'node:http'
import { connect } from 'node:net'

/** The loopback addresses probed on every round: a server bound to `localhost` may be either. */
export const LOOPBACK_HOSTS: readonly ['127.0.0.1', '::1'] = ['127.0.0.1', '::1']

// 25 ms doubling to 250 ms: quick for a fast backend, cheap for a slow one (docs/design.md §9).
const FIRST_DELAY = 25
const MAX_DELAY = 250
// One connect attempt may take this long before it counts as a miss.
const CONNECT_TIMEOUT = 250
// One HTTP readiness request may take this long: an app's first request often loads code.
const HTTP_TIMEOUT = 1_000

function tryConnect(host: string, port: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(false)
      return
    }
    const socket = connect({ host, port })
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
      socket.destroy()
      resolve(ok)
    }
    const onAbort = (): void => done(false)
    const timer = setTimeout(() => done(false), CONNECT_TIMEOUT)
    timer.unref()
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

/** The first loopback address accepting a connection on `port`, or `undefined`. */
export function probeTcp(port: number, signal: AbortSignal): Promise<string | undefined> {
  return new Promise((resolve) => {
    let pending = LOOPBACK_HOSTS.length
    for (const host of LOOPBACK_HOSTS) {
      void tryConnect(host, port, signal).then((ok) => {
        pending--
        if (ok) resolve(host)
        else if (pending === 0) resolve(undefined)
      })
    }
  })
}

/** Whether `GET path` answers with a status below 500 (a 5xx during boot keeps polling). */
export function probeHttp(
  host: string,
  port: number,
  path: string,
  signal: AbortSignal,
): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(false)
      return
    }
    const req = request({ host, port, path, method: 'GET', agent: false, signal })
    const timer = setTimeout(() => req.destroy(), HTTP_TIMEOUT)
    timer.unref()
    req.once('error', () => {
      clearTimeout(timer)
      resolve(false)
    })
    req.once('response', (res) => {
      clearTimeout(timer)
      res.resume()
      req.destroy()
      resolve((res.statusCode ?? 500) < 500)
    })
    req.end()
  })
}

/** Sleeps `ms` (unref'd), or less when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve()
      return
    }
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    timer.unref()
    signal?.addEventListener('abort', done, { once: true })
  })
}

/**
 * Polls until the backend on `port` accepts connections (and answers `httpPath` below 500, when
 * given); resolves with the address that answered, or `undefined` once `signal` aborts.
 */
export async function pollReady(
  port: number,
  httpPath: string | undefined,
  signal: AbortSignal,
): Promise<string | undefined> {
  let delay = FIRST_DELAY
  while (!signal.aborted) {
    const host = await probeTcp(port, signal)
    if (
      host !== undefined &&
      (httpPath === undefined || (await probeHttp(host, port, httpPath, signal)))
    ) {
      return signal.aborted ? undefined : host
    }
    await sleep(delay, signal)
    delay = Math.min(delay * 2, MAX_DELAY)
  }
  return undefined
}
