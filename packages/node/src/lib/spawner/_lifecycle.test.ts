import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Lifecycle, TRANSITIONS } from './_lifecycle.ts'
import type { SpawnerState } from './spawner.ts'

const BACKOFF = { base: 1_000, max: 4_000, reset: 60_000 }

function lifecycle(idleTimeout: number | false = false): Lifecycle {
  return new Lifecycle({ backoff: BACKOFF, idleTimeout })
}

/** A lifecycle moved along `path` from `idle`. */
function at(path: SpawnerState[], idleTimeout: number | false = false): Lifecycle {
  const life = lifecycle(idleTimeout)
  for (const state of path) life.to(state)
  return life
}

function fail(life: Lifecycle, times: number): void {
  for (let i = 0; i < times; i++) life.countFailure()
}

describe('Lifecycle', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 })
  })

  afterEach(() => {
    vi.useRealTimers()
  })

  it('starts idle and makes the moves of the state table', () => {
    const life = lifecycle()
    expect(life.state).toBe('idle')
    life.to('starting')
    life.to('ready')
    life.to('stopping')
    life.to('starting')
    life.to('idle')
    expect(life.state).toBe('idle')
  })

  it('refuses a move the table does not have, and every move out of closed', () => {
    expect(() => lifecycle().to('ready')).toThrow('no move from idle to ready')
    expect(() => at(['starting', 'backoff']).to('starting')).toThrow(
      'no move from backoff to starting',
    )
    const states = Object.keys(TRANSITIONS) as SpawnerState[]
    for (const state of states.filter((s) => s !== 'closed')) {
      expect(TRANSITIONS[state]).toContain('closed')
    }
    expect(TRANSITIONS.closed).toEqual([])
    expect(() => at(['closed']).to('idle')).toThrow('no move from closed to idle')
  })

  it('backs off after two failures in a row, doubling the delay up to max', () => {
    const delays: number[] = []
    for (const failures of [2, 3, 4, 5]) {
      const life = at(['starting'])
      fail(life, failures)
      expect(life.mustBackOff).toBe(true)
      delays.push(life.backOff().delayMs)
    }
    expect(delays).toEqual([1_000, 2_000, 4_000, 4_000])
    const once = at(['starting'])
    fail(once, 1)
    expect(once.mustBackOff).toBe(false)
  })

  it('refuses starts until retryAt, then goes back to idle by itself', () => {
    const life = at(['starting'])
    fail(life, 3)
    const { delayMs, retryAt } = life.backOff()
    expect(life.state).toBe('backoff')
    expect(retryAt).toBe(Date.now() + delayMs)
    expect(life.retryAt).toBe(retryAt)
    expect(life.retryAfter).toBe(2)
    vi.advanceTimersByTime(delayMs - 1)
    expect(life.state).toBe('backoff')
    vi.advanceTimersByTime(1)
    expect(life.state).toBe('idle')
    expect(life.retryAt).toBeUndefined()
    // The count stays: the next failure backs off longer.
    expect(life.failures).toBe(3)
  })

  it('rounds Retry-After up to whole seconds, at least 1', () => {
    const life = at(['starting'])
    fail(life, 2)
    life.backOff()
    vi.advanceTimersByTime(999)
    expect(life.retryAfter).toBe(1)
    expect(lifecycle().retryAfter).toBe(1)
  })

  it('ends a backoff at once with endBackoff, the count cleared', () => {
    const life = at(['starting'])
    fail(life, 2)
    life.backOff()
    life.endBackoff()
    expect(life.state).toBe('idle')
    expect(life.failures).toBe(0)
    expect(life.retryAt).toBeUndefined()
    life.to('starting')
    vi.runAllTimers()
    // The backoff's own timer no longer acts.
    expect(life.state).toBe('starting')
  })

  it('holds starts for the backoff delay without leaving its state (a pool still serving)', () => {
    const life = at(['starting', 'ready'])
    fail(life, 3)
    const ended = vi.fn<() => void>()
    expect(life.holdStarts(ended)).toEqual({ delayMs: 2_000, retryAt: 2_000 })
    expect(life.state).toBe('ready')
    expect(life.retryAt).toBe(2_000)
    vi.advanceTimersByTime(1_999)
    expect(ended).not.toHaveBeenCalled()
    vi.advanceTimersByTime(1)
    expect(ended).toHaveBeenCalledOnce()
    expect(life.retryAt).toBeUndefined()
    expect(life.state).toBe('ready')
  })

  it('ends a hold with endBackoff, the count cleared and the state kept', () => {
    const life = at(['starting', 'ready'])
    fail(life, 2)
    const ended = vi.fn<() => void>()
    life.holdStarts(ended)
    life.endBackoff()
    expect(life).toMatchObject({ state: 'ready', failures: 0, retryAt: undefined })
    vi.runAllTimers()
    expect(ended).not.toHaveBeenCalled()
  })

  it('clears the failure count after a backend stayed ready for backoff.reset', () => {
    const life = at(['starting', 'ready'])
    fail(life, 1)
    life.armReset()
    vi.advanceTimersByTime(BACKOFF.reset - 1)
    expect(life.failures).toBe(1)
    vi.advanceTimersByTime(1)
    expect(life.failures).toBe(0)
  })

  it('keeps the failure count when the backend goes before the reset time', () => {
    const life = at(['starting', 'ready'])
    fail(life, 1)
    life.armReset()
    life.disarmReset()
    vi.runAllTimers()
    expect(life.failures).toBe(1)
  })

  it('counts only a crash after a very short life as a failure', () => {
    const life = lifecycle()
    expect(life.countCrash(5_000)).toBe(false)
    expect(life.failures).toBe(0)
    expect(life.countCrash(999)).toBe(true)
    expect(life.failures).toBe(1)
  })

  it('calls onIdle once after idleTimeout when ready, counted from the last arming', () => {
    const life = at(['starting', 'ready'], 500)
    const onIdle = vi.fn<() => void>()
    life.armIdle(onIdle)
    vi.advanceTimersByTime(400)
    life.armIdle(onIdle)
    vi.advanceTimersByTime(400)
    expect(onIdle).not.toHaveBeenCalled()
    vi.advanceTimersByTime(100)
    expect(onIdle).toHaveBeenCalledTimes(1)
    vi.runAllTimers()
    expect(onIdle).toHaveBeenCalledTimes(1)
  })

  it('never arms the idle timer when not ready or without idleTimeout, and disarms it', () => {
    const onIdle = vi.fn<() => void>()
    at(['starting'], 500).armIdle(onIdle)
    at(['starting', 'ready'], false).armIdle(onIdle)
    const disarmed = at(['starting', 'ready'], 500)
    disarmed.armIdle(onIdle)
    disarmed.disarmIdle()
    vi.runAllTimers()
    expect(onIdle).not.toHaveBeenCalled()
  })

  it('clears every timer on close', () => {
    const onIdle = vi.fn<() => void>()
    const ready = at(['starting', 'ready'], 500)
    ready.armIdle(onIdle)
    fail(ready, 1)
    ready.armReset()
    ready.close()
    const backingOff = at(['starting'])
    fail(backingOff, 2)
    backingOff.backOff()
    backingOff.close()
    vi.runAllTimers()
    expect(onIdle).not.toHaveBeenCalled()
    expect(ready.failures).toBe(1)
    expect(backingOff.state).toBe('closed')
    expect(backingOff.retryAt).toBeUndefined()
    expect(vi.getTimerCount()).toBe(0)
  })
})
