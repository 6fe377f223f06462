// The command's Prometheus metrics (prom-client, on a registry of its own): requests by route,
// method and status class where the request log records them; per pool target and per spawner,
// read from `status()` at scrape time; spawner events, upstream errors and replay checks counted as
// they happen. prom-client is loaded only when the admin listener is on (it takes ~60 ms).
import type {
  EnvironApp,
  ReplayStore,
  TargetStatus,
  UpgradableApp,
  WsgiProxyError,
} from '@wsgiproxy/core'
import { onBodyEnd } from '@wsgiproxy/core/adapter'
import type { Spawner, SpawnerError } from '@wsgiproxy/node'
import type { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { RouteEntry } from './status.ts'

/**
 * The buckets of `wsgiproxy_request_duration_seconds`, in seconds: from a fast local answer
 * (5 ms) to a slow upstream (60 s, the default headers timeout).
 */
export const DURATION_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
]

// Methods counted by name; any other is `other`, so a client cannot make series without end.
const METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'CONNECT',
  'TRACE',
])

const NO_ROUTES = (): readonly RouteEntry[] => []

// The states of a spawned process in `wsgiproxy_spawner_instances` (SpawnerInstanceState).
const INSTANCE_STATES = ['starting', 'ready', 'draining', 'stopping'] as const

type RequestLabels = 'route' | 'method' | 'status_class'

/** The registry and the instruments the request path and the spawners record into. */
export interface Metrics {
  /** The registry: the command's metrics and prom-client's process metrics (`wsgiproxy_` prefix). */
  readonly registry: Registry
  /** Requests by route, method and status class. */
  readonly requests: Counter<RequestLabels>
  /** Seconds to the response headers, by route, method and status class. */
  readonly duration: Histogram<RequestLabels>
  /** Requests in flight by route, until their response body ended. */
  readonly inFlight: Gauge<'route'>
  /** Errors of forwarding routes by route and error code. */
  readonly upstreamErrors: Counter<'route' | 'code'>
  /** Backend processes spawned by route. */
  readonly spawns: Counter<'route'>
  /** Crashes of ready backends by route. */
  readonly crashes: Counter<'route'>
  /** Idle stops by route. */
  readonly idleStops: Counter<'route'>
  /** Replay store answers by route and result. */
  readonly replayChecks: Counter<'route' | 'result'>
  /**
   * Sets where the scrape-time metrics (pool targets, spawner instances) read the routes of the
   * config in use. Default: none.
   */
  collectFrom(routes: () => readonly RouteEntry[]): void
}

/**
 * Creates the metrics on a new registry, with prom-client's default process metrics.
 *
 * @returns the metrics
 */
