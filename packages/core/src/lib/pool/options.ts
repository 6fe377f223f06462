// The options of an upstream pool (several targets behind one proxy app): their types, defaults
// and schema. docs/pools.md has the behaviour tables.
import * as z from 'zod'
import { milliseconds } from '../schemas.ts'

/** One upstream of a pool. */
export interface UpstreamTarget {
  /** Where to forward, as `createProxyApp`'s `href`. Required. */
  href: string | URL
  /** Its share of the requests against the other targets' weights, 1–1000. Default `1`. */
  weight?: number
}

/**
 * Which target a request goes to:
 *
 * - `'least-outstanding'` (default): two targets at random, the one with fewer requests in flight
 *   per unit of weight (Envoy's `LEAST_REQUEST`); at rest, requests divide by weight;
 * - `'round-robin'`: in turn, by weight (nginx's smooth weighted round robin);
 * - `{ hash: … }`: sticky: the same key goes to the same target while it is available, by
 *   weighted rendezvous hashing, so adding or removing a target moves only the keys that must
 *   move. The key is the client address (`'client-address'`, `REMOTE_ADDR`), a request header
 *   (`{ header: 'X-User' }`) or a cookie (`{ cookie: 'session' }`); a request without it is
 *   balanced by least outstanding requests.
 */
export type BalanceStrategy =
  | 'least-outstanding'
  | 'round-robin'
  | { hash: 'client-address' | { header: string } | { cookie: string } }

/**
 * Passive health (Envoy's outlier detection): a target whose requests fail `consecutiveFailures`
 * times in a row (no connection, a reset, an invalid answer, no headers in time, or a 5xx status)
 * is left out for `baseTime` × the times it has been ejected (up to `maxTime`), then readmitted.
 */
export interface EjectionOptions {
  /** Failures in a row that eject a target. Default `5`, as Envoy's `consecutive_5xx`. */
  consecutiveFailures?: number
  /** The first ejection's length in milliseconds; each further one adds as much. Default `30_000`. */
  baseTime?: number
  /** The longest ejection in milliseconds. Default `300_000`. */
  maxTime?: number
  /**
   * The most targets ejected at once, in percent of the pool (rounded down, but always one of a
   * pool of two or more): the panic threshold that never ejects all. Default `50`.
   */
  maxPercent?: number
}

/** Active health: a periodic `GET` to each target; see docs/pools.md. */
export interface HealthCheckOptions {
  /** The path to ask (below the target's origin, not its href path), starting with `/`. Required. */
  path: string
  /** Between two checks of a target, in milliseconds. Default `5_000`. */
  interval?: number
  /** How long a check may take, in milliseconds; longer fails it. Default `2_000`. */
  timeout?: number
  /** Passed checks in a row that bring a target marked down back. Default `2`. */
  healthyThreshold?: number
  /** Failed checks in a row that mark a target down. Default `2`. The first check decides alone. */
  unhealthyThreshold?: number
}

/**
 * Retries on another target. A request that never reached a target (connection refused or timed
 * out, its body not read) is retried whatever its method; one that failed after it was sent
 * (reset) only when it is a `GET`, `HEAD` or `OPTIONS` without a body. A response, even a 5xx, is
 * never retried; neither is a request whose body was partly sent.
 */
export interface RetryOptions {
  /** Tries per request, the first included, each on another target. Default `3`. */
  attempts?: number
  /**
   * The retry budget: retries in flight of tries that may have reached a target (a reset) may be
   * at most this fraction of the requests in flight (Envoy's `budget_percent`), so a failing pool
   * does not multiply its load; a try that never reached a target loaded none and is not counted.
   * Default `0.5`: when one of two targets dies, the requests it held can all go to the other.
   */
  budget?: number
  /** Retries always allowed in flight, whatever the budget says. Default `3`. */
  minConcurrency?: number
  /** Send the number of tries in this response header (`X-Upstream-Tries`). Default: none. */
  header?: string
}

/** Per-target limits: beyond them requests wait in a bounded queue, then get 503. */
export interface TargetLimits {
  /** Requests in flight to one target at most. Default: unlimited. */
  maxConcurrent?: number
  /** Requests that may wait for a free target; more get 503 at once. Default `100`. */
  maxQueue?: number
  /** How long a request may wait in the queue, in milliseconds; then 503. Default `10_000`. */
  queueTimeout?: number
  /** The `Retry-After` of those 503 answers, in seconds. Default `1`. */
  retryAfter?: number
}

/** The pool options `createProxyApp` takes beside its targets. */
export interface PoolOptions {
  /** How a target is chosen. Default `'least-outstanding'`. */
  balance?: BalanceStrategy
  /** Passive health; `false` never ejects. Default: on, with the defaults of {@link EjectionOptions}. */
  ejection?: EjectionOptions | false
  /** Active health checks. Default: none. */
  healthCheck?: HealthCheckOptions
  /** Retries on another target; `false` never retries. Default: on, see {@link RetryOptions}. */
  retries?: RetryOptions | false
  /** Per-target concurrency limits and the queue. Default: no limit. */
  limits?: TargetLimits
}

