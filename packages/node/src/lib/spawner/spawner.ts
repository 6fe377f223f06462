// The spawner's public API: createSpawner, the Spawner it returns, their types and SpawnerError.
// The parts live beside it: options.ts (the options; their schema is _options-schema.ts),
// _gate.ts (requests waiting for a start), _lifecycle.ts (states and timers), _start.ts (ports,
// spawn, readiness), _log.ts (output lines), _requests.ts (the environ app) and
// _backend-spawner.ts, which wires them. A pool (`instances`) is _pool.ts, which wires the same
// parts with those of _pool-*.ts.
import type { EventEmitter } from 'node:events'
import type { UpgradableApp } from '@wsgiproxy/core'
import { BackendSpawner } from './_backend-spawner.ts'
import { BackendPool } from './_pool.ts'
import { parseSpawnerOptions } from './options.ts'
import type { SpawnerLogEntry, SpawnerOptions } from './options.ts'
import type { SpawnerError, SpawnerExit } from './spawner-error.ts'

export type {
  SpawnerBackoff,
  SpawnerInstances,
  SpawnerLogEntry,
  SpawnerLogger,
  SpawnerOptions,
  SpawnerReadiness,
} from './options.ts'
import { traceSpawnerEvents } from './_tracing.ts'
export type { SpawnerErrorOptions, SpawnerExit } from './spawner-error.ts'
export { SpawnerError } from './spawner-error.ts'

/** The states of a {@link Spawner} (docs/design.md §9). */
export type SpawnerState = 'idle' | 'starting' | 'ready' | 'stopping' | 'backoff' | 'closed'

/** Why a backend was stopped: idle shutdown, `restart()`, start timeout, `close()`. */
export type SpawnerStopReason = 'idle' | 'restart' | 'timeout' | 'close'

/**
 * The state of one process of a pool: `starting` until its readiness check passes, `ready` while
 * it takes requests, `draining` while it finishes its requests in flight before a stop (a rolling
 * `restart()`), `stopping` until its process group has gone.
 */
export type SpawnerInstanceState = 'starting' | 'ready' | 'draining' | 'stopping'

/** One process of a pool, in {@link SpawnerStatus.instances}. */
export interface SpawnerInstanceStatus {
  /** Its pid (also its process group id). */
  pid: number
  /** Its port. */
  port: number
  /** The loopback address it answered on, or `null` before it is ready. */
  host: string | null
  /** Its state. */
  state: SpawnerInstanceState
  /** Requests and upgraded connections in flight to it. */
  inFlight: number
  /** When it was spawned (ms since the epoch). */
  startedAt: number
  /** When it became ready (ms since the epoch), or `null`. */
  readyAt: number | null
}

/**
 * Why the number of instances of a pool changed (the `scale` event): `start` (the first request,
 * `start()`, or a start again after a failed one), `busy` (every instance was busy), `idle` (an
 * extra instance, or with the spawner's `idleTimeout` the whole pool, was idle), `crash` (an
 * instance crashed, or its replacement starts), `failed` (a start failed), `restart` (a rolling
 * `restart()` added a new instance or retired an old one).
 */
export type SpawnerScaleReason = 'start' | 'busy' | 'idle' | 'crash' | 'failed' | 'restart'

/** What `status()` reports. */
export interface SpawnerStatus {
  /** The spawner's name. */
  name: string
  /** The current state; for a pool, `ready` while at least one instance is. */
  state: SpawnerState
  /**
   * The current backend's pid (also its process group id), or `null`. For a pool: that of the
   * longest ready instance (else of one starting), as are `port`, `host`, `startedAt` and `readyAt`.
   */
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
  /** Requests and upgraded connections in flight to the current backend (a pool: to all). */
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
  /** Only for a pool (`instances`): every process, in the order they were spawned. */
  instances?: SpawnerInstanceStatus[]
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
  /**
   * Starting failed again: starts are refused until `retryAt` (a pool that still serves from
   * other instances starts none until then).
   */
  backoff: [info: { failures: number; delayMs: number; retryAt: number }]
  /**
   * A pool's number of instances (starting or ready) changed, and why. Only for `instances`.
   */
  scale: [info: { instances: number; reason: SpawnerScaleReason }]
  /** A line of backend output. */
  log: [entry: SpawnerLogEntry]
  /** A start failed or a ready backend crashed. Emitted only when someone listens. */
  error: [error: SpawnerError]
}

/**
 * A backend process taken for one request (or upgraded connection) that is forwarded by someone
 * else than the spawner's own app, such as a worker process of a cluster: the process counts it in
 * flight (no idle stop, no restart cut) until {@link SpawnerLease.release}.
 */
export interface SpawnerLease {
  /** The process id of the backend. */
  readonly pid: number
  /** The loopback address it answers on (`127.0.0.1` or `::1`). */
  readonly host: string
  /** Its port. */
  readonly port: number
  /** Ends the lease: the request's response (or connection) has ended. Idempotent. */
  release(): void
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
  /**
   * Starts the backend now, if it is not running; resolves when it is ready. A pool starts `min`
   * instances and resolves when those starts have ended, at least one of them ready.
   */
  start(): Promise<void>
  /**
   * Stops admitting requests to the running backend (they wait), lets those in flight finish
   * (up to `drainTimeout`), stops it and starts a new one; resolves when the new one is ready.
   * Without a running backend it only ends a backoff.
   *
   * A pool restarts one instance at a time without refusing a request: a new instance starts,
   * and once it is ready the old one leaves routing, finishes its requests in flight (up to
   * `drainTimeout`) and stops. It resolves when every old process has gone, and rejects (the old
   * instance serving on) when a new one cannot start.
   */
  restart(): Promise<void>
  /**
   * Rejects waiting requests with 503, stops the backend (every instance of a pool: SIGTERM,
   * SIGKILL after `killTimeout`) and resolves when their process groups have gone. Later
   * requests get 503. Idempotent.
   */
  close(): Promise<void>
  /**
   * Takes the ready backend (a pool: the least busy instance) for one request that the caller
   * forwards itself, starting it or waiting for its start as the app does; counted in flight until
   * the lease is released. A pool grows when every instance is busy, as for its own requests.
   *
   * @param signal - aborts the wait for a start
   * @returns the lease
   * @throws SpawnerError as the app would answer it (`BACKEND_BACKOFF`, `START_TIMEOUT`, ...), or
   * the signal's reason
   */
  lease(signal?: AbortSignal): Promise<SpawnerLease>
  /** The current state and counters. */
  status(): SpawnerStatus
  /** The same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Starts a backend process (or, with `instances`, a pool of them) on the first request (any
 * language: the port is in `__PORT__` and `PORT`) and forwards requests to it with the protocol
 * headers of `createProxyApp`, so a backend running `proxyMiddleware` sees the original host,
 * scheme, client and script name. One start however many requests arrive together; readiness by
 * TCP on 127.0.0.1 and ::1 raced against the process's exit and `startTimeout`; idle shutdown
 * that never cuts work in flight; crash-loop backoff; and no orphans: the backend leads its own
 * process group, which is killed whole on stop, `close()`, host exit, SIGINT/SIGTERM/SIGHUP, and
 * (through a watchdog process) when the host is killed. A pool sends each request to the least busy instance, grows while all
 * are busy, replaces crashed instances and restarts them one at a time (docs/spawner.md).
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
  const settings = parseSpawnerOptions(options)
  const spawner =
    settings.instances === undefined
      ? new BackendSpawner(settings)
      : new BackendPool(settings, settings.instances)
  traceSpawnerEvents(spawner)
  return spawner
}
