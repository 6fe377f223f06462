// The Spawner: wires the options, the state machine, the request gate, the start orchestration and
// the log together, and turns the process events into state changes.
import { EventEmitter } from 'node:events'
import type { Environ, ErrorHook, ProxyAppOptions, UpgradableApp } from '@wsgiproxy/core'
import type { UndiciTransport } from '@wsgiproxy/core/undici'
import type { BackendProcess, ProcessExit } from './_backend-process.ts'
import { Gate } from './_gate.ts'
import type { Round } from './_gate.ts'
import { Lifecycle } from './_lifecycle.ts'
import { SpawnerLog } from './_log.ts'
import { sleep } from './_readiness.ts'
import { createSpawnerApp, failureResponse } from './_requests.ts'
import {
  backoffError,
  closeTransport,
  connectProxy,
  createForwarding,
  emitSafely,
  leaseOf,
} from './_spawner-support.ts'
import { Starter } from './_start.ts'
import type { SpawnerSettings } from './options.ts'
import { closedError, SpawnerError } from './spawner-error.ts'
import type { SpawnerExit } from './spawner-error.ts'
import type { Spawner, SpawnerEvents, SpawnerLease, SpawnerStatus } from './spawner.ts'

/** The {@link Spawner} that `createSpawner` returns without `instances`: one process. */
export class BackendSpawner extends EventEmitter<SpawnerEvents> implements Spawner {
  readonly app: UpgradableApp
  readonly name: string

  readonly #settings: SpawnerSettings
  readonly #onError: ErrorHook<Environ>
  readonly #proxyOptions: Omit<ProxyAppOptions, 'href'>
  readonly #ownTransport: UndiciTransport | undefined
  readonly #life: Lifecycle
  readonly #gate: Gate<BackendProcess>
  readonly #log: SpawnerLog
  readonly #starter: Starter
  readonly #closed = new AbortController()

  #current: BackendProcess | undefined
  #starts = 0
  #crashes = 0
  #lastExit: SpawnerExit | undefined
  #lastError: SpawnerError | undefined
  #coldStartMs: number | undefined
  #restartPending = false
  #closing: Promise<void> | undefined

