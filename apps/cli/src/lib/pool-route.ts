// The pool keys of a proxy route (docs/pools.md) as createProxyApp takes them, and the pool's
// events in the command's log.
import type { PoolEventDetail, PoolOptions, ProxyAppOptions, UpstreamPool } from '@wsgiproxy/core'
import type { ProxyRoute } from './config-schema.ts'
import { durationFlag, toMs } from './duration.ts'
import { usageError } from './errors.ts'
import type { Logger } from './log.ts'

/**
 * The targets and pool options of a proxy route, durations in milliseconds.
 *
 * @param route - the route as configured
 * @returns the `createProxyApp` options they give
 */
export function poolOptionsOf(
  route: ProxyRoute,
): Pick<ProxyAppOptions, 'href' | 'targets'> & PoolOptions {
  const out: Pick<ProxyAppOptions, 'href' | 'targets'> & PoolOptions = {}
  if (route.href !== undefined) out.href = route.href
  if (route.targets !== undefined) {
    out.targets = route.targets.map(({ href, weight }) =>
      weight === undefined ? { href } : { href, weight },
    )
  }
  if (route.balance !== undefined) out.balance = route.balance
  const { ejection, healthCheck, retries, limits } = route
  if (ejection !== undefined) {
    out.ejection =
      ejection === false
        ? false
        : defined({
            consecutiveFailures: ejection.consecutiveFailures,
            baseTime: msOf(ejection.baseTime),
            maxTime: msOf(ejection.maxTime),
            maxPercent: ejection.maxPercent,
          })
  }
  if (healthCheck !== undefined) {
    out.healthCheck = {
      path: healthCheck.path,
      ...defined({
        interval: msOf(healthCheck.interval),
        timeout: msOf(healthCheck.timeout),
        healthyThreshold: healthCheck.healthyThreshold,
        unhealthyThreshold: healthCheck.unhealthyThreshold,
      }),
    }
  }
  if (retries !== undefined) out.retries = retries === false ? false : defined({ ...retries })
  if (limits !== undefined) {
    out.limits = defined({
      maxConcurrent: limits.maxConcurrent,
      maxQueue: limits.maxQueue,
      queueTimeout: msOf(limits.queueTimeout),
      retryAfter: limits.retryAfter,
    })
  }
  return out
}

/**
 * Logs a pool's `ejected` and `restored` events:
 * `pool /api: http://127.0.0.1:9001 ejected for 30000 ms (failures)`.
 *
 * @param pool - the pool
 * @param path - the route's path, to tell pools apart
 * @param logger - the command's logger
 */
export function watchPool(pool: UpstreamPool, path: string, logger: Logger): void {
  for (const type of ['ejected', 'restored'] as const) {
    pool.addEventListener(type, (event) => {
      const { href, reason, durationMs } = (event as CustomEvent<PoolEventDetail>).detail
      const length = durationMs === undefined ? '' : ` for ${durationMs} ms`
      logger.event(type, `pool ${path}: ${href} ${type}${length} (${reason})`, {
        route: path,
        target: href,
        reason,
        ...(durationMs === undefined ? {} : { ms: durationMs }),
      })
    })
  }
}

function msOf(value: string | number | undefined): number | undefined {
  return value === undefined ? undefined : Math.max(1, toMs(value))
}

// The object without its undefined values (exactOptionalPropertyTypes).
function defined<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as {
    [K in keyof T]: Exclude<T[K], undefined>
  }
}

/** The flags of `wsgiproxy proxy` for a pool of hrefs. */
export const POOL_OPTIONS = {
  balance: { type: 'string' },
  'health-path': { type: 'string' },
  'health-interval': { type: 'string' },
  'max-concurrent': { type: 'string' },
} as const

/**
 * The pool keys of a proxy route from the `wsgiproxy proxy` flags.
 *
 * @param values - the parsed flags
 * @returns the route keys
 * @throws CliError (exit 2) for a value the flag does not take
 */
export function poolRouteOptions(values: {
  balance?: string | undefined
  'health-path'?: string | undefined
  'health-interval'?: string | undefined
  'max-concurrent'?: string | undefined
}): Pick<ProxyRoute, 'balance' | 'healthCheck' | 'limits'> {
  const out: Pick<ProxyRoute, 'balance' | 'healthCheck' | 'limits'> = {}
  if (values.balance !== undefined) out.balance = balanceFlag(values.balance)
  const path = values['health-path']
  if (path !== undefined) {
    if (!path.startsWith('/')) {
      throw usageError(`proxy: --health-path must start with "/" (got ${JSON.stringify(path)})`)
    }
    const interval = values['health-interval']
    out.healthCheck = {
      path,
      ...(interval === undefined ? {} : { interval: durationFlag('--health-interval', interval) }),
    }
  } else if (values['health-interval'] !== undefined) {
    throw usageError('proxy: --health-interval needs --health-path (the path to check)')
  }
  const max = values['max-concurrent']
  if (max !== undefined) {
    if (!/^[1-9]\d{0,6}$/.test(max)) {
      throw usageError(
        `proxy: --max-concurrent must be a whole number from 1 to 9999999 (got ${JSON.stringify(max)})`,
      )
    }
    out.limits = { maxConcurrent: Number(max) }
  }
  return out
}

// `--balance`: a strategy, or the key of a sticky hash.
function balanceFlag(value: string): NonNullable<ProxyRoute['balance']> {
  if (value === 'least-outstanding' || value === 'round-robin') return value
  if (value === 'client-address') return { hash: 'client-address' }
  const match = /^(header|cookie):([!#$%&'*+\-.^_`|~0-9A-Za-z]+)$/.exec(value)
  if (match?.[1] === 'header') return { hash: { header: match[2] as string } }
  if (match?.[1] === 'cookie') return { hash: { cookie: match[2] as string } }
  throw usageError(
    `proxy: --balance must be least-outstanding, round-robin, client-address, header:NAME or cookie:NAME (got ${JSON.stringify(value)})`,
  )
}
