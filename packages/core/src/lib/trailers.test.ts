import { describe, expect, it } from 'vitest'
import type { AppResponse, Transport } from '../index.ts'
import { createProxyApp, exactProxy, toEnviron, toResponse } from '../index.ts'
import { readTrailers } from '../adapter.ts'

function withTrailers(trailers: unknown): AppResponse {
  return { status: 200, headers: [], body: null, trailers: trailers as () => [] }
}

async function drain(response: AppResponse): Promise<string> {
  const chunks: Uint8Array[] = []
  for await (const chunk of response.body ?? []) chunks.push(chunk)
  return Buffer.concat(chunks).toString()
}

// A transport whose response gives its trailers only once its body has been read.
const trailingTransport: Transport = async () => {
  let ended = false
  return {
    status: 200,
    headers: [['content-type', 'application/grpc']],
    body: {
      async *[Symbol.asyncIterator]() {
        yield new TextEncoder().encode('message')
        ended = true
      },
    },
    trailers: () => (ended ? [['grpc-status', '0']] : []),
  }
}

describe('readTrailers', () => {
  it('keeps allowed fields in order with repeats, and drops those a trailer must not carry', () => {
    const response = withTrailers(() => [
      ['grpc-status', '0'],
      ['Content-Type', 'text/html'],
      ['content-md5', 'x'],
      ['Set-Cookie', 'a=b'],
      ['host', 'evil.example'],
      ['transfer-encoding', 'chunked'],
      [':status', '500'],
      ['Authorization', 'Basic eDp5'],
      ['cache-control', 'no-store'],
      ['location', '/elsewhere'],
      ['x-checksum', 'a'],
      ['X-Checksum', 'b'],
    ])
    expect(readTrailers(response)).toEqual([
      ['grpc-status', '0'],
      ['x-checksum', 'a'],
      ['X-Checksum', 'b'],
    ])
  })

  it('gives none for a response without trailers, one whose trailers throw or answer no lines', () => {
    expect(readTrailers({ status: 200, headers: [], body: null })).toEqual([])
    expect(
      readTrailers(
        withTrailers(() => {
          throw new Error('broken')
        }),
      ),
    ).toEqual([])
    expect(readTrailers(withTrailers(() => 'grpc-status: 0'))).toEqual([])
    expect(readTrailers(withTrailers(() => [['x-ok', '1'], 'x', ['x-n', 1], null]))).toEqual([
      ['x-ok', '1'],
    ])
  })
})

describe('AppResponse.trailers', () => {
  it('survives the forwarding apps and a pool, read after the body ended', async () => {
    const environ = toEnviron(new Request('http://front.test/svc/Method', { method: 'POST' }))
    const apps = [
      createProxyApp({ href: 'http://10.0.0.1:50051', transport: trailingTransport }),
      createProxyApp({
        href: ['http://10.0.0.1:50051', 'http://10.0.0.2:50051'],
        transport: trailingTransport,
      }),
      exactProxy({ transport: trailingTransport, allow: ['front.test'] }),
    ]
    for (const app of apps) {
      const response = await app({ ...environ })
      expect(await drain(response)).toBe('message')
      expect(response.trailers?.()).toEqual([['grpc-status', '0']])
    }
  })

  it('is dropped by toResponse: a Fetch Response cannot carry trailers', async () => {
    const response = toResponse(withTrailers(() => [['grpc-status', '0']]))
    expect(response.status).toBe(200)
    expect([...response.headers]).toEqual([])
  })
})
