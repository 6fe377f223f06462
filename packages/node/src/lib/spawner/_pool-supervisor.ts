// The supervision of a pool's instances: starts (on demand, to grow, to replace, to restart), what
// a ready instance joins and a failed start or a crash leaves behind, the crash-loop backoff of the
// whole pool, and the pool's state, which follows its instances.
import type { ProxyAppOptions } from '@wsgiproxy/core'
import type { BackendProcess, ProcessExit, StopReason } from './_backend-process.ts'
import type { Gate } from './_gate.ts'
import { TRANSITIONS } from './_lifecycle.ts'
import type { Lifecycle } from './_lifecycle.ts'
import type { SpawnerLog } from './_log.ts'
import type { PoolInstances } from './_pool-instances.ts'
import { backoffError, connectProxy } from './_spawner-support.ts'
import type { Starter } from './_start.ts'
import type { SpawnerInstances } from './options.ts'
import { closedError, SpawnerError } from './spawner-error.ts'
import type { SpawnerEvents, SpawnerScaleReason, SpawnerState } from './spawner.ts'

/** The parts of a pool its supervisor works with. */
export interface PoolParts {
  /** The pool's sizes. */
  readonly pool: Required<SpawnerInstances>
  /** How long a start may take, in ms. */
  readonly startTimeout: number
  /** The pool's state, failure count, backoff and timers. */
  readonly life: Lifecycle
  /** Requests waiting while no instance is ready. */
  readonly gate: Gate<BackendProcess>
  /** The ready and retiring instances. */
  readonly instances: PoolInstances
  /** Starts processes. */
  readonly starter: Starter
  /** Where notices go. */
  readonly log: SpawnerLog
  /** The forwarding options of each instance's proxy app. */
  readonly proxyOptions: Omit<ProxyAppOptions, 'href'>
  /** Emits an event of the spawner (a throwing listener never gets here). */
  emit<K extends keyof SpawnerEvents>(event: K, ...args: SpawnerEvents[K]): void
  /** Records and reports a start failure or a crash. */
  fail(error: SpawnerError): void
  /** Something changed that may leave the pool idle. */
  checkIdle(): void
}

/** Starts, failures and the state of a pool. */
export class PoolSupervisor {
  /** Unexpected exits of ready instances so far. */
  crashes = 0
  /** How long the last successful start took, in ms. */
  coldStartMs: number | undefined
  readonly #parts: PoolParts
  // Starts in progress; each resolves with its instance once it is ready.
  readonly #starting = new Set<Promise<BackendProcess>>()
  // A restart on a fixed port stops the old process before it may start the new one.
  #blocked = false

  constructor(parts: PoolParts) {
    this.#parts = parts
  }

  /** Resolves when the starts in progress have settled; `undefined` when there are none. */
  startsSettled(): Promise<unknown> | undefined {
    return this.#starting.size === 0 ? undefined : Promise.allSettled(this.#starting)
  }

  /** Refuses (or allows again) every start but a restart's own. */
  blockStarts(blocked: boolean): void {
    this.#blocked = blocked
  }