  /** @param settings - the checked options (`parseSpawnerOptions`) */
  constructor(settings: SpawnerSettings) {
    super()
    this.#settings = settings
    this.name = settings.name
    const { proxy } = settings
    this.#log = new SpawnerLog({
      name: this.name,
      size: settings.logLines,
      logger: settings.logger,
      onOutput: (entry) => this.#emitSafely('log', entry),
    })
    const forwarding = createForwarding(settings, this.#log)
    this.#onError = forwarding.onError
    this.#proxyOptions = forwarding.proxyOptions
    this.#ownTransport = forwarding.ownTransport
    this.#life = new Lifecycle({ backoff: settings.backoff, idleTimeout: settings.idleTimeout })
    this.#gate = new Gate({
      maxQueue: settings.maxQueue,
      onDemand: () => {
        if (this.#life.state === 'idle') this.#beginStart()
      },
    })
    this.#starter = new Starter(settings, this.#log, this.#closed.signal, {
      adopt: (backend) => {
        this.#current = backend
      },
      spawned: (info) => {
        this.#starts++
        this.#emitSafely('spawn', info)
      },
      timedOut: (backend, pid) => {
        this.#life.to('stopping')
        this.#emitSafely('stop', { pid, reason: 'timeout' })
        void backend.stop('timeout')
      },
      line: (backend, stream, text) => this.#onLine(backend, stream, text),
      exit: (backend, exit) => this.#onExit(backend, exit),
      stuck: (backend) => this.#onStuck(backend),
    })
    this.app = createSpawnerApp({
      acquire: (signal) => this.#acquire(signal),
      release: (backend) => this.#release(backend),
      respond: (error, environ: Environ) =>
        failureResponse(error, environ, this.#onError, proxy.exposeErrors ?? false),
    })
  }

  start(): Promise<void> {
    const state = this.#life.state
    if (state === 'closed') return Promise.reject(closedError())
    if (state === 'backoff') return Promise.reject(this.#backoffError())
    if (state === 'ready') return Promise.resolve()
    return this.#gate.round().promise.then(() => {})
  }

  async restart(): Promise<void> {
    for (;;) {
      const state = this.#life.state
      if (state === 'closed') throw closedError()
      if (state === 'idle') return
      if (state === 'backoff') {
        this.#life.endBackoff()
        return
      }
      if (state === 'starting') {
        await this.#gate.pending?.catch(() => {})
        continue
      }
      const round = this.#gate.round()
      this.#restartPending = true
      const backend = this.#current
      if (state === 'ready' && backend !== undefined) {
        // New requests wait for the next backend while this one finishes its work.
        this.#life.to('stopping')
        this.#life.disarmIdle()
        if (backend.pid !== undefined) {
          this.#emitSafely('stop', { pid: backend.pid, reason: 'restart' })
        }
        const drainTimeout = this.#settings.drainTimeout
        await Promise.race([backend.drained(), sleep(drainTimeout, this.#closed.signal)])
        // (close() may have run meanwhile; it stops the backend itself.)
        if (this.#life.state !== 'closed') void backend.stop('restart')
      }
      await round.promise
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

  async lease(signal?: AbortSignal): Promise<SpawnerLease> {
    const backend = await this.#acquire(signal)
    return leaseOf(backend, () => this.#release(backend))
  }

  status(): SpawnerStatus {
    const current = this.#current
    return {
      name: this.name,
      state: this.#life.state,
      pid: current?.pid ?? null,
      port: current?.port ?? null,
      host: current?.host ?? null,
      starts: this.#starts,
      crashes: this.#crashes,
      consecutiveFailures: this.#life.failures,
      inFlight: current?.inFlight ?? 0,
      queued: this.#gate.queued,
      startedAt: current?.spawnedAt ?? null,
      readyAt: current?.readyAt ?? null,
      coldStartMs: this.#coldStartMs ?? null,
      retryAt: this.#life.retryAt ?? null,
      lastExit: this.#lastExit === undefined ? null : { ...this.#lastExit },
      lastError: this.#lastError?.message ?? null,
      recentLogs: this.#log.lines(),
    }
  }

  // --- requests -------------------------------------------------------------------------------

  // Synchronous up to the wait, so that the check of the state and the start of a backend happen
  // in one tick: however many requests arrive together, one process starts.
  #acquire(signal: AbortSignal | undefined): Promise<BackendProcess> {
    const state = this.#life.state
    if (state === 'closed') return Promise.reject(closedError())
    if (state === 'backoff') return Promise.reject(this.#backoffError())
    const current = this.#current
    if (state === 'ready' && current !== undefined) {
      this.#take(current)
      return Promise.resolve(current)
    }
    return this.#gate.wait(signal, (backend) => this.#take(backend))
  }

  #take(backend: BackendProcess): void {
    backend.inFlight++
    this.#life.disarmIdle()
  }

  #release(backend: BackendProcess): void {
    backend.release()
    if (backend === this.#current) this.#armIdle()
  }

  // --- starting -------------------------------------------------------------------------------

  #beginStart(): void {
    this.#restartPending = false
    this.#life.to('starting')
    void this.#runStart(this.#gate.round())
  }

  async #runStart(round: Round<BackendProcess>): Promise<void> {
    const startedAt = Date.now()
    let backend: BackendProcess
    try {
      backend = await this.#starter.start(startedAt + this.#settings.startTimeout)
    } catch (error) {
      this.#startFailed(round, error)
      return
    }
    if (this.#life.state === 'closed') return
    const readyAt = Date.now()
    backend.readyAt = readyAt
    this.#coldStartMs = readyAt - startedAt
    connectProxy(backend, this.#proxyOptions)
    this.#life.to('ready')
    this.#life.armReset()
    this.#gate.resolve(round, backend)
    if (backend.pid !== undefined) {
      const { port } = backend
      const host = backend.host ?? '127.0.0.1'
      this.#emitSafely('ready', { pid: backend.pid, port, host, coldStartMs: this.#coldStartMs })
    }
    this.#armIdle()
  }

  #startFailed(round: Round<BackendProcess>, error: unknown): void {
    if (this.#life.state === 'closed') return
    const problem =
      error instanceof SpawnerError
        ? error
        : new SpawnerError('BACKEND_SPAWN_FAILED', `cannot start the backend: ${String(error)}`, {
            cause: error,
          })
    this.#gate.reject(round, problem)
    this.#life.countFailure()
    this.#fail(problem)
    // A backend that timed out is still stopping: its exit continues from there.
    if (this.#life.state === 'starting') {
      this.#current = undefined
      this.#afterStop(true)
    }
  }

  // --- process events -------------------------------------------------------------------------

  #onLine(backend: BackendProcess, stream: 'stdout' | 'stderr', text: string): void {
    this.#log.output(backend.pid ?? null, stream, text)
    if (backend === this.#current) this.#starter.readLine(backend, text)
  }

  #onExit(backend: BackendProcess, exit: ProcessExit): void {
    if (backend.pid !== undefined) {
      this.#lastExit = exit
      this.#emitSafely('exit', { ...exit })
    }
    const state = this.#life.state
    if (backend !== this.#current || state === 'closed') return
    // A start in progress decides for itself (Starter.start is waiting for this exit).
    if (state === 'starting') return
    this.#life.disarmIdle()
    this.#life.disarmReset()
    this.#current = undefined
    // A ready backend not ended by a stop crashed, also while restart() waited for requests.
    const unasked = backend.stopReason === undefined || backend.exitedBeforeStop
    if (state === 'ready' || (backend.readyAt !== undefined && unasked)) {
      this.#crashes++
      const short = this.#life.countCrash(exit.at - (backend.readyAt ?? exit.at))
      this.#fail(this.#starter.exitError(backend, 'ready'))
      this.#afterStop(short)
      return
    }
    // stopping: idle, restart, or the start timeout (a failure, counted when it happened)
    this.#afterStop(backend.stopReason === 'timeout')
  }

  // A stopped backend that did not exit after SIGKILL: go on without it (its 'exit', if it ever
  // comes, finds it no longer current), so requests and close() do not wait forever.
  #onStuck(backend: BackendProcess): void {
    if (backend !== this.#current || this.#life.state !== 'stopping') return
    this.#life.disarmIdle()
    this.#current = undefined
    this.#afterStop(backend.stopReason === 'timeout')
  }

  // After a backend has gone (or never came up): back off, start again for waiters, or rest.
  #afterStop(failed: boolean): void {
    if (failed && this.#life.mustBackOff) {
      this.#enterBackoff()
      return
    }
    if (this.#gate.pending !== undefined || this.#restartPending) {
      this.#beginStart()
      return
    }
    this.#life.to('idle')
  }

  #enterBackoff(): void {
    const { delayMs, retryAt } = this.#life.backOff()
    this.#restartPending = false
    this.#gate.rejectOpen(this.#backoffError())
    const failures = this.#life.failures
    this.#log.notice(null, `${failures} failures in a row: not starting again for ${delayMs} ms`)
    this.#emitSafely('backoff', { failures, delayMs, retryAt })
  }

  #armIdle(): void {
    const backend = this.#current
    if (backend === undefined || backend.inFlight > 0 || this.#gate.queued > 0) return
    this.#life.armIdle(() => this.#onIdle(backend))
  }

  #onIdle(backend: BackendProcess): void {
    if (this.#life.state !== 'ready' || backend !== this.#current || backend.inFlight > 0) return
    this.#life.to('stopping')
    if (backend.pid !== undefined) {
      this.#emitSafely('idle', { pid: backend.pid })
      this.#emitSafely('stop', { pid: backend.pid, reason: 'idle' })
    }
    void backend.stop('idle')
  }

  async #close(): Promise<void> {
    this.#life.close()
    this.#closed.abort()
    this.#gate.rejectOpen(closedError())
    const backends = this.#starter.alive
    for (const backend of backends) {
      if (backend.alive && backend.pid !== undefined) {
        this.#emitSafely('stop', { pid: backend.pid, reason: 'close' })
      }
    }
    await Promise.all(backends.map((backend) => backend.stop('close')))
    this.#starter.releaseWatchdog()
    // Requests still open to the dead backends fail at once; do not wait on the pool for long.
    await closeTransport(this.#ownTransport)
  }

  // --- errors and events ----------------------------------------------------------------------

  #backoffError(): SpawnerError {
    return backoffError(this.#life, this.#log)
  }

  #fail(error: SpawnerError): void {
    this.#lastError = error
    this.#log.notice(error.exit?.pid ?? null, error.message)
    this.#emitSafely('error', error)
  }

  #emitSafely<K extends keyof SpawnerEvents>(event: K, ...args: SpawnerEvents[K]): void {
    emitSafely(this, this.#log, event, ...args)
  }
}
