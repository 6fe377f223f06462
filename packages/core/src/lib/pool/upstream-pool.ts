// The state of an upstream pool: its targets, which of them may take requests (passive ejection,
// active health checks, per-target limits), the wait queue, the retry budget and the events.
// `createProxyApp` owns one when it has several targets (or pool options) and drives it from
// `_pooled-app.ts`; users see the `UpstreamPool` interface.
import { WsgiProxyError } from '../errors.ts'
import type { Href } from '../forward/_prepare-request.ts'
import { discardBody } from '../streams.ts'
import type { CancelHook } from '../forward/cancellation.ts'
import type { Environ, Transport } from '../types.ts'
import type { Balanced, Choose } from './_balance.ts'
import { leastOutstanding, rendezvous, roundRobin } from './_balance.ts'
import type { PoolSettings } from './options.ts'

/** Where a target stands. */
export type TargetState = 'healthy' | 'ejected' | 'down'

/** What `status()` reports of one target. */
export interface TargetStatus {
  /** The target's href, as configured. */
  href: string
  /** Its weight. */
  weight: number
  /** `healthy`; `ejected` by passive health (until `ejectedUntil`); `down` by the health check. */
  state: TargetState
  /** Requests in flight to it (until their response body ended). */
  inFlight: number
  /** Requests sent to it so far (tries, retries included). */
  requests: number
  /** Of those, failed ones: no answer, or a 5xx. */
  failures: number
  /**
   * Of those failures, tries that never reached it: refused or timed-out connections and failed
   * TLS handshakes (`UPSTREAM_UNREACHABLE`, `UPSTREAM_CONNECT_TIMEOUT`, `UPSTREAM_TLS_FAILED`).
   */
  connectErrors: number
  /** Failures in a row now. */
  consecutiveFailures: number
  /** How often passive health has ejected it. */
  ejections: number
  /** While ejected: when it is readmitted (ms since the epoch); else `null`. */
  ejectedUntil: number | null
  /** The last health check's result: `true` passed, `false` failed, `null` none yet or none configured. */
  lastCheck: boolean | null
}

/** What `status()` reports of a pool. */
export interface UpstreamPoolStatus {
  /** Every target, in configuration order. */
  targets: TargetStatus[]
  /** Requests waiting for a target under its limit. */
  queued: number
  /** Requests in flight through the pool. */
  inFlight: number
  /** Retries in flight now (the budget's count). */
  retriesInFlight: number
  /** Retries sent so far: tries after a request's first, on this or another target. */
  retries: number
}

/** The `detail` of a pool's `ejected` and `restored` events. */
export interface PoolEventDetail {
  /** The target's href. */
  href: string
  /** `failures`: passive health (or its ejection time ran out); `health-check`: active health. */
  reason: 'failures' | 'health-check'
  /** For `ejected` by failures: how long, in milliseconds. */
  durationMs?: number
}

/**
 * Several upstream targets behind one proxy app (`createProxyApp({ href: [...] })` gives it as
 * `app.pool`): their states and counters, and the events `ejected` and `restored` (a
 * `CustomEvent` whose `detail` is a {@link PoolEventDetail}).
 */
export interface UpstreamPool extends EventTarget {
  /** The targets' states and counters. */
  status(): UpstreamPoolStatus
  /** Stops health checks and ejection timers; waiting requests get 503. Idempotent. */
  close(): void
}

/** One target and its state (internal). */
export class PoolTarget implements Balanced {
  readonly href: Href
  readonly name: string
  readonly weight: number
  readonly key: string
  inFlight = 0
  pass = 0
  current = 0
  requests = 0
  failures = 0
  connectErrors = 0
  consecutiveFailures = 0
  /** Ejections so far. */
  ejections = 0
  /** The back-off multiplier: grows with each ejection, falls back while the target behaves. */
  multiplier = 0
  ejectedUntil: number | undefined
  restoredAt = 0
  down = false
  lastCheck: boolean | undefined
  checkStreak = 0
  timer: ReturnType<typeof setTimeout> | undefined
  checkTimer: ReturnType<typeof setTimeout> | undefined
  /** Aborts the health check on the wire (on `close()`). */
  probe: AbortController | undefined

  constructor(href: Href, name: string, weight: number) {
    this.href = href
    this.name = name
    this.weight = weight
    this.key = name
  }

  get ejected(): boolean {
    return this.ejectedUntil !== undefined
  }

  get usable(): boolean {
    return !this.ejected && !this.down
  }
}

