// The main process of `serve --workers N`: it owns the spawners (so one backend, or one spawner
// pool, serves every worker) and forks the workers, which share the port through node:cluster and
// lease backends from it. A worker that dies is replaced; SIGHUP (`wsgiproxy reload`) reads the
// config again, starts a new generation of workers and, once every one of them listens, drains
// the old ones; an invalid config, or a new generation that cannot start, is refused and the old
// one serves on. SIGINT/SIGTERM drain every worker, then stop the backends.
import cluster from 'node:cluster'
import { createServer } from 'node:net'
import type { Worker } from 'node:cluster'
import type { Spawner, SpawnerLease } from '@wsgiproxy/node'
import { undiciTransport } from '@wsgiproxy/node'
import { buildRouteApp, closeResources, createResources, spawnRouteKey } from '../apps.ts'
import type { Resources } from '../apps.ts'
import { listenAdmin } from '../admin/admin-server.ts'
import type { AdminServer } from '../admin/admin-server.ts'
import { createClusterAdmin } from '../admin/cluster-admin.ts'
import type { ClusterAdmin } from '../admin/cluster-admin.ts'
import { createMetrics } from '../admin/metrics.ts'
import type { Metrics } from '../admin/metrics.ts'
import type { RouteEntry } from '../admin/status.ts'
import { CliError, EXIT_RUNTIME } from '../errors.ts'
import { createLogger } from '../log.ts'
import type { Logger } from '../log.ts'
import { restartOnlyChanges } from '../serve-plan.ts'
import type { ServePlan } from '../serve-plan.ts'
import { onHangup, removePidFile, waitForSignal, writePidFile } from '../serve-until-signal.ts'
import { isOurs, toLeaseFailure, WORKER_ENV } from './messages.ts'
import type { ToPrimary, ToWorker, WorkerSetup } from './messages.ts'
import type { ListenChoice } from '../listen.ts'

// Beyond the drain time, how long a draining worker may take to exit before it is killed.
const EXIT_GRACE_MS = 5_000
// Replacements of workers that die young wait longer each time, up to this.
const MAX_RESPAWN_DELAY_MS = 30_000
// A worker that served this long before it died was not crash-looping.
const HEALTHY_LIFE_MS = 5_000

/** One config's workers. */
interface Generation {
  readonly setup: WorkerSetup
  readonly size: number
  readonly workers: Set<Worker>
}

/** What the main process knows of a worker. */
interface WorkerState {
  readonly generation: Generation
  listeningAt: number | undefined
  draining: boolean
  /** Resolves when it has stopped accepting connections (or exited). */
  readonly stoppedAccepting: Promise<void>
  stopAccepting: () => void
  /** Its leases by the worker's id: the wait (abortable) and, once granted, the lease. */
  readonly leases: Map<number, { controller: AbortController; lease?: SpawnerLease }>
}

/**
 * Runs `wsgiproxy serve --workers N`: forks the workers, serves until SIGINT or SIGTERM, reloads
 * on SIGHUP.
 *
 * @param first - the plan read at start (`workers` set)
 * @param load - reads the config file again (throws CliError when it is invalid)
 * @param pidFile - where to write this process's id, if anywhere
 * @returns the exit status, 0 after a clean stop
 * @throws CliError when the first workers cannot start (their reason and status)
 */
