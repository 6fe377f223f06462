import {
  createProxyApp,
  createSigner,
  createVerifier,
  exactProxy,
  MemoryReplayStore,
  proxyMiddleware,
  WsgiProxyError,
} from '@wsgiproxy/core'
import type {
  Environ,
  EnvironApp,
  ProxyTimeouts,
  UpgradableApp,
  UpstreamPool,
} from '@wsgiproxy/core'
import {
  createLeasedSpawnerApp,
  createSelfCheck,
  createSpawner,
  resolveHost,
  undiciTransport,
  watchKeyFile,
} from '@wsgiproxy/node'
import type { RedisReplayStore } from '@wsgiproxy/node/redis'
import type {
  KeyFileWatcher,
  ListenerAddress,
  Spawner,
  SpawnerInstances,
  SpawnerLease,
  SpawnerOptions,
  UndiciTransport,
} from '@wsgiproxy/node'
import type {
  EchoRoute,
  ProxyRoute,
  UpstreamInput,
  RouteInput,
  SpawnRoute,
  TimeoutsInput,
} from './config-schema.ts'
import { countReplayChecks, mountRoute, upstreamErrorCounter } from './admin/metrics.ts'
import type { Metrics } from './admin/metrics.ts'
import type { RouteEntry } from './admin/status.ts'
import { toMs } from './duration.ts'
import { createEchoApp } from './echo-app.ts'
import { usageError } from './errors.ts'
import type { Logger } from './log.ts'
import { withRequestLog } from './log.ts'
import { poolOptionsOf, watchPool } from './pool-route.ts'
import { read } from './tls-files.ts'

/** What the running command owns and closes on shutdown. */
export interface Resources {
  /** The logger. */
  readonly logger: Logger
  /** The shared pooled transport. */
  readonly transport: UndiciTransport
  /** The spawners started. */
  readonly spawners: Spawner[]
  /**
   * The spawn route key of each spawner, the key file watcher its signer reads, and, for one taken
   * over from an earlier config not yet committed, the resources it came from.
   */
  readonly spawnerRoutes: Map<
    Spawner,
    { key: string; watcher: KeyFileWatcher | undefined; from?: Resources }
  >
  /** The transports of proxy routes with their own `upstream` settings. */
  readonly transports: UndiciTransport[]
  /** The upstream pools of proxy routes (their health checks stop on shutdown). */
  readonly pools: UpstreamPool[]
  /** The key files watched. */
  readonly watchers: KeyFileWatcher[]
  /** The shared replay stores of echo routes (`replayStore`): their Redis connections. */
  readonly replayStores: RedisReplayStore[]
  /** The routes built, for the admin endpoints (`/status`, scrape-time metrics). */
  readonly routes: RouteEntry[]
  /** The metrics to record into, when the admin listener is on (one for every config). */
  readonly metrics?: Metrics
  /**
   * The address the server listens on (`server.address()`), once it listens: the exact proxy
   * answers 508 to a request addressed to it.
   */
  self: ListenerAddress
  /**
   * Spawners of an earlier config that a spawn route with the same definition takes over (by
   * {@link spawnRouteKey}) instead of starting its own: a reload keeps unchanged backends running.
   */
  readonly reuse?: Map<string, KeptSpawner>
  /**
   * In a worker process: spawn routes lease a backend of the spawner the main process owns (by
   * {@link spawnRouteKey}) instead of spawning their own.
   */
  readonly lease?: (key: string, signal: AbortSignal | undefined) => Promise<SpawnerLease>
}

/** A spawner an earlier config started, which a newer one may take over. */
export interface KeptSpawner {
  readonly spawner: Spawner
  /** The key file watcher its signer reads. */
  readonly watcher: KeyFileWatcher | undefined
  /** The resources it belongs to until it is taken over. */
  readonly from: Resources
}

/**
 * The spawners of `resources` by route key, for the resources of a newer config: a spawn route
 * with the same key takes its spawner (and its key file watcher) over, and it leaves `resources`.
 *
 * @param resources - those of the config being replaced
 * @returns the spawners to reuse
 */
