import { describe, expect, it } from 'vitest'
import type { AppResponse, Environ, OutboundRequest, Transport } from '../../index.ts'
import { exactProxy, toEnviron } from '../../index.ts'
import {
  Cancellation,
  cancellationOf,
  setClientCancellation,
  subscribeToCancellation,
} from '../../adapter.ts'

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
        const cancel = cancellationOf(outbound)
        const done = (): void => {
          report({ outbound, reason: cancel.reason })
          reject(cancel.reason)
        }
        if (cancel.aborted) done()
        else cancel.add(done)
      } else {
        // A wrapper that copies the record, as a logging transport would.
        const copy = { ...outbound }
        copy.signal.addEventListener('abort', () => {
          report({ outbound: copy, reason: copy.signal.reason })
          reject(copy.signal.reason)
        })
      }
    })
  if (marked) subscribeToCancellation(transport)
  return { transport, seen }
}

function environWith(signal: AbortSignal): Environ {
  const environ = toEnviron(new Request('http://127.0.0.1:9/x'))
  environ['wsgiproxy.signal'] = signal
  return environ
}

// Forwards through a waiting transport, aborts the client, and returns what the transport saw.
async function clientAbort(
  marked: boolean,
): Promise<{ outbound: OutboundRequest; reason: unknown; status: number }> {
  const client = new AbortController()
  const { transport, seen } = waitingTransport(marked)
  const pending = exactProxy({ allow: ['127.0.0.1'], transport })(environWith(client.signal))
  client.abort()
  const { outbound, reason } = await seen
  return { outbound, reason, status: (await pending).status }
}

describe('forward() cancellation', () => {
  it('gives an unmarked transport a plain record whose copies keep a live signal', async () => {
    const { outbound, reason, status } = await clientAbort(false)
    expect(Object.keys(outbound)).toContain('signal')
    expect(reason).toMatchObject({ code: 'CLIENT_ABORTED' })
    expect(status).toBe(499)
  })

  it('hands a marked transport the cancellation, and a signal on first read that agrees', async () => {
    const { outbound, reason, status } = await clientAbort(true)
    expect(reason).toMatchObject({ code: 'CLIENT_ABORTED' })
    // Created now, after the abort: aborted already, with the same reason.
    expect(outbound.signal.aborted).toBe(true)
    expect(outbound.signal.reason).toBe(reason)
    expect(status).toBe(499)
  })

  it('aborts a marked transport at the headers timeout with the timeout reason', async () => {
    const { transport, seen } = waitingTransport(true)
    const pending = exactProxy({
      allow: ['127.0.0.1'],
      transport,
      timeouts: { upstreamHeaders: 20 },
      onError: () => {},
    })(environWith(new AbortController().signal))
    expect((await seen).reason).toMatchObject({ code: 'UPSTREAM_HEADERS_TIMEOUT' })
    expect((await pending).status).toBe(504)
  })
})

describe('setClientCancellation', () => {
  it('cancels the upstream request when the client cancellation aborts', async () => {
    const { transport, seen } = waitingTransport(true)
    const environ = toEnviron(new Request('http://127.0.0.1:9/x'))
    const client = new Cancellation()
    setClientCancellation(environ, client)
    const pending = exactProxy({ allow: ['127.0.0.1'], transport })(environ)
    client.abort('gone')
    expect((await seen).reason).toMatchObject({ code: 'CLIENT_ABORTED' })
    // The request's own signal never aborted: the cancellation alone carried the news.
    expect(environ['wsgiproxy.signal']?.aborted).toBe(false)
    expect((await pending).status).toBe(499)
  })

  it('answers 499 at once for a client that left before forwarding began', async () => {
    const environ = toEnviron(new Request('http://127.0.0.1:9/x'))
    const client = new Cancellation()
    client.abort('gone')
    setClientCancellation(environ, client)
    const { transport, seen } = waitingTransport(true)
    const response = await exactProxy({ allow: ['127.0.0.1'], transport })(environ)
    expect(response.status).toBe(499)
    expect((await seen).reason).toMatchObject({ code: 'CLIENT_ABORTED' })
  })
})

describe('cancellationOf', () => {
  it('sees a plain request signal as a cancellation with its reason', () => {
    const controller = new AbortController()
    const cancel = cancellationOf({
      url: new URL('http://127.0.0.1:9/'),
      method: 'GET',
      headers: [],
      body: null,
      signal: controller.signal,
    })
    const calls: unknown[] = []
    cancel.add(() => calls.push(cancel.reason))
    expect(cancel.aborted).toBe(false)
    controller.abort('why')
    expect(cancel.aborted).toBe(true)
    expect(calls).toEqual(['why'])
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
