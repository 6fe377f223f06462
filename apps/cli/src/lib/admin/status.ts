// What `/status` reports: the routes of the config in use, with the targets of their pools and the
// backends of their spawners, read from the live objects when asked; with `--workers`, the
// workers' reports merged and the main process's spawners laid over them.
import type { TargetState, UpstreamPool } from '@wsgiproxy/core'
import type { Spawner, SpawnerState } from '@wsgiproxy/node'

/** The kinds of route (`forward` is the command of that name, one route at `/`). */
export type RouteKind = 'proxy' | 'spawn' | 'exact' | 'echo' | 'forward'

/** One route of a config, as built: what `/status` and the scrape-time metrics read. */
export interface RouteEntry {
  /** Its kind. */
  readonly kind: RouteKind
  /** Its path prefix, as configured: the `route` label of its metrics. */
  readonly path: string
  /** A spawn route's `name`, if given. */
  readonly name?: string | undefined
  /** A proxy route's one href, when it has no pool. */
  readonly href?: string | undefined
  /** A proxy route's pool. */
  readonly pool?: UpstreamPool | undefined
  /**
   * A spawn route's spawner; none in a worker of `serve --workers`, whose spawn routes lease the
   * main process's backends.
   */
  readonly spawner?: Spawner | undefined
}

/** One target of a pool. */
export interface TargetReport {
  href: string
  weight: number
  state: TargetState
  inFlight: number
  requests: number
  failures: number
  connectErrors: number
  ejections: number
}

/** One spawned backend process. */
export interface BackendReport {
  pid: number
  port: number
  /** `starting`, `ready`, `draining` or `stopping`. */
  state: string
  inFlight: number
}

/** A spawn route's spawner. */
export interface SpawnerReport {
  name: string
  state: SpawnerState
  starts: number
  crashes: number
  queued: number
  /** The last start failure or crash, or `null`. */
  lastError: string | null
  backends: BackendReport[]
}

/** One route. */
export interface RouteReport {
  path: string
  kind: RouteKind
  name?: string
  href?: string
  /** A pool's targets. */
  targets?: TargetReport[]
  /** A pool's retries so far. */
  retries?: number
  /** A spawn route's spawner (with `--workers`, the main process's). */
  spawner?: SpawnerReport
}

/** One serving process: the command itself, or a worker of `serve --workers`. */
export interface ProcessReport {
  pid: number
  /** The config's generation: 1 at start, one more per reload. */
  generation: number
  /** The public listener's URL once it listens, else `null`. */
  url: string | null
  /** Whether the public listener takes connections (not before it listens, nor while draining). */
  listening: boolean
  routes: RouteReport[]
}

/** Whether the server takes traffic, and if not, why. */
export interface Readiness {
  ready: boolean
  /** What is not ready beyond single routes (the listener, a worker). */
  reasons: string[]
  /** The routes that are not ready, and why (with `--workers`, the worker's pid). */
  routes: Array<{ path: string; kind: RouteKind; reason: string; worker?: number }>
}

/** A worker of `serve --workers` in `/status`. */
export interface WorkerReport {
  pid: number
  generation: number
  /** Whether it answered in time (a worker that did not is not ready). */
  answered: boolean
  ready: boolean
}

/** What `/status` answers. */
export interface StatusReport extends ProcessReport {
  readiness: Readiness
  /** With `--workers`: the current generation's workers. */
  workers?: WorkerReport[]
}

/**
 * Reports routes as they are now.
 *
 * @param entries - the routes of the config in use
 * @returns their reports, in configuration order
 */
export function reportRoutes(entries: readonly RouteEntry[]): RouteReport[] {
  return entries.map((entry) => {
    const report: RouteReport = { path: entry.path, kind: entry.kind }
    if (entry.name !== undefined) report.name = entry.name
    if (entry.href !== undefined) report.href = entry.href
    if (entry.pool !== undefined) {
      const status = entry.pool.status()
      report.targets = status.targets.map((target) => ({
        href: target.href,
        weight: target.weight,
        state: target.state,
        inFlight: target.inFlight,
        requests: target.requests,
        failures: target.failures,
        connectErrors: target.connectErrors,
        ejections: target.ejections,
      }))
      report.retries = status.retries
    }
    if (entry.spawner !== undefined) report.spawner = reportSpawner(entry.spawner)
    return report
  })
}

/**
 * Reports a spawner: its state and counters, and its processes (one without `instances`).
 *
 * @param spawner - the spawner
 * @returns the report
 */
export function reportSpawner(spawner: Spawner): SpawnerReport {
  const status = spawner.status()
  const backends: BackendReport[] =
    status.instances !== undefined
      ? status.instances.map(({ pid, port, state, inFlight }) => ({ pid, port, state, inFlight }))
      : status.pid === null || status.port === null
        ? []
        : [{ pid: status.pid, port: status.port, state: status.state, inFlight: status.inFlight }]
  return {
    name: status.name,
    state: status.state,
    starts: status.starts,
    crashes: status.crashes,
    queued: status.queued,
    lastError: status.lastError,
    backends,
  }
}

// The worse of two target states, for the merged view of several workers.
const STATE_ORDER: readonly TargetState[] = ['healthy', 'ejected', 'down']

/**
 * Merges the route reports of several workers into one view: per target, counters and requests
 * in flight added up, the state the worst any worker sees; spawn routes get the main process's
 * spawner.
 *
 * @param reports - the route lists of the workers that answered (same config)
 * @param spawners - the main process's spawn routes, with their spawners
 * @returns the merged routes
 */
export function mergeRoutes(
  reports: ReadonlyArray<readonly RouteReport[]>,
  spawners: readonly RouteReport[],
): RouteReport[] {
  const [first, ...rest] = reports
  const merged: RouteReport[] = structuredClone([...(first ?? spawners)])
  for (const routes of rest) {
    routes.forEach((route, index) => {
      const into = merged[index]
      if (into?.path !== route.path || into.targets === undefined) return
      for (const target of route.targets ?? []) {
        const same = into.targets.find((candidate) => candidate.href === target.href)
        if (same === undefined) continue
        same.inFlight += target.inFlight
        same.requests += target.requests
        same.failures += target.failures
        same.connectErrors += target.connectErrors
        same.ejections += target.ejections
        if (STATE_ORDER.indexOf(target.state) > STATE_ORDER.indexOf(same.state)) {
          same.state = target.state
        }
      }
      into.retries = (into.retries ?? 0) + (route.retries ?? 0)
    })
  }
  for (const route of merged) {
    if (route.kind !== 'spawn') continue
    const owner = spawners.find((candidate) => candidate.path === route.path)
    if (owner?.spawner !== undefined) route.spawner = owner.spawner
  }
  return merged
}
