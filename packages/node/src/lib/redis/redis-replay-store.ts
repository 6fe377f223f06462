// A replay store that replicas share (docs/signing.md, "Replay store and replicas"): one atomic
// `SET <prefix><key> 1 NX PX <ttlMs>` per signed request on Redis, Valkey or a Redis Cluster,
// through node-redis. An unreachable or slow Redis is a failure the caller chooses to refuse
// (503 `replay_store_unavailable`) or to accept (no replay check, with a warning per outage).
import { WsgiProxyError } from '@wsgiproxy/core'
import type { ReplayCheck, ReplayStore } from '@wsgiproxy/core'
import { parseOptions } from '@wsgiproxy/core/adapter'
import { createClient, createCluster } from 'redis'
import type { RedisClusterOptions } from 'redis'
import * as z from 'zod'
import { callback, milliseconds, optionsObject } from '../http/_options.ts'

/**
 * What the store uses of a node-redis client or cluster: `createClient()` and `createCluster()`
 * of the `redis` package (node-redis 6.4 or later, for per-command timeouts) both fit.
 */
export interface RedisReplayClient {
  /** Whether `connect()` was called and the client was not closed since. */
  readonly isOpen: boolean
  /** Whether it is connected now. */
  readonly isReady: boolean
  /** Connects. */
  connect(): Promise<unknown>
  /** The same client with options on every command: the store passes its `timeout`. */
  withCommandOptions(options: { timeout: number; rejectInFlight: boolean }): {
    set(
      key: string,
      value: string,
      options: { condition: 'NX'; expiration: { type: 'PX'; value: number } },
    ): Promise<unknown>
  }
}

/** A warning of {@link RedisReplayStore}: once when Redis stops answering, once when it is back. */
export interface RedisReplayStoreWarning {
  /** `REPLAY_STORE_UNAVAILABLE` at the first failure of an outage, `REPLAY_STORE_RECOVERED` after it. */
  code: 'REPLAY_STORE_UNAVAILABLE' | 'REPLAY_STORE_RECOVERED'
  /** What happened and what the store does about it (never a password). */
  message: string
}

/** Options of {@link RedisReplayStore}: exactly one of `url`, `client` and `cluster`. */
export interface RedisReplayStoreOptions {
  /**
   * The Redis (or Valkey) to use, `redis://[[user]:password@]host[:port][/db]` or `rediss://` for
   * TLS. The store creates the client, connects it on first use and closes it in `close()`.
   */
  url?: string
  /**
   * A node-redis client or cluster you own (`createClient()`, `createCluster()`), for settings
   * the other two options do not cover. The store connects it on first use if it was never
   * opened, never closes it and adds no lasting listener to it (only one for the first connection
   * attempt): give it an `error` listener, or a dropped connection crashes the process. Prefer
   * `disableOfflineQueue: true` on it.
   */
  client?: RedisReplayClient
  /**
   * A Redis Cluster, found through these nodes (`redis://` or `rediss://` URLs; a few are enough,
   * the rest is discovered). All of them use the same scheme, user and password, which the store
   * passes on to the nodes it discovers. The store creates the cluster client and closes it in
   * `close()`.
   */
  cluster?: { rootNodes: string[] }
  /** Put before every key, so the nonces have their own key space. Default `'wsgiproxy:nonce:'`. */
  prefix?: string
  /**
   * The longest a check may take, in milliseconds, connecting included; a slower one counts as a
   * failure (see `onUnavailable`). Also how long `close()` waits for replies still pending.
   * Default 500.
   */
  timeout?: number
  /**
   * What a check answers when Redis fails or is too slow: `'refuse'` answers `unavailable`, which
   * the verifier turns into 503 `replay_store_unavailable` (fail closed: a replay cannot slip
   * through); `'accept'` answers `fresh`, so signed requests go on without a replay check while
   * Redis is away (fail open: available, but a captured request can be replayed then). Default
   * `'refuse'`.
   */
  onUnavailable?: 'refuse' | 'accept'
  /**
   * Called once when an outage starts (`REPLAY_STORE_UNAVAILABLE`) and once when a check
   * succeeds again (`REPLAY_STORE_RECOVERED`), in both modes. Default: `console.warn`.
   */
  onWarning?: (warning: RedisReplayStoreWarning) => void
}