export async function createMetrics(): Promise<Metrics> {
  const prom = await import('prom-client')
  const registry = new prom.Registry()
  prom.collectDefaultMetrics({ register: registry, prefix: 'wsgiproxy_' })
  const registers = [registry]
  let routes = NO_ROUTES
  const requestLabels = ['route', 'method', 'status_class'] as const

  // Per pool target, from `pool.status()` when scraped.
  const targetLabels = ['route', 'target'] as const
  const eachTarget = (
    use: (labels: { route: string; target: string }, t: TargetStatus) => void,
  ) => {
    for (const entry of routes()) {
      for (const target of entry.pool?.status().targets ?? []) {
        use({ route: entry.path, target: target.href }, target)
      }
    }
  }
  // Created unregistered (prom-client's default is its global registry), registered below.
  const unregistered: Registry[] = []
  const targetCounter = (name: string, help: string, value: (t: TargetStatus) => number) =>
    new prom.Counter({
      name,
      help,
      labelNames: targetLabels,
      registers: unregistered,
      collect() {
        this.reset()
        eachTarget((labels, target) => this.inc(labels, value(target)))
      },
    })
  const scraped = [
    targetCounter(
      'wsgiproxy_upstream_requests_total',
      'Requests sent to a pool target (tries, retries included).',
      (t) => t.requests,
    ),
    targetCounter(
      'wsgiproxy_upstream_failures_total',
      'Failed requests to a pool target: no answer, or a 5xx.',
      (t) => t.failures,
    ),
    targetCounter(
      'wsgiproxy_upstream_connect_errors_total',
      'Tries that never reached a pool target: refused or timed-out connections, failed TLS handshakes.',
      (t) => t.connectErrors,
    ),
    targetCounter(
      'wsgiproxy_upstream_ejections_total',
      'Times passive health ejected a pool target.',
      (t) => t.ejections,
    ),
    new prom.Gauge({
      name: 'wsgiproxy_upstream_in_flight',
      help: 'Requests in flight to a pool target.',
      labelNames: targetLabels,
      registers: unregistered,
      collect() {
        this.reset()
        eachTarget((labels, target) => this.set(labels, target.inFlight))
      },
    }),
    new prom.Gauge({
      name: 'wsgiproxy_upstream_healthy',
      help: 'Whether a pool target takes requests (1) or is ejected or down (0); with workers, 1 only when every worker sees it healthy.',
      labelNames: targetLabels,
      registers: unregistered,
      aggregator: 'min',
      collect() {
        this.reset()
        eachTarget((labels, target) => this.set(labels, target.state === 'healthy' ? 1 : 0))
      },
    }),
    new prom.Counter({
      name: 'wsgiproxy_upstream_retries_total',
      help: "Retries of a pool's requests: tries after a request's first, on the same or another target.",
      labelNames: ['route'] as const,
      registers: unregistered,
      collect() {
        this.reset()
        for (const entry of routes()) {
          if (entry.pool !== undefined) this.inc({ route: entry.path }, entry.pool.status().retries)
        }
      },
    }),
    new prom.Gauge({
      name: 'wsgiproxy_spawner_instances',
      help: 'Backend processes of a spawn route by state (starting, ready, draining, stopping).',
      labelNames: ['route', 'state'] as const,
      registers: unregistered,
      collect() {
        this.reset()
        for (const entry of routes()) {
          if (entry.spawner === undefined) continue
          const counts = new Map<string, number>(INSTANCE_STATES.map((state) => [state, 0]))
          const status = entry.spawner.status()
          const states =
            status.instances?.map((instance) => instance.state) ??
            (status.pid === null ? [] : [status.state])
          for (const state of states) counts.set(state, (counts.get(state) ?? 0) + 1)
          for (const [state, count] of counts) this.set({ route: entry.path, state }, count)
        }
      },
    }),
  ]
  for (const metric of scraped) registry.registerMetric(metric)

  return {
    registry,
    requests: new prom.Counter({
      name: 'wsgiproxy_requests_total',
      help: 'Requests answered, by route, method and status class (route "-": no route matched).',
      labelNames: requestLabels,
      registers,
    }),
    duration: new prom.Histogram({
      name: 'wsgiproxy_request_duration_seconds',
      help: 'Seconds from the request to its response headers, by route, method and status class.',
      labelNames: requestLabels,
      buckets: [...DURATION_BUCKETS],
      registers,
    }),
    inFlight: new prom.Gauge({
      name: 'wsgiproxy_requests_in_flight',
      help: 'Requests in flight by route, until their response body ended.',
      labelNames: ['route'] as const,
      registers,
    }),
    upstreamErrors: new prom.Counter({
      name: 'wsgiproxy_upstream_errors_total',
      help: 'Failed forwards of proxy and exact routes by error code (UPSTREAM_UNREACHABLE, UPSTREAM_TIMEOUT, ...).',
      labelNames: ['route', 'code'] as const,
      registers,
    }),
    spawns: new prom.Counter({
      name: 'wsgiproxy_spawner_spawns_total',
      help: 'Backend processes spawned by a spawn route.',
      labelNames: ['route'] as const,
      registers,
    }),
    crashes: new prom.Counter({
      name: 'wsgiproxy_spawner_crashes_total',
      help: 'Unexpected exits of ready backends of a spawn route.',
      labelNames: ['route'] as const,
      registers,
    }),
    idleStops: new prom.Counter({
      name: 'wsgiproxy_spawner_idle_stops_total',
      help: 'Backends of a spawn route stopped for being idle.',
      labelNames: ['route'] as const,
      registers,
    }),
    replayChecks: new prom.Counter({
      name: 'wsgiproxy_replay_checks_total',
      help: 'Answers of the replay store of a route that verifies signatures (fresh, replay, full, unavailable; error: it threw).',
      labelNames: ['route', 'result'] as const,
      registers,
    }),
    collectFrom: (given) => {
      routes = given
    },
  }
}

/**
 * Wraps a route's app so each request is counted and timed like its log line (status 500 for an
 * app that throws), and counted in flight until its response body ended.
 *
 * @param app - the route's app (`prepareUpgrade` is kept)
 * @param route - the route label: its path prefix, or `-` for requests no route matched
 * @param metrics - where to record
 * @returns the measured app
 */
