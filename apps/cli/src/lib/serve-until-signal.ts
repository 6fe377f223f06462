import { rm, writeFile, readFile } from 'node:fs/promises'
import type { EnvironApp, UpgradableApp } from '@wsgiproxy/core'
import { serve, undiciTransport } from '@wsgiproxy/node'
import type { Served } from '@wsgiproxy/node'
import {
  closeResources,
  commitTakeOver,
  createResources,
  discardResources,
  keptSpawners,
} from './apps.ts'
import type { Resources } from './apps.ts'
import { WsgiProxyError } from '@wsgiproxy/core'
import { CliError, EXIT_RUNTIME, usageError } from './errors.ts'
import { createGenerations } from './generations.ts'
import type { Generations } from './generations.ts'
import { readTls, watchTls } from './tls-files.ts'
import { listenProblem } from './listen.ts'
import type { ListenChoice } from './listen.ts'
import { createLogger } from './log.ts'
import { createLocalState, listenAdmin, localSource } from './admin/admin-server.ts'
import type { AdminServer, LocalState } from './admin/admin-server.ts'
import { createMetrics } from './admin/metrics.ts'
import type { ListenAddress } from './listen.ts'
import type { Logger, LogFormat } from './log.ts'
import type { UpgradeSettings } from './upgrade-settings.ts'
import { startTracing, tracingSettings } from './tracing.ts'
import type { TracingSettings } from './tracing.ts'

/** Makes the app of a config; the resources it takes are closed when the config is replaced. */
export type Build = (
  resources: Resources,
) => EnvironApp | UpgradableApp | Promise<EnvironApp | UpgradableApp>

/** The default of {@link ServeRun.drainTimeout}. */
export const DEFAULT_DRAIN_MS = 10_000

/** What {@link serveUntilSignal} serves, and how. */
export interface ServeRun {
  /** The subcommand, for the `listening` line. */
  command: string
  /** Where to listen, and where that came from (for the message when it fails). */
  listen: ListenChoice
  /** The log format. */
  format: LogFormat
  /** The upgrade settings for `serve()`. */
  upgrade: UpgradeSettings
  /** Makes the app. */
  build: Build
  /**
   * Called with the server once it listens; what it returns is called when the signal comes,
   * before the server drains (to stop what the server does not track, such as CONNECT tunnels).
   */
  setup?: (served: Served, resources: Resources) => (() => void) | undefined
  /**
   * On SIGHUP: reads the config again and gives the build of the new one, which then takes the
   * new requests while those in flight finish on the old one. It throws (logged; the config in
   * use stays) when the new config is invalid.
   */
  reload?: (logger: Logger) => Promise<Build>
  /**
   * How long requests and upgraded connections in flight may go on after the signal (and after
   * a reload, on the replaced config) before they are cut, in ms. Default 10 s.
   */
  drainTimeout?: number
  /** Write the process id to this file while serving (for `wsgiproxy reload`). */
  pidFile?: string
  /** Serve /metrics, /healthz, /readyz and /status on this address. Default: no admin listener. */
  admin?: ListenAddress | undefined
  /** Run as a worker of `serve --workers`: stop when told, lease from the main process. */
  worker?: WorkerLink
  /** OpenTelemetry tracing; default: from the OTLP environment variables, else off. */
  tracing?: TracingSettings | undefined
}

/** How a worker process of `serve --workers` talks to the main process. */
export interface WorkerLink {
  /** Spawn routes lease backends of the main process's spawners. */
  lease: NonNullable<Resources['lease']>
  /**
   * Resolves when the main process tells the worker to stop: `reload` (a newer generation
   * serves: let connections end on their own, `served.drain()`) or `stop` (`served.close()`).
   */
  drain: Promise<'reload' | 'stop'>
  /** Tells the main process the worker listens. */
  listening: (url: string) => void
  /** Tells the main process the worker has stopped accepting connections. */
  draining: () => void
  /**
   * With the main process's admin listener on: the worker records metrics and is handed what it
   * knows of itself, for the answers to the main process's questions.
   */
  admin?: ((state: LocalState) => void) | undefined
}

/**
 * Builds the app, listens, logs the address, and waits for SIGINT or SIGTERM; then stops
 * accepting, drains requests in flight, stops every backend and resolves. A second signal
 * stops at once (the spawner's watchdog still kills the backends). With `reload`, SIGHUP
 * replaces the config without dropping a request.
 *
 * @param run - what to serve and how
 * @returns the exit status, 0 after a clean stop
 * @throws CliError (exit 2) when the address cannot be listened on, saying how to pick another
 */
