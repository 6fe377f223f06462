// One forwarded request's cancellation, with an AbortSignal only when something asks for it.
// Creating an AbortController (and an outbound record with a getter) costs about 3 µs per request
// on Node, a third of what the proxy app spends per request otherwise. A transport that marks
// itself with `[CANCEL]: true` (the Node undici transport) gets an outbound request whose `signal`
// is created on first read and whose `[CANCEL]` is this object, to subscribe to instead; every
// other transport gets a plain record with a real signal. `Symbol.for` so that packages need not
// share a module instance.

import type { OutboundRequest, Transport } from '../types.ts'

/** The key of the {@link Cancellation} on an outbound request, and of the mark on a transport. */
export const CANCEL: unique symbol = Symbol.for('wsgiproxy.cancel') as never

/** Whether a transport subscribes to `[CANCEL]` instead of reading `signal`. */
export function subscribesToCancel(transport: Transport): boolean {
  return (transport as unknown as Record<symbol, unknown>)[CANCEL] === true
}

/** Aborts once; listeners and a lazily created AbortSignal see the same reason. */
export class Cancellation {
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

  /** Aborts with `reason`; later calls do nothing. */
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

/**
 * An outbound request whose `signal` is created on first read. Only for transports marked with
 * `[CANCEL]`: a spread copy would lose the prototype getter.
 */
export class LazyOutbound implements OutboundRequest {
  url: URL
  method: string
  headers: Array<[string, string]>
  body: AsyncIterable<Uint8Array> | null
  #cancel: Cancellation

  constructor(outbound: Omit<OutboundRequest, 'signal'>, cancel: Cancellation) {
    this.url = outbound.url
    this.method = outbound.method
    this.headers = outbound.headers
    this.body = outbound.body
    this.#cancel = cancel
  }

  get signal(): AbortSignal {
    return this.#cancel.signal
  }

  static {
    // `[CANCEL]` as a getter on the prototype: a computed class member cannot be declared here.
    Object.defineProperty(LazyOutbound.prototype, CANCEL, {
      get(this: LazyOutbound): Cancellation {
        return this.#cancel
      },
    })
  }
}