interface Waiter {
  key: string | undefined
  exclude: readonly PoolTarget[]
  resolve: (target: PoolTarget | WsgiProxyError) => void
  timer: ReturnType<typeof setTimeout> | undefined
  cancel: CancelHook | undefined
  onCancel: (() => void) | undefined
}

/** Signs a health check as the app signs requests (a backend that verifies would refuse it). */
export type SignCheck = (request: {
  method: string
  url: URL
  headers: Array<[string, string]>
  body: null
}) => Promise<{ headers: Array<[string, string]> }>

/** The pool behind `UpstreamPool` (internal: the proxy app uses the rest). */
export class Pool extends EventTarget implements UpstreamPool {
  readonly targets: readonly PoolTarget[]
  readonly settings: PoolSettings
  readonly #choose: Choose<PoolTarget>
  readonly #queue: Waiter[] = []
  readonly #transport: Transport
  readonly #sign: SignCheck | undefined
  readonly #now: () => number
  #inFlight = 0
  #retries = 0
  #retriesSent = 0
  #closed = false

  constructor(
    targets: readonly PoolTarget[],
    settings: PoolSettings,
    transport: Transport,
    sign: SignCheck | undefined,
    now: () => number = Date.now,
    random: () => number = Math.random,
  ) {
    super()
    this.targets = targets
    this.settings = settings
    this.#transport = transport
    this.#sign = sign
    this.#now = now
    const least = leastOutstanding<PoolTarget>(random)
    const { balance } = settings
    this.#choose =
      balance === 'least-outstanding'
        ? least
        : balance === 'round-robin'
          ? roundRobin<PoolTarget>()
          : rendezvous<PoolTarget>(least)
    if (settings.healthCheck !== undefined) {
      for (const target of targets) this.#scheduleCheck(target, 0)
    }
  }