export async function serveUntilSignal(run: ServeRun): Promise<number> {
  const { command, listen, format, upgrade, worker } = run
  const drainTimeout = run.drainTimeout ?? DEFAULT_DRAIN_MS
  // Listen for the signals before anything else: one that came before the listener would end
  // the process by its default action, as if it had crashed (exit by SIGINT, not 0). A signal
  // during the start stops the server as soon as it listens.
  const stop = worker === undefined ? waitForSignal() : waitForDrain(worker)
  const hangup = run.reload === undefined ? undefined : onHangup()
  const logger = createLogger(format)
  const tracingChoice = run.tracing ?? tracingSettings(undefined)
  const tracing =
    tracingChoice === undefined ? undefined : await startTracing(tracingChoice, logger)
  const transport = undiciTransport()
  const metrics =
    run.admin !== undefined || worker?.admin !== undefined ? await createMetrics() : undefined
  const resources = createResources(logger, {
    transport,
    ...(worker === undefined ? {} : { lease: worker.lease }),
    ...(metrics === undefined ? {} : { metrics }),
  })
  let served: Served
  let generations: Generations
  try {
    const tls = listen.tls === undefined ? undefined : await readTls(listen.tls)
    const app = await run.build(resources)
    generations = createGenerations({ app, resources })
    try {
      // Without reloads nothing replaces the app: no counting wrapper on every response.
      served = await serve(run.reload === undefined ? app : generations.app, {
        port: listen.address.port,
        hostname: listen.address.hostname,
        closeTimeout: drainTimeout,
        ...(tls === undefined ? {} : { tls }),
        ...(listen.http2 === undefined || listen.http2 === false ? {} : { http2: listen.http2 }),
        ...(upgrade.protocols === undefined ? {} : { upgradeProtocols: upgrade.protocols }),
        ...(upgrade.idleTimeout === undefined ? {} : { upgradeIdleTimeout: upgrade.idleTimeout }),
        ...(upgrade.maxConnections === undefined
          ? {}
          : { maxUpgradeConnections: upgrade.maxConnections }),
        onError: (error) => {
          logger.error(error instanceof Error ? error.message : String(error))
        },
        ...(tracingChoice === undefined
          ? {}
          : { trustTraceparent: tracingChoice.trustTraceparent }),
      })
    } catch (error) {
      // A key that does not match its certificate is the user's to fix, like a bad flag.
      if (error instanceof WsgiProxyError && error.code === 'INVALID_OPTIONS') {
        throw usageError(error.message.replace(/^invalid options: serve\.tls/, 'tls'))
      }
      throw new CliError(listenProblem(error, listen), EXIT_RUNTIME, { cause: error })
    }
  } catch (error) {
    stop.cancel()
    hangup?.stop()
    await closeResources(resources)
    await tracing?.shutdown()
    throw error
  }
  resources.self = served.server.address()
  const onShutdown = run.setup?.(served, resources)
  const unwatch = listen.tls === undefined ? undefined : watchTls(listen.tls, served, logger)
  const reload = run.reload
  if (reload !== undefined) {
    hangup?.start(() =>
      reloadConfig(() => reload(logger), generations, served, { logger, drainTimeout }),
    )
  }
  if (run.pidFile !== undefined) await writePidFile(run.pidFile)
  let draining = false
  const state =
    metrics === undefined
      ? undefined
      : createLocalState(metrics, generations, served.url, () => !draining)
  if (state !== undefined) worker?.admin?.(state)
  if (worker === undefined) {
    logger.event('listening', `${command} listening on ${served.url}`, { url: served.url })
  } else {
    worker.listening(served.url)
  }
  let admin: AdminServer | undefined
  if (run.admin !== undefined && state !== undefined) {
    try {
      admin = await listenAdmin(run.admin, localSource(state), logger)
    } catch (error) {
      stop.cancel()
      hangup?.stop()
      unwatch?.()
      onShutdown?.()
      await served.close()
      await closeResources(generations.current)
      await tracing?.shutdown()
      if (run.pidFile !== undefined) await removePidFile(run.pidFile)
      throw error
    }
  }

  const signal = await stop.signal
  draining = true
  unwatch?.()
  hangup?.stop()
  if (worker === undefined) {
    logger.event('shutdown', `${signal}: draining requests and stopping backends`, { signal })
  }
  onShutdown?.()
  const closed = signal === 'reload' ? served.drain() : served.close()
  // The cluster hears that this worker stopped accepting before it hears this.
  worker?.draining()
  await closed
  await generations.settled()
  await closeResources(generations.current)
  await admin?.close()
  await tracing?.shutdown()
  if (run.pidFile !== undefined) await removePidFile(run.pidFile)
  if (worker === undefined) logger.event('stopped', 'stopped')
  return 0
}

