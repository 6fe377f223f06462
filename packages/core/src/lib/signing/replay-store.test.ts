import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { MemoryReplayStore } from './replay-store.ts'
import type { MemoryReplayStoreOptions } from './replay-store.ts'

/** A store on a clock the test moves by hand. */
function storeAt(start: number, options: MemoryReplayStoreOptions = {}) {
  const clock = { now: start }
  const store = new MemoryReplayStore({ ...options, clock: () => clock.now })
  return { store, clock }
}

describe('MemoryReplayStore', () => {
  it('answers fresh for a new nonce and replay for a repeated one', async () => {
    const { store } = storeAt(1_000)
    expect(await store.checkAndSet('k1\0a', 120_000)).toBe('fresh')
    expect(await store.checkAndSet('k1\0a', 120_000)).toBe('replay')
    expect(await store.checkAndSet('k1\0b', 120_000)).toBe('fresh')
    expect(await store.checkAndSet('k2\0a', 120_000)).toBe('fresh')
    expect(store.size).toBe(3)
  })

  it('keeps a nonce for exactly its TTL', async () => {
    const { store, clock } = storeAt(1_000)
    await store.checkAndSet('n', 100)
    clock.now = 1_099
    expect(await store.checkAndSet('n', 100)).toBe('replay')
    clock.now = 1_100
    expect(await store.checkAndSet('n', 100)).toBe('fresh')
    clock.now = 1_199
    expect(await store.checkAndSet('n', 100)).toBe('replay')
  })

  it('sweeps expired entries, so size counts live nonces', async () => {
    const { store, clock } = storeAt(0)
    for (let index = 0; index < 10; index += 1) {
      clock.now = index * 10
      await store.checkAndSet(`n${index}`, 100)
    }
    expect(store.size).toBe(10)
    clock.now = 145 // n0..n4 (expiring at 100..140) are gone
    expect(store.size).toBe(5)
    clock.now = 10_000
    expect(store.size).toBe(0)
  })

  it('answers full when full of live nonces and never evicts one', async () => {
    const { store, clock } = storeAt(0, { maxEntries: 3 })
    for (const nonce of ['a', 'b', 'c']) expect(await store.checkAndSet(nonce, 1_000)).toBe('fresh')
    clock.now = 500
    expect(await store.checkAndSet('d', 1_000)).toBe('full')
    expect(await store.checkAndSet('e', 1_000)).toBe('full')
    expect(store.size).toBe(3)
    // Every recorded nonce is still refused: nothing was evicted to make room.
    for (const nonce of ['a', 'b', 'c'])
      expect(await store.checkAndSet(nonce, 1_000)).toBe('replay')
    // A nonce refused as full was not recorded: it is still full, not a replay.
    expect(await store.checkAndSet('d', 1_000)).toBe('full')
  })

  it('answers fresh again once the nonces that filled it expire', async () => {
    const { store, clock } = storeAt(0, { maxEntries: 2 })
    await store.checkAndSet('a', 1_000)
    clock.now = 400
    await store.checkAndSet('b', 1_000)
    expect(await store.checkAndSet('c', 1_000)).toBe('full')
    clock.now = 1_000 // 'a' expired, 'b' is live
    expect(await store.checkAndSet('c', 1_000)).toBe('fresh')
    expect(await store.checkAndSet('b', 1_000)).toBe('replay')
    expect(await store.checkAndSet('d', 1_000)).toBe('full')
  })

  it('handles a longer TTL at the head: later expired entries do not count as live', async () => {
    const { store, clock } = storeAt(0, { maxEntries: 3 })
    await store.checkAndSet('long', 10_000)
    await store.checkAndSet('short1', 100)
    await store.checkAndSet('short2', 100)
    expect(await store.checkAndSet('x', 100)).toBe('full')
    clock.now = 200
    // 'long' is live at the head; the two expired entries behind it are found anyway.
    expect(await store.checkAndSet('short1', 100)).toBe('fresh')
    expect(await store.checkAndSet('y', 100)).toBe('fresh')
    expect(await store.checkAndSet('z', 100)).toBe('full')
    expect(await store.checkAndSet('long', 100)).toBe('replay')
    expect(store.size).toBe(3)
    clock.now = 400
    expect(store.size).toBe(1)
  })

  it('finds room behind the head after a shorter TTL is recorded past a scan', async () => {
    const { store, clock } = storeAt(0, { maxEntries: 2 })
    await store.checkAndSet('long', 10_000)
    await store.checkAndSet('mid', 5_000)
    expect(await store.checkAndSet('x', 1)).toBe('full') // scans; earliest expiry is 5 000
    clock.now = 5_000
    expect(await store.checkAndSet('short', 10)).toBe('fresh') // 'mid' expired
    clock.now = 5_010
    expect(await store.checkAndSet('after', 10)).toBe('fresh') // 'short' expired at 5 010
  })

  it('survives a clock that goes backwards', async () => {
    const { store, clock } = storeAt(10_000, { maxEntries: 2 })
    await store.checkAndSet('a', 100)
    clock.now = 5_000
    await store.checkAndSet('b', 100)
    expect(await store.checkAndSet('a', 100)).toBe('replay')
    clock.now = 5_100 // 'b' expired, 'a' (until 10 100) is live
    expect(await store.checkAndSet('c', 100)).toBe('fresh')
    expect(await store.checkAndSet('a', 100)).toBe('replay')
  })

  it('matches a model store for any sequence of calls', async () => {
    const step = fc.record({
      advance: fc.nat(150),
      key: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'),
      ttl: fc.constantFrom(50, 100, 300),
    })
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { maxLength: 60 }),
        fc.integer({ min: 1, max: 4 }),
        async (steps, max) => {
          const { store, clock } = storeAt(0, { maxEntries: max })
          const model = new Map<string, number>()
          for (const { advance, key, ttl } of steps) {
            clock.now += advance
            for (const [k, expiresAt] of model) if (clock.now >= expiresAt) model.delete(k)
            const expected = model.has(key) ? 'replay' : model.size >= max ? 'full' : 'fresh'
            if (expected === 'fresh') model.set(key, clock.now + ttl)
            expect(await store.checkAndSet(key, ttl)).toBe(expected)
            expect(store.size).toBe(model.size)
          }
        },
      ),
    )
  })

  it('defaults to 100 000 entries and Date.now', async () => {
    const store = new MemoryReplayStore()
    for (let index = 0; index < 100_000; index += 1) {
      expect(await store.checkAndSet(`n${index}`, 60_000)).toBe('fresh')
    }
    expect(await store.checkAndSet('one-more', 60_000)).toBe('full')
    expect(store.size).toBe(100_000)
  })

  it.each([
    [{ maxEntries: 0 }],
    [{ maxEntries: -1 }],
    [{ maxEntries: 1.5 }],
    [{ maxEntries: '10' }],
    [{ clock: 5 }],
    [{ ttl: 5 }],
  ])('refuses options %j with INVALID_OPTIONS', (options) => {
    expect(() => new MemoryReplayStore(options as MemoryReplayStoreOptions)).toThrow(
      expect.objectContaining({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(/^invalid options: MemoryReplayStore/),
      }),
    )
  })

  it.each([0, -5, Number.NaN, Number.POSITIVE_INFINITY])('rejects a ttlMs of %s', async (ttl) => {
    const { store } = storeAt(0)
    await expect(store.checkAndSet('n', ttl)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' })
    expect(store.size).toBe(0)
  })
})
