import { EventEmitter } from 'node:events'
import {
  createProxyApp,
  errorResponse,
  isAppResponse,
  problemResponse,
  WsgiProxyError,
} from '@wsgiproxy/core'
import type {
  AppResponse,
  Environ,
  ProxyAppOptions,
  ProxyErrorHook,
  UpgradableApp,
  UpgradeTarget,
  WsgiProxyErrorCode,
  WsgiProxyErrorOptions,
} from '@wsgiproxy/core'
import { BackendProcess } from './_backend-process.ts'
import type { ProcessExit } from './_backend-process.ts'
import { commandName, PORT_PLACEHOLDER, resolveCommand } from './_command.ts'
import { allocatePort, isPortBusy, kernelPort, releasePort, reservePort } from './_ports.ts'
import { pollReady, sleep } from './_readiness.ts'
import { releaseWatchdog, retainWatchdog } from './_watchdog.ts'
import { undiciTransport } from '../http/undici-transport.ts'
import type { UndiciTransport } from '../http/undici-transport.ts'

/** The states of a {@link Spawner} (DESIGN.md §9). */
export type SpawnerState = 'idle' | 'starting' | 'ready' | 'stopping' | 'backoff' | 'closed'

/** Why a backend was stopped: idle shutdown, `restart()`, start timeout, `close()`. */
export type SpawnerStopReason = 'idle' | 'restart' | 'timeout' | 'close'

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

/** One line of backend output (or a message of the spawner itself). */
export interface SpawnerLogEntry {
  /** The spawner's name. */
  name: string
  /** The backend's pid, or `null` for a spawner message about no particular process. */
  pid: number | null
  /** Where the line came from: the backend's stdout or stderr, or the spawner. */
  stream: 'stdout' | 'stderr' | 'spawner'
  /** The line as written, without its line ending. */
  text: string
  /** The line with its prefix: `[name pid] text`. */
  line: string
}

/** Receives every log line; see {@link SpawnerOptions.logger}. */
export type SpawnerLogger = (entry: SpawnerLogEntry) => void

/** How to tell that a started backend is ready. */
export interface SpawnerReadiness {
  /**
   * Also require `GET <http>` (a path starting with `/`) to answer with a status below 500; a 5xx
   * while the app boots keeps polling. Default: a TCP connection is enough.
   */
  http?: string
  /**
   * Wait for an output line (stdout or stderr: many servers announce themselves on stderr) that
   * matches, then check TCP. A named group `port` gives the port the app chose (use it with
   * `port: 0`). Default: no output is awaited.
   */
  stdout?: RegExp
}

/** Crash-loop backoff; see {@link SpawnerOptions.backoff}. */
export interface SpawnerBackoff {
  /** The first delay, in milliseconds, after a second failure in a row. Default `1_000`. */
  base?: number
  /** The longest delay, in milliseconds; each failure in a row doubles it up to this. Default `30_000`. */
  max?: number
  /** The failure count resets after a backend has been ready this long, in milliseconds. Default `60_000`. */
  reset?: number
}

/** Options of {@link createSpawner}. The forwarding options are those of `createProxyApp`. */
export interface SpawnerOptions extends Omit<ProxyAppOptions, 'href'> {
  /**
   * The backend's command: an argv array, or a string split on whitespace (run by `/bin/sh -c`
   * with `exec` in front when it uses shell syntax: quotes, `$`, `&&`, ...). `__PORT__` is
   * replaced by the port in either form. Required.
   */
  command: string | readonly string[]
  /** The name in log prefixes (`[name pid]`) and messages. Default: the program's base name. */
  name?: string
  /** The working directory. Default: the host's. */
  cwd?: string
  /**
   * Environment variables merged over the host's (`undefined` removes one). `PORT` is always
   * set to the backend's port, and `PYTHONUNBUFFERED=1` unless given, so Python output is not
   * held back in a buffer. Default `{}`.
   */
  env?: Record<string, string | undefined>
  /** Start from the host's environment. Default `true`; `false` passes only `env` and `PORT`. */
  inheritEnv?: boolean
  /** Run a string command through the shell (`true`) or never (`false`). Default: when it uses shell syntax. */
  shell?: boolean
  /**
   * The backend's port. Default: a kernel-assigned port, new for every start and reserved in this
   * process while the backend lives. A fixed port that is already in use fails the start without
   * spawning (502). `0`: the app picks its own port and reports it through `ready.stdout`.
   */
  port?: number
  /**
   * Picks a port for a start (the default asks the kernel for a free one); a port another backend
   * of this process holds is asked for again. Only without `port`.
   */
  allocatePort?: () => number | Promise<number>
  /** How readiness is checked. Default: a TCP connection on 127.0.0.1 or ::1. */
  ready?: SpawnerReadiness
  /** How long a start may take before waiting requests get 504, in milliseconds. Default `60_000`. */
  startTimeout?: number
  /** How long a stopping backend has between SIGTERM and SIGKILL, in milliseconds. Default `5_000`. */
  killTimeout?: number
  /** How long `restart()` waits for requests in flight before stopping, in milliseconds. Default: `killTimeout`. */
  drainTimeout?: number
  /**
   * Stop the backend after this long with nothing in flight (no request, response body or
   * upgraded connection), in milliseconds; the next request starts it again. Default `false` (never).
   */
  idleTimeout?: number | false
  /** Requests that may wait for a start; more get 503 at once. Default `100`. */
  maxQueue?: number
  /** Crash-loop backoff: 503 with `Retry-After` after failures in a row. Defaults: 1 s doubling to 30 s, reset after 60 s ready. */
  backoff?: SpawnerBackoff
  /** Output lines kept for `status()` and start errors. Default `200`. */
  logLines?: number
  /** Where output lines and spawner messages go, or `false` for nowhere. Default: the host's stderr. */
  logger?: SpawnerLogger | false
  /**
   * Kill the backends when the host gets SIGINT, SIGTERM or SIGHUP and has no listener of its own
   * for it (the signal is then raised again, so the host still ends as it would have). Default `true`.
   */
  handleSignals?: boolean
  /**
   * Run one small watchdog process per host that kills the backends if the host is killed with
   * SIGKILL or crashes natively. Default `true` (POSIX only).
   */
  orphanGuard?: boolean
}

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