export function measureRequests<T extends EnvironApp>(app: T, route: string, metrics: Metrics): T {
  const { requests, duration, inFlight } = metrics
  inFlight.inc({ route }, 0)
  const measured: EnvironApp = async (environ) => {
    const started = performance.now()
    const method = METHODS.has(environ.REQUEST_METHOD) ? environ.REQUEST_METHOD : 'other'
    const record = (status: number): void => {
      const labels = { route, method, status_class: statusClass(status) }
      requests.inc(labels)
      duration.observe(labels, (performance.now() - started) / 1000)
    }
    inFlight.inc({ route })
    const done = (): void => inFlight.dec({ route })
    try {
      const response = await app(environ)
      record(response.status)
      if (response.body === null) {
        done()
        return response
      }
      return { ...response, body: onBodyEnd(response.body, done) }
    } catch (error) {
      record(500)
      done()
      throw error
    }
  }
  // Upgrades are not counted (the log has no line for them either), only passed on.
  if ('prepareUpgrade' in app) {
    const upgradable = app as unknown as UpgradableApp
    Object.assign(measured, { prepareUpgrade: upgradable.prepareUpgrade.bind(upgradable) })
  }
  return measured as T
}

/**
 * Registers a route for the admin endpoints and, with metrics on, measures its requests (and
 * counts its spawner's events).
 *
 * @param resources - the config's route list and metrics
 * @param entry - the route
 * @param app - its app
 * @returns the app to mount: measured with metrics on, else `app`
 */
export function mountRoute<T extends EnvironApp>(
  resources: { readonly routes: RouteEntry[]; readonly metrics?: Metrics | undefined },
  entry: RouteEntry,
  app: T,
): T {
  resources.routes.push(entry)
  const { metrics } = resources
  if (metrics === undefined) return app
  if (entry.spawner !== undefined) watchSpawnerMetrics(entry.spawner, entry.path, metrics)
  return measureRequests(app, entry.path, metrics)
}

/**
 * Wraps a replay store so its answers are counted as `wsgiproxy_replay_checks_total{route,result}`
 * (`error` when it throws; the error goes on to the verifier).
 *
 * @param store - the store the verifier would use
 * @param route - the route label
 * @param metrics - where to count
 * @returns the counting store
 */
export function countReplayChecks(
  store: ReplayStore,
  route: string,
  metrics: Metrics,
): ReplayStore {
  const { replayChecks } = metrics
  return {
    checkAndSet: async (key, ttlMs) => {
      try {
        const result = await store.checkAndSet(key, ttlMs)
        replayChecks.inc({ route, result })
        return result
      } catch (error) {
        replayChecks.inc({ route, result: 'error' })
        throw error
      }
    },
  }
}

/**
 * The counter of a forwarding route's errors (those answered with a 5xx), for its `onError` hook.
 *
 * @param metrics - where to count, if anywhere
 * @param route - the route label
 * @returns what counts an error, or `undefined` without metrics
 */
export function upstreamErrorCounter(
  metrics: Metrics | undefined,
  route: string,
): ((error: WsgiProxyError) => void) | undefined {
  if (metrics === undefined) return undefined
  return (error) => {
    if (error.status >= 500) metrics.upstreamErrors.inc({ route, code: error.code })
  }
}

// Spawners whose events are counted already (a reload that keeps a spawner registers it again).
const watched = new WeakSet<Spawner>()

/**
 * Counts a spawner's spawns, crashes and idle stops from its events. Idempotent.
 *
 * @param spawner - the spawner
 * @param route - the route label
 * @param metrics - where to count
 */
export function watchSpawnerMetrics(spawner: Spawner, route: string, metrics: Metrics): void {
  if (watched.has(spawner)) return
  watched.add(spawner)
  const { spawns, crashes, idleStops } = metrics
  for (const counter of [spawns, crashes, idleStops]) counter.inc({ route }, 0)
  spawner.on('idle', () => idleStops.inc({ route }))
  // A crash is the BACKEND_EXITED error the spawner reports right after the `exit` of a process
  // that was ready (a failed start reports the same code for one that never was); this counts
  // what the spawner's `status().crashes` counts, an exit during a restart's drain included.
  const ready = new Set<number>()
  let exitedReady: number | undefined
  spawner.on('spawn', () => {
    spawns.inc({ route })
    exitedReady = undefined
  })
  spawner.on('ready', ({ pid }) => ready.add(pid))
  spawner.on('exit', ({ pid }) => {
    exitedReady = pid !== null && ready.delete(pid) ? pid : undefined
  })
  spawner.on('error', (error: SpawnerError) => {
    const pid = error.exit?.pid
    if (error.code === 'BACKEND_EXITED' && pid !== undefined && pid === exitedReady) {
      exitedReady = undefined
      crashes.inc({ route })
    }
  })
}

function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other'
}
