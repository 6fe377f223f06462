// A pool of backend processes (`instances`): the parts of a single-process spawner (Starter,
// Lifecycle, Gate, SpawnerLog) with a routing set of ready instances (_pool-instances.ts) instead
// of one current backend. The Lifecycle holds the pool's state (`ready` while any instance is), its
// failure count and backoff; the Gate holds requests while no instance is ready. Each request goes
// to the least busy ready instance (_pool-requests.ts sends one an instance failed to another);
// the supervisor (_pool-supervisor.ts) grows the pool while all are busy and replaces crashed
// instances; extras that stay idle stop; restart() rolls (_pool-restart.ts). docs/spawner.md,
// "Pools of instances".
import { EventEmitter } from 'node:events'
import type { Environ, UpgradableApp } from '@wsgiproxy/core'
import type { UndiciTransport } from '@wsgiproxy/core/undici'
import type { BackendProcess } from './_backend-process.ts'
import { Gate } from './_gate.ts'
import { Lifecycle } from './_lifecycle.ts'
import { SpawnerLog } from './_log.ts'
import { PoolInstances } from './_pool-instances.ts'
import { Attempts, createPoolApp } from './_pool-requests.ts'
import { rollingRestart } from './_pool-restart.ts'
import { PoolSupervisor } from './_pool-supervisor.ts'
import { sleep } from './_readiness.ts'
import { failureResponse } from './_requests.ts'
import {
  backoffError,
  closeTransport,
  createForwarding,
  emitSafely,
  leaseOf,
} from './_spawner-support.ts'
import { Starter } from './_start.ts'
import type { SpawnerInstances, SpawnerSettings } from './options.ts'
import { closedError } from './spawner-error.ts'
import type { SpawnerError, SpawnerExit } from './spawner-error.ts'
import type { Spawner, SpawnerEvents, SpawnerLease, SpawnerStatus } from './spawner.ts'

/** The {@link Spawner} that `createSpawner` returns with `instances`. */
export class BackendPool extends EventEmitter<SpawnerEvents> implements Spawner {
  readonly app: UpgradableApp
  readonly name: string

  readonly #settings: SpawnerSettings
  readonly #busyAt: number
  readonly #ownTransport: UndiciTransport | undefined
  readonly #life: Lifecycle
  readonly #gate: Gate<BackendProcess>
  readonly #log: SpawnerLog
  readonly #starter: Starter
  readonly #closed = new AbortController()
  readonly #instances: PoolInstances
  readonly #supervisor: PoolSupervisor
  #starts = 0
  #lastExit: SpawnerExit | undefined
  #lastError: SpawnerError | undefined
  // restart() calls run one after the other.
  #restarts: Promise<void> = Promise.resolve()
  #closing: Promise<void> | undefined