const DEFAULT_START_TIMEOUT = 60_000
const DEFAULT_KILL_TIMEOUT = 5_000
const DEFAULT_MAX_QUEUE = 100
const DEFAULT_LOG_LINES = 200
const DEFAULT_BACKOFF = { base: 1_000, max: 30_000, reset: 60_000 } as const
// A ready backend that dies sooner than this counts as a failed start for the backoff.
const SHORT_LIFE = 1_000
// Failures in a row that lead to backoff (the first one is retried at the next request).
const BACKOFF_AFTER = 2
// An auto port taken between our check and the backend's bind: spawn again this many times in all.
const MAX_PORT_TRIES = 3
const ADDRESS_IN_USE = /EADDRINUSE|address already in use|address in use/i
// After an exit, wait this long at most for the last output (a grandchild may hold the pipes).
const OUTPUT_GRACE = 100
const MAX_TIMER_MS = 2_147_483_647

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
 * await using spawner = createSpawner({
 *   command: 'python3 -m myapp --port __PORT__',
 *   idleTimeout: 15 * 60_000,
 * })
 * const served = await serve(spawner.app, { port: 8000 })
 */
export function createSpawner(options: SpawnerOptions): Spawner {
  return new BackendSpawner(options)
}

interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (error: unknown) => void
}

