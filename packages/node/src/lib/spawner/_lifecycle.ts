// The spawner's state machine (docs/design.md §9): its states and the moves between them, the count of
// failures in a row, and the timers that act on their own: the end of a backoff, the idle stop and
// the reset of the failure count.
import type { SpawnerBackoff } from './options.ts'
import type { SpawnerState } from './spawner.ts'

/** Where each state may go. `closed` is final. */
export const TRANSITIONS: Readonly<Record<SpawnerState, readonly SpawnerState[]>> = {
  idle: ['starting', 'closed'],
  // Again `starting`: a first failed start with requests waiting.
  starting: ['starting', 'ready', 'stopping', 'idle', 'backoff', 'closed'],
  // `starting`, `idle`, `backoff`: after a crash.
  ready: ['stopping', 'starting', 'idle', 'backoff', 'closed'],
  stopping: ['starting', 'idle', 'backoff', 'closed'],
  backoff: ['idle', 'closed'],
  closed: [],
}

// Failures in a row that lead to backoff (the first one is retried at the next request).
const BACKOFF_AFTER = 2
// A ready backend that dies sooner than this counts as a failed start for the backoff.
const SHORT_LIFE = 1_000

/** What a {@link Lifecycle} needs. */
export interface LifecycleOptions {
  /** The backoff delays and the reset time, in milliseconds. */
  backoff: Required<SpawnerBackoff>
  /** How long a ready backend may have nothing in flight, or `false` for ever. */
  idleTimeout: number | false
}

/** The state of a spawner, its failures in a row and its timers. */
export class Lifecycle {
  readonly #backoff: Required<SpawnerBackoff>
  readonly #idleTimeout: number | false
  #state: SpawnerState = 'idle'
  #failures = 0
  #retryAt: number | undefined
  #idleTimer: NodeJS.Timeout | undefined
  #backoffTimer: NodeJS.Timeout | undefined
  #resetTimer: NodeJS.Timeout | undefined

  constructor(options: LifecycleOptions) {
    this.#backoff = options.backoff
    this.#idleTimeout = options.idleTimeout
  }

  /** The current state. */
  get state(): SpawnerState {
    return this.#state
  }

  /** Failed starts (and very short lives) in a row. */
  get failures(): number {
    return this.#failures
  }

  /** In backoff (or a hold): when starting is allowed again (ms since the epoch). */
  get retryAt(): number | undefined {
    return this.#retryAt
  }

  /** Whether the failures in a row are enough to back off. */
  get mustBackOff(): boolean {
    return this.#failures >= BACKOFF_AFTER
  }

  /** Whole seconds until the backoff ends, at least 1 (for `Retry-After`). */
  get retryAfter(): number {
    const now = Date.now()
    return Math.max(1, Math.ceil(((this.#retryAt ?? now) - now) / 1_000))
  }

  /**
   * Moves to `next`.
   *
   * @throws Error for a move the machine does not have: a bug in the spawner, never the user's
   */
  to(next: SpawnerState): void {
    if (!TRANSITIONS[this.#state].includes(next)) {
      throw new Error(`spawner state machine: no move from ${this.#state} to ${next}`)
    }
    this.#state = next
  }

  /** Counts a failed start. */
  countFailure(): void {
    this.#failures++
  }

  /**
   * Counts the crash of a backend that was ready `lived` ms as a failed start when that was very
   * short.
   *
   * @returns whether it counted
   */
  countCrash(lived: number): boolean {
    if (lived >= SHORT_LIFE) return false
    this.#failures++
    return true
  }

  /**
   * Enters `backoff` for `base * 2^(failures - 2)` ms, at most `max`, then goes back to `idle`.
   *
   * @returns the delay and when it ends
   */
  backOff(): { delayMs: number; retryAt: number } {
    this.to('backoff')
    return this.#wait(() => {
      if (this.#state === 'backoff') this.to('idle')
    })
  }

  /**
   * The same delay as {@link backOff} without leaving the state: a pool that still serves from
   * its other instances starts no process until `retryAt`, then `onEnd` is called.
   *
   * @param onEnd - called when starting is allowed again (not after `endBackoff()` or `close()`)
   * @returns the delay and when it ends
   */
  holdStarts(onEnd: () => void): { delayMs: number; retryAt: number } {
    return this.#wait(() => {
      if (this.#state !== 'backoff' && this.#state !== 'closed') onEnd()
    })
  }

  /** Ends a backoff (or a hold) now, with the failure count cleared (`restart()`). */
  endBackoff(): void {
    clearTimeout(this.#backoffTimer)
    this.#retryAt = undefined
    this.#failures = 0
    if (this.#state === 'backoff') this.to('idle')
  }

  // `base * 2^(failures - 2)` ms, at most `max`; `retryAt` is set until `then` runs.
  #wait(then: () => void): { delayMs: number; retryAt: number } {
    const { base, max } = this.#backoff
    const delayMs = Math.min(base * 2 ** (this.#failures - BACKOFF_AFTER), max)
    const retryAt = Date.now() + delayMs
    this.#retryAt = retryAt
    clearTimeout(this.#backoffTimer)
    this.#backoffTimer = setTimeout(() => {
      this.#retryAt = undefined
      then()
    }, delayMs)
    this.#backoffTimer.unref()
    return { delayMs, retryAt }
  }

  /** A backend became ready: the failure count clears once `backoff.reset` ms have passed. */
  armReset(): void {
    clearTimeout(this.#resetTimer)
    this.#resetTimer = setTimeout(() => {
      this.#failures = 0
    }, this.#backoff.reset)
    this.#resetTimer.unref()
  }

  /** The backend went before the reset time (the failure count stays). */
  disarmReset(): void {
    clearTimeout(this.#resetTimer)
  }

  /**
   * When `ready` with an idle timeout: calls `onIdle` after `idleTimeout` ms, unless disarmed or
   * armed again first. The caller knows that nothing is in flight.
   */
  armIdle(onIdle: () => void): void {
    const timeout = this.#idleTimeout
    if (timeout === false || this.#state !== 'ready') return
    clearTimeout(this.#idleTimer)
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined
      onIdle()
    }, timeout)
    this.#idleTimer.unref()
  }

  /** Something is in flight again, or the backend is going: no idle stop. */
  disarmIdle(): void {
    clearTimeout(this.#idleTimer)
    this.#idleTimer = undefined
  }

  /** Enters `closed` and clears every timer. */
  close(): void {
    this.to('closed')
    clearTimeout(this.#idleTimer)
    clearTimeout(this.#backoffTimer)
    clearTimeout(this.#resetTimer)
    this.#retryAt = undefined
  }
}