/** What a reload logs to and how long the replaced config may drain. */
interface ReloadContext {
  logger: Logger
  drainTimeout: number
}

// Reads and builds the new config; on success it takes the new requests.
async function reloadConfig(
  read: () => Promise<Build>,
  generations: Generations,
  served: Served,
  { logger, drainTimeout }: ReloadContext,
): Promise<void> {
  let build: Build
  try {
    build = await read()
  } catch (error) {
    logger.error(`reload refused: ${messageOf(error)}; the config in use stays`)
    return
  }
  const old = generations.current
  const resources = createResources(logger, {
    transport: old.transport,
    reuse: keptSpawners(old),
    ...(old.metrics === undefined ? {} : { metrics: old.metrics }),
  })
  resources.self = served.server.address()
  let app: EnvironApp | UpgradableApp
  try {
    app = await build(resources)
  } catch (error) {
    await discardResources(resources)
    logger.error(`reload refused: ${messageOf(error)}; the config in use stays`)
    return
  }
  commitTakeOver(resources)
  logger.event('reloaded', 'config reloaded: new requests take the new routes', {})
  // Not awaited: the next reload need not wait for this one's old requests (settled() does).
  void generations.replace({ app, resources }, drainTimeout)
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

/** SIGHUP listened for from the start; what it does is given once the server serves. */
export interface Hangup {
  /** From now on SIGHUP runs `reload` (at once if one came before). */
  start(reload: () => Promise<void>): void
  /** Stops listening for SIGHUP. */
  stop(): void
}

/**
 * Listens for SIGHUP now, before anything else (a SIGHUP with no listener ends the process), and
 * runs the reload given to `start()` for it, one at a time: a SIGHUP during a reload runs it once
 * more after; one before `start()` runs at `start()`.
 *
 * @returns the listener's controls
 */
export function onHangup(): Hangup {
  let reload: (() => Promise<void>) | undefined
  let running: Promise<void> | undefined
  let again = false
  const onSignal = (): void => {
    if (reload === undefined || running !== undefined) {
      again = true
      return
    }
    running = reload().finally(() => {
      running = undefined
      if (again) {
        again = false
        onSignal()
      }
    })
  }
  process.on('SIGHUP', onSignal)
  return {
    start: (given) => {
      reload = given
      if (again) {
        again = false
        onSignal()
      }
    },
    stop: () => process.off('SIGHUP', onSignal),
  }
}

/**
 * Writes the process id to `file`.
 *
 * @param file - the pid file
 * @throws CliError (exit 1) when it cannot be written
 */
export async function writePidFile(file: string): Promise<void> {
  try {
    await writeFile(file, `${process.pid}\n`)
  } catch (error) {
    throw usageError(
      `cannot write the pid file ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`,
    )
  }
}

/**
 * Removes the pid file if it still names this process.
 *
 * @param file - the pid file
 */
export async function removePidFile(file: string): Promise<void> {
  const text = await readFile(file, 'utf8').catch(() => '')
  if (text.trim() === String(process.pid)) await rm(file, { force: true })
}

/** The first SIGINT or SIGTERM (for a worker: the main process's word), and a way to stop waiting for it. */
export interface SignalWait {
  signal: Promise<NodeJS.Signals | 'reload' | 'stop'>
  cancel: () => void
}

/**
 * Waits for the first SIGINT or SIGTERM; after it, a second one exits at once (status 130).
 *
 * @returns the signal's promise and a way to stop listening
 */
export function waitForSignal(): SignalWait {
  let resolve: ((name: NodeJS.Signals) => void) | undefined
  const signal = new Promise<NodeJS.Signals>((settle) => {
    resolve = settle
  })
  const cancel = (): void => {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  const onSignal = (name: NodeJS.Signals): void => {
    cancel()
    process.once('SIGINT', exitNow)
    process.once('SIGTERM', exitNow)
    resolve?.(name)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return { signal, cancel }
}

// A worker drains when the main process says so, or on its own SIGTERM. SIGINT and SIGHUP are
// the main process's to act on (a terminal sends them to every process of the group).
function waitForDrain(worker: WorkerLink): SignalWait {
  process.on('SIGINT', ignoreSignal)
  process.on('SIGHUP', ignoreSignal)
  let onTerm: (() => void) | undefined
  const term = new Promise<'stop'>((resolve) => {
    onTerm = () => resolve('stop')
    process.once('SIGTERM', onTerm)
  })
  return {
    signal: Promise.race([worker.drain, term]),
    cancel: () => {
      if (onTerm !== undefined) process.off('SIGTERM', onTerm)
    },
  }
}

function ignoreSignal(): void {}

function exitNow(): never {
  process.exit(130)
}