function createDeferred<T>(): Deferred<T> {
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

type ReadyOutcome = 'ready' | 'exit' | 'timeout' | 'closed'

const PROXY_KEYS = [
  'transport',
  'timeouts',
  'exposeErrors',
  'onError',
  'stringKeys',
  'unicodeKeys',
  'jsonKeys',
  'pickleKeys',
  'pickleCodec',
  'forwarded',
  'rewriteLocation',
  'signer',
  'trustClientHeaders',
] as const
const OWN_KEYS = [
  'command',
  'name',
  'cwd',
  'env',
  'inheritEnv',
  'shell',
  'port',
  'allocatePort',
  'ready',
  'startTimeout',
  'killTimeout',
  'drainTimeout',
  'idleTimeout',
  'maxQueue',
  'backoff',
  'logLines',
  'logger',
  'handleSignals',
  'orphanGuard',
] as const

class BackendSpawner extends EventEmitter<SpawnerEvents> implements Spawner {
  readonly app: UpgradableApp
  readonly name: string

  readonly #command: string | readonly string[]
  readonly #cwd: string | undefined
  readonly #env: Record<string, string | undefined>
  readonly #inheritEnv: boolean
  readonly #shell: boolean | undefined
  readonly #port: number | undefined
  readonly #allocatePort: () => number | Promise<number>
  readonly #readyHttp: string | undefined
  readonly #readyStdout: RegExp | undefined
  readonly #startTimeout: number
  readonly #killTimeout: number
  readonly #drainTimeout: number
  readonly #idleTimeout: number | false
  readonly #maxQueue: number
  readonly #backoff: Required<SpawnerBackoff>
  readonly #logLines: number
  readonly #logger: SpawnerLogger | undefined
  readonly #handleSignals: boolean
  readonly #orphanGuard: boolean
  readonly #exposeErrors: boolean
  readonly #onError: ProxyErrorHook
  readonly #proxyOptions: Omit<ProxyAppOptions, 'href'>
  readonly #ownTransport: UndiciTransport | undefined

  #state: SpawnerState = 'idle'
  #current: BackendProcess | undefined
  readonly #alive = new Set<BackendProcess>()
  #deferred: Deferred<BackendProcess> | undefined
  #queued = 0
  #starts = 0
  #crashes = 0
  #failures = 0
  #retryAt: number | undefined
  #lastExit: SpawnerExit | undefined
  #lastError: SpawnerError | undefined
  #coldStartMs: number | undefined
  // The last output lines of every process of this spawner, with the pid that wrote each.
  readonly #recent: Array<{ pid: number | null; line: string }> = []
  #idleTimer: NodeJS.Timeout | undefined
  #backoffTimer: NodeJS.Timeout | undefined
  #resetTimer: NodeJS.Timeout | undefined
  #restartPending = false
  #watchdogRetained = false
  #closing: Promise<void> | undefined
  readonly #closed = new AbortController()

  constructor(options: SpawnerOptions) {
    super()
    checkOptions(options)
    this.#command = typeof options.command === 'string' ? options.command : [...options.command]
    this.name = options.name ?? commandName(options.command)
    this.#cwd = options.cwd
    this.#env = { ...options.env }
    this.#inheritEnv = options.inheritEnv ?? true
    this.#shell = options.shell
    this.#port = options.port
    this.#allocatePort = options.allocatePort ?? kernelPort
    this.#readyHttp = options.ready?.http
    const stdout = options.ready?.stdout
    // A private copy without `g`/`y`, whose `lastIndex` would make `exec` skip matches.
    this.#readyStdout =
      stdout === undefined
        ? undefined
        : new RegExp(stdout.source, stdout.flags.replace(/[gy]/g, ''))
    this.#startTimeout = options.startTimeout ?? DEFAULT_START_TIMEOUT
    this.#killTimeout = options.killTimeout ?? DEFAULT_KILL_TIMEOUT
    this.#drainTimeout = options.drainTimeout ?? this.#killTimeout
    this.#idleTimeout = options.idleTimeout ?? false
    this.#maxQueue = options.maxQueue ?? DEFAULT_MAX_QUEUE
    this.#backoff = { ...DEFAULT_BACKOFF, ...definedOnly(options.backoff ?? {}) }
    this.#logLines = options.logLines ?? DEFAULT_LOG_LINES
    this.#logger = options.logger === false ? undefined : (options.logger ?? writeToStderr)
    this.#handleSignals = options.handleSignals ?? true
    this.#orphanGuard = options.orphanGuard ?? true
    this.#exposeErrors = options.exposeErrors ?? false
    this.#onError = options.onError ?? ((error) => this.#logFailure(error))

    const proxyOptions: Record<string, unknown> = {}
    for (const key of PROXY_KEYS) {
      if (options[key] !== undefined) proxyOptions[key] = options[key]
    }
    if (options.transport === undefined) {
      this.#ownTransport = undiciTransport()
      proxyOptions.transport = this.#ownTransport
    }
    proxyOptions.onError = this.#onError
    this.#proxyOptions = proxyOptions as Omit<ProxyAppOptions, 'href'>
    // Check the forwarding options now, not at the first ready backend.
    createProxyApp({ ...this.#proxyOptions, href: 'http://127.0.0.1:1' })

    this.app = Object.assign((environ: Environ) => this.#handle(environ), {
      prepareUpgrade: (environ: Environ) => this.#handleUpgrade(environ),
    })
  }

  start(): Promise<void> {
    const state = this.#state
    if (state === 'closed') return Promise.reject(this.#closedError())
    if (state === 'backoff') return Promise.reject(this.#backoffError())
    if (state === 'ready') return Promise.resolve()
    const deferred = (this.#deferred ??= createDeferred())
    if (state === 'idle') this.#beginStart()
    return deferred.promise.then(() => {})
  }

  async restart(): Promise<void> {
    for (;;) {
      const state = this.#state
      if (state === 'closed') throw this.#closedError()
      if (state === 'idle') return
      if (state === 'backoff') {
        clearTimeout(this.#backoffTimer)
        this.#retryAt = undefined
        this.#failures = 0
        this.#state = 'idle'
        return
      }
      if (state === 'starting') {
        await this.#deferred?.promise.catch(() => {})
        continue
      }
      const deferred = (this.#deferred ??= createDeferred())
      this.#restartPending = true
      if (state === 'ready') {
        const backend = this.#current
        if (backend !== undefined) {
          // New requests wait for the next backend while this one finishes its work.
          this.#state = 'stopping'
          clearTimeout(this.#idleTimer)
          if (backend.pid !== undefined)
            this.#emitSafely('stop', { pid: backend.pid, reason: 'restart' })
          await Promise.race([backend.drained(), sleep(this.#drainTimeout, this.#closed.signal)])
          // (close() may have run meanwhile; it stops the backend itself.)
          if ((this.#state as SpawnerState) !== 'closed') void backend.stop('restart')
        }
      }
      await deferred.promise
      return
    }
  }

  close(): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  status(): SpawnerStatus {
    const current = this.#current
    return {
      name: this.name,
      state: this.#state,
      pid: current?.pid ?? null,
      port: current?.port ?? null,
      host: current?.host ?? null,
      starts: this.#starts,
      crashes: this.#crashes,
      consecutiveFailures: this.#failures,
      inFlight: current?.inFlight ?? 0,
      queued: this.#queued,
      startedAt: current?.spawnedAt ?? null,
      readyAt: current?.readyAt ?? null,
      coldStartMs: this.#coldStartMs ?? null,
      retryAt: this.#retryAt ?? null,
      lastExit: this.#lastExit === undefined ? null : { ...this.#lastExit },
      lastError: this.#lastError?.message ?? null,
      recentLogs: this.#recent.map((entry) => entry.line),
    }
  }

  // --- requests -------------------------------------------------------------------------------

  async #handle(environ: Environ): Promise<AppResponse> {
    let backend: BackendProcess
    try {
      backend = await this.#acquire(environ['wsgiproxy.signal'])
    } catch (error) {
      return this.#failure(error, environ)
    }
    let response: AppResponse
    try {
      response = await (backend.proxy as UpgradableApp)(environ)
    } catch (error) {
      this.#release(backend)
      return this.#failure(error, environ)
    }
    if (response.body === null) {
      this.#release(backend)
      return response
    }
    // In flight until the body has been read, cancelled or failed: idle shutdown waits for it.
    return { ...response, body: trackBody(response.body, () => this.#release(backend)) }
  }

  async #handleUpgrade(environ: Environ): Promise<UpgradeTarget | AppResponse> {
    let backend: BackendProcess
    try {
      backend = await this.#acquire(environ['wsgiproxy.signal'])
    } catch (error) {
      return this.#failure(error, environ)
    }
    let target: UpgradeTarget | AppResponse
    try {
      target = await (backend.proxy as UpgradableApp).prepareUpgrade(environ)
    } catch (error) {
      this.#release(backend)
      return this.#failure(error, environ)
    }
    if (isAppResponse(target)) {
      this.#release(backend)
      return target
    }
    // An upgraded connection is in flight until the client connection closes, which aborts the
    // environ's signal (toNodeUpgradeListener keeps it armed for the connection's life).
    const signal = environ['wsgiproxy.signal']
    if (signal === undefined || signal.aborted) this.#release(backend)
    else signal.addEventListener('abort', () => this.#release(backend), { once: true })
    return target
  }

  // Synchronous up to the wait, so that the check of the state and the start of a backend happen
  // in one tick: however many requests arrive together, one process starts.
  #acquire(signal: AbortSignal | undefined): Promise<BackendProcess> {
    const state = this.#state
    if (state === 'closed') return Promise.reject(this.#closedError())
    if (state === 'backoff') return Promise.reject(this.#backoffError())
    const current = this.#current
    if (state === 'ready' && current !== undefined) {
      this.#take(current)
      return Promise.resolve(current)
    }
    if (this.#queued >= this.#maxQueue) {
      return Promise.reject(
        new SpawnerError(
          'BACKEND_QUEUE_FULL',
          `the backend is not ready and ${this.#maxQueue} requests are already waiting for it`,
          { expose: true, retryAfter: 1 },
        ),
      )
    }
    const deferred = (this.#deferred ??= createDeferred())
    if (state === 'idle') this.#beginStart()
    this.#queued++
    return untilAborted(deferred.promise, signal).then(
      (backend) => {
        this.#queued--
        this.#take(backend)
        return backend
      },
      (error: unknown) => {
        this.#queued--
        throw error
      },
    )
  }

  #take(backend: BackendProcess): void {
    backend.inFlight++
    clearTimeout(this.#idleTimer)
    this.#idleTimer = undefined
  }

  #release(backend: BackendProcess): void {
    backend.release()
    if (backend === this.#current) this.#armIdle()
  }

  async #failure(error: unknown, environ: Environ): Promise<AppResponse> {
    const problem =
      error instanceof WsgiProxyError
        ? error
        : new WsgiProxyError('APP_ERROR', 'the spawner failed', { cause: error })
    try {
      const replacement = await this.#onError(problem, environ)
      if (replacement !== undefined) return replacement
    } catch {
      return errorResponse(new WsgiProxyError('APP_ERROR', 'the error hook failed'))
    }
    const spawnerError = problem instanceof SpawnerError ? problem : undefined
    const logs = spawnerError?.recentLogs ?? []
    // The output may name paths, addresses and secrets: only with exposeErrors (DESIGN.md §8).
    const response =
      this.#exposeErrors && logs.length > 0
        ? problemResponse(
            problem.status,
            `${problem.message}; last output:\n${logs.join('\n')}`,
            problem.code,
          )
        : errorResponse(problem, this.#exposeErrors)
    if (spawnerError?.retryAfter !== undefined) {
      response.headers.push(['retry-after', String(spawnerError.retryAfter)])
    }
    return response
  }

  #logFailure(error: WsgiProxyError): void {
    // Start failures were logged once when they happened, not once per waiting request.
    if (error instanceof SpawnerError || error.status < 500) return
    this.#notice(null, `request failed: ${error.message}`)
  }

  // --- starting -------------------------------------------------------------------------------

  #beginStart(): void {
    this.#restartPending = false
    this.#state = 'starting'
    const deferred = (this.#deferred ??= createDeferred())
    void this.#runStart(deferred)
  }

  async #runStart(deferred: Deferred<BackendProcess>): Promise<void> {
    const startedAt = Date.now()
    let backend: BackendProcess
    try {
      backend = await this.#startBackend(startedAt + this.#startTimeout)
    } catch (error) {
      if (this.#state === 'closed') return
      const problem =
        error instanceof SpawnerError
          ? error
          : new SpawnerError('BACKEND_SPAWN_FAILED', `cannot start the backend: ${String(error)}`, {
              cause: error,
            })
      if (this.#deferred === deferred) this.#deferred = undefined
      deferred.reject(problem)
      this.#failures++
      this.#fail(problem)
      // A backend that timed out is still stopping: its exit continues from there.
      if (this.#state === 'starting') {
        this.#current = undefined
        this.#afterStop(true)
      }
      return
    }
    if (this.#state === 'closed') return
    const readyAt = Date.now()
    backend.readyAt = readyAt
    this.#coldStartMs = readyAt - startedAt
    const host = backend.host ?? '127.0.0.1'
    const authority = host.includes(':') ? `[${host}]:${backend.port}` : `${host}:${backend.port}`
    backend.proxy = createProxyApp({ ...this.#proxyOptions, href: `http://${authority}` })
    this.#state = 'ready'
    clearTimeout(this.#resetTimer)
    this.#resetTimer = setTimeout(() => {
      this.#failures = 0
    }, this.#backoff.reset)
    this.#resetTimer.unref()
    if (this.#deferred === deferred) this.#deferred = undefined
    deferred.resolve(backend)
    if (backend.pid !== undefined) {
      this.#emitSafely('ready', {
        pid: backend.pid,
        port: backend.port,
        host,
        coldStartMs: this.#coldStartMs,
      })
    }
    this.#armIdle()
  }

  async #startBackend(deadline: number): Promise<BackendProcess> {
    for (let attempt = 1; ; attempt++) {
      const port = await this.#choosePortBy(deadline)
      const backend = this.#spawn(port)
      if (backend.pid === undefined) {
        await backend.exited
        throw this.#exitError(backend, 'start')
      }
      this.#starts++
      this.#emitSafely('spawn', { pid: backend.pid, port, attempt })
      const outcome = await this.#waitReady(backend, deadline)
      if (outcome === 'ready') return backend
      if (outcome === 'closed') throw this.#closedError()
      if (outcome === 'timeout') {
        this.#state = 'stopping'
        this.#emitSafely('stop', { pid: backend.pid, reason: 'timeout' })
        void backend.stop('timeout')
        throw new SpawnerError('BACKEND_START_TIMEOUT', this.#timeoutMessage(backend), {
          recentLogs: this.#recentOf(backend),
        })
      }
      // It exited: read what it said last before deciding why.
      await backend.outputSettled(OUTPUT_GRACE)
      const autoPort = this.#port === undefined
      if (
        autoPort &&
        attempt < MAX_PORT_TRIES &&
        backend.tail.some((l) => ADDRESS_IN_USE.test(l))
      ) {
        this.#notice(
          backend.pid,
          `port ${port} was taken before the backend could bind it; trying another port`,
        )
        continue
      }
      throw this.#exitError(backend, 'start')
    }
  }

  // A custom allocator may never settle, and a fixed port waits for the previous backend: the
  // choice is bounded by the start deadline and by close(). A port given too late is released.
  #choosePortBy(deadline: number): Promise<number> {
    const choice = this.#choosePort()
    return new Promise((resolve, reject) => {
      const closed = this.#closed.signal
      let settled = false
      const settle = (): boolean => {
        if (settled) return false
        settled = true
        clearTimeout(timer)
        closed.removeEventListener('abort', onClose)
        return true
      }
      const onClose = (): void => {
        if (settle()) reject(this.#closedError())
      }
      const timer = setTimeout(
        () => {
          if (settle()) reject(this.#portTimeoutError())
        },
        Math.max(0, deadline - Date.now()),
      )
      timer.unref()
      if (closed.aborted) onClose()
      else closed.addEventListener('abort', onClose, { once: true })
      choice.then(
        (port) => {
          if (settle()) resolve(port)
          else if (port !== 0) releasePort(port)
        },
        (error: unknown) => {
          if (settle()) reject(error)
        },
      )
    })
  }

  #portTimeoutError(): SpawnerError {
    const within = `within ${this.#startTimeout} ms`
    const message =
      this.#port === undefined
        ? `allocatePort did not give a port ${within}`
        : `port ${this.#port} was not free ${within}: the previous backend on it has not gone`
    return new SpawnerError('BACKEND_START_TIMEOUT', message)
  }

  async #choosePort(): Promise<number> {
    const fixed = this.#port
    if (fixed === 0) return 0
    if (fixed === undefined) {
      for (let tries = 1; ; tries++) {
        let port: number
        try {
          port = await allocatePort(this.#allocatePort)
        } catch (error) {
          throw new SpawnerError(
            'BACKEND_SPAWN_FAILED',
            `cannot allocate a port: ${error instanceof Error ? error.message : String(error)}`,
            { cause: error },
          )
        }
        // Something else listens there (a custom allocator's pick, or a race with another
        // process): the readiness probe would reach it instead of our backend.
        if (!(await isPortBusy(port))) return port
        releasePort(port)
        this.#notice(null, `port ${port} is already in use; asking for another one`)
        if (tries >= MAX_PORT_TRIES) {
          throw new SpawnerError(
            'BACKEND_PORT_IN_USE',
            `no free port after ${tries} tries: every port given was already in use`,
          )
        }
      }
    }
    // The previous backend on this port must be gone first (bounded: zombies count as present).
    const previous = [...this.#alive].map((backend) => backend.gone)
    if (previous.length > 0) {
      await Promise.race([Promise.all(previous), sleep(this.#killTimeout + 2_000)])
    }
    const inUse = (): SpawnerError =>
      new SpawnerError(
        'BACKEND_PORT_IN_USE',
        `port ${fixed} is already in use; not starting a backend that could not bind it (is an old backend still running?)`,
      )
    if (!reservePort(fixed)) throw inUse()
    if (await isPortBusy(fixed)) {
      releasePort(fixed)
      throw inUse()
    }
    return fixed
  }

  #spawn(port: number): BackendProcess {
    if (this.#orphanGuard && !this.#watchdogRetained) {
      // Before the first spawn, so the watchdog is there before any group needs it.
      this.#watchdogRetained = true
      retainWatchdog()
    }
    const { file, args } = resolveCommand(this.#command, port, this.#shell)
    const env: NodeJS.ProcessEnv = this.#inheritEnv ? { ...process.env } : {}
    // CPython block-buffers a piped stdout: lines (and readiness patterns) would arrive late.
    env.PYTHONUNBUFFERED ??= '1'
    for (const [key, value] of Object.entries(this.#env)) {
      if (value === undefined) delete env[key]
      else env[key] = value
    }
    env.PORT = String(port)
    const backend = BackendProcess.spawn({
      file,
      args,
      cwd: this.#cwd,
      env,
      port,
      killTimeout: this.#killTimeout,
      handleSignals: this.#handleSignals,
      orphanGuard: this.#orphanGuard,
      onLine: (process, stream, text) => this.#onLine(process, stream, text),
      onExit: (process, exit) => this.#onExit(process, exit),
      onNotice: (process, message) => this.#notice(process.pid ?? null, message),
      onStuck: (process) => this.#onStuck(process),
    })
    if (port !== 0) backend.reservedPort = port
    this.#current = backend
    this.#alive.add(backend)
    void backend.gone.then(() => {
      this.#alive.delete(backend)
      if (backend.reservedPort !== undefined) releasePort(backend.reservedPort)
    })
    return backend
  }

  #waitReady(backend: BackendProcess, deadline: number): Promise<ReadyOutcome> {
    return new Promise((resolve) => {
      const controller = new AbortController()
      const closed = this.#closed.signal
      let settled = false
      const finish = (outcome: ReadyOutcome): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        closed.removeEventListener('abort', onClose)
        controller.abort()
        resolve(outcome)
      }
      const onClose = (): void => finish('closed')
      const timer = setTimeout(() => finish('timeout'), Math.max(0, deadline - Date.now()))
      timer.unref()
      if (closed.aborted) finish('closed')
      else closed.addEventListener('abort', onClose, { once: true })
      void backend.exited.then(() => finish('exit'))
      void this.#probe(backend, controller.signal).then((host) => {
        // A probe that succeeded while our process was dying hit something else.
        if (host === undefined || !backend.alive) return
        backend.host = host
        finish('ready')
      })
    })
  }

  async #probe(backend: BackendProcess, signal: AbortSignal): Promise<string | undefined> {
    if (this.#readyStdout !== undefined) {
      const announced = await untilAborted(backend.announced, signal).catch(() => undefined)
      if (announced === undefined) return undefined
    }
    return pollReady(backend.port, this.#readyHttp, signal)
  }

  #timeoutMessage(backend: BackendProcess): string {
    const { pid, port } = backend
    const within = `within ${this.#startTimeout} ms`
    if (this.#readyStdout !== undefined && backend.announcePending) {
      return `process ${pid} is running but printed no line matching ${String(this.#readyStdout)} ${within}`
    }
    if (this.#readyHttp !== undefined) {
      return `process ${pid} is running but GET ${this.#readyHttp} on port ${port} did not answer below 500 ${within}`
    }
    return (
      `process ${pid} is running but nothing accepted connections on 127.0.0.1:${port} or [::1]:${port} ${within}; ` +
      `does the command use ${PORT_PLACEHOLDER} or $PORT, and bind to 127.0.0.1?`
    )
  }

  #exitError(backend: BackendProcess, when: 'start' | 'ready'): SpawnerError {
    const exit: SpawnerExit = backend.exit ?? {
      pid: null,
      code: null,
      signal: null,
      at: Date.now(),
    }
    const recentLogs = this.#recentOf(backend)
    const spawnError = backend.spawnError as NodeJS.ErrnoException | undefined
    if (spawnError !== undefined) {
      const hint = spawnError.code === 'ENOENT' ? ' (command or working directory not found)' : ''
      return new SpawnerError(
        'BACKEND_SPAWN_FAILED',
        `cannot spawn the backend: ${spawnError.message}${hint}`,
        { cause: spawnError, recentLogs, exit },
      )
    }
    const how =
      exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`
    const phase = when === 'start' ? 'before it was ready' : 'while serving'
    return new SpawnerError('BACKEND_EXITED', `process ${backend.pid} ${how} ${phase}`, {
      recentLogs,
      exit,
    })
  }

  // A start error or crash tells what this process said, not an earlier one of the spawner.
  #recentOf(backend: BackendProcess): string[] {
    const pid = backend.pid ?? null
    return this.#recent.filter((entry) => entry.pid === pid).map((entry) => entry.line)
  }

  // --- process events -------------------------------------------------------------------------

  #onLine(backend: BackendProcess, stream: 'stdout' | 'stderr', text: string): void {
    const pid = backend.pid ?? null
    const line = `[${this.name} ${pid}] ${text}`
    this.#recent.push({ pid, line })
    if (this.#recent.length > this.#logLines) this.#recent.shift()
    this.#log({ name: this.name, pid, stream, text, line })
    const pattern = this.#readyStdout
    if (pattern !== undefined && backend.announcePending && backend === this.#current) {
      const match = pattern.exec(text)
      if (match !== null) {
        const announced = match.groups?.port
        if (announced !== undefined) {
          const port = Number(announced)
          if (Number.isInteger(port) && port > 0 && port < 65536 && port !== backend.port) {
            if (backend.reservedPort !== undefined) releasePort(backend.reservedPort)
            backend.reservedPort = reservePort(port) ? port : undefined
            backend.port = port
          }
        }
        backend.announce(backend.port)
      }
    }
  }

  #onExit(backend: BackendProcess, exit: ProcessExit): void {
    if (backend.pid !== undefined) {
      this.#lastExit = exit
      this.#emitSafely('exit', { ...exit })
    }
    if (backend !== this.#current || this.#state === 'closed') return
    const state = this.#state
    // A start in progress decides for itself (#startBackend is waiting for this exit).
    if (state === 'starting') return
    clearTimeout(this.#idleTimer)
    clearTimeout(this.#resetTimer)
    this.#current = undefined
    // A ready backend not ended by a stop crashed, also while restart() waited for requests.
    const unasked = backend.stopReason === undefined || backend.exitedBeforeStop
    if (state === 'ready' || (backend.readyAt !== undefined && unasked)) {
      this.#crashes++
      const lived = exit.at - (backend.readyAt ?? exit.at)
      const short = lived < SHORT_LIFE
      if (short) this.#failures++
      this.#fail(this.#exitError(backend, 'ready'))
      this.#afterStop(short)
      return
    }
    // stopping: idle, restart, or the start timeout (a failure, counted when it happened)
    this.#afterStop(backend.stopReason === 'timeout')
  }

  // A stopped backend that did not exit after SIGKILL: go on without it (its 'exit', if it ever
  // comes, finds it no longer current), so requests and close() do not wait forever.
  #onStuck(backend: BackendProcess): void {
    if (backend !== this.#current || this.#state !== 'stopping') return
    clearTimeout(this.#idleTimer)
    this.#current = undefined
    this.#afterStop(backend.stopReason === 'timeout')
  }

  // After a backend has gone (or never came up): back off, start again for waiters, or rest.
  #afterStop(failed: boolean): void {
    if (failed && this.#failures >= BACKOFF_AFTER) {
      this.#enterBackoff()
      return
    }
    if (this.#deferred !== undefined || this.#restartPending) {
      this.#beginStart()
      return
    }
    this.#state = 'idle'
  }

  #enterBackoff(): void {
    const { base, max } = this.#backoff
    const delayMs = Math.min(base * 2 ** (this.#failures - BACKOFF_AFTER), max)
    const retryAt = Date.now() + delayMs
    this.#retryAt = retryAt
    this.#state = 'backoff'
    this.#restartPending = false
    const deferred = this.#deferred
    this.#deferred = undefined
    deferred?.reject(this.#backoffError())
    clearTimeout(this.#backoffTimer)
    this.#backoffTimer = setTimeout(() => {
      if (this.#state !== 'backoff') return
      this.#retryAt = undefined
      this.#state = 'idle'
    }, delayMs)
    this.#backoffTimer.unref()
    this.#notice(null, `${this.#failures} failures in a row: not starting again for ${delayMs} ms`)
    this.#emitSafely('backoff', { failures: this.#failures, delayMs, retryAt })
  }

  #armIdle(): void {
    const timeout = this.#idleTimeout
    const backend = this.#current
    if (
      timeout === false ||
      this.#state !== 'ready' ||
      backend === undefined ||
      backend.inFlight > 0 ||
      this.#queued > 0
    ) {
      return
    }
    clearTimeout(this.#idleTimer)
    this.#idleTimer = setTimeout(() => this.#onIdle(backend), timeout)
    this.#idleTimer.unref()
  }

  #onIdle(backend: BackendProcess): void {
    this.#idleTimer = undefined
    if (this.#state !== 'ready' || backend !== this.#current || backend.inFlight > 0) return
    this.#state = 'stopping'
    if (backend.pid !== undefined) {
      this.#emitSafely('idle', { pid: backend.pid })
      this.#emitSafely('stop', { pid: backend.pid, reason: 'idle' })
    }
    void backend.stop('idle')
  }

  async #close(): Promise<void> {
    this.#state = 'closed'
    this.#closed.abort()
    clearTimeout(this.#idleTimer)
    clearTimeout(this.#backoffTimer)
    clearTimeout(this.#resetTimer)
    this.#retryAt = undefined
    const deferred = this.#deferred
    this.#deferred = undefined
    deferred?.reject(this.#closedError())
    const backends = [...this.#alive]
    for (const backend of backends) {
      if (backend.alive && backend.pid !== undefined) {
        this.#emitSafely('stop', { pid: backend.pid, reason: 'close' })
      }
    }
    await Promise.all(backends.map((backend) => backend.stop('close')))
    if (this.#watchdogRetained) {
      this.#watchdogRetained = false
      releaseWatchdog()
    }
    // Requests still open to the dead backends fail at once; do not wait on the pool for long.
    if (this.#ownTransport !== undefined) {
      await Promise.race([this.#ownTransport.close().catch(() => {}), sleep(1_000)])
    }
  }

  // --- errors and logs ------------------------------------------------------------------------

  #closedError(): SpawnerError {
    return new SpawnerError('BACKEND_CLOSED', 'the spawner is closed', { expose: true })
  }

  #backoffError(): SpawnerError {
    const retryAt = this.#retryAt ?? Date.now()
    const seconds = Math.max(1, Math.ceil((retryAt - Date.now()) / 1_000))
    return new SpawnerError(
      'BACKEND_BACKOFF',
      `the backend failed ${this.#failures} times in a row; retry in ${seconds} s`,
      { expose: true, retryAfter: seconds, recentLogs: this.#recent.map((entry) => entry.line) },
    )
  }

  #fail(error: SpawnerError): void {
    this.#lastError = error
    this.#notice(error.exit?.pid ?? null, error.message)
    this.#emitSafely('error', error)
  }

  // Listeners are the host's code. One that throws is reported and the others still run: an
  // exception out of emit() would cut a state change short (a group never reaped, a running
  // process forgotten, an unhandled rejection). Without listeners nothing is emitted, so an
  // 'error' nobody listens to never throws.
  #emitSafely<K extends keyof SpawnerEvents>(event: K, ...args: SpawnerEvents[K]): void {
    for (const listener of this.rawListeners(event)) {
      try {
        Reflect.apply(listener, this, args)
      } catch (error) {
        const reason = error instanceof Error ? (error.stack ?? String(error)) : String(error)
        this.#notice(null, `a '${String(event)}' listener threw: ${reason}`, true)
      }
    }
  }

  #notice(pid: number | null, text: string, always = false): void {
    const line = pid === null ? `[${this.name}] ${text}` : `[${this.name} ${pid}] ${text}`
    // A failure of the host's own code is not lost with `logger: false`.
    if (always && this.#logger === undefined) console.error(line)
    this.#log({ name: this.name, pid, stream: 'spawner', text, line })
  }

  #log(entry: SpawnerLogEntry): void {
    try {
      this.#logger?.(entry)
    } catch {
      // A failing logger must not stop the draining of the backend's output.
    }
    if (entry.stream !== 'spawner') this.#emitSafely('log', entry)
  }
}

function writeToStderr(entry: SpawnerLogEntry): void {
  process.stderr.write(`${entry.line}\n`)
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** `promise`, or a rejection with `CLIENT_ABORTED` as soon as `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
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

function abortError(): WsgiProxyError {
  return new WsgiProxyError('CLIENT_ABORTED', 'the client left while the backend was starting')
}

/**
 * Wraps a response body to call `done` once when it ends, fails or is cancelled. `return()` is
 * passed on at once, even while a read is pending (an async generator would wait for that read).
 */
function trackBody(body: AsyncIterable<Uint8Array>, done: () => void): AsyncIterable<Uint8Array> {
  let finished = false
  const finish = (): void => {
    if (finished) return
    finished = true
    done()
  }
  return {
    [Symbol.asyncIterator]: () => {
      const iterator = body[Symbol.asyncIterator]()
      return {
        async next(): Promise<IteratorResult<Uint8Array>> {
          try {
            const result = await iterator.next()
            if (result.done) finish()
            return result
          } catch (error) {
            finish()
            throw error
          }
        },
        async return(): Promise<IteratorResult<Uint8Array>> {
          finish()
          void Promise.resolve(iterator.return?.()).catch(() => {})
          return { done: true, value: undefined }
        },
      }
    },
  }
}

// --- options ----------------------------------------------------------------------------------

function invalid(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', `invalid options: createSpawner.${message}`, {
    expose: true,
  })
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return String(value)
}

function checkMs(
  options: Record<string, unknown>,
  name: string,
  { min = 1, allowFalse = false, prefix = '' } = {},
): void {
  const value = options[name]
  if (value === undefined || (allowFalse && value === false)) return
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > MAX_TIMER_MS) {
    const alternative = allowFalse ? ' or false' : ''
    throw invalid(
      `${prefix}${name}: expected whole milliseconds from ${min} to ${MAX_TIMER_MS}${alternative} (got ${describe(value)})`,
    )
  }
}

function checkOptions(options: SpawnerOptions): void {
  if (typeof options !== 'object' || options === null) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: createSpawner expects an options object (got ${String(options)})`,
      { expose: true },
    )
  }
  const record = options as unknown as Record<string, unknown>
  const known: readonly string[] = [...OWN_KEYS, ...PROXY_KEYS]
  for (const key of Object.keys(record)) {
    if (!known.includes(key)) throw invalid(`${key}: unknown option`)
  }
  const { command } = options
  if (typeof command === 'string') {
    if (command.trim() === '') throw invalid('command: expected a command (got an empty string)')
  } else if (
    !Array.isArray(command) ||
    command.length === 0 ||
    !command.every((arg) => typeof arg === 'string') ||
    command[0] === ''
  ) {
    throw invalid(
      `command: expected a string or a non-empty array of strings (got ${describe(command)})`,
    )
  }
  for (const key of ['name', 'cwd'] as const) {
    const value = options[key]
    if (value !== undefined && (typeof value !== 'string' || value === '')) {
      throw invalid(`${key}: expected a non-empty string (got ${describe(value)})`)
    }
  }
  const { env } = options
  if (env !== undefined) {
    if (typeof env !== 'object' || env === null || Array.isArray(env)) {
      throw invalid(`env: expected an object of strings (got ${describe(env)})`)
    }
    for (const [key, value] of Object.entries(env)) {
      if (value !== undefined && typeof value !== 'string') {
        throw invalid(`env.${key}: expected a string or undefined (got ${describe(value)})`)
      }
    }
  }
  for (const key of ['inheritEnv', 'shell', 'handleSignals', 'orphanGuard'] as const) {
    const value = options[key]
    if (value !== undefined && typeof value !== 'boolean') {
      throw invalid(`${key}: expected a boolean (got ${describe(value)})`)
    }
  }
  const { port } = options
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    throw invalid(`port: expected 0–65535 (got ${describe(port)})`)
  }
  if (options.allocatePort !== undefined) {
    if (typeof options.allocatePort !== 'function') {
      throw invalid(`allocatePort: expected a function (got ${describe(options.allocatePort)})`)
    }
    if (port !== undefined) throw invalid('allocatePort cannot be combined with port')
  }
  const { ready } = options
  if (ready !== undefined) {
    if (typeof ready !== 'object' || ready === null) {
      throw invalid(`ready: expected { http?, stdout? } (got ${describe(ready)})`)
    }
    for (const key of Object.keys(ready)) {
      if (key !== 'http' && key !== 'stdout') throw invalid(`ready.${key}: unknown option`)
    }
    if (
      ready.http !== undefined &&
      (typeof ready.http !== 'string' || !ready.http.startsWith('/'))
    ) {
      throw invalid(`ready.http: expected a path starting with "/" (got ${describe(ready.http)})`)
    }
    if (ready.stdout !== undefined && !(ready.stdout instanceof RegExp)) {
      throw invalid(`ready.stdout: expected a RegExp (got ${describe(ready.stdout)})`)
    }
  }
  if (port === 0 && !(ready?.stdout?.source.includes('(?<port>') ?? false)) {
    throw invalid(
      'port: 0 (the app picks its port) needs ready.stdout with a named group "port" to read it from',
    )
  }
  checkMs(record, 'startTimeout')
  checkMs(record, 'killTimeout')
  checkMs(record, 'drainTimeout', { min: 0 })
  checkMs(record, 'idleTimeout', { allowFalse: true })
  const { maxQueue, logLines } = options
  if (maxQueue !== undefined && (!Number.isInteger(maxQueue) || maxQueue < 1)) {
    throw invalid(`maxQueue: expected a positive integer (got ${describe(maxQueue)})`)
  }
  if (logLines !== undefined && (!Number.isInteger(logLines) || logLines < 0)) {
    throw invalid(`logLines: expected a non-negative integer (got ${describe(logLines)})`)
  }
  const { backoff } = options
  if (backoff !== undefined) {
    if (typeof backoff !== 'object' || backoff === null) {
      throw invalid(`backoff: expected { base?, max?, reset? } (got ${describe(backoff)})`)
    }
    const fields = backoff as Record<string, unknown>
    for (const key of Object.keys(fields)) {
      if (key !== 'base' && key !== 'max' && key !== 'reset') {
        throw invalid(`backoff.${key}: unknown option`)
      }
      checkMs(fields, key, { prefix: 'backoff.' })
    }
  }
  const { logger } = options
  if (logger !== undefined && logger !== false && typeof logger !== 'function') {
    throw invalid(`logger: expected a function or false (got ${describe(logger)})`)
  }
}