export function keptSpawners(resources: Resources): Map<string, KeptSpawner> {
  const kept = new Map<string, KeptSpawner>()
  for (const [spawner, { key, watcher }] of resources.spawnerRoutes) {
    kept.set(key, { spawner, watcher, from: resources })
  }
  return kept
}

/**
 * Makes the spawners (and their key file watchers) a newer config took over its own: they leave
 * the resources of the config it replaces, which can then be closed without stopping them.
 *
 * @param resources - those of the newer config, built without error
 */
export function commitTakeOver(resources: Resources): void {
  for (const [spawner, { key, watcher, from }] of resources.spawnerRoutes) {
    if (from === undefined) continue
    from.spawners.splice(from.spawners.indexOf(spawner), 1)
    from.spawnerRoutes.delete(spawner)
    if (watcher !== undefined) from.watchers.splice(from.watchers.indexOf(watcher), 1)
    resources.spawnerRoutes.set(spawner, { key, watcher })
  }
}

/**
 * Closes what a newer config that failed to build had made, leaving what it would have taken
 * over from the config in use, and the shared transport.
 *
 * @param resources - those of the config that failed
 */
export async function discardResources(resources: Resources): Promise<void> {
  const kept = [...resources.spawnerRoutes].filter(([, route]) => route.from !== undefined)
  const keptWatchers = new Set(kept.map(([, route]) => route.watcher))
  const keptSpawnerSet = new Set(kept.map(([spawner]) => spawner))
  await Promise.allSettled(
    resources.spawners.filter((s) => !keptSpawnerSet.has(s)).map((s) => s.close()),
  )
  for (const pool of resources.pools) pool.close()
  for (const watcher of resources.watchers) if (!keptWatchers.has(watcher)) watcher.close()
  await Promise.allSettled(resources.replayStores.map((store) => store.close()))
  await Promise.allSettled(resources.transports.map((transport) => transport.close()))
}

/**
 * Creates the resources of one command run (or of one config, for a reload).
 *
 * @param logger - the logger
 * @param extra - a transport to share (default: a new one), spawners to take over, or the lease
 * of a worker process
 * @returns the resources
 */
export function createResources(
  logger: Logger,
  extra: Partial<Pick<Resources, 'transport' | 'reuse' | 'lease' | 'metrics'>> = {},
): Resources {
  return {
    logger,
    transport: extra.transport ?? undiciTransport(),
    spawners: [],
    spawnerRoutes: new Map(),
    transports: [],
    pools: [],
    watchers: [],
    replayStores: [],
    routes: [],
    self: undefined,
    ...(extra.reuse === undefined ? {} : { reuse: extra.reuse }),
    ...(extra.lease === undefined ? {} : { lease: extra.lease }),
    ...(extra.metrics === undefined ? {} : { metrics: extra.metrics }),
  }
}

/**
 * Closes every spawner (their process groups are gone when it resolves), pool, key file watcher
 * and the transport.
 *
 * @param resources - what to close
 * @param options - `transport: false` keeps the transport open (it is shared with a newer config)
 */
export async function closeResources(
  resources: Resources,
  options: { transport?: boolean } = {},
): Promise<void> {
  await Promise.allSettled(resources.spawners.map((spawner) => spawner.close()))
  for (const pool of resources.pools) pool.close()
  for (const watcher of resources.watchers) watcher.close()
  await Promise.allSettled(resources.replayStores.map((store) => store.close()))
  await Promise.allSettled(resources.transports.map((transport) => transport.close()))
  if (options.transport !== false) await resources.transport.close().catch(() => {})
}

/**
 * What identifies a spawn route across reloads: its whole definition. A reload keeps the
 * spawner of a route whose key is unchanged.
 *
 * @param route - the route
 * @returns the key
 */
export function spawnRouteKey(route: SpawnRoute): string {
  return JSON.stringify(route)
}

