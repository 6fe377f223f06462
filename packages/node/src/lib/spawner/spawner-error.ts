// The error every spawner failure is reported with, and how a backend process ended.
import { WsgiProxyError } from '@wsgiproxy/core'
import type { WsgiProxyErrorCode, WsgiProxyErrorOptions } from '@wsgiproxy/core'

/** How a backend process ended. */
export interface SpawnerExit {
  /** Its pid; `null` when it never ran. */
  pid: number | null
  /** The exit code, or `null` when a signal ended it. */
  code: number | null
  /** The signal that ended it, or `null`. */
  signal: NodeJS.Signals | null
  /** When the exit was seen, in milliseconds since the epoch. */
  at: number
}

/** Options of {@link SpawnerError}. */
export interface SpawnerErrorOptions extends WsgiProxyErrorOptions {
  /** The last output lines. */
  recentLogs?: readonly string[]
  /** How the process ended. */
  exit?: SpawnerExit
  /** For 503: seconds until a retry may succeed (sent as `Retry-After`). */
  retryAfter?: number
}

/**
 * A spawner failure: `BACKEND_SPAWN_FAILED`, `BACKEND_EXITED`, `BACKEND_PORT_IN_USE` (502),
 * `BACKEND_START_TIMEOUT` (504), `BACKEND_QUEUE_FULL`, `BACKEND_BACKOFF`, `BACKEND_CLOSED` (503).
 */
export class SpawnerError extends WsgiProxyError {
  override name: string = 'SpawnerError'
  /**
   * The last output lines, prefixed `[name pid]`: those of the process that failed (for
   * `BACKEND_BACKOFF`, of every process of the spawner).
   */
  readonly recentLogs: readonly string[]
  /** How the process ended, when it did. */
  readonly exit: SpawnerExit | undefined
  /** For 503: seconds until a retry may succeed. */
  readonly retryAfter: number | undefined

  /**
   * @param code - stable error code
   * @param message - lower-case, saying what was expected and what happened
   * @param options - cause, exposure, output lines, exit, retry delay
   */
  constructor(code: WsgiProxyErrorCode, message: string, options: SpawnerErrorOptions = {}) {
    super(code, message, options)
    this.recentLogs = options.recentLogs ?? []
    this.exit = options.exit
    this.retryAfter = options.retryAfter
  }
}

/** `BACKEND_CLOSED`: what every request and `start()` get after `close()`. */
export function closedError(): SpawnerError {
  return new SpawnerError('BACKEND_CLOSED', 'the spawner is closed', { expose: true })
}
