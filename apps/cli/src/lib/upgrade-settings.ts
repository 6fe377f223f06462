import type { UpgradeInput } from './config-schema.ts'
import { protocolName } from './config-schema.ts'
import { durationFlag, toMs } from './duration.ts'
import { usageError } from './errors.ts'

/** Upgrade (WebSocket) settings for `serve()`, from the config file or the flags. */
export interface UpgradeSettings {
  /** `upgradeProtocols`. */
  protocols?: string[]
  /** `upgradeIdleTimeout` in milliseconds; 0 keeps idle tunnels open. */
  idleTimeout?: number
  /** `maxUpgradeConnections`. */
  maxConnections?: number
}

/**
 * The upgrade settings of the config file's `upgrade` section.
 *
 * @param input - the section as the schema accepted it
 * @returns the settings, durations in milliseconds (`false` is 0: off)
 */
export function upgradeOf(input: UpgradeInput | undefined): UpgradeSettings {
  const settings: UpgradeSettings = {}
  if (input === undefined) return settings
  if (input.protocols !== undefined) settings.protocols = input.protocols
  if (input.idleTimeout !== undefined) {
    settings.idleTimeout = input.idleTimeout === false ? 0 : toMs(input.idleTimeout)
  }
  if (input.maxConnections !== undefined) settings.maxConnections = input.maxConnections
  return settings
}

/** The upgrade flags of a serving subcommand, as `parseArgs` gives them. */
export interface UpgradeFlags {
  'upgrade-protocol'?: string[] | undefined
  'upgrade-idle'?: string | undefined
  'max-upgrades'?: string | undefined
}

/**
 * The upgrade settings of `--upgrade-protocol NAME` (repeatable), `--upgrade-idle DURATION`
 * (0 keeps idle tunnels open) and `--max-upgrades N`.
 *
 * @param flags - the flag values
 * @returns the settings the flags give
 * @throws CliError (exit 1) naming the flag and what it expects
 */
export function parseUpgradeFlags(flags: UpgradeFlags): UpgradeSettings {
  const settings: UpgradeSettings = {}
  const protocols = flags['upgrade-protocol']
  if (protocols !== undefined) {
    for (const protocol of protocols) {
      if (!protocolName.safeParse(protocol).success) {
        throw usageError(
          `--upgrade-protocol must be a protocol name such as websocket (got ${JSON.stringify(protocol)})`,
        )
      }
    }
    settings.protocols = protocols
  }
  const idle = flags['upgrade-idle']
  if (idle !== undefined) settings.idleTimeout = durationFlag('--upgrade-idle', idle)
  const max = flags['max-upgrades']
  if (max !== undefined) {
    if (!/^[1-9][0-9]{0,14}$/.test(max)) {
      throw usageError(
        `--max-upgrades must be a whole number of at least 1 (got ${JSON.stringify(max)})`,
      )
    }
    settings.maxConnections = Number(max)
  }
  return settings
}