/** An app with its request log, ready to mount. */
export interface BuiltApp {
  app: EnvironApp | UpgradableApp
  /** A proxy route's pool. */
  pool?: UpstreamPool | undefined
  /** A spawn route's spawner (none for a worker's, which leases). */
  spawner?: Spawner | undefined
}

/**
 * Builds the app of one route (its request log included).
 *
 * @param route - the route as configured (paths resolved)
 * @param resources - shared transport; spawners and watchers are added to it
 * @returns the app
 * @throws CliError (exit 1) for an unreadable key file or bad options
 */
export async function buildRouteApp(route: RouteInput, resources: Resources): Promise<BuiltApp> {
  const built = await routeApp(route, resources)
  const { pool, spawner } = built
  // A proxy route without a pool has one target: its href, or its one `targets` entry.
  const href =
    route.type === 'proxy' && pool === undefined
      ? (route.href ?? route.targets?.[0]?.href)
      : undefined
  const entry: RouteEntry = {
    kind: route.type,
    path: route.path,
    name: route.type === 'spawn' ? route.name : undefined,
    href: typeof href === 'string' ? href : undefined,
    pool,
    spawner,
  }
  return { ...built, app: mountRoute(resources, entry, built.app) }
}

async function routeApp(route: RouteInput, resources: Resources): Promise<BuiltApp> {
  switch (route.type) {
    case 'proxy':
      return proxyRouteApp(route, resources)
    case 'spawn':
      return spawnRouteApp(route, resources)
    case 'exact': {
      const { logger } = resources
      const app = exactApp(resources, {
        ...(route.timeouts === undefined ? {} : { timeouts: timeoutsOf(route.timeouts) }),
        ...(route.exposeErrors === undefined ? {} : { exposeErrors: route.exposeErrors }),
        ...(route.allow === undefined ? {} : { allow: route.allow }),
        onUpstreamError: upstreamErrorCounter(resources.metrics, route.path),
      })
      return { app: withRequestLog(app, logger, exactUpstream) }
    }
    case 'echo':
      return echoRouteApp(route, resources)
  }
}

/** Options of {@link exactApp}, as the config file and the flags give them. */
export interface ExactAppOptions {
  /** Timeouts. Default: the exact proxy's. */
  timeouts?: ProxyTimeouts
  /** Show error details in bodies. Default `false`. */
  exposeErrors?: boolean
  /** Where the proxy may connect (exactProxy's `allow`). Default `['public']`. */
  allow?: readonly string[]
  /** Also called with each error answered with a 5xx (for the metrics). Default: none. */
  onUpstreamError?: ((error: WsgiProxyError) => void) | undefined
}

/**
 * The exact proxy on the shared transport, guarded: targets outside `allow` (default: public
 * addresses only) get 403, and a request that would come back to this server (one of its own
 * addresses in any spelling, a name resolving to one, or a `Via` naming this process) gets 508.
 * Host names are resolved here and the request is sent to the address checked.
 *
 * @param resources - transport and the server's own address
 * @param options - timeouts, error exposure, allow list
 * @returns the app
 * @throws CliError (exit 1) for a bad allow entry
 */
export function exactApp(
  resources: Resources,
  { onUpstreamError, ...options }: ExactAppOptions = {},
): EnvironApp {
  return guard(() =>
    exactProxy({
      transport: resources.transport,
      ...options,
      resolve: resolveHost,
      isSelf: createSelfCheck(() => resources.self),
      onError: logProxyError(resources.logger, onUpstreamError),
    }),
  )
}

/**
 * The upstream of an exact proxy request, for the log.
 *
 * @param environ - the request
 * @returns `scheme://host:port`
 */
export function exactUpstream(environ: Environ): string {
  const host = environ.SERVER_NAME.includes(':') ? `[${environ.SERVER_NAME}]` : environ.SERVER_NAME
  return `${environ['wsgi.url_scheme']}://${host}:${environ.SERVER_PORT}`
}

