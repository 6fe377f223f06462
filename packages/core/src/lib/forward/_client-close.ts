// A cheaper way than an AbortSignal listener for a server adapter to tell `forward()` that the
// client went away. The Node listener sets it on every environ it builds (an AbortSignal costs
// about as much as the rest of the request's bookkeeping); an environ without it falls back to
// `wsgiproxy.signal`. `Symbol.for` so that packages need not share a module instance.

/** The environ key of the hook (a symbol, so it never shows among the environ's keys). */
export const CLIENT_CLOSE: unique symbol = Symbol.for('wsgiproxy.clientClose') as never

/** What a server adapter puts under {@link CLIENT_CLOSE}. */
export interface ClientCloseHook {
  /** True once the client went away before the response finished. */
  readonly closed: boolean
  /** Calls `listener` once when the client goes away. */
  add(listener: () => void): void
  /** Removes a listener added with `add`. */
  delete(listener: () => void): void
}

/** The hook of an environ, when its server set one. */
export function clientCloseHook(environ: object): ClientCloseHook | undefined {
  const hook = (environ as Record<symbol, unknown>)[CLIENT_CLOSE] as ClientCloseHook | undefined
  return typeof hook?.add === 'function' ? hook : undefined
}
