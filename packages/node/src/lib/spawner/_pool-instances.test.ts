import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { BackendProcess } from './_backend-process.ts'
import { PoolInstances } from './_pool-instances.ts'

/** A stand-in for a ready process: its pid and a count in flight. */
function backend(pid: number): BackendProcess {
  const fake = {
    pid,
    inFlight: 0,
    release(): void {
      fake.inFlight--
    },
  }
  return fake as unknown as BackendProcess
}

function instances(
  min: number,
  onIdle = vi.fn<(backend: BackendProcess) => void>(),
): PoolInstances {
  return new PoolInstances({ min, idleTimeout: 300, onIdle })
}

describe('PoolInstances', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 })
  })

  afterEach(() => {
    vi.useRealTimers()
  })

  it('picks the least busy ready instance, ties in turn among the first min', () => {
    const pool = instances(3)
    const [a, b, c] = [backend(1), backend(2), backend(3)]
    for (const each of [a, b, c]) pool.add(each)
    expect([1, 2, 3, 4, 5, 6].map(() => pool.pick()?.pid)).toEqual([1, 2, 3, 1, 2, 3])
    pool.take(a)
    pool.take(b)
    expect(pool.pick()?.pid).toBe(3)
    expect(pool.pick(c)?.pid).not.toBe(3)
  })

  it('gives an extra instance a request only when it is less busy than every steady one', () => {
    const pool = instances(2)
    const [a, b, extra] = [backend(1), backend(2), backend(3)]
    for (const each of [a, b, extra]) pool.add(each)
    expect([1, 2, 3, 4].map(() => pool.pick()?.pid)).toEqual([1, 2, 1, 2])
    pool.take(a)
    pool.take(b)
    expect(pool.pick()?.pid).toBe(3)
  })

  it('stops an instance above min that stayed idle, never one with work in flight', () => {
    const onIdle = vi.fn<(backend: BackendProcess) => void>()
    const pool = instances(1, onIdle)
    const [a, b] = [backend(1), backend(2)]
    pool.add(a)
    // At min: no timer.
    vi.advanceTimersByTime(1_000)
    expect(onIdle).not.toHaveBeenCalled()
    pool.take(a)
    pool.add(b)
    vi.advanceTimersByTime(299)
    pool.take(b)
    vi.advanceTimersByTime(1_000)
    expect(onIdle).not.toHaveBeenCalled()
    pool.release(b)
    vi.advanceTimersByTime(300)
    expect(onIdle.mock.calls).toEqual([[b]])
  })

  it('moves an instance out of routing until it has exited, and counts it in flight', () => {
    const pool = instances(1)
    const [a, b] = [backend(1), backend(2)]
    pool.add(a)
    pool.add(b)
    pool.take(a)
    pool.retire(a)
    expect(pool.ready.map((each) => each.pid)).toEqual([2])
    expect(pool.stateOf(a)).toBe('draining')
    expect(pool.inFlight()).toBe(1)
    expect(pool.forget(a)).toBe('retiring')
    expect(pool.forget(b)).toBe('ready')
    expect(pool.forget(b)).toBeUndefined()
    expect(pool.stateOf(b)).toBe('starting')
  })
})