/**
 * Converts config timeouts to milliseconds.
 *
 * @param timeouts - as written
 * @returns the proxy timeouts
 */
export function timeoutsOf(timeouts: TimeoutsInput): ProxyTimeouts {
  const out: ProxyTimeouts = {}
  if (timeouts.headers !== undefined) {
    out.upstreamHeaders = timeouts.headers === false ? false : toMs(timeouts.headers)
  }
  if (timeouts.body !== undefined) {
    out.upstreamBody = timeouts.body === false ? false : toMs(timeouts.body)
  }
  return out
}

/**
 * Loads a key file and keeps it up to date, as a key source.
 *
 * @param path - the key file
 * @param resources - the watcher is added to it
 * @returns the key source
 * @throws CliError (exit 1) with the key file's problem
 */
export async function watchKeys(
  path: string,
  resources: Resources,
): Promise<KeyFileWatcher['keys']> {
  let watcher: KeyFileWatcher
  try {
    watcher = await watchKeyFile(path)
  } catch (error) {
    throw usageError(
      error instanceof WsgiProxyError
        ? `${error.message}`
        : `cannot read key file ${path}: ${String(error)}`,
    )
  }
  watcher.on('error', (error) => resources.logger.error(`key file ${path}: ${error.message}`))
  watcher.on('reload', (keys) =>
    resources.logger.event(
      'keys',
      `key file ${path} reloaded (signing with ${keys[0]?.id ?? '?'})`,
    ),
  )
  resources.watchers.push(watcher)
  return watcher.keys
}

async function signerFor(
  keyFile: string | undefined,
  resources: Resources,
): Promise<ReturnType<typeof createSigner> | undefined> {
  if (keyFile === undefined) return undefined
  return createSigner({ keys: await watchKeys(keyFile, resources) })
}

async function proxyRouteApp(route: ProxyRoute, resources: Resources): Promise<BuiltApp> {
  const { logger } = resources
  const transport =
    route.upstream === undefined
      ? resources.transport
      : await upstreamTransport(route.upstream, route.path, resources)
  const signer = await signerFor(route.keyFile, resources)
  const app = guard(() =>
    createProxyApp({
      ...poolOptionsOf(route),
      transport,
      ...protocolOptions(route),
      ...(signer === undefined ? {} : { signer }),
      onError: logProxyError(logger, upstreamErrorCounter(resources.metrics, route.path)),
    }),
  )
  if (app.pool !== undefined) {
    resources.pools.push(app.pool)
    watchPool(app.pool, route.path, logger)
  }
  // A pool notes the target of each request in the environ; one href is always the same.
  const only = typeof route.href === 'string' ? new URL(route.href).origin : 'pool'
  const upstream = (environ: Environ): string => {
    const target = environ['wsgiproxy.upstream']
    return typeof target === 'string' ? new URL(target).origin : only
  }
  return { app: upgradable(app, withRequestLog(app, logger, upstream)), pool: app.pool }
}

// A proxy route's own transport for its `upstream` settings (HTTP/2, TLS files read now).
async function upstreamTransport(
  upstream: UpstreamInput,
  path: string,
  resources: Resources,
): Promise<UndiciTransport> {
  const { http2, ca, cert, key, servername, rejectUnauthorized } = upstream
  const where = `route ${path}: upstream`
  const cas =
    ca === undefined
      ? undefined
      : await Promise.all((Array.isArray(ca) ? ca : [ca]).map((file) => read(`${where}.ca`, file)))
  const tls = {
    ...(cas === undefined ? {} : { ca: cas }),
    ...(cert === undefined ? {} : { cert: await read(`${where}.cert`, cert) }),
    ...(key === undefined ? {} : { key: await read(`${where}.key`, key) }),
    ...(servername === undefined ? {} : { servername }),
    ...(rejectUnauthorized === undefined ? {} : { rejectUnauthorized }),
  }
  let transport: UndiciTransport
  try {
    transport = undiciTransport({
      ...(http2 === true ? { http2: 'h2c' as const } : {}),
      ...(Object.keys(tls).length === 0 ? {} : { tls }),
      onWarning: (message) => resources.logger.event('warning', `${where}: ${message}`),
    })
  } catch (error) {
    if (!(error instanceof WsgiProxyError)) throw error
    // `invalid options: undiciTransport.tls.key: ...` names the config's keys instead.
    throw usageError(
      `${where}.${error.message.replace(/^invalid options: undiciTransport\.(tls\.)?/, '')}`,
    )
  }
  resources.transports.push(transport)
  return transport
}