  status(): UpstreamPoolStatus {
    return {
      targets: this.targets.map((target) => ({
        href: target.name,
        weight: target.weight,
        state: target.ejected ? 'ejected' : target.down ? 'down' : 'healthy',
        inFlight: target.inFlight,
        requests: target.requests,
        failures: target.failures,
        connectErrors: target.connectErrors,
        consecutiveFailures: target.consecutiveFailures,
        ejections: target.ejections,
        ejectedUntil: target.ejectedUntil ?? null,
        lastCheck: target.lastCheck ?? null,
      })),
      queued: this.#queue.length,
      inFlight: this.#inFlight,
      retriesInFlight: this.#retries,
      retries: this.#retriesSent,
    }
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const target of this.targets) {
      clearTimeout(target.timer)
      clearTimeout(target.checkTimer)
      target.probe?.abort(new WsgiProxyError('CLIENT_ABORTED', 'the pool was closed'))
    }
    for (const waiter of this.#queue.splice(0)) {
      this.#settle(waiter, this.#overloaded('the pool was closed'))
    }
  }

  // --- requests -------------------------------------------------------------------------------

  /** The hash key of a request, for `balance: { hash }`. */
  keyOf(environ: Environ): string | undefined {
    const { balance } = this.settings
    if (typeof balance === 'string') return undefined
    const { hash } = balance
    if (hash === 'client-address') return nonEmpty(environ.REMOTE_ADDR)
    if ('header' in hash) {
      const name = hash.header.toUpperCase().replaceAll('-', '_')
      // PEP 3333: the two content headers have keys without the HTTP_ prefix.
      const key = name === 'CONTENT_TYPE' || name === 'CONTENT_LENGTH' ? name : `HTTP_${name}`
      return nonEmpty(environ[key])
    }
    return cookieValue(environ.HTTP_COOKIE, hash.cookie)
  }

  /** A request entered the pool (the budget counts it). */
  begin(): void {
    this.#inFlight++
  }

  /** A request left the pool. */
  end(): void {
    this.#inFlight--
  }

  /** Whether the budget lets one more retry go now; counts it when it does. */
  beginRetry(): boolean {
    const { retries } = this.settings
    if (retries === false) return false
    const allowed = Math.max(retries.minConcurrency, retries.budget * this.#inFlight)
    if (this.#retries + 1 > allowed) return false
    this.#retries++
    return true
  }

  /** A request is sent again (budgeted or not), for `status().retries`. */
  countRetry(): void {
    this.#retriesSent++
  }

  /** A retry got its answer (or failed). */
  endRetry(): void {
    this.#retries--
  }

  /**
   * A target for a request, counted in flight: the balancer's choice among the usable targets
   * under their limit and not in `exclude`; when every one is at its limit, a place in the queue;
   * when the queue is full (or the wait times out, or the pool closed), a 503 error; when the
   * client leaves, its abort reason; when `exclude` leaves none, `undefined`.
   */
  acquire(
    key: string | undefined,
    exclude: readonly PoolTarget[],
    cancel: CancelHook | undefined,
  ): PoolTarget | undefined | WsgiProxyError | Promise<PoolTarget | WsgiProxyError> {
    if (this.#closed) return this.#overloaded('the pool was closed')
    const candidates = this.#candidates(exclude)
    if (candidates.length === 0) return undefined
    const chosen = this.#pick(candidates, key)
    if (chosen !== undefined) return chosen
    const { maxQueue, queueTimeout } = this.settings.limits
    if (cancel?.aborted === true) return asAbort(cancel.reason)
    if (this.#queue.length >= maxQueue) {
      return this.#overloaded('every target is at its concurrency limit and the queue is full')
    }
    return new Promise((resolve) => {
      const waiter: Waiter = {
        key,
        exclude,
        resolve,
        timer: undefined,
        cancel,
        onCancel: undefined,
      }
      waiter.timer = setTimeout(() => {
        this.#dequeue(waiter)
        this.#settle(waiter, this.#overloaded(`no target was free within ${queueTimeout} ms`))
      }, queueTimeout)
      if (cancel !== undefined) {
        waiter.onCancel = () => {
          this.#dequeue(waiter)
          this.#settle(waiter, asAbort(cancel.reason))
        }
        cancel.add(waiter.onCancel)
      }
      this.#queue.push(waiter)
    })
  }

  /** A target for an upgrade, not counted (a tunnel is not a request): as `acquire` without a queue. */
  pickForUpgrade(key: string | undefined): PoolTarget | WsgiProxyError {
    if (this.#closed) return this.#overloaded('the pool was closed')
    const chosen = this.#pick(this.#candidates([]), key)
    if (chosen === undefined) {
      return this.#overloaded('every target is at its concurrency limit')
    }
    chosen.inFlight--
    return chosen
  }

  /** Ends one request in flight to `target`; a waiting request may take its place. */
  release(target: PoolTarget): void {
    target.inFlight--
    this.#drainQueue()
  }

  /**
   * Records how a try at `target` went, for passive health; `connectError` when it never reached
   * the target.
   */
  report(target: PoolTarget, ok: boolean, connectError = false): void {
    target.requests++
    if (connectError) target.connectErrors++
    if (ok) {
      target.consecutiveFailures = 0
      return
    }
    target.failures++
    target.consecutiveFailures++
    const { ejection } = this.settings
    if (ejection === false || target.ejected) return
    if (target.consecutiveFailures >= ejection.consecutiveFailures) this.#eject(target)
  }

  // --- health ---------------------------------------------------------------------------------

  #eject(target: PoolTarget): void {
    const ejection = this.settings.ejection
    if (ejection === false) return
    const total = this.targets.length
    const most = total < 2 ? 0 : Math.max(1, Math.floor((total * ejection.maxPercent) / 100))
    const ejected = this.targets.filter((t) => t.ejected).length
    if (ejected >= most) return
    const now = this.#now()
    // The multiplier falls back by one for every base time the target went without an ejection.
    const calm = Math.floor((now - target.restoredAt) / ejection.baseTime)
    target.multiplier = Math.max(1, target.multiplier - Math.max(0, calm) + 1)
    target.ejections++
    const durationMs = Math.min(ejection.baseTime * target.multiplier, ejection.maxTime)
    target.ejectedUntil = now + durationMs
    target.timer = unref(setTimeout(() => this.#restore(target), durationMs))
    this.#emit('ejected', { href: target.name, reason: 'failures', durationMs })
  }

  #restore(target: PoolTarget): void {
    target.ejectedUntil = undefined
    target.timer = undefined
    target.consecutiveFailures = 0
    target.restoredAt = this.#now()
    this.#emit('restored', { href: target.name, reason: 'failures' })
    this.#drainQueue()
  }

  #scheduleCheck(target: PoolTarget, delay: number): void {
    if (this.#closed) return
    target.checkTimer = unref(setTimeout(() => void this.#check(target), delay))
  }

  async #check(target: PoolTarget): Promise<void> {
    const health = this.settings.healthCheck
    if (health === undefined || this.#closed) return
    const passed = await this.#probe(target, health.path, health.timeout)
    if (this.#closed) return
    const first = target.lastCheck === undefined
    target.checkStreak = target.lastCheck === passed ? target.checkStreak + 1 : 1
    target.lastCheck = passed
    if (passed && target.down && target.checkStreak >= health.healthyThreshold) {
      target.down = false
      this.#emit('restored', { href: target.name, reason: 'health-check' })
      this.#drainQueue()
    } else if (
      !passed &&
      !target.down &&
      (first || target.checkStreak >= health.unhealthyThreshold)
    ) {
      target.down = true
      this.#emit('ejected', { href: target.name, reason: 'health-check' })
    }
    this.#scheduleCheck(target, health.interval)
  }

  async #probe(target: PoolTarget, path: string, timeout: number): Promise<boolean> {
    const controller = new AbortController()
    target.probe = controller
    const timer = unref(
      setTimeout(() => {
        controller.abort(
          new WsgiProxyError('UPSTREAM_HEADERS_TIMEOUT', 'the health check timed out'),
        )
      }, timeout),
    )
    try {
      const url = new URL(path, target.href.origin)
      let headers: Array<[string, string]> = [
        ['host', target.href.host],
        ['user-agent', 'wsgiproxy-health-check'],
      ]
      if (this.#sign !== undefined) {
        headers = (await this.#sign({ method: 'GET', url, headers, body: null })).headers
      }
      const response = await this.#transport({
        url,
        method: 'GET',
        headers,
        body: null,
        signal: controller.signal,
      })
      await discardBody(response.body)
      return response.status >= 200 && response.status < 400
    } catch {
      return false
    } finally {
      clearTimeout(timer)
      target.probe = undefined
    }
  }

  // --- choosing -------------------------------------------------------------------------------

  // The targets a request may go to: the usable ones not tried yet; none usable is a panic, and
  // every target not tried is a candidate (better a request to a doubtful target than none).
  #candidates(exclude: readonly PoolTarget[]): PoolTarget[] {
    const untried =
      exclude.length === 0 ? this.targets : this.targets.filter((t) => !exclude.includes(t))
    const usable = untried.filter((t) => t.usable)
    return usable.length > 0 ? usable : [...untried]
  }

  // The balancer's choice among the candidates under their limit, counted in flight.
  #pick(candidates: readonly PoolTarget[], key: string | undefined): PoolTarget | undefined {
    const { maxConcurrent } = this.settings.limits
    const open =
      maxConcurrent === Infinity ? candidates : candidates.filter((t) => t.inFlight < maxConcurrent)
    if (open.length === 0) return undefined
    const chosen = this.#choose(open, key)
    chosen.inFlight++
    return chosen
  }

  // A slot freed or a target came back: every waiting request that can take a target now takes
  // one, in the order they came (a waiter that excludes the free target does not hold up those
  // behind it).
  #drainQueue(): void {
    for (let i = 0; i < this.#queue.length;) {
      const waiter = this.#queue[i] as Waiter
      const candidates = this.#candidates(waiter.exclude)
      if (candidates.length === 0) {
        this.#queue.splice(i, 1)
        this.#settle(waiter, this.#overloaded('no target is left to try'))
        continue
      }
      const chosen = this.#pick(candidates, waiter.key)
      if (chosen === undefined) {
        // Nothing free for a waiter that excludes nothing: nothing is free for anyone.
        if (waiter.exclude.length === 0) return
        i++
        continue
      }
      this.#queue.splice(i, 1)
      this.#settle(waiter, chosen)
    }
  }

  #dequeue(waiter: Waiter): void {
    const index = this.#queue.indexOf(waiter)
    if (index >= 0) this.#queue.splice(index, 1)
  }

  #settle(waiter: Waiter, result: PoolTarget | WsgiProxyError): void {
    clearTimeout(waiter.timer)
    if (waiter.onCancel !== undefined) waiter.cancel?.delete(waiter.onCancel)
    waiter.resolve(result)
  }

  #overloaded(message: string): WsgiProxyError {
    return new WsgiProxyError('UPSTREAM_OVERLOADED', message, { expose: true })
  }

  #emit(type: 'ejected' | 'restored', detail: PoolEventDetail): void {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail }))
    } catch {
      // A listener's failure must not cut a state change short.
    }
  }
}

function unref<T>(timer: T): T {
  ;(timer as { unref?: () => void }).unref?.()
  return timer
}

function nonEmpty(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}

// RFC 6265 §5.4: `name=value` pairs separated by `; `.
function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=')
    if (eq < 0) continue
    if (pair.slice(0, eq).trim() === name) return nonEmpty(pair.slice(eq + 1).trim())
  }
  return undefined
}

function asAbort(reason: unknown): WsgiProxyError {
  return reason instanceof WsgiProxyError
    ? reason
    : new WsgiProxyError('CLIENT_ABORTED', 'the client closed the request')
}
