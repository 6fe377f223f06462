// The spawner's public API: createSpawner, the Spawner it returns, their types and SpawnerError.
// The parts live beside it: options.ts (the options and their schema), _gate.ts (requests waiting
// for a start), _lifecycle.ts (states and timers), _start.ts (ports, spawn, readiness), _log.ts
// (output lines), _requests.ts (the environ app) and _backend-spawner.ts, which wires them.
import type { EventEmitter } from 'node:events'
import type { UpgradableApp } from '@wsgiproxy/core'
import { BackendSpawner } from './_backend-spawner.ts'
import type { SpawnerLogEntry, SpawnerOptions } from './options.ts'
import type { SpawnerError, SpawnerExit } from './spawner-error.ts'

export type {
  SpawnerBackoff,
  SpawnerLogEntry,
  SpawnerLogger,
  SpawnerOptions,
  SpawnerReadiness,
} from './options.ts'
export type { SpawnerErrorOptions, SpawnerExit } from './spawner-error.ts'
export { SpawnerError } from './spawner-error.ts'

/** The states of a {@link Spawner} (docs/design.md §9). */
export type SpawnerState = 'idle' | 'starting' | 'ready' | 'stopping' | 'backoff' | 'closed'

/** Why a backend was stopped: idle shutdown, `restart()`, start timeout, `close()`. */
export type SpawnerStopReason = 'idle' | 'restart' | 'timeout' | 'close'

/** What `status()` reports. */
export interface SpawnerStatus {
  /** The spawner's name. */
  name: string
  /** The current state. */
  state: SpawnerState
  /** The current backend's pid (also its process group id), or `null`. */
  pid: number | null
  /** The current backend's port, or `null`. */
  port: number | null
  /** The loopback address the backend answered on (`127.0.0.1` or `::1`), or `null`. */
  host: string | null
  /** Processes spawned so far. */
  starts: number
  /** Unexpected exits of a ready backend so far. */
  crashes: number
  /** Failed starts (and very short lives) in a row; two or more lead to backoff. */
  consecutiveFailures: number
  /** Requests and upgraded connections in flight to the current backend. */
  inFlight: number
  /** Requests waiting for a start. */
  queued: number
  /** When the current backend was spawned (ms since the epoch), or `null`. */
  startedAt: number | null
  /** When the current backend became ready (ms since the epoch), or `null`. */
  readyAt: number | null
  /** How long the last successful start took, from the first request to ready, in ms; or `null`. */
  coldStartMs: number | null
  /** In backoff: when starting is allowed again (ms since the epoch); else `null`. */
  retryAt: number | null
  /** How the last backend ended, or `null`. */
  lastExit: SpawnerExit | null
  /** The message of the last start failure or crash, or `null`. */
  lastError: string | null
  /** The last output lines, prefixed `[name pid]`. */
  recentLogs: string[]
}

/** The events of a {@link Spawner} and their arguments. */
export interface SpawnerEvents {
  /** A backend process was spawned. */
  spawn: [info: { pid: number; port: number; attempt: number }]
  /** A backend became ready. */
  ready: [info: { pid: number; port: number; host: string; coldStartMs: number }]
  /** A backend process exited. */
  exit: [exit: SpawnerExit]
  /** A backend is being stopped. */
  stop: [info: { pid: number; reason: SpawnerStopReason }]
  /** The idle timeout passed: the backend is being stopped. */
  idle: [info: { pid: number }]
  /** Starting failed again: starts are refused until `retryAt`. */
  backoff: [info: { failures: number; delayMs: number; retryAt: number }]
  /** A line of backend output. */
  log: [entry: SpawnerLogEntry]
  /** A start failed or a ready backend crashed. Emitted only when someone listens. */
  error: [error: SpawnerError]
}

/** A backend started on demand and the app that forwards to it; see {@link createSpawner}. */
export interface Spawner extends EventEmitter<SpawnerEvents> {
  /**
   * The environ app: starts the backend on the first request and forwards to it like
   * `createProxyApp`. Its `prepareUpgrade` forwards WebSocket upgrades (`serve()` uses it).
   */
  readonly app: UpgradableApp
  /** The name in log prefixes. */
  readonly name: string
  /** Starts the backend now, if it is not running; resolves when it is ready. */
  start(): Promise<void>
  /**
   * Stops admitting requests to the running backend (they wait), lets those in flight finish
   * (up to `drainTimeout`), stops it and starts a new one; resolves when the new one is ready.
   * Without a running backend it only ends a backoff.
   */
  restart(): Promise<void>
  /**
   * Rejects waiting requests with 503, stops the backend (SIGTERM, SIGKILL after `killTimeout`)
   * and resolves when its process group has gone. Later requests get 503. Idempotent.
   */
  close(): Promise<void>
  /** The current state and counters. */
  status(): SpawnerStatus
  /** The same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Starts a backend process on the first request (any language: the port is in `__PORT__` and
 * `PORT`) and forwards requests to it with the protocol headers of `createProxyApp`, so a
 * backend running `proxyMiddleware` sees the original host, scheme, client and script name. One
 * start however many requests arrive together; readiness by TCP on 127.0.0.1 and ::1 raced
 * against the process's exit and `startTimeout`; idle shutdown that never cuts work in flight;
 * crash-loop backoff; and no orphans: the backend leads its own process group, which is killed
 * whole on stop, `close()`, host exit, SIGINT/SIGTERM/SIGHUP, and (through a watchdog process)
 * when the host is killed.
 *
 * Statuses: 502 when the process exits or cannot be spawned (or its fixed port is taken), 504 at
 * the start timeout, 503 when the wait queue is full, in backoff (with `Retry-After`) and after
 * `close()`.
 *
 * @param options - the command, ports, readiness, timeouts, logging and forwarding options
 * @returns the spawner; serve `spawner.app`
 * @throws WsgiProxyError `INVALID_OPTIONS` for bad options
 * @example
 * const spawner = createSpawner({
 *   command: 'python3 -m myapp --port __PORT__',
 *   idleTimeout: 15 * 60_000,
 * })
 * const served = await serve(spawner.app, { port: 8000 })
 * // on shutdown
 * await served.close()
 * await spawner.close()
 */
export function createSpawner(options: SpawnerOptions): Spawner {
  return new BackendSpawner(options)
}