async function spawnRouteApp(route: SpawnRoute, resources: Resources): Promise<BuiltApp> {
  const { logger, transport } = resources
  const key = spawnRouteKey(route)
  const kept = takeOver(resources, key)
  const watchersBefore = resources.watchers.length
  const signer = kept === undefined ? await signerFor(route.keyFile, resources) : undefined
  const { lease } = resources
  if (lease !== undefined) return leasedRouteApp(route, resources, signer, lease)
  const spawner =
    kept?.spawner ??
    guard(() =>
      createSpawner({
        command: route.command,
        transport,
        ...protocolOptions(route),
        ...(signer === undefined ? {} : { signer }),
        ...(route.name === undefined ? {} : { name: route.name }),
        ...(route.cwd === undefined ? {} : { cwd: route.cwd }),
        ...(route.env === undefined ? {} : { env: route.env }),
        ...(route.port === undefined ? {} : { port: route.port }),
        ...(route.readyPath === undefined ? {} : { ready: { http: route.readyPath } }),
        ...(route.startTimeout === undefined ? {} : { startTimeout: toMs(route.startTimeout) }),
        ...(route.killTimeout === undefined ? {} : { killTimeout: toMs(route.killTimeout) }),
        ...(route.maxQueue === undefined ? {} : { maxQueue: route.maxQueue }),
        ...(route.instances === undefined ? {} : { instances: instancesOf(route.instances) }),
        ...(route.idleTimeout === undefined
          ? {}
          : { idleTimeout: route.idleTimeout === false ? false : toMs(route.idleTimeout) }),
        onError: logProxyError(logger),
        logger: (entry) => {
          if (entry.stream === 'spawner') logger.event('notice', entry.line)
          else logger.output(entry.name, entry.pid, entry.stream, entry.text)
        },
      } satisfies SpawnerOptions),
    )
  resources.spawners.push(spawner)
  resources.spawnerRoutes.set(spawner, {
    key,
    watcher: kept === undefined ? resources.watchers[watchersBefore] : kept.watcher,
    ...(kept === undefined ? {} : { from: kept.from }),
  })
  if (kept === undefined) watchSpawner(spawner, logger)
  const upstream = (): string => {
    const port = spawner.status().port
    return port === null ? spawner.name : `http://127.0.0.1:${port}`
  }
  return {
    app: upgradable(spawner.app, withRequestLog(spawner.app, logger, upstream)),
    spawner,
  }
}

// The spawner of an earlier config with this key, with its key file watcher: it serves this
// config's route; it leaves the earlier config's resources when the new config is committed.
function takeOver(resources: Resources, key: string): KeptSpawner | undefined {
  const kept = resources.reuse?.get(key)
  if (kept === undefined) return undefined
  resources.reuse?.delete(key)
  if (kept.watcher !== undefined) resources.watchers.push(kept.watcher)
  return kept
}

// A worker's spawn route: each request leases a backend of the main process's spawner.
function leasedRouteApp(
  route: SpawnRoute,
  resources: Resources,
  signer: ReturnType<typeof createSigner> | undefined,
  lease: NonNullable<Resources['lease']>,
): BuiltApp {
  const { logger, transport } = resources
  const key = spawnRouteKey(route)
  const app = guard(() =>
    createLeasedSpawnerApp({
      lease: (signal) => lease(key, signal),
      proxy: {
        transport,
        ...protocolOptions(route),
        ...(signer === undefined ? {} : { signer }),
        onError: logProxyError(logger),
      },
    }),
  )
  const name = route.name ?? 'backend'
  return {
    app: upgradable(
      app,
      withRequestLog(app, logger, () => name),
    ),
  }
}