const count = (min: number, max: number): z.ZodType<number> =>
  z.custom<number>(
    (value) => Number.isInteger(value) && (value as number) >= min && (value as number) <= max,
    {
      error: (issue) =>
        `expected a whole number from ${min} to ${max} (got ${String(issue.input)})`,
    },
  )
const positiveMs = milliseconds(1)
// RFC 9110 §5.6.2: a field name is a token.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const fieldName = z.string().regex(TOKEN, { error: 'expected a header field name' })

const balanceSchema = z.union(
  [
    z.literal('least-outstanding'),
    z.literal('round-robin'),
    z.strictObject({
      hash: z.union([
        z.literal('client-address'),
        z.strictObject({ header: fieldName }),
        z.strictObject({ cookie: z.string().regex(TOKEN, { error: 'expected a cookie name' }) }),
      ]),
    }),
  ],
  {
    error:
      "expected 'least-outstanding', 'round-robin' or { hash: 'client-address' | { header } | { cookie } }",
  },
)

/** The schemas of {@link PoolOptions}' fields. */
export const POOL_OPTION_FIELDS: Record<keyof PoolOptions, z.ZodType> = {
  balance: balanceSchema.optional(),
  ejection: z
    .union([
      z.literal(false),
      z.strictObject({
        consecutiveFailures: count(1, 1000).optional(),
        baseTime: positiveMs.optional(),
        maxTime: positiveMs.optional(),
        maxPercent: count(0, 100).optional(),
      }),
    ])
    .optional(),
  healthCheck: z
    .strictObject({
      path: z.string().regex(/^\/[^\s#]*$/, { error: 'expected a path starting with "/"' }),
      interval: positiveMs.optional(),
      timeout: positiveMs.optional(),
      healthyThreshold: count(1, 100).optional(),
      unhealthyThreshold: count(1, 100).optional(),
    })
    .optional(),
  retries: z
    .union([
      z.literal(false),
      z.strictObject({
        attempts: count(1, 10).optional(),
        budget: z
          .number({ error: 'expected a fraction from 0 to 1' })
          .min(0, { error: 'expected a fraction from 0 to 1' })
          .max(1, { error: 'expected a fraction from 0 to 1' })
          .optional(),
        minConcurrency: count(0, 100_000).optional(),
        header: fieldName.optional(),
      }),
    ])
    .optional(),
  limits: z
    .strictObject({
      maxConcurrent: count(1, 1_000_000).optional(),
      maxQueue: count(0, 1_000_000).optional(),
      queueTimeout: positiveMs.optional(),
      retryAfter: count(0, 86_400).optional(),
    })
    .optional(),
}

/** One target of a pool, checked: at least one is required. */
export const TARGET_SCHEMA: z.ZodType = z.strictObject({
  href: z.union([z.string(), z.instanceof(URL)], { error: 'expected a URL, as a string or URL' }),
  weight: count(1, 1000).optional(),
})

/** {@link PoolOptions} with every default filled in. */
export interface PoolSettings {
  balance: BalanceStrategy
  ejection:
    { consecutiveFailures: number; baseTime: number; maxTime: number; maxPercent: number } | false
  healthCheck: Required<HealthCheckOptions> | undefined
  retries: { attempts: number; budget: number; minConcurrency: number; header?: string } | false
  limits: {
    maxConcurrent: number
    maxQueue: number
    queueTimeout: number
    retryAfter: number
  }
}

/** Whether any pool option is given (a single href without them needs no pool). */
export function hasPoolOptions(options: PoolOptions): boolean {
  return (
    options.balance !== undefined ||
    options.ejection !== undefined ||
    options.healthCheck !== undefined ||
    options.retries !== undefined ||
    options.limits !== undefined
  )
}

/** The settings of checked {@link PoolOptions}, defaults filled in. */
export function poolSettings(options: PoolOptions): PoolSettings {
  const { ejection, healthCheck, retries, limits } = options
  const retrySettings =
    retries === false
      ? false
      : {
          attempts: retries?.attempts ?? 3,
          budget: retries?.budget ?? 0.5,
          minConcurrency: retries?.minConcurrency ?? 3,
          ...(retries?.header === undefined ? {} : { header: retries.header }),
        }
  return {
    balance: options.balance ?? 'least-outstanding',
    ejection:
      ejection === false
        ? false
        : {
            consecutiveFailures: ejection?.consecutiveFailures ?? 5,
            baseTime: ejection?.baseTime ?? 30_000,
            maxTime: ejection?.maxTime ?? 300_000,
            maxPercent: ejection?.maxPercent ?? 50,
          },
    healthCheck:
      healthCheck === undefined
        ? undefined
        : {
            path: healthCheck.path,
            interval: healthCheck.interval ?? 5_000,
            timeout: healthCheck.timeout ?? 2_000,
            healthyThreshold: healthCheck.healthyThreshold ?? 2,
            unhealthyThreshold: healthCheck.unhealthyThreshold ?? 2,
          },
    retries: retrySettings,
    limits: {
      maxConcurrent: limits?.maxConcurrent ?? Infinity,
      maxQueue: limits?.maxQueue ?? 100,
      queueTimeout: limits?.queueTimeout ?? 10_000,
      retryAfter: limits?.retryAfter ?? 1,
    },
  }
}
