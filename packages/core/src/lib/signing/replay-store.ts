import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { fn, parseOptions } from '../options.ts'
import type { ReplayCheck, ReplayStore } from '../types.ts'

/** Options of {@link MemoryReplayStore}. */
export interface MemoryReplayStoreOptions {
  /**
   * Most nonces kept at once; default 100 000 (about 10 MB). Size it as peak signed requests per
   * second x TTL (120 s with the default signature window). A store full of live nonces answers
   * `full`, which the verifier turns into 503.
   */
  maxEntries?: number
  /** The clock, in milliseconds. Default `Date.now`. */
  clock?: () => number
}

const DEFAULT_MAX_ENTRIES = 100_000

const memoryReplayStoreOptions = z.strictObject({
  maxEntries: z
    .number({ error: 'expected a positive integer' })
    .int('expected a positive integer')
    .min(1, 'expected a positive integer')
    .max(Number.MAX_SAFE_INTEGER, 'expected a safe integer')
    .optional(),
  clock: fn<() => number>().optional(),
})

/**
 * An in-memory nonce store for one process: a `Map` in insertion order with an expiry time per
 * entry.
 *
 * - A nonce is live for `ttlMs` from the moment it is recorded; a live nonce answers `replay`.
 * - Expired entries are swept from the head of the map on every call, which is amortized O(1)
 *   because callers use one TTL, so entries expire in insertion order. Entries recorded with a
 *   shorter TTL than an earlier one (or under a clock that went backwards) are still handled
 *   correctly: an expired entry never answers `replay`, and before answering `full` the store
 *   scans for expired entries (at most once per earliest expiry).
 * - When it is full of live entries it answers `full` and **never evicts a live entry**: that
 *   would reopen the replay window for it (docs/signing.md, "Replay store and replicas").
 *
 * It only protects one process. With N replicas that each keep their own store, a captured
 * request can be replayed up to N-1 more times inside its window, so replicas need one shared
 * store: `RedisReplayStore` from `@wsgiproxy/node/redis`, where the whole check is one atomic
 * command, `SET <prefix><key> 1 NX PX <ttlMs>` (`OK` is `fresh`, nil is `replay`), and an
 * unreachable Redis answers `unavailable`, which the verifier turns into 503
 * `replay_store_unavailable` (docs/signing.md, "Replay store and replicas").
 *
 * @example
 * const store = new MemoryReplayStore({ maxEntries: 50_000 })
 * await store.checkAndSet('k1\0nonce', 120_000) // 'fresh'
 * await store.checkAndSet('k1\0nonce', 120_000) // 'replay'
 * @example
 * // Replicas share one store on Redis instead:
 * import { RedisReplayStore } from '@wsgiproxy/node/redis'
 * const shared = new RedisReplayStore({ url: 'redis://redis.internal:6379' })
 * const verifier = createVerifier({ keys, replayStore: shared })
 */
export class MemoryReplayStore implements ReplayStore {
  readonly #entries = new Map<string, number>()
  readonly #maxEntries: number
  readonly #clock: () => number
  // True while expiry times never decrease along insertion order: then the head sweep finds
  // every expired entry. One insert with an earlier expiry than the tail clears it.
  #ordered = true
  #tailExpiry = Number.NEGATIVE_INFINITY
  // A lower bound on every expiry time in the map: before it, no entry can have expired.
  #earliestExpiry = Number.POSITIVE_INFINITY

  /**
   * @param options - capacity and clock
   * @throws WsgiProxyError `INVALID_OPTIONS` when `maxEntries` is not a positive integer or
   * `clock` is not a function
   */
  constructor(options?: MemoryReplayStoreOptions) {
    const opts = parseOptions(memoryReplayStoreOptions, options, 'MemoryReplayStore')
    this.#maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES
    this.#clock = opts.clock ?? Date.now
  }

  /** How many nonces the store holds now; expired ones are swept first. */
  get size(): number {
    const now = this.#clock()
    this.#sweepHead(now)
    if (!this.#ordered) this.#sweepAll(now)
    return this.#entries.size
  }

  /**
   * Records `key` for `ttlMs` milliseconds unless it is already recorded and live.
   *
   * @param key - the nonce with its scope (the verifier passes `keyid + "\0" + nonce`)
   * @param ttlMs - how long the nonce stays recorded, from now
   * @returns `fresh` when recorded now, `replay` when already live, `full` when the store holds
   * `maxEntries` live nonces
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
    const now = this.#clock()
    this.#sweepHead(now)
    const expiresAt = this.#entries.get(key)
    if (expiresAt !== undefined) {
      if (now < expiresAt) return 'replay'
      // Expired but not yet swept (it sits behind a longer-lived entry): forget it.
      this.#entries.delete(key)
    }
    if (this.#entries.size >= this.#maxEntries && !this.#makeRoom(now)) return 'full'
    this.#insert(key, now + ttlMs)
    return 'fresh'
  }

  #insert(key: string, expiresAt: number): void {
    if (this.#entries.size === 0) {
      this.#ordered = true
      this.#earliestExpiry = expiresAt
    } else {
      if (expiresAt < this.#tailExpiry) this.#ordered = false
      this.#earliestExpiry = Math.min(this.#earliestExpiry, expiresAt)
    }
    this.#tailExpiry = expiresAt
    this.#entries.set(key, expiresAt)
  }

  // Deletes expired entries from the head, up to the first live one.
  #sweepHead(now: number): void {
    for (const [key, expiresAt] of this.#entries) {
      if (now < expiresAt) return
      this.#entries.delete(key)
    }
  }

  // The store is full after the head sweep: true when a scan freed room.
  #makeRoom(now: number): boolean {
    // In order, the head sweep already removed every expired entry.
    if (this.#ordered || now < this.#earliestExpiry) return false
    this.#sweepAll(now)
    return this.#entries.size < this.#maxEntries
  }

  // Deletes every expired entry and notes whether the survivors are in expiry order.
  #sweepAll(now: number): void {
    let ordered = true
    let previous = Number.NEGATIVE_INFINITY
    let earliest = Number.POSITIVE_INFINITY
    for (const [key, expiresAt] of this.#entries) {
      if (now >= expiresAt) {
        this.#entries.delete(key)
        continue
      }
      if (expiresAt < previous) ordered = false
      previous = expiresAt
      earliest = Math.min(earliest, expiresAt)
    }
    this.#ordered = ordered
    this.#tailExpiry = previous
    this.#earliestExpiry = earliest
  }
}
