// The request gate: requests that arrive while no backend is ready wait here for the next one.
// However many wait, they share one promise (one start); the queue is bounded; a client that
// leaves stops waiting without cancelling the start for the others.
import { WsgiProxyError } from '@wsgiproxy/core'
import { SpawnerError } from './spawner-error.ts'

/** One wait for the next backend, shared by every request (and caller) in it. */
export interface Round<T> {
  readonly promise: Promise<T>
  resolve(value: T): void
  reject(error: unknown): void
}

/** What a {@link Gate} needs. */
export interface GateOptions {
  /** Requests that may wait at once; more are refused with `BACKEND_QUEUE_FULL`. */
  maxQueue: number
  /**
   * Called whenever someone asks for the next value (a caller or a request about to wait), right
   * after the round is open and before a request is counted: the spawner starts a backend here.
   */
  onDemand: () => void
}

/** Requests and callers waiting for the next ready backend (or whatever `T` the tests use). */
export class Gate<T> {
  readonly #maxQueue: number
  readonly #onDemand: () => void
  #round: Round<T> | undefined
  #queued = 0

  constructor(options: GateOptions) {
    this.#maxQueue = options.maxQueue
    this.#onDemand = options.onDemand
  }

  /** Requests waiting now. */
  get queued(): number {
    return this.#queued
  }

  /** The promise of the open round, if someone waits for (or asked for) the next value. */
  get pending(): Promise<T> | undefined {
    return this.#round?.promise
  }

  /** The open round, opened if there is none; tells `onDemand`. */
  round(): Round<T> {
    const round = (this.#round ??= createRound())
    this.#onDemand()
    return round
  }

  /**
   * Waits in the queue for the value of the open round. Rejects at once with `BACKEND_QUEUE_FULL`
   * (503, `Retry-After: 1`) when `maxQueue` requests already wait, and with `CLIENT_ABORTED` when
   * `signal` aborts. `admit` sees the value in the same tick as the request leaves the queue.
   */
  wait(signal: AbortSignal | undefined, admit?: (value: T) => void): Promise<T> {
    if (this.#queued >= this.#maxQueue) return Promise.reject(queueFullError(this.#maxQueue))
    const round = this.round()
    this.#queued++
    return untilAborted(round.promise, signal).then(
      (value) => {
        this.#queued--
        admit?.(value)
        return value
      },
      (error: unknown) => {
        this.#queued--
        throw error
      },
    )
  }

  /** Resolves `round`; later requests wait for a new one. */
  resolve(round: Round<T>, value: T): void {
    if (this.#round === round) this.#round = undefined
    round.resolve(value)
  }

  /** Resolves the open round, if there is one (a pool instance became ready). */
  resolveOpen(value: T): void {
    const round = this.#round
    this.#round = undefined
    round?.resolve(value)
  }

  /** Rejects `round`; later requests wait for a new one. */
  reject(round: Round<T>, error: unknown): void {
    if (this.#round === round) this.#round = undefined
    round.reject(error)
  }

  /** Rejects the open round, if there is one (backoff, close). */
  rejectOpen(error: unknown): void {
    const round = this.#round
    this.#round = undefined
    round?.reject(error)
  }
}

/** `promise`, or a rejection with `CLIENT_ABORTED` as soon as `signal` aborts. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise
  if (signal.aborted) return Promise.reject(abortError())
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError())
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(error)
      },
    )
  })
}

function createRound<T>(): Round<T> {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  // Nobody may be waiting (a start nobody asked for): never an unhandled rejection.
  promise.catch(() => {})
  return { promise, resolve, reject }
}

function abortError(): WsgiProxyError {
  return new WsgiProxyError('CLIENT_ABORTED', 'the client left while the backend was starting')
}

function queueFullError(maxQueue: number): SpawnerError {
  return new SpawnerError(
    'BACKEND_QUEUE_FULL',
    `the backend is not ready and ${maxQueue} requests are already waiting for it`,
    { expose: true, retryAfter: 1 },
  )
}
