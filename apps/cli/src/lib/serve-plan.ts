import { availableParallelism } from 'node:os'
import type { RouteInput } from './config-schema.ts'
import type { Config } from './config.ts'
import { durationFlag } from './duration.ts'
import { usageError } from './errors.ts'
import { http2Flags, listenOf, logFormat, tlsFlags, withHttp2 } from './cli-args.ts'
import type { ServeFlags } from './cli-args.ts'
import { adminAddress } from './admin/admin-server.ts'
import { DEFAULT_LISTEN } from './listen.ts'
import type { ListenAddress, ListenChoice } from './listen.ts'
import type { LogFormat } from './log.ts'
import { DEFAULT_DRAIN_MS } from './serve-until-signal.ts'
import { tracingSettings } from './tracing.ts'
import type { TracingSettings } from './tracing.ts'
import { parseUpgradeFlags } from './upgrade-settings.ts'
import type { UpgradeSettings } from './upgrade-settings.ts'

/** What `wsgiproxy serve` serves: the config file with the flags laid over it. */
export interface ServePlan {
  /** The config file. */
  file: string
  listen: ListenChoice
  format: LogFormat
  upgrade: UpgradeSettings
  /** How long requests in flight may go on after a signal or a reload, in ms. */
  drainTimeout: number
  /** Worker processes; `undefined`: serve from this process. */
  workers: number | undefined
  /** The admin listener's address (`--admin`, else `admin.listen`); `undefined`: off. */
  admin: ListenAddress | undefined
  /** OpenTelemetry tracing; `undefined`: off. */
  tracing: TracingSettings | undefined
  routes: RouteInput[]
}

/**
 * The plan of `wsgiproxy serve`: the flags win over the config file.
 *
 * @param values - the parsed flags
 * @param config - the config file, read
 * @param file - its path
 * @returns the plan
 * @throws CliError (exit 1) for a bad flag
 */
export function servePlan(values: ServeFlags, config: Config, file: string): ServePlan {
  const chosen: ListenChoice =
    values.listen !== undefined
      ? listenOf(values)
      : config.listen !== undefined
        ? { address: config.listen, source: { from: 'config', file } }
        : { address: DEFAULT_LISTEN, source: { from: 'default', file } }
  // --tls-cert/--tls-key replace the file's tls.
  const tls = tlsFlags(values) ?? config.tls
  const listen = withHttp2(
    tls === undefined ? chosen : { ...chosen, tls },
    http2Flags(values) ?? config.http2,
  )
  const drain = values['drain-timeout']
  const workers = values.workers === undefined ? config.workers : workersFlag(values.workers)
  return {
    file,
    listen,
    format: logFormat(values['log-format']) ?? config.logFormat ?? 'text',
    upgrade: { ...config.upgrade, ...parseUpgradeFlags(values) },
    drainTimeout:
      drain === undefined
        ? (config.drainTimeout ?? DEFAULT_DRAIN_MS)
        : durationFlag('--drain-timeout', drain),
    workers,
    admin:
      values.admin !== undefined
        ? adminAddress('--admin', values.admin, listen.address)
        : adminAddress(`config file ${file}: admin.listen`, config.admin, listen.address),
    tracing: tracingSettings(config.tracing),
    routes: config.routes,
  }
}

/**
 * What changed between two plans that a reload cannot apply (it takes a restart): the listen
 * address, TLS and HTTP/2, the log format, the admin address and tracing; in one process (no
 * workers) also the upgrade settings, the drain time and the number of workers.
 *
 * @param before - the plan in use
 * @param after - the plan read again
 * @returns the names of the settings, for the warning
 */
export function restartOnlyChanges(before: ServePlan, after: ServePlan): string[] {
  const changed: string[] = []
  if (!same(before.listen.address, after.listen.address)) changed.push('listen')
  if (!same(before.listen.tls, after.listen.tls)) changed.push('tls')
  if (before.listen.http2 !== after.listen.http2) changed.push('http2')
  if (before.format !== after.format) changed.push('logFormat')
  if (!same(before.admin, after.admin)) changed.push('admin')
  if (!same(before.tracing, after.tracing)) changed.push('tracing')
  if (before.workers === undefined || after.workers === undefined) {
    if (before.workers !== after.workers) changed.push('workers')
    if (!same(before.upgrade, after.upgrade)) changed.push('upgrade')
    if (before.drainTimeout !== after.drainTimeout) changed.push('drainTimeout')
  }
  return changed
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

// `--workers N` (1 to 256) or `--workers auto` (one per core).
function workersFlag(value: string): number {
  if (value === 'auto') return availableParallelism()
  if (!/^[1-9]\d{0,2}$/.test(value) || Number(value) > 256) {
    throw usageError(
      `--workers must be a number of processes from 1 to 256, or auto for one per core (got ${JSON.stringify(value)})`,
    )
  }
  return Number(value)
}
