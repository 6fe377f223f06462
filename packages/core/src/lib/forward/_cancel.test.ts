import { describe, expect, it } from 'vitest'
import type { AppResponse, Environ, OutboundRequest, Transport } from '../../index.ts'
import { exactProxy, toEnviron } from '../../index.ts'
import { CANCEL, Cancellation } from './_cancel.ts'

// A transport that answers once `signal` (or the cancellation) aborts, with what it saw.
function waitingTransport(marked: boolean): {
  transport: Transport
  seen: Promise<{ outbound: OutboundRequest; reason: unknown }>
} {
  let report!: (value: { outbound: OutboundRequest; reason: unknown }) => void
  const seen = new Promise<{ outbound: OutboundRequest; reason: unknown }>((r) => (report = r))
  const transport: Transport = (outbound) =>
    new Promise<AppResponse>((_resolve, reject) => {
      if (marked) {
        const cancel = (outbound as unknown as Record<symbol, Cancellation>)[CANCEL]
        cancel?.add(() => {
          report({ outbound, reason: cancel.reason })
          reject(cancel.reason)
        })
      } else {
        // A wrapper that copies the record, as a logging transport would.
        const copy = { ...outbound }
        copy.signal.addEventListener('abort', () => {
          report({ outbound: copy, reason: copy.signal.reason })
          reject(copy.signal.reason)
        })
      }
    })
  if (marked) Object.defineProperty(transport, CANCEL, { value: true })
  return { transport, seen }
}

function environWith(signal: AbortSignal): Environ {
  const environ = toEnviron(new Request('http://127.0.0.1:9/x'))
  environ['wsgiproxy.signal'] = signal
  return environ
}

describe('forward() cancellation', () => {
  it('gives an unmarked transport a plain record whose copies keep a live signal', async () => {
    const client = new AbortController()
    const { transport, seen } = waitingTransport(false)
    const pending = exactProxy({ allow: ['127.0.0.1'], transport })(environWith(client.signal))
    client.abort()
    const { outbound, reason } = await seen
    expect(Object.keys(outbound)).toContain('signal')
    expect(reason).toMatchObject({ code: 'CLIENT_ABORTED' })
    expect((await pending).status).toBe(499)
  })

  it('hands a marked transport the cancellation, and a signal on first read that agrees', async () => {
    const client = new AbortController()
    const { transport, seen } = waitingTransport(true)
    const pending = exactProxy({ allow: ['127.0.0.1'], transport })(environWith(client.signal))
    client.abort()
    const { outbound, reason } = await seen
    expect(reason).toMatchObject({ code: 'CLIENT_ABORTED' })
    // Created now, after the abort: aborted already, with the same reason.
    expect(outbound.signal.aborted).toBe(true)
    expect(outbound.signal.reason).toBe(reason)
    expect((await pending).status).toBe(499)
  })

  it('aborts a marked transport at the headers timeout with the timeout reason', async () => {
    const { transport, seen } = waitingTransport(true)
    const pending = exactProxy({
      allow: ['127.0.0.1'],
      transport,
      timeouts: { headers: 20 },
      onError: () => {},
    })(environWith(new AbortController().signal))
    expect((await seen).reason).toMatchObject({ code: 'UPSTREAM_HEADERS_TIMEOUT' })
    expect((await pending).status).toBe(504)
  })
})

describe('Cancellation', () => {
  it('aborts once, calls each listener once, and skips removed ones', () => {
    const cancel = new Cancellation()
    const calls: string[] = []
    const removed = (): void => {
      calls.push('removed')
    }
    cancel.add(() => calls.push('kept'))
    cancel.add(removed)
    cancel.delete(removed)
    const early = cancel.signal
    cancel.abort('first')
    cancel.abort('second')
    expect(calls).toEqual(['kept'])
    expect(cancel.reason).toBe('first')
    expect(early.aborted).toBe(true)
    expect(early.reason).toBe('first')
  })
})