export async function runPrimary(
  first: ServePlan,
  load: () => Promise<ServePlan>,
  pidFile: string | undefined,
): Promise<number> {
  const stop = waitForSignal()
  const hangup = onHangup()
  const logger = createLogger(first.format)
  // With the admin listener on, the main process records its spawners' metrics.
  const metrics = first.admin === undefined ? undefined : await createMetrics()
  const spawners = new SpawnerRegistry(logger, metrics)
  const states = new Map<Worker, WorkerState>()
  let stopping = false
  let plan = first
  let number = 1
  let url = ''
  let failures = 0
  // The admin endpoints' view of the workers, once the first generation listens.
  let clusterAdmin: ClusterAdmin | undefined

  // The workers accept from the shared socket themselves (SCHED_NONE), unless
  // NODE_CLUSTER_SCHED_POLICY says otherwise. With node's round robin (its default but on
  // Windows) this process accepts and passes each connection to a worker, keeping its copy until
  // the worker says it took it: one passed to a worker that has just died (or dies before it
  // answers) is never closed, and its client waits for ever
  // (https://github.com/nodejs/node-v0.x-archive/issues/7006). Set before the first fork, which
  // freezes it.
  if (process.env['NODE_CLUSTER_SCHED_POLICY'] === undefined) {
    cluster.schedulingPolicy = cluster.SCHED_NONE
  }
  cluster.setupPrimary({ args: ['serve'], silent: false })
  // Port 0: pick the port here, so that every worker, a replacement of the last one included,
  // listens on the same one (the cluster would give a worker that finds no other a new one).
  const listen = await withFixedPort(first.listen)
  const setupOf = (of: ServePlan): WorkerSetup => ({
    generation: number,
    listen,
    format: first.format,
    upgrade: of.upgrade,
    drainTimeout: of.drainTimeout,
    admin: first.admin !== undefined,
    // Restart-only, as the log format.
    tracing: first.tracing,
    routes: of.routes,
  })

  // Forks one worker of `generation`; resolves when it listens or cannot.
  const fork = (
    generation: Generation,
  ): Promise<{ message: string; exitCode: number } | undefined> => {
    const worker = cluster.fork({ [WORKER_ENV]: '1' })
    const { promise: stoppedAccepting, resolve: stopAccepting } = deferred()
    const state: WorkerState = {
      generation,
      listeningAt: undefined,
      draining: false,
      stoppedAccepting,
      stopAccepting,
      leases: new Map(),
    }
    states.set(worker, state)
    generation.workers.add(worker)
    return new Promise((resolve) => {
      worker.on('message', (message: unknown) => {
        if (!isOurs(message)) return
        const ours = message as ToPrimary
        if (ours.type === 'wsgiproxy:hello') {
          send(worker, { type: 'wsgiproxy:setup', setup: generation.setup })
        } else if (ours.type === 'wsgiproxy:listening') {
          state.listeningAt = Date.now()
          url = ours.url
          resolve(undefined)
        } else if (ours.type === 'wsgiproxy:draining') {
          state.stopAccepting()
        } else if (ours.type === 'wsgiproxy:failed') {
          resolve({ message: ours.message, exitCode: ours.exitCode })
        } else if (ours.type === 'wsgiproxy:admin-reply') {
          clusterAdmin?.receive(ours)
        } else {
          onLease(worker, state, ours)
        }
      })
      worker.once('exit', (code, signal) => {
        state.stopAccepting()
        resolve({
          message: `a worker exited before it listened (${signal ?? `code ${code}`})`,
          exitCode: EXIT_RUNTIME,
        })
        onExit(worker, state, code, signal)
      })
    })
  }

  const startGeneration = async (
    setup: WorkerSetup,
    size: number,
  ): Promise<{ generation: Generation; failure?: { message: string; exitCode: number } }> => {
    const generation: Generation = { setup, size, workers: new Set() }
    const results = await Promise.all(Array.from({ length: size }, () => fork(generation)))
    const failure = results.find((result) => result !== undefined)
    return failure === undefined ? { generation } : { generation, failure }
  }

  const onLease = (
    worker: Worker,
    state: WorkerState,
    message: Exclude<
      ToPrimary,
      {
        type:
          | 'wsgiproxy:hello'
          | 'wsgiproxy:listening'
          | 'wsgiproxy:draining'
          | 'wsgiproxy:failed'
          | 'wsgiproxy:admin-reply'
      }
    >,
  ): void => {
    const { id } = message
    if (message.type === 'wsgiproxy:lease') {
      const spawner = spawners.get(message.key)
      if (spawner === undefined) {
        send(worker, {
          type: 'wsgiproxy:lease-failed',
          id,
          error: toLeaseFailure(new CliError('no spawner for this route', EXIT_RUNTIME)),
        })
        return
      }
      const controller = new AbortController()
      const entry: { controller: AbortController; lease?: SpawnerLease } = { controller }
      state.leases.set(id, entry)
      spawner.lease(controller.signal).then(
        (lease) => {
          if (state.leases.get(id) !== entry) {
            lease.release()
            return
          }
          entry.lease = lease
          const { pid, host, port } = lease
          send(worker, { type: 'wsgiproxy:leased', id, pid, host, port })
        },
        (error: unknown) => {
          if (state.leases.get(id) !== entry) return
          state.leases.delete(id)
          send(worker, { type: 'wsgiproxy:lease-failed', id, error: toLeaseFailure(error) })
        },
      )
      return
    }
    // A release, or an abort of a wait (or of a lease granted meanwhile).
    const entry = state.leases.get(id)
    if (entry === undefined) return
    state.leases.delete(id)
    entry.controller.abort()
    entry.lease?.release()
  }

  let current: Generation
  const onExit = (
    worker: Worker,
    state: WorkerState,
    code: number | null,
    signal: string | null,
  ): void => {
    states.delete(worker)
    const { generation } = state
    generation.workers.delete(worker)
    for (const entry of state.leases.values()) {
      entry.controller.abort()
      entry.lease?.release()
    }
    state.leases.clear()
    if (generation.workers.size === 0 && generation !== current) {
      void spawners.release(generation.setup.generation)
    }
    if (stopping || state.draining || generation !== current || state.listeningAt === undefined) {
      return
    }
    // A worker of the serving generation died: start another.
    const delay = respawnDelay(Date.now() - state.listeningAt)
    logger.event(
      'worker-exit',
      `worker pid ${worker.process.pid ?? '-'} exited (${signal ?? `code ${code}`}); starting another${delay > 0 ? ` in ${delay} ms` : ''}`,
      { pid: worker.process.pid, code, signal, delayMs: delay },
    )
    respawn(generation, delay)
  }

  // Later each time workers die young (within HEALTHY_LIFE_MS of listening, or before); the count
  // starts again after a healthy life or a quiet while.
  let lastYoungDeath = 0
  const respawnDelay = (lived: number): number => {
    const now = Date.now()
    if (lived >= HEALTHY_LIFE_MS || now - lastYoungDeath > 2 * MAX_RESPAWN_DELAY_MS) failures = 0
    if (lived < HEALTHY_LIFE_MS) {
      failures++
      lastYoungDeath = now
    }
    return failures === 0 ? 0 : Math.min(MAX_RESPAWN_DELAY_MS, 250 * 2 ** (failures - 1))
  }

  // The timers of replacements to come: they keep this process alive while no worker runs.
  const respawns = new Set<NodeJS.Timeout>()
  // Starts a replacement in `generation` after `delay`; one that cannot start is tried again.
  const respawn = (generation: Generation, delay: number): void => {
    const timer = setTimeout(() => {
      respawns.delete(timer)
      if (stopping || generation !== current) return
      void fork(generation).then((failure) => {
        if (failure === undefined || stopping || generation !== current) return
        const again = respawnDelay(0)
        logger.error(
          `a new worker could not start: ${failure.message}; trying again in ${again} ms`,
        )
        respawn(generation, again)
      })
    }, delay)
    respawns.add(timer)
  }

  // `reload`: the connections end on their own; `stop`: idle ones are closed at once.
  // A worker that does not listen yet has no connection to drain, and may not hear the message
  // (it listens for messages only once it has booted): it is killed instead.
  const drain = (generation: Generation, why: 'reload' | 'stop'): void => {
    for (const worker of generation.workers) {
      const state = states.get(worker)
      if (state !== undefined) state.draining = true
      if (state?.listeningAt === undefined) worker.process.kill('SIGKILL')
      else send(worker, { type: 'wsgiproxy:drain', why })
    }
  }

  // Drains a generation and waits for its workers to exit (killed after the drain time).
  const drainAndWait = async (generation: Generation, drainTimeout: number): Promise<void> => {
    const exits = [...generation.workers].map(
      (worker) =>
        new Promise<void>((resolve) => {
          if (worker.isDead()) resolve()
          else worker.once('exit', () => resolve())
        }),
    )
    drain(generation, 'stop')
    const timer = setTimeout(() => {
      for (const worker of generation.workers) worker.process.kill('SIGKILL')
    }, drainTimeout + EXIT_GRACE_MS)
    await Promise.all(exits)
    clearTimeout(timer)
  }

  // --- start ----------------------------------------------------------------------------------
  try {
    await spawners.acquire(number, first.routes)
  } catch (error) {
    stop.cancel()
    hangup.stop()
    await spawners.closeAll()
    throw error
  }
  const started = await startGeneration(setupOf(first), first.workers ?? 1)
  current = started.generation
  if (started.failure !== undefined) {
    stopping = true
    stop.cancel()
    hangup.stop()
    await drainAndWait(current, 0)
    await spawners.closeAll()
    throw new CliError(started.failure.message, started.failure.exitCode)
  }
  if (pidFile !== undefined) await writePidFile(pidFile)
  logger.event(
    'listening',
    `serve listening on ${url} (${current.size} worker${current.size === 1 ? '' : 's'})`,
    { url, workers: current.size },
  )
  let admin: AdminServer | undefined
  if (metrics !== undefined && first.admin !== undefined) {
    const spawnRoutes = (): RouteEntry[] => spawners.routes(current.setup.generation)
    metrics.collectFrom(spawnRoutes)
    clusterAdmin = createClusterAdmin({
      metrics,
      workers: () =>
        [...states].map(([worker, state]) => ({
          worker,
          listening: state.listeningAt !== undefined,
          current: state.generation === current,
        })),
      spawnerRoutes: spawnRoutes,
      generation: () => current.setup.generation,
      url: () => url,
      draining: () => stopping,
    })
    try {
      admin = await listenAdmin(first.admin, clusterAdmin.source, logger)
    } catch (error) {
      stopping = true
      stop.cancel()
      hangup.stop()
      await drainAndWait(current, 0)
      await spawners.closeAll()
      if (pidFile !== undefined) await removePidFile(pidFile)
      throw error
    }
  }

  // --- reload ---------------------------------------------------------------------------------
  const reload = async (): Promise<void> => {
    let next: ServePlan
    try {
      next = await load()
    } catch (error) {
      logger.error(`reload refused: ${messageOf(error)}; the config in use stays`)
      return
    }
    const kept = restartOnlyChanges(plan, next)
    if (kept.length > 0) {
      logger.event(
        'warning',
        `reload: ${kept.join(', ')} changed in ${next.file}: that takes a restart; the running values stay`,
        { settings: kept },
      )
    }
    number++
    try {
      await spawners.acquire(number, next.routes)
    } catch (error) {
      logger.error(`reload refused: ${messageOf(error)}; the config in use stays`)
      return
    }
    const attempt = await startGeneration(setupOf(next), next.workers ?? current.size)
    if (attempt.failure !== undefined || stopping) {
      await drainAndWait(attempt.generation, 0)
      await spawners.release(number)
      if (attempt.failure !== undefined) {
        logger.error(`reload refused: ${attempt.failure.message}; the config in use stays`)
      }
      return
    }
    const old = current
    current = attempt.generation
    plan = { ...next, listen: plan.listen, format: plan.format }
    drain(old, 'reload')
    if (old.workers.size === 0) await spawners.release(old.setup.generation)
    // Logged once no old worker accepts a connection any more: new connections get the new config.
    // (A worker that neither says so nor exits within the drain time is killed.)
    const stragglers = setTimeout(() => {
      for (const worker of old.workers) worker.process.kill('SIGKILL')
    }, next.drainTimeout + EXIT_GRACE_MS)
    await Promise.all([...old.workers].map((worker) => states.get(worker)?.stoppedAccepting))
    clearTimeout(stragglers)
    logger.event(
      'reloaded',
      `config reloaded: ${current.size} worker${current.size === 1 ? '' : 's'} serve it; the old ones finish their requests`,
      { generation: number, workers: current.size },
    )
  }
  hangup.start(reload)

  // --- stop -----------------------------------------------------------------------------------
  const signal = await stop.signal
  stopping = true
  for (const timer of respawns) clearTimeout(timer)
  hangup.stop()
  logger.event('shutdown', `${signal}: draining the workers and stopping backends`, { signal })
  const all: Generation = { setup: current.setup, size: 0, workers: new Set(states.keys()) }
  await drainAndWait(all, plan.drainTimeout)
  await spawners.closeAll()
  await admin?.close()
  if (pidFile !== undefined) await removePidFile(pidFile)
  logger.event('stopped', 'stopped')
  return 0
}

