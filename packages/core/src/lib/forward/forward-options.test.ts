import { describe, expect, it } from 'vitest'
import type { AppResponse, Transport } from '../../index.ts'
import { createProxyApp, exactProxy, toEnviron } from '../../index.ts'

// A transport that never answers: only the headers timeout ends its request.
const silent: Transport = (outbound) =>
  new Promise<AppResponse>((_resolve, reject) => {
    outbound.signal.addEventListener('abort', () => reject(outbound.signal.reason))
  })

function request(app: ReturnType<typeof exactProxy>): Promise<AppResponse> {
  return Promise.resolve(app(toEnviron(new Request('http://127.0.0.1:9/x'))))
}

describe('forwarding timeouts', () => {
  it.each([
    ['timeouts.upstreamHeaders', { upstreamHeaders: 30 }],
    ['the deprecated timeouts.headers', { headers: 30 }],
  ])('ends a silent upstream at %s with 504', async (_, timeouts) => {
    const app = exactProxy({ allow: ['127.0.0.1'], transport: silent, timeouts, onError: () => {} })
    expect((await request(app)).status).toBe(504)
  })

  it('refuses an old and a new name for the same timeout, naming both', () => {
    expect(() =>
      createProxyApp({
        href: 'http://127.0.0.1:9',
        timeouts: { headers: 10, upstreamHeaders: 20 },
      }),
    ).toThrow(
      /createProxyApp\.timeouts\.headers: is the deprecated name of timeouts\.upstreamHeaders/,
    )
    expect(() => exactProxy({ timeouts: { body: 10, upstreamBody: 20 } })).toThrow(
      /exactProxy\.timeouts\.body: .*upstreamBody/,
    )
  })

  it('names the function and the option for a bad value', () => {
    expect(() => exactProxy({ timeouts: { upstreamBody: 0 } })).toThrow(
      /exactProxy\.timeouts\.upstreamBody: expected at least 1 ms/,
    )
  })

  it('passes timeouts.upstreamHeaders to an upgrade target', async () => {
    const app = createProxyApp({
      href: 'http://127.0.0.1:9',
      timeouts: { upstreamHeaders: 1_500 },
    })
    const environ = toEnviron(
      new Request('http://front/ws', { headers: { connection: 'upgrade', upgrade: 'websocket' } }),
    )
    expect(await app.prepareUpgrade(environ)).toMatchObject({ headersTimeout: 1_500 })
  })
})
