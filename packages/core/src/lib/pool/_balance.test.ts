import { describe, expect, it } from 'vitest'
import type { Balanced } from './_balance.ts'
import { leastOutstanding, rendezvous, roundRobin } from './_balance.ts'

// A seeded generator (mulberry32), so that a failure can be replayed.
function seeded(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function targets(weights: readonly number[]): Balanced[] {
  return weights.map((weight, i) => ({
    weight,
    key: `http://10.0.0.${i}:80`,
    inFlight: 0,
    pass: 0,
    current: 0,
  }))
}

describe('the balancers', () => {
  it.each([
    ['least outstanding', () => leastOutstanding<Balanced>(seeded(1))],
    ['round robin', () => roundRobin<Balanced>()],
  ])('%s divides 10,000 requests at rest by weight', (_name, make) => {
    const pool = targets([1, 2, 3])
    const choose = make()
    const counts = [0, 0, 0]
    for (let i = 0; i < 10_000; i++) counts[pool.indexOf(choose(pool, undefined))]! += 1
    const total = 6
    pool.forEach((target, i) => {
      const expected = (10_000 * target.weight) / total
      expect(Math.abs(counts[i]! - expected) / expected).toBeLessThan(0.1)
    })
  })

  it('least outstanding prefers the target with fewer requests in flight per weight', () => {
    const pool = targets([1, 1])
    pool[0]!.inFlight = 5
    const choose = leastOutstanding<Balanced>(seeded(2))
    for (let i = 0; i < 100; i++) expect(choose(pool, undefined)).toBe(pool[1])
  })

  it('round robin interleaves by weight', () => {
    const pool = targets([2, 1])
    const choose = roundRobin<Balanced>()
    const order = Array.from({ length: 6 }, () => pool.indexOf(choose(pool, undefined)))
    expect(order).toEqual([0, 1, 0, 0, 1, 0])
  })

  it('rendezvous hashing moves only the keys a new target wins', () => {
    const two = targets([1, 1])
    const three = [...two, ...targets([1, 1, 1]).slice(2)]
    const choose = rendezvous<Balanced>(leastOutstanding(seeded(3)))
    let stayed = 0
    let toNew = 0
    let elsewhere = 0
    for (let i = 0; i < 10_000; i++) {
      const key = `user-${i}`
      const before = choose(two, key).key
      const after = choose(three, key).key
      if (before === after) stayed++
      else if (after === three[2]!.key) toNew++
      else elsewhere++
    }
    expect(elsewhere).toBe(0)
    // The new target wins about a third of the keys; every other key stays.
    expect(Math.abs(toNew - 10_000 / 3) / (10_000 / 3)).toBeLessThan(0.1)
    expect(stayed + toNew).toBe(10_000)
  })

  it('rendezvous hashing divides keys by weight and sends a key to its next best when its target is left out', () => {
    const pool = targets([1, 3])
    const choose = rendezvous<Balanced>(leastOutstanding(seeded(4)))
    let heavy = 0
    for (let i = 0; i < 10_000; i++) if (choose(pool, `k${i}`) === pool[1]) heavy++
    expect(Math.abs(heavy - 7_500) / 7_500).toBeLessThan(0.1)
    expect(choose([pool[0]!], 'k1')).toBe(pool[0])
  })

  it('rendezvous hashing without a key balances by the fallback', () => {
    const pool = targets([1, 1])
    const choose = rendezvous<Balanced>(roundRobin())
    expect([choose(pool, undefined), choose(pool, undefined)]).toEqual([pool[0], pool[1]])
  })
})