// A promise and its resolve function (Promise.withResolvers is Node 22's).
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((settle) => {
    resolve = settle
  })
  return { promise, resolve }
}

// The listen address with a free port picked for port 0 (it is free when checked; a process that
// took it meanwhile makes the first worker fail with EADDRINUSE, reported as such).
async function withFixedPort(listen: ListenChoice): Promise<ListenChoice> {
  if (listen.address.port !== 0) return listen
  const probe = createServer()
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject)
    probe.listen(0, listen.address.hostname, resolve)
  }).catch(() => undefined)
  const address = probe.address()
  await new Promise((resolve) => probe.close(resolve))
  if (address === null || typeof address === 'string') return listen
  return { ...listen, address: { ...listen.address, port: address.port } }
}

function send(worker: Worker, message: ToWorker): void {
  if (!worker.isDead() && worker.isConnected()) worker.send(message)
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/**
 * The spawners of the spawn routes, one per route definition, shared by the generations that
 * have the route: a reload that keeps a route keeps its backend; one no generation has any more
 * is stopped.
 */
class SpawnerRegistry {
  readonly #logger: Logger
  readonly #transport = undiciTransport()
  readonly #entries = new Map<string, { resources: Resources; generations: Set<number> }>()
  readonly #metrics: Metrics | undefined

  constructor(logger: Logger, metrics: Metrics | undefined) {
    this.#logger = logger
    this.#metrics = metrics
  }

  /** The spawn routes of a generation, with their spawners (for the admin endpoints). */
  routes(generation: number): RouteEntry[] {
    return [...this.#entries.values()]
      .filter((entry) => entry.generations.has(generation))
      .flatMap((entry) => entry.resources.routes)
  }

  /** The spawner of a route key. */
  get(key: string): Spawner | undefined {
    return this.#entries.get(key)?.resources.spawners[0]
  }

  /**
   * Makes (or shares) the spawners of the spawn routes of a generation.
   *
   * @throws CliError for bad options (the generation's new spawners are closed)
   */
  async acquire(generation: number, routes: ServePlan['routes']): Promise<void> {
    try {
      for (const route of routes) {
        if (route.type !== 'spawn') continue
        const key = spawnRouteKey(route)
        let entry = this.#entries.get(key)
        if (entry === undefined) {
          const resources = createResources(this.#logger, {
            transport: this.#transport,
            ...(this.#metrics === undefined ? {} : { metrics: this.#metrics }),
          })
          entry = { resources, generations: new Set() }
          this.#entries.set(key, entry)
          await buildRouteApp(route, resources)
        }
        entry.generations.add(generation)
      }
    } catch (error) {
      await this.release(generation)
      throw error
    }
  }

  /** Stops the spawners no generation has any more. */
  async release(generation: number): Promise<void> {
    const closing: Promise<void>[] = []
    for (const [key, entry] of this.#entries) {
      entry.generations.delete(generation)
      if (entry.generations.size > 0) continue
      this.#entries.delete(key)
      closing.push(closeResources(entry.resources, { transport: false }))
    }
    await Promise.allSettled(closing)
  }

  /** Stops every spawner (their process groups are gone when it resolves). */
  async closeAll(): Promise<void> {
    const entries = [...this.#entries.values()]
    this.#entries.clear()
    await Promise.allSettled(
      entries.map((entry) => closeResources(entry.resources, { transport: false })),
    )
    await this.#transport.close().catch(() => {})
  }
}