const DEFAULT_PREFIX = 'wsgiproxy:nonce:'
const DEFAULT_TIMEOUT_MS = 500
// How long `connect()` waits for the first connection (node-redis's default connect timeout).
const CONNECT_WAIT_MS = 5_000
// Reconnect after 50, 100, 200 ... ms, at most 1 s apart, with up to 100 ms of jitter so that
// replicas do not reconnect in step.
const RECONNECT_CAP_MS = 1_000

const redisUrl = z.custom<string>(
  (value) => typeof value === 'string' && /^rediss?:\/\/[^/?#\s]+/.test(value) && isUrl(value),
  {
    error: (issue) =>
      `expected a redis:// or rediss:// URL such as "redis://127.0.0.1:6379" (got ${JSON.stringify(withoutPassword(issue.input))})`,
  },
)

// A URL as it may be shown in a message: a password in it replaced by `***`.
function withoutPassword(value: unknown): unknown {
  return typeof value === 'string' ? value.replace(/(\/\/[^/@\s]*?:)[^/\s]*@/, '$1***@') : value
}

const redisReplayStoreOptions = optionsObject({
  url: redisUrl.optional(),
  client: z
    .custom<RedisReplayClient>(
      (value) =>
        typeof value === 'object' &&
        value !== null &&
        typeof (value as RedisReplayClient).withCommandOptions === 'function' &&
        typeof (value as RedisReplayClient).connect === 'function',
      {
        error: () =>
          'expected a node-redis client or cluster (createClient() or createCluster() of the redis package, 6.4 or later)',
      },
    )
    .optional(),
  cluster: z
    .strictObject(
      {
        rootNodes: z
          .array(redisUrl, { error: 'expected a list of redis:// URLs' })
          .min(1, 'expected at least one redis:// URL'),
      },
      { error: 'expected { rootNodes: ["redis://host:port", ...] }' },
    )
    .superRefine(({ rootNodes }, context) => {
      // node-redis builds the clients of discovered nodes from one set of options.
      const [first = '', ...others] = rootNodes.map(sharedParts)
      if (others.every((parts) => parts === first)) return
      context.addIssue({
        code: 'custom',
        path: ['rootNodes'],
        message:
          'expected the same scheme, user and password in every URL (the nodes the cluster discovers get them)',
      })
    })
    .optional(),
  prefix: z
    .string({ error: (issue) => `expected a string (got ${typeof issue.input})` })
    .optional(),
  timeout: milliseconds(1).optional(),
  onUnavailable: z
    .enum(['refuse', 'accept'], {
      error: (issue) => `expected "refuse" or "accept" (got ${JSON.stringify(issue.input)})`,
    })
    .optional(),
  onWarning: callback<(warning: RedisReplayStoreWarning) => void>().optional(),
}).superRefine((options, context) => {
  const given = (['url', 'client', 'cluster'] as const).filter((key) => options[key] !== undefined)
  if (given.length === 1) return
  context.addIssue({
    code: 'custom',
    path: [],
    message:
      given.length === 0
        ? 'expected one of url, client or cluster (where Redis is)'
        : `expected only one of url, client or cluster (got ${given.join(' and ')})`,
  })
})

/**
 * A nonce store on Redis that every replica of a backend shares, so a captured signed request
 * cannot be replayed to another replica (docs/signing.md, "Replay store and replicas"). Each
 * check is one atomic command, `SET <prefix><key> 1 NX PX <ttlMs>`: `OK` is `fresh`, nil is
 * `replay`, and Redis expires the key when the signature could no longer be accepted anyway.
 *
 * - Connects on first use (or {@link RedisReplayStore.connect}). Only the first attempt is
 *   waited for (within `timeout`); once it failed, and after a dropped connection, a client it
 *   creates fails commands at once while disconnected (`disableOfflineQueue`) and reconnects in
 *   the background (50 ms doubling, at most 1 s apart). Its `error` events are handled: a dropped
 *   connection never crashes the process.
 * - A check that fails or takes longer than `timeout` answers per `onUnavailable`: `unavailable`
 *   (503 `replay_store_unavailable` from the verifier) or `fresh`. Either way `onWarning` hears
 *   once when an outage starts and once when it ends.
 *
 * @example
 * import { createVerifier } from '@wsgiproxy/core'
 * import { RedisReplayStore } from '@wsgiproxy/node/redis'
 * await using replayStore = new RedisReplayStore({ url: process.env.REDIS_URL })
 * const verifier = createVerifier({ keys, replayStore })
 */
export class RedisReplayStore implements ReplayStore {
  readonly #client: RedisReplayClient
  readonly #owned: boolean
  readonly #where: string
  readonly #prefix: string
  readonly #timeout: number
  readonly #accept: boolean
  readonly #warn: (warning: RedisReplayStoreWarning) => void
  readonly #commands: ReturnType<RedisReplayClient['withCommandOptions']>
  #connecting: Promise<void> | undefined
  // What checks wait for: the first connection attempt, until it succeeds or fails.
  #firstAttempt: Promise<void> | undefined
  #firstAttemptOver = false
  #outage = false
  #closed = false

  /**
   * @param options - where Redis is, key prefix, timeout, failure policy, warning hook
   * @throws WsgiProxyError `INVALID_OPTIONS` for bad options, or none or several of `url`,
   * `client` and `cluster`
   */
  constructor(options: RedisReplayStoreOptions) {
    const opts = parseOptions(redisReplayStoreOptions, options, 'RedisReplayStore')
    this.#prefix = opts.prefix ?? DEFAULT_PREFIX
    this.#timeout = opts.timeout ?? DEFAULT_TIMEOUT_MS
    this.#accept = opts.onUnavailable === 'accept'
    this.#warn = opts.onWarning ?? warnOnConsole
    if (opts.client !== undefined) {
      this.#client = opts.client
      this.#owned = false
      this.#where = 'the given Redis client'
    } else {
      this.#client = opts.url === undefined ? newCluster(opts.cluster) : newClient(opts.url)
      this.#owned = true
      this.#where =
        opts.url === undefined
          ? `the Redis Cluster at ${(opts.cluster?.rootNodes ?? []).map(redact).join(', ')}`
          : `Redis at ${redact(opts.url)}`
      // Without a listener an `error` event (every failed reconnect) would crash the process;
      // failures reach the caller through the checks instead.
      ;(this.#client as unknown as { on(event: 'error', listener: () => void): unknown }).on(
        'error',
        () => {},
      )
    }
    this.#commands = this.#client.withCommandOptions({
      timeout: this.#timeout,
      rejectInFlight: true,
    })
  }

  /**
   * Records `key` for `ttlMs` milliseconds unless it is already recorded.
   *
   * @param key - the nonce with its scope (the verifier passes `keyid + "\0" + nonce`)
   * @param ttlMs - how long the nonce stays recorded, from now
   * @returns `fresh` or `replay`; when Redis fails or is slower than `timeout`, `unavailable`
   * (`onUnavailable: 'refuse'`) or `fresh` (`'accept'`)
   * @throws WsgiProxyError `INVALID_OPTIONS` (as a rejection) when `ttlMs` is not a positive
   * finite number
   */
  async checkAndSet(key: string, ttlMs: number): Promise<ReplayCheck> {
    if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) {
      throw new WsgiProxyError(
        'INVALID_OPTIONS',
        `replay ttlMs must be a positive number of milliseconds (got ${String(ttlMs)})`,
      )
    }
    let reply: unknown
    try {
      reply = await this.#set(`${this.#prefix}${key}`, Math.ceil(ttlMs))
    } catch (error) {
      return this.#failed(error)
    }
    if (reply !== null && String(reply) !== 'OK') {
      return this.#failed(new Error(`SET NX answered ${JSON.stringify(reply)}, not OK or nil`))
    }
    if (this.#outage) {
      this.#outage = false
      this.#warn({
        code: 'REPLAY_STORE_RECOVERED',
        message: `the replay store is back: ${this.#where} answers again`,
      })
    }
    return reply === null ? 'replay' : 'fresh'
  }

  /**
   * Connects now rather than on the first check, to find a wrong URL at startup.
   *
   * @returns when connected
   * @throws WsgiProxyError `REPLAY_STORE_UNAVAILABLE` when the first attempt fails or Redis
   * cannot be reached within 5 s (a client the store created keeps trying in the background;
   * checks answer per `onUnavailable` meanwhile)
   */
  async connect(): Promise<void> {
    const events = this.#client as unknown as Partial<Emitter>
    let onError: ((error: unknown) => void) | undefined
    // node-redis retries a refused connection for ever: its first `error` event is the answer.
    const failed = new Promise<never>((_, reject) => {
      onError = reject
    })
    try {
      const connecting = this.#connect()
      if (connecting === undefined) return
      events.once?.('error', onError as (error: unknown) => void)
      await within(Promise.race([connecting, failed]), CONNECT_WAIT_MS, 'connecting')
    } catch (error) {
      throw new WsgiProxyError(
        'REPLAY_STORE_UNAVAILABLE',
        `the replay store cannot reach ${this.#where}: ${describe(error)}`,
        { cause: error },
      )
    } finally {
      events.off?.('error', onError as (error: unknown) => void)
    }
  }

  /**
   * Closes the client the store created, waiting up to `timeout` for pending replies before it
   * drops the connection; a client given as `client` is left open. Later checks fail (per
   * `onUnavailable`). Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (!this.#owned) return
    const client = this.#client as unknown as Closable
    if (!this.#client.isReady) {
      if (this.#client.isOpen) client.destroy()
      return
    }
    // node-redis's close() waits for every pending reply, a SET that timed out included
    // (`rejectInFlight` ends the check, not the wait for its reply): a frozen Redis would hold it
    // until it answers. A cluster's close() forgets its node clients before waiting for them, so
    // its destroy() would no longer reach them: they are destroyed one by one.
    const nodes = nodeClients(client)
    try {
      await within(client.close(), this.#timeout, 'closing')
    } catch {
      client.destroy()
      for (const node of nodes) node.destroy()
    }
  }

  /** The same as {@link RedisReplayStore.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  // The SET within the timeout, waiting for the first connection attempt when it is still on (the
  // connection counts in the timeout). Otherwise a client that is not connected fails the SET at
  // once (`disableOfflineQueue`): node-redis keeps `connect()` pending while it retries, and
  // waiting for it would make every check take the whole timeout while Redis is away.
  async #set(key: string, ttlMs: number): Promise<unknown> {
    const options = { condition: 'NX', expiration: { type: 'PX', value: ttlMs } } as const
    const attempt = this.#waitFor()
    if (attempt === undefined) return this.#commands.set(key, '1', options)
    const started = performance.now()
    try {
      await within(attempt, this.#timeout, 'connecting')
    } catch (error) {
      // Too slow counts as failed: later checks do not wait for this attempt either.
      this.#firstAttemptOver = true
      throw error
    }
    const left = Math.max(1, Math.ceil(this.#timeout - (performance.now() - started)))
    return this.#client
      .withCommandOptions({ timeout: left, rejectInFlight: true })
      .set(key, '1', options)
  }

  // What a check waits for: the first connection attempt while it is on, else nothing. The
  // attempt ends with `connect()` or, as a failure, with the first `error` event (a refused
  // connection, which node-redis then retries with `connect()` still pending).
  #waitFor(): Promise<void> | undefined {
    const connecting = this.#connect()
    if (connecting === undefined || this.#firstAttemptOver) return undefined
    if (this.#firstAttempt === undefined) {
      const events = this.#client as unknown as Partial<Emitter>
      let onError: ((error: unknown) => void) | undefined
      const failed = new Promise<never>((_, reject) => {
        onError = reject
      })
      events.once?.('error', onError as (error: unknown) => void)
      const attempt = Promise.race([connecting, failed]).finally(() => {
        this.#firstAttemptOver = true
        events.off?.('error', onError as (error: unknown) => void)
      })
      attempt.catch(() => {})
      this.#firstAttempt = attempt
    }
    return this.#firstAttempt
  }

  // Starts connecting when the client is not open; the pending connection, or undefined when
  // there is nothing to wait for (connected, or reconnecting: commands then fail at once).
  #connect(): Promise<void> | undefined {
    if (this.#closed) throw new WsgiProxyError('REPLAY_STORE_UNAVAILABLE', 'the store is closed')
    if (this.#client.isReady) return undefined
    if (this.#connecting === undefined) {
      if (this.#client.isOpen) return undefined
      const connecting = this.#client.connect().then(
        () => {},
        (error: unknown) => {
          // A cluster gives up when no root node answers: the next check tries again.
          if (this.#connecting === connecting) this.#connecting = undefined
          throw error
        },
      )
      connecting.catch(() => {})
      this.#connecting = connecting
    }
    return this.#connecting
  }

  #failed(error: unknown): ReplayCheck {
    if (!this.#outage) {
      this.#outage = true
      this.#warn({
        code: 'REPLAY_STORE_UNAVAILABLE',
        message:
          `the replay store cannot reach ${this.#where} (${describe(error)}): ` +
          (this.#accept
            ? 'signed requests are accepted WITHOUT a replay check until it answers again (onUnavailable: "accept")'
            : 'signed requests are refused with 503 until it answers again (onUnavailable: "refuse")'),
      })
    }
    return this.#accept ? 'fresh' : 'unavailable'
  }
}

interface Emitter {
  once(event: 'error', listener: (error: unknown) => void): unknown
  off(event: 'error', listener: (error: unknown) => void): unknown
}

// What `close()` uses of a node-redis client or cluster (`masters` and `replicas`: a cluster's).
interface Closable {
  close(): Promise<void>
  destroy(): void
  readonly masters?: ReadonlyArray<ClusterNode>
  readonly replicas?: ReadonlyArray<ClusterNode>
}

interface ClusterNode {
  client?: { destroy(): void } | undefined
  pubSub?: { client: { destroy(): void } } | undefined
}

// The connections of a cluster's nodes (none for a client).
function nodeClients(client: Closable): Array<{ destroy(): void }> {
  return [...(client.masters ?? []), ...(client.replicas ?? [])].flatMap((node) => [
    ...(node.client === undefined ? [] : [node.client]),
    ...(node.pubSub === undefined ? [] : [node.pubSub.client]),
  ])
}

function newClient(url: string): RedisReplayClient {
  return createClient({
    url,
    disableOfflineQueue: true,
    socket: { reconnectStrategy },
  }) as unknown as RedisReplayClient
}

function newCluster(cluster: { rootNodes: string[] } | undefined): RedisReplayClient {
  return createCluster(toClusterOptions(cluster?.rootNodes ?? [])) as unknown as RedisReplayClient
}

/**
 * The `createCluster()` options of the store's own cluster client. node-redis builds the clients
 * of the nodes it discovers from `defaults` alone, so the user, password and TLS (`rediss:`) of
 * the root node URLs go there too (the options check that every URL has the same).
 *
 * Internal: exported for the tests, not from `@wsgiproxy/node/redis`.
 *
 * @param rootNodes - `redis://` or `rediss://` URLs
 * @returns the options
 */