  /** A request waits (or `start()` was called) and nothing runs: starts `min` instances. */
  onDemand(): void {
    const { instances, pool } = this.#parts
    if (instances.ready.length > 0 || this.#starting.size > 0 || !this.#mayStart()) return
    for (let i = 0; i < pool.min; i++) void this.start('start')
  }

  /** Every ready instance is busy: one more, unless one is starting or the pool is at `max`. */
  scaleUp(): void {
    if (this.#starting.size > 0 || this.#parts.instances.ready.length >= this.#parts.pool.max)
      return
    if (this.#mayStart()) void this.start('busy')
  }

  /** Starts instances until `min` are ready or starting, unless starts are refused for now. */
  replenish(reason: SpawnerScaleReason): void {
    while (this.#mayStart() && this.#count() < this.#parts.pool.min) void this.start(reason)
  }

  /** Starts one instance; resolves when it is ready and in routing. */
  start(reason: SpawnerScaleReason): Promise<BackendProcess> {
    const startedAt = Date.now()
    const start: Promise<BackendProcess> = this.#parts.starter
      .start(startedAt + this.#parts.startTimeout)
      .then(
        (backend) => {
          this.#starting.delete(start)
          return this.#admit(backend, startedAt)
        },
        (error: unknown) => {
          this.#starting.delete(start)
          throw this.#startFailed(error)
        },
      )
    // Nobody may wait for it (a replacement, a scale-up): never an unhandled rejection.
    start.catch(() => {})
    this.#starting.add(start)
    this.#emitScale(reason)
    this.syncState()
    return start
  }

  /** Takes an instance out of routing (its requests go on); the caller stops it. */
  retire(backend: BackendProcess, reason: StopReason): void {
    this.#parts.instances.retire(backend)
    if (backend.pid !== undefined) this.#parts.emit('stop', { pid: backend.pid, reason })
    if (reason === 'idle' || reason === 'restart') this.#emitScale(reason)
    this.syncState()
  }

  /** A process of the pool exited (or, after SIGKILL, is given up on: `exit` undefined). */
  exited(backend: BackendProcess, exit: ProcessExit | undefined): void {
    const was = this.#parts.instances.forget(backend)
    if (was === 'ready' && exit !== undefined) {
      // It left the routing set at once; requests it failed may go to another instance.
      this.#crashed(backend, exit)
    } else if (was === 'retiring') {
      // A ready instance not ended by a stop crashed, also while a restart drained it.
      const unasked = backend.stopReason === undefined || backend.exitedBeforeStop
      if (exit !== undefined && backend.readyAt !== undefined && unasked) {
        this.crashes++
        this.#parts.fail(this.#parts.starter.exitError(backend, 'ready'))
      }
    }
    // Else it was starting, and Starter.start decides.
    this.syncState()
  }

  /**
   * The pool's state follows its instances: `ready` while any is, `starting` while one starts,
   * `stopping` while one is still going, else `idle`; backoff and closed are left as they are.
   */
  syncState(): void {
    const { life, instances } = this.#parts
    const state = life.state
    if (state === 'closed' || state === 'backoff') return
    let next: SpawnerState = 'idle'
    if (instances.ready.length > 0) next = 'ready'
    else if (this.#starting.size > 0) next = 'starting'
    else if (instances.retiring > 0) next = 'stopping'
    // (A process still stopping when a backoff ends leaves the pool `idle`.)
    if (next !== state && TRANSITIONS[state].includes(next)) life.to(next)
  }

  #count(): number {
    return this.#parts.instances.ready.length + this.#starting.size
  }

  #mayStart(): boolean {
    const { life } = this.#parts
    const refused =
      life.state === 'closed' || life.state === 'backoff' || life.retryAt !== undefined
    return !refused && !this.#blocked
  }

  #admit(backend: BackendProcess, startedAt: number): BackendProcess {
    const { life, gate, instances } = this.#parts
    // close() stops it with the others.
    if (life.state === 'closed') throw closedError()
    const readyAt = Date.now()
    backend.readyAt = readyAt
    this.coldStartMs = readyAt - startedAt
    connectProxy(backend, this.#parts.proxyOptions)
    instances.add(backend)
    this.syncState()
    life.armReset()
    if (backend.pid !== undefined) {
      const { pid, port } = backend
      const host = backend.host ?? '127.0.0.1'
      this.#parts.emit('ready', { pid, port, host, coldStartMs: this.coldStartMs })
    }
    gate.resolveOpen(backend)
    this.#parts.checkIdle()
    return backend
  }

  #startFailed(error: unknown): SpawnerError {
    const { life, gate } = this.#parts
    if (life.state === 'closed') return closedError()
    const problem =
      error instanceof SpawnerError
        ? error
        : new SpawnerError('BACKEND_SPAWN_FAILED', `cannot start the backend: ${String(error)}`, {
            cause: error,
          })
    life.countFailure()
    this.#parts.fail(problem)
    this.#emitScale('failed')
    const serving = this.#count() > 0
    // Requests wait only while no instance is ready: they get the failure, as from one process.
    if (!serving) gate.rejectOpen(problem)
    if (life.mustBackOff) this.#backOff()
    else if (serving) this.replenish('start')
    this.syncState()
    return problem
  }

  #crashed(backend: BackendProcess, exit: ProcessExit): void {
    const { life, starter } = this.#parts
    this.crashes++
    life.disarmReset()
    const short = life.countCrash(exit.at - (backend.readyAt ?? exit.at))
    this.#parts.fail(starter.exitError(backend, 'ready'))
    this.#emitScale('crash')
    // A crash soon after ready counts as a failed start; the last instance gone during a hold
    // turns the hold into a backoff.
    if ((short && life.mustBackOff) || (this.#count() === 0 && life.retryAt !== undefined)) {
      this.#backOff()
    } else {
      this.replenish('crash')
    }
  }

  // Refuses starts for a while: with instances still serving (or starting) the pool only holds
  // its starts; without, it is in backoff like a single process (503 with Retry-After).
  #backOff(): void {
    const { life, gate, instances, log } = this.#parts
    const hold = this.#count() > 0
    const { delayMs, retryAt } = hold
      ? life.holdStarts(() => {
          if (instances.ready.length > 0 || gate.pending !== undefined) this.replenish('start')
        })
      : life.backOff()
    if (!hold) gate.rejectOpen(backoffError(life, log))
    const failures = life.failures
    log.notice(null, `${failures} failures in a row: not starting again for ${delayMs} ms`)
    this.#parts.emit('backoff', { failures, delayMs, retryAt })
  }

  #emitScale(reason: SpawnerScaleReason): void {
    this.#parts.emit('scale', { instances: this.#count(), reason })
  }
}
