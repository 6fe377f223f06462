import { describe, expect, it } from 'vitest'
import type { OutboundRequest } from '../types.ts'
import { fetchTransport } from './fetch-transport.ts'
import { exactProxy } from './exact-proxy.ts'
import { toEnviron } from '../environ/environ.ts'

/** What Node's fetch throws when a pooled keep-alive socket was closed under the request. */
function socketClosed(): TypeError {
  const cause = Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' })
  return new TypeError('fetch failed', { cause })
}

/** A fetch that fails with each of `failures` in turn, then answers 200 `ok`. */
function failingFetch(...failures: unknown[]): { fetch: typeof fetch; calls: () => number } {
  let calls = 0
  const fake = async (): Promise<Response> => {
    const failure = failures[calls++]
    if (failure !== undefined) throw failure
    return new Response('ok')
  }
  return { fetch: fake as typeof fetch, calls: () => calls }
}

function outbound(method: string, body: Uint8Array | null = null): OutboundRequest {
  return {
    url: new URL('http://127.0.0.1:9/x'),
    method,
    headers: [['host', '127.0.0.1:9']],
    body:
      body === null
        ? null
        : {
            async *[Symbol.asyncIterator]() {
              yield body
            },
          },
    signal: new AbortController().signal,
  }
}

describe('fetchTransport', () => {
  it('sends a bodiless GET once more when the connection closed under it', async () => {
    const { fetch, calls } = failingFetch(socketClosed())
    const response = await fetchTransport({ fetch })(outbound('GET'))
    expect(response.status).toBe(200)
    expect(calls()).toBe(2)
  })

  it('answers UPSTREAM_RESET when the second attempt fails too, without a third', async () => {
    const { fetch, calls } = failingFetch(socketClosed(), socketClosed())
    await expect(fetchTransport({ fetch })(outbound('GET'))).rejects.toMatchObject({
      code: 'UPSTREAM_RESET',
      message: 'request to http://127.0.0.1:9 failed: other side closed',
    })
    expect(calls()).toBe(2)
  })

  it('sends no TE: a fetch Response gives no trailers back', async () => {
    let seen: Headers | undefined
    const fake = async (_url: unknown, init?: RequestInit): Promise<Response> => {
      seen = new Headers(init?.headers)
      return new Response('ok')
    }
    const request = outbound('GET')
    request.headers.push(['te', 'trailers'], ['x-kept', 'yes'])
    await fetchTransport({ fetch: fake as typeof fetch })(request)
    expect(seen?.get('te')).toBeNull()
    expect(seen?.get('x-kept')).toBe('yes')
  })

  it('never sends a request with a body twice', async () => {
    const { fetch, calls } = failingFetch(socketClosed())
    await expect(
      fetchTransport({ fetch })(outbound('POST', new TextEncoder().encode('x'))),
    ).rejects.toMatchObject({ code: 'UPSTREAM_RESET' })
    expect(calls()).toBe(1)
  })
})

// A fetch whose response sends one chunk and then never another, and ignores the request's signal
// (as Deno's fetch sometimes does for a body read already pending): only the transport itself can
// end the read and release the upstream.
function stallingFetch(): { fetch: typeof fetch; cancelled: Promise<unknown> } {
  let onCancel!: (reason: unknown) => void
  const cancelled = new Promise<unknown>((resolve) => (onCancel = resolve))
  const fake = async (): Promise<Response> => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('partial'))
      },
      cancel: (reason) => onCancel(reason),
    })
    return new Response(body, { headers: { 'content-length': '100' } })
  }
  return { fetch: fake as typeof fetch, cancelled }
}

describe('fetchTransport response bodies', () => {
  it('ends a stalled body at the body timeout and cancels it, even when fetch ignores the abort', async () => {
    const { fetch, cancelled } = stallingFetch()
    const app = exactProxy({
      allow: ['127.0.0.1'],
      transport: fetchTransport({ fetch }),
      timeouts: { upstreamBody: 50 },
      onError: () => {},
    })
    const response = await app(toEnviron(new Request('http://127.0.0.1:9/x')))
    const chunks: Uint8Array[] = []
    const reading = (async () => {
      for await (const chunk of response.body ?? []) chunks.push(chunk)
    })()
    await expect(reading).rejects.toMatchObject({ code: 'UPSTREAM_BODY_TIMEOUT' })
    expect(chunks).toHaveLength(1)
    expect(await cancelled).toMatchObject({ code: 'UPSTREAM_BODY_TIMEOUT' })
  })

  it('cancels the body when the reader stops early', async () => {
    const { fetch, cancelled } = stallingFetch()
    const response = await fetchTransport({ fetch })({
      ...outbound('GET'),
      signal: new AbortController().signal,
    })
    for await (const chunk of response.body ?? []) {
      expect(chunk.byteLength).toBe(7)
      break
    }
    await expect(cancelled).resolves.toBeUndefined()
  })
})
