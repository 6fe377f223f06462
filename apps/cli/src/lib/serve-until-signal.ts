import type { EnvironApp, UpgradableApp } from '@wsgiproxy/core'
import { serve } from '@wsgiproxy/node'
import type { Served } from '@wsgiproxy/node'
import { closeResources, createResources } from './apps.ts'
import type { Resources } from './apps.ts'
import { CliError, EXIT_RUNTIME } from './errors.ts'
import { formatListen } from './listen.ts'
import type { ListenAddress } from './listen.ts'
import { createLogger } from './log.ts'
import type { LogFormat } from './log.ts'
import type { UpgradeSettings } from './upgrade-settings.ts'

/**
 * Builds the app, listens, logs the address, and waits for SIGINT or SIGTERM; then stops
 * accepting, drains requests in flight, stops every backend and resolves. A second signal
 * stops at once (the spawner's watchdog still kills the backends).
 *
 * @param command - the subcommand, for the `listening` line
 * @param listen - where to listen
 * @param format - the log format
 * @param upgrade - the upgrade settings for `serve()`
 * @param build - makes the app; the resources it takes are closed on shutdown
 * @param setup - called with the server once it listens
 * @returns the exit status, 0 after a clean stop
 * @throws CliError (exit 2) when the address cannot be listened on
 */
export async function serveUntilSignal(
  command: string,
  listen: ListenAddress,
  format: LogFormat,
  upgrade: UpgradeSettings,
  build: (resources: Resources) => EnvironApp | UpgradableApp | Promise<EnvironApp | UpgradableApp>,
  setup?: (served: Served, resources: Resources) => void,
): Promise<number> {
  const logger = createLogger(format)
  const resources = createResources(logger)
  let served: Served
  try {
    const app = await build(resources)
    try {
      served = await serve(app, {
        port: listen.port,
        hostname: listen.hostname,
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
      const code = (error as NodeJS.ErrnoException).code
      const where = formatListen(listen)
      throw new CliError(
        code === 'EADDRINUSE'
          ? `cannot listen on ${where}: the address is in use (stop the other server or pick another --listen)`
          : code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND'
            ? `cannot listen on ${where}: no such local address (use 127.0.0.1, 0.0.0.0 or an address of this host)`
            : `cannot listen on ${where}: ${code ?? (error as Error).message}`,
        EXIT_RUNTIME,
      )
    }
  } catch (error) {
    await closeResources(resources)
    throw error
  }
  resources.self = served.server.address()
  setup?.(served, resources)
  logger.event('listening', `${command} listening on ${served.url}`, { url: served.url })

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const onSignal = (name: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      // A second signal: stop now.
      process.once('SIGINT', exitNow)
      process.once('SIGTERM', exitNow)
      resolve(name)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  logger.event('shutdown', `${signal}: draining requests and stopping backends`, { signal })
  await served.close()
  await closeResources(resources)
  logger.event('stopped', 'stopped')
  return 0
}

function exitNow(): never {
  process.exit(130)
}
