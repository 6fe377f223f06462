import { describe, expect, it, vi } from 'vitest'
import type { Mock } from 'vitest'
import { Gate } from './_gate.ts'

function gate(maxQueue = 10): { gate: Gate<string>; onDemand: Mock<() => void> } {
  const onDemand = vi.fn<() => void>()
  return { gate: new Gate<string>({ maxQueue, onDemand }), onDemand }
}

describe('Gate', () => {
  it('gives every waiter the value of one shared round and asks for a start each time', async () => {
    const { gate: g, onDemand } = gate()
    const waits = [g.wait(undefined), g.wait(undefined), g.wait(undefined)]
    expect(onDemand).toHaveBeenCalledTimes(3)
    expect(g.queued).toBe(3)
    const round = g.round()
    expect(g.pending).toBe(round.promise)
    g.resolve(round, 'backend')
    await expect(Promise.all(waits)).resolves.toEqual(['backend', 'backend', 'backend'])
    expect(g.queued).toBe(0)
    expect(g.pending).toBeUndefined()
  })

  it('resolves the open round with resolveOpen, and nothing without one', async () => {
    const { gate: g } = gate()
    g.resolveOpen('nobody waits')
    expect(g.pending).toBeUndefined()
    const waits = [g.wait(undefined), g.wait(undefined)]
    g.resolveOpen('first ready')
    await expect(Promise.all(waits)).resolves.toEqual(['first ready', 'first ready'])
    expect(g.pending).toBeUndefined()
  })

  it('asks for a start before it counts the request', () => {
    const queuedAtDemand: number[] = []
    const g: Gate<string> = new Gate({
      maxQueue: 10,
      onDemand: () => queuedAtDemand.push(g.queued),
    })
    void g.wait(undefined)
    void g.wait(undefined)
    expect(queuedAtDemand).toEqual([0, 1])
  })

  it('refuses a request beyond maxQueue at once with 503 and Retry-After: 1', async () => {
    const { gate: g, onDemand } = gate(2)
    void g.wait(undefined)
    void g.wait(undefined)
    await expect(g.wait(undefined)).rejects.toMatchObject({
      code: 'BACKEND_QUEUE_FULL',
      status: 503,
      retryAfter: 1,
      message: 'the backend is not ready and 2 requests are already waiting for it',
    })
    // A refused request asks for nothing and is not counted.
    expect(onDemand).toHaveBeenCalledTimes(2)
    expect(g.queued).toBe(2)
  })

  it('lets a client leave without settling the round for the others', async () => {
    const { gate: g } = gate()
    const controller = new AbortController()
    const leaving = g.wait(controller.signal)
    const staying = g.wait(undefined)
    controller.abort()
    await expect(leaving).rejects.toMatchObject({ code: 'CLIENT_ABORTED' })
    expect(g.queued).toBe(1)
    g.resolve(g.round(), 'backend')
    await expect(staying).resolves.toBe('backend')
    expect(g.queued).toBe(0)
  })

  it('refuses a client whose signal has already aborted, without counting it', async () => {
    const { gate: g } = gate()
    await expect(g.wait(AbortSignal.abort())).rejects.toMatchObject({ code: 'CLIENT_ABORTED' })
    expect(g.queued).toBe(0)
  })

  it('admits the value in the tick the request leaves the queue', async () => {
    const { gate: g } = gate()
    const seen: Array<[string, number]> = []
    const waiting = g.wait(undefined, (value) => seen.push([value, g.queued]))
    g.resolve(g.round(), 'backend')
    await waiting
    expect(seen).toEqual([['backend', 0]])
  })

  it('opens a new round after a settled one, which an old round cannot settle', async () => {
    const { gate: g } = gate()
    const first = g.round()
    g.reject(first, new Error('start failed'))
    await expect(first.promise).rejects.toThrow('start failed')
    const second = g.round()
    expect(second).not.toBe(first)
    g.resolve(first, 'late')
    expect(g.pending).toBe(second.promise)
  })

  it('rejects every waiter of the open round with rejectOpen and then has none', async () => {
    const { gate: g } = gate()
    const waits = [g.wait(undefined), g.wait(undefined)]
    g.rejectOpen(new Error('closed'))
    for (const wait of waits) await expect(wait).rejects.toThrow('closed')
    expect(g.pending).toBeUndefined()
    expect(g.queued).toBe(0)
    // Nothing open: nothing to reject.
    expect(() => g.rejectOpen(new Error('again'))).not.toThrow()
  })

  it('never leaves an unhandled rejection for a round nobody waits for', async () => {
    const { gate: g } = gate()
    const unhandled = vi.fn<(reason: unknown) => void>()
    process.on('unhandledRejection', unhandled)
    try {
      g.reject(g.round(), new Error('nobody listens'))
      await new Promise((resolve) => setImmediate(resolve))
      expect(unhandled).not.toHaveBeenCalled()
    } finally {
      process.off('unhandledRejection', unhandled)
    }
  })
})
