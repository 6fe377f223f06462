// How a pool chooses a target among those it may use: least outstanding requests by two random
// choices (the default), smooth weighted round robin, or weighted rendezvous hashing on a key.
// Runtime-neutral: no timers, no I/O; `random` is injected for tests.

/** What the balancers read and write on a target. */
export interface Balanced {
  /** The target's weight, ≥ 1. */
  readonly weight: number
  /** A stable name for hashing (the href as written, normalised). */
  readonly key: string
  /** Requests in flight to it (until their response body ended). */
  inFlight: number
  /** Stride pass: grows by `1 / weight` each time it is chosen; orders ties fairly. */
  pass: number
  /** Smooth weighted round robin: the current weight (nginx's algorithm). */
  current: number
}

/** Chooses one of `candidates` (never empty) for a request whose hash key is `key`. */
export type Choose<T extends Balanced> = (candidates: readonly T[], key: string | undefined) => T

/**
 * Least outstanding requests (Envoy's `LEAST_REQUEST`): with equal weights, by the power of two
 * choices (Mitzenmacher 2001): two distinct candidates at random, the one with fewer requests in
 * flight wins, so no target is flooded on a stale count. With unequal weights, the candidate
 * with the fewest requests in flight per unit of weight, as Envoy's weighted variant, so that the
 * requests in flight, and with them the load, divide by weight. A tie goes to the target chosen
 * least per weight (stride scheduling), so that a pool at rest divides requests by weight too.
 *
 * @param random - `Math.random` or a seeded stand-in
 * @returns the chooser
 */
export function leastOutstanding<T extends Balanced>(random: () => number): Choose<T> {
  return (candidates) => {
    const count = candidates.length
    let chosen = candidates[0] as T
    if (count > 1 && sameWeights(candidates)) {
      const first = Math.floor(random() * count)
      let second = Math.floor(random() * (count - 1))
      if (second >= first) second++
      const a = candidates[first] as T
      chosen = lighter(a, candidates[second] as T)
    } else {
      for (let i = 1; i < count; i++) chosen = lighter(chosen, candidates[i] as T)
    }
    advance(chosen, candidates)
    return chosen
  }
}

function lighter<T extends Balanced>(a: T, b: T): T {
  const loadA = a.inFlight / a.weight
  const loadB = b.inFlight / b.weight
  return loadA < loadB ? a : loadB < loadA ? b : a.pass <= b.pass ? a : b
}

function sameWeights(candidates: readonly Balanced[]): boolean {
  const weight = (candidates[0] as Balanced).weight
  for (const candidate of candidates) if (candidate.weight !== weight) return false
  return true
}

/**
 * Smooth weighted round robin (nginx's `ngx_http_upstream_get_peer`): over any run of requests
 * each target gets its share of the total weight, interleaved (`a a b` becomes `a b a`).
 *
 * @returns the chooser
 */
export function roundRobin<T extends Balanced>(): Choose<T> {
  return (candidates) => {
    let total = 0
    let best: T | undefined
    for (const candidate of candidates) {
      candidate.current += candidate.weight
      total += candidate.weight
      if (best === undefined || candidate.current > best.current) best = candidate
    }
    const chosen = best as T
    chosen.current -= total
    advance(chosen, candidates)
    return chosen
  }
}

/**
 * Weighted rendezvous (highest random weight) hashing: every target scores `-weight / ln(u)`
 * with `u` a uniform hash of the key and the target's name in (0, 1), and the highest score wins
 * (Schindelhauer and Schomaker 2005). Adding a target moves only the keys it now wins; removing
 * or ejecting one moves only its keys, each to its next best. A request without a key is
 * balanced by `fallback`.
 *
 * @param fallback - the chooser for a request without a key
 * @returns the chooser
 */
export function rendezvous<T extends Balanced>(fallback: Choose<T>): Choose<T> {
  return (candidates, key) => {
    if (key === undefined || candidates.length === 1) return fallback(candidates, key)
    let best: T | undefined
    let bestScore = -Infinity
    for (const candidate of candidates) {
      const score = rendezvousScore(key, candidate.key, candidate.weight)
      if (
        score > bestScore ||
        (score === bestScore && best !== undefined && candidate.key < best.key)
      ) {
        best = candidate
        bestScore = score
      }
    }
    const chosen = best as T
    advance(chosen, candidates)
    return chosen
  }
}

/**
 * The rendezvous score of a target for a key (exported for tests).
 *
 * @param key - the request's hash key
 * @param name - the target's stable name
 * @param weight - the target's weight
 * @returns the score; the highest wins
 */
export function rendezvousScore(key: string, name: string, weight: number): number {
  // 53 bits of hash mapped into (0, 1), so that ln() is finite and negative.
  const u = (hash53(`${name}\u0000${key}`) + 0.5) / 2 ** 53
  return -weight / Math.log(u)
}

// Keeps stride passes comparable: the chosen target moves on; all are shifted back together
// now and then so that the numbers stay small.
function advance(chosen: Balanced, candidates: readonly Balanced[]): void {
  chosen.pass += 1 / chosen.weight
  if (chosen.pass < 1e9) return
  let least = Infinity
  for (const candidate of candidates) least = Math.min(least, candidate.pass)
  for (const candidate of candidates) candidate.pass -= least
}

/**
 * A 53-bit string hash with good avalanche (cyrb53: two 32-bit multiply-xorshift lanes). Not
 * cryptographic: a client who can choose keys can choose a target, which hashing allows anyway.
 */
function hash53(text: string): number {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507)
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507)
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return 4294967296 * (2097151 & h2) + (h1 >>> 0)
}
