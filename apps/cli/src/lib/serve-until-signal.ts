import type { EnvironApp, UpgradableApp } from '@wsgiproxy/core'
import { serve } from '@wsgiproxy/node'
import type { Served } from '@wsgiproxy/node'
import { closeResources, createResources } from './apps.ts'
import type { Resources } from './apps.ts'
import { WsgiProxyError } from '@wsgiproxy/core'
import { CliError, EXIT_RUNTIME, usageError } from './errors.ts'
import { readTls, watchTls } from './tls-files.ts'
import { listenProblem } from './listen.ts'
import type { ListenChoice } from './listen.ts'
import { createLogger } from './log.ts'
import type { LogFormat } from './log.ts'
import type { UpgradeSettings } from './upgrade-settings.ts'

/**
 * Builds the app, listens, logs the address, and waits for SIGINT or SIGTERM; then stops
 * accepting, drains requests in flight, stops every backend and resolves. A second signal
 * stops at once (the spawner's watchdog still kills the backends).
 *
 * @param command - the subcommand, for the `listening` line
 * @param listen - where to listen, and where that came from (for the message when it fails)
 * @param format - the log format
 * @param upgrade - the upgrade settings for `serve()`
 * @param build - makes the app; the resources it takes are closed on shutdown
 * @param setup - called with the server once it listens; what it returns is called when the
 * signal comes, before the server drains (to stop what the server does not track, such as
 * CONNECT tunnels)
 * @returns the exit status, 0 after a clean stop
 * @throws CliError (exit 2) when the address cannot be listened on, saying how to pick another
 */
export async function serveUntilSignal(
  command: string,
  listen: ListenChoice,
  format: LogFormat,
  upgrade: UpgradeSettings,
  build: (resources: Resources) => EnvironApp | UpgradableApp | Promise<EnvironApp | UpgradableApp>,
  setup?: (served: Served, resources: Resources) => (() => void) | undefined,
): Promise<number> {
  // Listen for the signals before anything else: one that came before the listener would end
  // the process by its default action, as if it had crashed (exit by SIGINT, not 0). A signal
  // during the start stops the server as soon as it listens.
  const stop = waitForSignal()
  const logger = createLogger(format)
  const resources = createResources(logger)
  let served: Served
  try {
    const tls = listen.tls === undefined ? undefined : await readTls(listen.tls)
    const app = await build(resources)
    try {
      served = await serve(app, {
        port: listen.address.port,
        hostname: listen.address.hostname,
        ...(tls === undefined ? {} : { tls }),
        ...(listen.http2 === true ? { http2: true } : {}),
        ...(upgrade.protocols === undefined ? {} : { upgradeProtocols: upgrade.protocols }),
        ...(upgrade.idleTimeout === undefined ? {} : { upgradeIdleTimeout: upgrade.idleTimeout }),
        ...(upgrade.maxConnections === undefined
          ? {}
          : { maxUpgradeConnections: upgrade.maxConnections }),
        onError: (error) => {
          logger.error(error instanceof Error ? error.message : String(error))
        },
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
    await closeResources(resources)
    throw error
  }
  resources.self = served.server.address()
  const onShutdown = setup?.(served, resources)
  const unwatch = listen.tls === undefined ? undefined : watchTls(listen.tls, served, logger)
  logger.event('listening', `${command} listening on ${served.url}`, { url: served.url })

  const signal = await stop.signal
  unwatch?.()
  logger.event('shutdown', `${signal}: draining requests and stopping backends`, { signal })
  onShutdown?.()
  await served.close()
  await closeResources(resources)
  logger.event('stopped', 'stopped')
  return 0
}

/** The first SIGINT or SIGTERM, and a way to stop waiting for it. */
interface SignalWait {
  signal: Promise<NodeJS.Signals>
  cancel: () => void
}

// After the first signal, a second one stops at once.
function waitForSignal(): SignalWait {
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

function exitNow(): never {
  process.exit(130)
}
