// The instances of a pool as routing sees them: the ready ones (the routing set, in the order they
// became ready), those that left it and have not exited yet (draining or stopping), and the idle
// timers that stop instances above `min`.
import type { BackendProcess } from './_backend-process.ts'
import type { SpawnerInstanceState, SpawnerInstanceStatus } from './spawner.ts'

/** What {@link PoolInstances} needs. */
export interface PoolInstancesOptions {
  /** The pool's `min`: the first `min` ready instances take turns, and only more can idle out. */
  min: number
  /** How long an instance may have nothing in flight, while more than `min` are ready. */
  idleTimeout: number
  /** An instance was idle that long; it is still ready (the pool stops it). */
  onIdle: (backend: BackendProcess) => void
}

/** The ready and the retiring instances of a pool. */
export class PoolInstances {
  readonly #options: PoolInstancesOptions
  readonly #ready: BackendProcess[] = []
  readonly #retiring = new Set<BackendProcess>()
  readonly #idleTimers = new Map<BackendProcess, NodeJS.Timeout>()
  #cursor = 0

  constructor(options: PoolInstancesOptions) {
    this.#options = options
  }

  /** The ready instances, in the order they became ready. */
  get ready(): readonly BackendProcess[] {
    return this.#ready
  }

  /** How many instances left the routing set and have not exited yet. */
  get retiring(): number {
    return this.#retiring.size
  }

  /** Whether `backend` is in the routing set. */
  isReady(backend: BackendProcess): boolean {
    return this.#ready.includes(backend)
  }

  /**
   * The least busy ready instance but `exclude`. The first `min` are looked at in turn, so that
   * ties rotate among them; the extras after them, oldest first: an extra gets a request only
   * when it is less busy than every steady instance, so the extras go idle (and stop) as soon as
   * the load drops.
   */
  pick(exclude?: BackendProcess): BackendProcess | undefined {
    const ready = this.#ready
    const steady = Math.min(this.#options.min, ready.length)
    const from = steady === 0 ? 0 : this.#cursor % steady
    this.#cursor = from + 1
    let best: BackendProcess | undefined
    for (let i = 0; i < ready.length; i++) {
      const candidate = ready[i < steady ? (from + i) % steady : i]
      if (candidate === undefined || candidate === exclude) continue
      if (best === undefined || candidate.inFlight < best.inFlight) best = candidate
    }
    return best
  }

  /** Counts a request (or upgraded connection) in flight to `backend`. */
  take(backend: BackendProcess): void {
    backend.inFlight++
    this.#clearIdle(backend)
  }

  /** Ends one request in flight to `backend`; an idle instance above `min` may go. */
  release(backend: BackendProcess): void {
    backend.release()
    if (backend.inFlight === 0 && this.isReady(backend)) this.#armIdle(backend)
  }

  /** Requests in flight to every instance, leaving ones included. */
  inFlight(): number {
    let sum = 0
    for (const backend of this.#ready) sum += backend.inFlight
    for (const backend of this.#retiring) sum += backend.inFlight
    return sum
  }

  /** A new ready instance joins the routing set; instances above `min` may idle out from now. */
  add(backend: BackendProcess): void {
    this.#ready.push(backend)
    for (const ready of this.#ready) if (ready.inFlight === 0) this.#armIdle(ready)
  }

  /** Takes `backend` out of the routing set (its requests go on) until it has exited. */
  retire(backend: BackendProcess): void {
    this.#leave(backend)
    this.#retiring.add(backend)
  }

  /** `backend` exited (or will never exit): where it was. */
  forget(backend: BackendProcess): 'ready' | 'retiring' | undefined {
    if (this.#leave(backend)) return 'ready'
    return this.#retiring.delete(backend) ? 'retiring' : undefined
  }

  /** The state of a process of the pool. */
  stateOf(backend: BackendProcess): SpawnerInstanceState {
    if (this.isReady(backend)) return 'ready'
    const going = backend.exit !== undefined || backend.stopReason !== undefined
    if (this.#retiring.has(backend)) return going ? 'stopping' : 'draining'
    return going ? 'stopping' : 'starting'
  }

  /** What `status()` shows of `processes`. */
  describe(processes: readonly BackendProcess[]): SpawnerInstanceStatus[] {
    return processes.map((backend) => ({
      pid: backend.pid ?? 0,
      port: backend.port,
      host: backend.host ?? null,
      state: this.stateOf(backend),
      inFlight: backend.inFlight,
      startedAt: backend.spawnedAt,
      readyAt: backend.readyAt ?? null,
    }))
  }

  /** Forgets every instance and timer (`close()`, which stops the processes). */
  clear(): void {
    for (const timer of this.#idleTimers.values()) clearTimeout(timer)
    this.#idleTimers.clear()
    this.#ready.length = 0
    this.#retiring.clear()
  }

  #leave(backend: BackendProcess): boolean {
    this.#clearIdle(backend)
    const index = this.#ready.indexOf(backend)
    if (index === -1) return false
    this.#ready.splice(index, 1)
    return true
  }

  #armIdle(backend: BackendProcess): void {
    if (this.#ready.length <= this.#options.min) return
    this.#clearIdle(backend)
    const timer = setTimeout(() => {
      this.#idleTimers.delete(backend)
      if (backend.inFlight > 0 || !this.isReady(backend)) return
      if (this.#ready.length > this.#options.min) this.#options.onIdle(backend)
    }, this.#options.idleTimeout)
    timer.unref()
    this.#idleTimers.set(backend, timer)
  }

  #clearIdle(backend: BackendProcess): void {
    const timer = this.#idleTimers.get(backend)
    if (timer === undefined) return
    clearTimeout(timer)
    this.#idleTimers.delete(backend)
  }
}