async function echoRouteApp(route: EchoRoute, resources: Resources): Promise<BuiltApp> {
  const { logger } = resources
  const shared = await sharedReplayStore(route, resources)
  const verifier =
    route.keyFile === undefined
      ? undefined
      : createVerifier({
          keys: await watchKeys(route.keyFile, resources),
          // Counted for wsgiproxy_replay_checks_total when the admin listener is on.
          ...(resources.metrics === undefined
            ? shared === undefined
              ? {}
              : { replayStore: shared }
            : {
                replayStore: countReplayChecks(
                  shared ?? new MemoryReplayStore(),
                  route.path,
                  resources.metrics,
                ),
              }),
        })
  const app = guard(() =>
    proxyMiddleware(createEchoApp(), {
      trustIps: route.trustIps ?? ['loopback'],
      ...(verifier === undefined ? {} : { verifier }),
      ...(route.compat === undefined ? {} : { compat: route.compat }),
      onReject: (error) => logger.error(`request refused: ${error.message}`),
      // In the command's log (a JSON line with --log-format json), not on console.warn.
      onWarning: ({ code, message, ...fields }) =>
        logger.event('warning', message, { code, ...fields }),
    }),
  )
  return { app: withRequestLog(app, logger, () => 'echo') }
}

// An echo route's shared replay store: RedisReplayStore, loaded only when a route names one. It
// closes with the route's resources (on shutdown, or when a reload replaced the config).
async function sharedReplayStore(
  route: EchoRoute,
  resources: Resources,
): Promise<RedisReplayStore | undefined> {
  const options = route.replayStore
  if (options === undefined) return undefined
  if (route.keyFile === undefined) {
    throw usageError(
      `route ${route.path}: replayStore needs keyFile (it keeps the nonces of verified signatures)`,
    )
  }
  const { logger } = resources
  const { RedisReplayStore } = await import('@wsgiproxy/node/redis')
  const store = guard(
    () =>
      new RedisReplayStore({
        url: options.redis,
        ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
        ...(options.timeout === undefined ? {} : { timeout: Math.max(1, toMs(options.timeout)) }),
        ...(options.onUnavailable === undefined ? {} : { onUnavailable: options.onUnavailable }),
        onWarning: ({ code, message }) =>
          logger.event('warning', `route ${route.path}: ${message}`, { code }),
      }),
  )
  resources.replayStores.push(store)
  try {
    await store.connect()
  } catch (error) {
    // Not fatal: the store keeps trying, and answers per onUnavailable meanwhile.
    logger.event('warning', `route ${route.path}: ${(error as Error).message}`, {
      code: 'REPLAY_STORE_UNAVAILABLE',
    })
  }
  return store
}

interface ProtocolRoute {
  stringKeys?: string[] | undefined
  unicodeKeys?: string[] | undefined
  jsonKeys?: string[] | undefined
  forwarded?: boolean | undefined
  xForwarded?: boolean | undefined
  compat?: 'wsgiproxy-0.1' | undefined
  rewriteLocation?: boolean | undefined
  timeouts?: TimeoutsInput | undefined
  exposeErrors?: boolean | undefined
}