export function toClusterOptions(rootNodes: readonly string[]): RedisClusterOptions {
  const first = rootNodes[0] === undefined ? undefined : new URL(rootNodes[0])
  const username = decodeURIComponent(first?.username ?? '')
  const password = decodeURIComponent(first?.password ?? '')
  return {
    rootNodes: rootNodes.map((url) => ({ url })),
    defaults: {
      disableOfflineQueue: true,
      ...(username === '' ? {} : { username }),
      ...(password === '' ? {} : { password }),
      socket:
        first?.protocol === 'rediss:' ? { tls: true, reconnectStrategy } : { reconnectStrategy },
    },
  }
}

// What every root node of a cluster must share: scheme, user and password.
function sharedParts(url: string): string {
  if (!isUrl(url)) return url
  const { protocol, username, password } = new URL(url)
  return JSON.stringify([protocol, username, password])
}

function reconnectStrategy(retries: number): number {
  return Math.min(50 * 2 ** retries, RECONNECT_CAP_MS) + Math.floor(Math.random() * 100)
}

// Resolves or rejects as `promise` does, or rejects after `ms`; the timer is always cleared.
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

// The URL without its user and password, for messages.
function redact(url: string): string {
  try {
    const parsed = new URL(url)
    return `${parsed.protocol}//${parsed.host}`
  } catch {
    return 'an invalid URL'
  }
}

function isUrl(value: string): boolean {
  try {
    const url = new URL(value)
    // node-redis decodes them; a malformed escape would throw there.
    decodeURIComponent(url.username)
    decodeURIComponent(url.password)
    return url.host !== ''
  } catch {
    return false
  }
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  return error.message === '' ? error.name : `${error.name}: ${error.message}`
}

function warnOnConsole(warning: RedisReplayStoreWarning): void {
  console.warn(`wsgiproxy: ${warning.message}`)
}