  /**
   * @param settings - the checked options (`parseSpawnerOptions`)
   * @param pool - their `instances`
   */
  constructor(settings: SpawnerSettings, pool: Required<SpawnerInstances>) {
    super()
    this.#settings = settings
    this.#busyAt = pool.busyAt
    this.name = settings.name
    const log = (this.#log = new SpawnerLog({
      name: this.name,
      size: settings.logLines,
      logger: settings.logger,
      onOutput: (entry) => this.#emit('log', entry),
    }))
    const forwarding = createForwarding(settings, log)
    this.#ownTransport = forwarding.ownTransport
    // Each instance reports its failures to `attempts` first: the app decides what is final.
    const attempts = new Attempts(forwarding.onError)
    const life = (this.#life = new Lifecycle({
      backoff: settings.backoff,
      idleTimeout: settings.idleTimeout,
    }))
    const gate = (this.#gate = new Gate<BackendProcess>({
      maxQueue: settings.maxQueue,
      onDemand: () => this.#supervisor.onDemand(),
    }))
    const instances = (this.#instances = new PoolInstances({
      min: pool.min,
      idleTimeout: pool.idleTimeout,
      onIdle: (backend) => this.#stopIdle([backend]),
    }))
    const starter = (this.#starter = new Starter(settings, log, this.#closed.signal, {
      adopt: () => {},
      spawned: (info) => {
        this.#starts++
        this.#emit('spawn', info)
      },
      timedOut: (backend) => {
        this.#supervisor.retire(backend, 'timeout')
        void backend.stop('timeout')
      },
      line: (backend, stream, text) => {
        log.output(backend.pid ?? null, stream, text)
        starter.readLine(backend, text)
      },
      exit: (backend, exit) => {
        if (backend.pid !== undefined) {
          this.#lastExit = exit
          this.#emit('exit', { ...exit })
        }
        if (life.state !== 'closed') this.#supervisor.exited(backend, exit)
      },
      // It did not exit after SIGKILL: go on without it.
      stuck: (backend) => this.#supervisor.exited(backend, undefined),
    }))
    this.#supervisor = new PoolSupervisor({
      pool,
      startTimeout: settings.startTimeout,
      life,
      gate,
      instances,
      starter,
      log,
      proxyOptions: { ...forwarding.proxyOptions, onError: attempts.hook },
      emit: (event, ...args) => this.#emit(event, ...args),
      fail: (error) => this.#fail(error),
      checkIdle: () => this.#armPoolIdle(),
    })
    const exposeErrors = settings.proxy.exposeErrors ?? false
    this.app = createPoolApp({
      acquire: (signal) => this.#acquire(signal),
      release: (backend) => this.#release(backend),
      respond: (error, environ: Environ) =>
        failureResponse(error, environ, forwarding.onError, exposeErrors),
      another: (failed, error) => this.#another(failed, error.message),
      attempts,
    })
  }

  async start(): Promise<void> {
    const state = this.#life.state
    if (state === 'closed') throw closedError()
    if (state === 'backoff') throw backoffError(this.#life, this.#log)
    if (this.#instances.ready.length === 0) await this.#gate.round().promise
    // The first instance is ready; the others of `min` too, once this resolves.
    await this.#supervisor.startsSettled()
  }

  restart(): Promise<void> {
    const run = this.#restarts.then(() => this.#roll())
    this.#restarts = run.catch(() => {})
    return run
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
    const processes = this.#starter.alive.filter((backend) => backend.pid !== undefined)
    const instances = this.#instances
    // The top-level fields describe the longest ready instance (else one starting).
    const lead = instances.ready[0] ?? processes.find((b) => instances.stateOf(b) === 'starting')
    return {
      name: this.name,
      state: this.#life.state,
      pid: lead?.pid ?? null,
      port: lead?.port ?? null,
      host: lead?.host ?? null,
      starts: this.#starts,
      crashes: this.#supervisor.crashes,
      consecutiveFailures: this.#life.failures,
      inFlight: instances.inFlight(),
      queued: this.#gate.queued,
      startedAt: lead?.spawnedAt ?? null,
      readyAt: lead?.readyAt ?? null,
      coldStartMs: this.#supervisor.coldStartMs ?? null,
      retryAt: this.#life.retryAt ?? null,
      lastExit: this.#lastExit === undefined ? null : { ...this.#lastExit },
      lastError: this.#lastError?.message ?? null,
      recentLogs: this.#log.lines(),
      instances: instances.describe(processes),
    }
  }

  // --- requests -------------------------------------------------------------------------------

  // Synchronous up to the wait, as a single spawner's: the choice of an instance, the decision to
  // grow and the count in flight happen in one tick.
  #acquire(signal: AbortSignal | undefined): Promise<BackendProcess> {
    const state = this.#life.state
    if (state === 'closed') return Promise.reject(closedError())
    if (state === 'backoff') return Promise.reject(backoffError(this.#life, this.#log))
    const backend = this.#instances.pick()
    if (backend !== undefined) {
      // The least busy is busy, so every instance is. The request does not wait for a new one.
      if (backend.inFlight >= this.#busyAt) this.#supervisor.scaleUp()
      this.#take(backend)
      return Promise.resolve(backend)
    }
    return this.#gate.wait(signal).then((first) => {
      const chosen = this.#instances.pick() ?? first
      // Requests that waited for the first instance count toward growing the pool too.
      if (chosen.inFlight >= this.#busyAt) this.#supervisor.scaleUp()
      this.#take(chosen)
      return chosen
    })
  }

  #another(failed: BackendProcess, why: string): BackendProcess | undefined {
    if (this.#life.state === 'closed') return undefined
    const backend = this.#instances.pick(failed)
    if (backend === undefined) return undefined
    this.#take(backend)
    this.#log.notice(failed.pid ?? null, `${why}; sending the request to ${backend.pid} instead`)
    return backend
  }

  #take(backend: BackendProcess): void {
    this.#instances.take(backend)
    this.#life.disarmIdle()
  }

  #release(backend: BackendProcess): void {
    this.#instances.release(backend)
    this.#armPoolIdle()
  }

  // --- idle stops -----------------------------------------------------------------------------

  // The spawner's own idleTimeout: the whole pool stops once nothing is in flight anywhere.
  #armPoolIdle(): void {
    if (this.#instances.inFlight() > 0 || this.#gate.queued > 0) return
    this.#life.armIdle(() => {
      if (this.#life.state !== 'ready' || this.#instances.inFlight() > 0) return
      this.#stopIdle([...this.#instances.ready])
    })
  }

  // Instances idle for instances.idleTimeout (extras) or idleTimeout (all).
  #stopIdle(backends: BackendProcess[]): void {
    if (this.#life.state === 'closed') return
    for (const backend of backends) {
      if (backend.pid !== undefined) this.#emit('idle', { pid: backend.pid })
      this.#supervisor.retire(backend, 'idle')
      void backend.stop('idle')
    }
  }

  // --- restart and close ----------------------------------------------------------------------

  #roll(): Promise<void> {
    const { port, drainTimeout } = this.#settings
    const life = this.#life
    const supervisor = this.#supervisor
    return rollingRestart({
      state: () => life.state,
      ready: () => this.#instances.ready,
      startsSettled: () => supervisor.startsSettled(),
      endBackoff: () => {
        if (life.retryAt !== undefined) life.endBackoff()
      },
      fixedPort: port !== undefined && port !== 0,
      start: (reason) => supervisor.start(reason),
      retire: (backend) => supervisor.retire(backend, 'restart'),
      drain: (backend) =>
        Promise.race([backend.drained(), sleep(drainTimeout, this.#closed.signal)]),
      blockStarts: (blocked) => supervisor.blockStarts(blocked),
      replenish: () => supervisor.replenish('start'),
    })
  }

  async #close(): Promise<void> {
    this.#life.close()
    this.#closed.abort()
    this.#gate.rejectOpen(closedError())
    this.#instances.clear()
    const backends = this.#starter.alive
    for (const backend of backends) {
      if (backend.alive && backend.pid !== undefined) {
        this.#emit('stop', { pid: backend.pid, reason: 'close' })
      }
    }
    await Promise.all(backends.map((backend) => backend.stop('close')))
    this.#starter.releaseWatchdog()
    await closeTransport(this.#ownTransport)
  }

  // --- errors and events ----------------------------------------------------------------------

  #fail(error: SpawnerError): void {
    this.#lastError = error
    this.#log.notice(error.exit?.pid ?? null, error.message)
    this.#emit('error', error)
  }

  #emit<K extends keyof SpawnerEvents>(event: K, ...args: SpawnerEvents[K]): void {
    emitSafely(this, this.#log, event, ...args)
  }
}
