// "The client went away, cancel the upstream" without an AbortSignal per request. Creating an
// AbortController (and a listener on it) costs about 3 µs per request on Node, a third of what the
// proxy app spends per request otherwise. So a server adapter hands `forward()` a
// {@link Cancellation} for the client (`setClientCancellation`), `forward()` hands the transport
// one for the upstream request (`cancellationOf`), and a real AbortSignal exists only where
// something reads `signal`. Everything here is reached through `@wsgiproxy/core/adapter`; an
// environ or transport that does not take part falls back to `wsgiproxy.signal` / `signal`.

import type { Environ, OutboundRequest, Transport } from '../types.ts'

/** What a party that waits for a cancellation sees of it: core's objects and wrapped signals. */
export interface CancelHook {
  /** True once cancelled. */
  readonly aborted: boolean
  /** Why (a `WsgiProxyError` for the reasons core sets); `undefined` until cancelled. */
  readonly reason: unknown
  /** Calls `listener` once on cancellation (never if it came before). */
  add(listener: () => void): void
  /** Removes a listener added with `add`. */
  delete(listener: () => void): void
}

/**
 * Cancels once; listeners and a lazily created AbortSignal see the same reason. A server adapter
 * makes one per request for the client (and may subclass it); `forward()` makes one per upstream
 * request.
 */
export class Cancellation implements CancelHook {
  aborted = false
  reason: unknown = undefined
  #controller: AbortController | undefined
  #listeners: Array<() => void> | undefined

  /** A real AbortSignal, created on first read (aborted already if this was). */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.aborted) this.#controller.abort(this.reason)
    }
    return this.#controller.signal
  }

  /** Calls `listener` once on abort. */
  add(listener: () => void): void {
    ;(this.#listeners ??= []).push(listener)
  }

  /** Removes a listener added with `add`. */
  delete(listener: () => void): void {
    const listeners = this.#listeners
    const index = listeners === undefined ? -1 : listeners.indexOf(listener)
    if (index >= 0) listeners?.splice(index, 1)
  }

  /**
   * Aborts with `reason`; later calls do nothing.
   *
   * @param reason - why, seen by the signal and as `reason`
   */
  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.#controller?.abort(reason)
    const listeners = this.#listeners
    this.#listeners = undefined
    for (const listener of listeners ?? []) listener()
  }
}

// Transports that call `cancellationOf` instead of reading `signal`.
const subscribers = new WeakSet<Transport>()

/**
 * Marks a transport that learns of cancellation through {@link cancellationOf}: `forward()` then
 * gives it an outbound request whose `signal` is created only when read. A transport that is not
 * marked gets a plain record with a real signal (it may spread or copy the request freely).
 *
 * @param transport - the transport
 * @returns the same transport
 */
export function subscribeToCancellation<T extends Transport>(transport: T): T {
  subscribers.add(transport)
  return transport
}

/** Whether a transport was marked with {@link subscribeToCancellation}. */
export function subscribesToCancellation(transport: Transport): boolean {
  return subscribers.has(transport)
}

/**
 * The cancellation of an outbound request: `forward()`'s own for a marked transport, else its
 * `signal` seen as a {@link CancelHook}.
 *
 * @param outbound - the request the transport was given
 * @returns what to subscribe to
 */
export function cancellationOf(outbound: OutboundRequest): CancelHook {
  return outbound instanceof LazyOutbound
    ? outbound.cancellation
    : new SignalCancel(outbound.signal)
}

/**
 * An outbound request whose `signal` is created on first read. Only for marked transports: a
 * spread copy would lose the prototype getter.
 */
export class LazyOutbound implements OutboundRequest {
  url: URL
  method: string
  headers: Array<[string, string]>
  body: AsyncIterable<Uint8Array> | null
  /** The request's cancellation. */
  readonly cancellation: Cancellation

  constructor(outbound: Omit<OutboundRequest, 'signal'>, cancellation: Cancellation) {
    this.url = outbound.url
    this.method = outbound.method
    this.headers = outbound.headers
    this.body = outbound.body
    this.cancellation = cancellation
  }

  get signal(): AbortSignal {
    return this.cancellation.signal
  }
}

/**
 * An AbortSignal seen as a {@link CancelHook}. A class, not an object literal with getters: V8
 * builds such a literal as a dictionary-mode object every time (slow properties and a property
 * table per request); a class instance keeps one fast hidden class.
 */
class SignalCancel implements CancelHook {
  #signal: AbortSignal

  constructor(signal: AbortSignal) {
    this.#signal = signal
  }

  get aborted(): boolean {
    return this.#signal.aborted
  }

  get reason(): unknown {
    return this.#signal.reason as unknown
  }

  add(listener: () => void): void {
    this.#signal.addEventListener('abort', listener, { once: true })
  }

  delete(listener: () => void): void {
    this.#signal.removeEventListener('abort', listener)
  }
}

// The environ key of the client's cancellation: a symbol private to this module, so it never
// shows among the environ's keys and only these two functions reach it.
const CLIENT = Symbol('wsgiproxy.client')

/**
 * Tells `forward()` of the client's cancellation through the environ, instead of an AbortSignal
 * listener per request. A server adapter calls it on every environ it builds; an environ without
 * it falls back to `wsgiproxy.signal`.
 *
 * @param environ - the environ the adapter built
 * @param cancellation - cancelled when the client goes away before the response finished
 */
export function setClientCancellation(environ: Environ, cancellation: CancelHook): void {
  ;(environ as unknown as Record<symbol, unknown>)[CLIENT] = cancellation
}

/**
 * The client's cancellation of an environ, when its server adapter set one.
 *
 * @param environ - the environ
 * @returns the cancellation, or `undefined`
 */
export function clientCancellation(environ: object): CancelHook | undefined {
  return (environ as Record<symbol, CancelHook | undefined>)[CLIENT]
}