function protocolOptions(route: ProtocolRoute): {
  stringKeys?: string[]
  unicodeKeys?: string[]
  jsonKeys?: string[]
  forwarded?: boolean
  xForwarded?: boolean
  compat?: 'wsgiproxy-0.1'
  rewriteLocation?: boolean
  timeouts?: ProxyTimeouts
  exposeErrors?: boolean
} {
  return {
    ...(route.stringKeys === undefined ? {} : { stringKeys: route.stringKeys }),
    ...(route.unicodeKeys === undefined ? {} : { unicodeKeys: route.unicodeKeys }),
    ...(route.jsonKeys === undefined ? {} : { jsonKeys: route.jsonKeys }),
    ...(route.forwarded === undefined ? {} : { forwarded: route.forwarded }),
    ...(route.xForwarded === undefined ? {} : { xForwarded: route.xForwarded }),
    ...(route.compat === undefined ? {} : { compat: route.compat }),
    ...(route.rewriteLocation === undefined ? {} : { rewriteLocation: route.rewriteLocation }),
    ...(route.timeouts === undefined ? {} : { timeouts: timeoutsOf(route.timeouts) }),
    ...(route.exposeErrors === undefined ? {} : { exposeErrors: route.exposeErrors }),
  }
}

// The `instances` of a spawn route, its idle time in milliseconds.
function instancesOf(instances: NonNullable<SpawnRoute['instances']>): SpawnerInstances {
  const { min, max, busyAt, idleTimeout } = instances
  return {
    ...(min === undefined ? {} : { min }),
    ...(max === undefined ? {} : { max }),
    ...(busyAt === undefined ? {} : { busyAt }),
    ...(idleTimeout === undefined ? {} : { idleTimeout: Math.max(1, toMs(idleTimeout)) }),
  }
}

function watchSpawner(spawner: Spawner, logger: Logger): void {
  const name = spawner.name
  spawner.on('spawn', ({ pid, port }) =>
    logger.event('spawned', `[${name}] spawned pid ${pid} on port ${port}`, { name, pid, port }),
  )
  spawner.on('ready', ({ pid, port, coldStartMs }) =>
    logger.event('ready', `[${name}] ready in ${coldStartMs} ms (pid ${pid}, port ${port})`, {
      name,
      pid,
      port,
      ms: coldStartMs,
    }),
  )
  spawner.on('idle', ({ pid }) =>
    logger.event('idle-stop', `[${name}] idle: stopping pid ${pid}`, { name, pid }),
  )
  spawner.on('exit', ({ pid, code, signal }) =>
    logger.event(
      'exit',
      `[${name}] pid ${pid ?? '-'} exited (${signal === null ? `code ${code}` : signal})`,
      { name, pid, code, signal },
    ),
  )
  spawner.on('scale', ({ instances, reason }) =>
    logger.event(
      'scale',
      `[${name}] ${instances} instance${instances === 1 ? '' : 's'} (${reason})`,
      {
        name,
        instances,
        reason,
      },
    ),
  )
  spawner.on('error', (error) =>
    logger.event(
      error.code === 'BACKEND_EXITED' ? 'crash' : 'start-failed',
      `[${name}] ${error.code === 'BACKEND_EXITED' ? 'crash' : 'start failed'}: ${error.message}`,
      { name, code: error.code },
    ),
  )
}

/**
 * The `onError` hook of the forwarding apps: logs upstream failures, loops and refused targets
 * (whose response names no target) for the operator.
 *
 * @param logger - the logger
 * @param count - also called with every error (the metrics' counter), if given
 * @returns the hook
 */
export function logProxyError(
  logger: Logger,
  count?: (error: WsgiProxyError) => void,
): (error: WsgiProxyError) => void {
  return (error: WsgiProxyError): void => {
    count?.(error)
    if (error.code === 'CLIENT_ABORTED') return
    // The response says only that the target is not allowed: the log says which, for the operator.
    if (error.status >= 500 || error.code === 'TARGET_NOT_ALLOWED') {
      logger.error(`${error.code}: ${error.message}`)
    }
  }
}

// Keeps `prepareUpgrade` of the unlogged app on the logging one, for WebSocket forwarding.
function upgradable(source: UpgradableApp, logged: EnvironApp): UpgradableApp {
  return Object.assign(logged, { prepareUpgrade: source.prepareUpgrade.bind(source) })
}

function guard<T>(build: () => T): T {
  try {
    return build()
  } catch (error) {
    if (error instanceof WsgiProxyError) throw usageError(error.message)
    throw error
  }
}
