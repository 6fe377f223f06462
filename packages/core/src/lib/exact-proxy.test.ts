import { afterEach, describe, expect, it } from 'vitest'
import type { AppResponse, Environ, OutboundRequest, Transport } from '../index.ts'
import { WsgiProxyError, exactProxy, fetchTransport, toEnviron, toResponse } from '../index.ts'
import { describeForwarding } from '../test/forwarding-suite.ts'
import { closeAll, send, startFetchFront, startUpstream } from '../test/servers.ts'

describeForwarding('toFetchHandler on @hono/node-server, fetchTransport', (port, options) => {
  const proxy = exactProxy(options)
  return startFetchFront((environ) =>
    proxy({
      ...environ,
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(port),
      HTTP_HOST: `127.0.0.1:${port}`,
    }),
  )
})

async function text(response: AppResponse): Promise<string> {
  const chunks: Uint8Array[] = []
  for await (const chunk of response.body ?? []) chunks.push(chunk)
  return Buffer.concat(chunks).toString()
}

function recordingTransport(answer: Partial<AppResponse> = {}): {
  transport: Transport
  sent: OutboundRequest[]
} {
  const sent: OutboundRequest[] = []
  return {
    sent,
    transport: async (outbound) => {
      sent.push(outbound)
      return { status: 200, headers: [], body: null, ...answer }
    },
  }
}

function environOf(url: string, init?: RequestInit): Environ {
  return toEnviron(new Request(url, init))
}

const failing: Transport = async () => {
  throw new WsgiProxyError('UPSTREAM_RESET', 'reset')
}

describe('exactProxy', () => {
  afterEach(closeAll)

  it('connects to SERVER_NAME:SERVER_PORT and sends HTTP_HOST as Host', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport })
    await app({
      ...environOf('http://public.example/x?q=1'),
      HTTP_HOST: 'public.example',
      SERVER_NAME: '10.0.0.5',
      SERVER_PORT: '8080',
    })
    expect(sent[0]?.url.href).toBe('http://10.0.0.5:8080/x?q=1')
    expect(sent[0]?.headers).toContainEqual(['host', 'public.example'])
  })

  it('brackets IPv6 SERVER_NAME and sends a Host when the environ has none', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport })
    const env: Environ = { ...environOf('http://h/'), SERVER_NAME: '::1', SERVER_PORT: '9000' }
    delete env.HTTP_HOST
    await app(env)
    expect(sent[0]?.url.host).toBe('[::1]:9000')
    expect(sent[0]?.headers).toContainEqual(['host', '[::1]:9000'])
  })

  it('builds the path from quoted SCRIPT_NAME + PATH_INFO, keeping %2F from the raw path', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport })
    const env = environOf('http://h/app/a%2Fb/%E2%9C%93')
    await app({ ...env, SCRIPT_NAME: '/app', PATH_INFO: '/a/b/✓' })
    expect(sent[0]?.url.pathname).toBe('/app/a%2Fb/%E2%9C%93')
    await app({ ...env, SCRIPT_NAME: '/mounted', PATH_INFO: '/a/b/✓' })
    expect(sent[0 + 1]?.url.pathname).toBe('/mounted/a%2Fb/%E2%9C%93')
  })

  it('answers 502 with a clear detail for a scheme other than http and https', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport, onError: () => {} })
    const res = await app({ ...environOf('http://h/'), 'wsgi.url_scheme': 'ftp' as 'http' })
    expect(res.status).toBe(502)
    expect(await text(res)).toContain('wsgi.url_scheme must be \\"http\\" or \\"https\\"')
    expect(sent).toHaveLength(0)
  })

  it('answers 502 when the host does not resolve', async () => {
    // Resolving a name would query the machine's DNS server, and tests reach only loopback: the
    // runtime's failure for an unknown name is reproduced instead (Node: TypeError with a cause
    // whose code is ENOTFOUND).
    const notFound = Object.assign(new Error('getaddrinfo ENOTFOUND nonexistent.invalid'), {
      code: 'ENOTFOUND',
    })
    const transport = fetchTransport({
      fetch: async () => {
        throw new TypeError('fetch failed', { cause: notFound })
      },
    })
    const codes: string[] = []
    const app = exactProxy({ transport, onError: (e) => void codes.push(e.code) })
    const res = await app({
      ...environOf('http://nonexistent.invalid/'),
      SERVER_NAME: 'nonexistent.invalid',
      SERVER_PORT: '80',
    })
    expect(res.status).toBe(502)
    expect(res.headers).toContainEqual(['content-type', 'application/problem+json'])
    expect(await text(res)).not.toContain('nonexistent.invalid')
    expect(codes).toEqual(['UPSTREAM_UNREACHABLE'])
  })

  it.each([
    [
      'Bun',
      Object.assign(new TypeError('ECONNREFUSED: Unable to connect.'), { code: 'ECONNREFUSED' }),
      'UPSTREAM_UNREACHABLE',
    ],
    [
      'Deno',
      new TypeError('fetch failed', {
        cause: new Error(
          'error sending request for url (http://10.0.0.5:8080/): client error (Connect): tcp connect error: Connection refused (os error 111)',
        ),
      }),
      'UPSTREAM_UNREACHABLE',
    ],
    [
      'Deno (blocked port)',
      new TypeError('Fetch failed: Requests to port 6000 are blocked'),
      'UPSTREAM_UNREACHABLE',
    ],
    [
      'Deno (reset)',
      new TypeError('fetch failed', {
        cause: new Error('error sending request: connection closed before message completed'),
      }),
      'UPSTREAM_RESET',
    ],
  ])('maps a failed connection on %s to its error code', async (_runtime, failure, expected) => {
    const transport = fetchTransport({
      fetch: async () => {
        throw failure
      },
    })
    const codes: string[] = []
    const app = exactProxy({ transport, onError: (e) => void codes.push(e.code) })
    const res = await app({
      ...environOf('http://10.0.0.5:8080/'),
      SERVER_NAME: '10.0.0.5',
      SERVER_PORT: '8080',
    })
    expect(res.status).toBe(502)
    expect(await text(res)).not.toContain('10.0.0.5')
    expect(codes).toEqual([expected])
  })

  it.each([
    ['bad host/', '80'],
    ['example.com/admin?', '80'],
    ['h', '99999'],
    ['h', ''],
    ['user@h', '80'],
  ])('answers 502 INVALID_UPSTREAM for SERVER_NAME %j and SERVER_PORT %j', async (name, port) => {
    const { transport, sent } = recordingTransport()
    const codes: string[] = []
    const app = exactProxy({ transport, onError: (e) => void codes.push(e.code) })
    const res = await app({ ...environOf('http://h/'), SERVER_NAME: name, SERVER_PORT: port })
    expect(res.status).toBe(502)
    expect(codes).toEqual(['INVALID_UPSTREAM'])
    expect(sent).toHaveLength(0)
  })

  it('keeps the Host when the client names it in Connection', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport })
    await app({
      ...environOf('http://h/'),
      HTTP_HOST: 'public.example',
      HTTP_CONNECTION: 'host, content-length, x-drop',
      HTTP_X_DROP: '1',
    })
    expect(sent[0]?.headers.filter(([name]) => name === 'host')).toEqual([
      ['host', 'public.example'],
    ])
    expect(sent[0]?.headers.some(([name]) => name === 'x-drop')).toBe(false)
  })

  it('never lets PATH_INFO without a leading "/" change the upstream authority', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport })
    const env: Environ = {
      ...environOf('http://h/'),
      SERVER_NAME: 'backend.internal',
      SERVER_PORT: '80',
    }
    delete env['wsgiproxy.raw_path']
    await app({ ...env, SCRIPT_NAME: '', PATH_INFO: '@evil.test/x' })
    expect(sent[0]?.url.hostname).toBe('backend.internal')
    expect(sent[0]?.url.pathname).toBe('/@evil.test/x')
  })

  it('answers 501 to TRACE on the fetch transport without logging an error', async () => {
    const upstream = await startUpstream((_req, res) => res.end('never'))
    const codes: string[] = []
    const app = exactProxy({ onError: (e) => void codes.push(e.code) })
    const res = await app({ ...environOf(`${upstream.origin}/`), REQUEST_METHOD: 'TRACE' })
    expect(res.status).toBe(501)
    expect(codes).toEqual(['METHOD_NOT_SUPPORTED'])
  })

  it('answers 502 naming the Node transport when fetch refuses a blocked port', async () => {
    const errors: WsgiProxyError[] = []
    const app = exactProxy({ onError: (e) => void errors.push(e) })
    const res = await app({ ...environOf('http://127.0.0.1:6000/'), HTTP_HOST: '127.0.0.1:6000' })
    expect(res.status).toBe(502)
    expect(errors[0]?.message).toContain('undiciTransport()')
  })

  it('aborts the upstream when the Fetch response body is cancelled before any read', async () => {
    let signal: AbortSignal | undefined
    const transport: Transport = async (outbound) => {
      signal = outbound.signal
      return { status: 200, headers: [], body: new Response('unread').body }
    }
    const res = toResponse(await exactProxy({ transport })(environOf('http://h/')))
    await res.body?.cancel()
    expect(signal?.aborted).toBe(true)
  })

  it('reports that the fetch transport cannot send another Host, naming the Node transport', async () => {
    const upstream = await startUpstream((_req, res) => res.end('never'))
    const errors: WsgiProxyError[] = []
    const app = exactProxy({ onError: (e) => void errors.push(e) })
    const res = await app({
      ...environOf(`${upstream.origin}/`),
      HTTP_HOST: 'virtual.example',
    })
    expect(res.status).toBe(500)
    expect(await text(res)).not.toContain('127.0.0.1')
    expect(errors[0]?.code).toBe('HOST_OVERRIDE_UNSUPPORTED')
    expect(errors[0]?.message).toContain('undiciTransport() from @wsgiproxy/node')
  })

  it('answers 499 without calling the transport when the client is already gone', async () => {
    const { transport, sent } = recordingTransport()
    const controller = new AbortController()
    controller.abort()
    const codes: string[] = []
    const app = exactProxy({ transport, onError: (e) => void codes.push(e.code) })
    const res = await app({ ...environOf('http://h/'), 'wsgiproxy.signal': controller.signal })
    expect(res.status).toBe(499)
    expect(codes).toEqual(['CLIENT_ABORTED'])
    expect(sent.every((s) => s.signal.aborted)).toBe(true)
  })

  it('uses the response the error hook returns, and a fixed 500 when the hook throws', async () => {
    const replaced = exactProxy({
      transport: failing,
      onError: () => ({ status: 503, headers: [['retry-after', '1']], body: null }),
    })
    expect((await replaced(environOf('http://h/'))).status).toBe(503)
    const broken = exactProxy({
      transport: failing,
      onError: () => {
        throw new Error('hook bug')
      },
    })
    expect((await broken(environOf('http://h/'))).status).toBe(500)
  })

  it('cancels the upstream request when the response body is abandoned', async () => {
    let signal: AbortSignal | undefined
    const transport: Transport = async (outbound) => {
      signal = outbound.signal
      return {
        status: 200,
        headers: [],
        body: {
          async *[Symbol.asyncIterator]() {
            yield new Uint8Array([1])
            await new Promise(() => {})
          },
        },
      }
    }
    const res = await exactProxy({ transport })(environOf('http://h/'))
    const iterator = res.body![Symbol.asyncIterator]()
    await iterator.next()
    const pending = iterator.next()
    await iterator.return?.()
    expect(signal?.aborted).toBe(true)
    void pending.catch(() => {})
  })

  it('refuses invalid options with a message naming the option', () => {
    expect(() => exactProxy({ timeouts: { headers: -1 } })).toThrow(/exactProxy\.timeouts\.headers/)
    expect(() => exactProxy({ transport: 'x' as unknown as Transport })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
    expect(() => exactProxy({ bogus: 1 } as never)).toThrow(/bogus/)
  })

  it('serves a real upstream through a real front for the simplest request', async () => {
    const upstream = await startUpstream((req, res) => res.end(`${req.method} ${req.url}`))
    const proxy = exactProxy()
    const front = await startFetchFront((env) =>
      proxy({
        ...env,
        SERVER_PORT: String(upstream.port),
        HTTP_HOST: `127.0.0.1:${upstream.port}`,
      }),
    )
    const res = await send(front.origin, { path: '/p?q' })
    expect(res.body.toString()).toBe('GET /p?q')
  })
})
