import { afterEach, describe, expect, it } from 'vitest'
import type {
  AppResponse,
  Environ,
  ExactProxyOptions,
  OutboundRequest,
  Transport,
} from '../../index.ts'
import {
  WsgiProxyError,
  exactProxy,
  fetchTransport,
  parseAllowList,
  toEnviron,
  toResponse,
} from '../../index.ts'
import { describeForwarding } from '@wsgiproxy/test-kit/forwarding-suite'
import { closeAll, send, startFetchFront, startUpstream } from '@wsgiproxy/test-kit/servers'

describeForwarding('toFetchHandler on @hono/node-server, fetchTransport', (port, options) => {
  const proxy = exactProxy({ allow: ['127.0.0.1'], ...options })
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
    const app = exactProxy({ transport, allow: ['10.0.0.0/8'] })
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
    const app = exactProxy({ transport, allow: ['::1'] })
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
    const app = exactProxy({
      transport,
      allow: ['10.0.0.5'],
      onError: (e) => void codes.push(e.code),
    })
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

  it('sends TE: trailers on, alone, even when Connection names TE, and no other TE', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport })
    const te = (request: number) => sent[request]?.headers.filter(([name]) => name === 'te')
    await app({ ...environOf('http://h/'), HTTP_TE: 'trailers', HTTP_CONNECTION: 'te' })
    await app({ ...environOf('http://h/'), HTTP_TE: 'gzip;q=0.5, Trailers' })
    await app({ ...environOf('http://h/'), HTTP_TE: 'gzip, deflate' })
    await app({ ...environOf('http://h/'), HTTP_TE: 'trailersx' })
    expect([te(0), te(1), te(2), te(3)]).toEqual([
      [['te', 'trailers']],
      [['te', 'trailers']],
      [],
      [],
    ])
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
    const app = exactProxy({
      transport: fetchTransport(),
      allow: ['127.0.0.1'],
      onError: (e) => void codes.push(e.code),
    })
    const res = await app({ ...environOf(`${upstream.origin}/`), REQUEST_METHOD: 'TRACE' })
    expect(res.status).toBe(501)
    expect(codes).toEqual(['METHOD_NOT_SUPPORTED'])
  })

  it('answers 502 naming the Node transport when fetch refuses a blocked port', async () => {
    const errors: WsgiProxyError[] = []
    const app = exactProxy({
      transport: fetchTransport(),
      allow: ['127.0.0.1'],
      onError: (e) => void errors.push(e),
    })
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
    const app = exactProxy({
      transport: fetchTransport(),
      allow: ['127.0.0.1'],
      onError: (e) => void errors.push(e),
    })
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
    expect(() => exactProxy({ timeouts: { upstreamHeaders: -1 } })).toThrow(
      /exactProxy\.timeouts\.upstreamHeaders/,
    )
    expect(() => exactProxy({ transport: 'x' as unknown as Transport })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
    expect(() => exactProxy({ bogus: 1 } as never)).toThrow(/bogus/)
  })

  it('serves a real upstream through a real front for the simplest request', async () => {
    const upstream = await startUpstream((req, res) => res.end(`${req.method} ${req.url}`))
    const proxy = exactProxy({ allow: ['127.0.0.1'] })
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

/** A front whose exact proxy sends every request where its Host header says, counting them. */
async function startCountingFront(
  options: ExactProxyOptions,
  rewrite: (environ: Environ) => Environ = (environ) => environ,
): Promise<{ origin: string; port: number; hits: () => number }> {
  let hits = 0
  const proxy = exactProxy(options)
  const front = await startFetchFront((environ) => {
    hits++
    return proxy(rewrite(environ))
  })
  return { origin: front.origin, port: front.port, hits: () => hits }
}

/** An upstream on 127.0.0.1 that counts the requests it receives. */
async function startCountingUpstream(): Promise<{ port: number; hits: () => number }> {
  let hits = 0
  const upstream = await startUpstream((_req, res) => {
    hits++
    res.end('internal')
  })
  return { port: upstream.port, hits: () => hits }
}

/** Sends every request to 127.0.0.1 at the port `port()` gives when the request comes. */
function toPort(port: () => number): (environ: Environ) => Environ {
  return (environ) => ({
    ...environ,
    SERVER_NAME: '127.0.0.1',
    SERVER_PORT: String(port()),
    HTTP_HOST: `127.0.0.1:${port()}`,
  })
}

function problemOf(body: string): { status: number; detail: string; code: string } {
  return JSON.parse(body) as { status: number; detail: string; code: string }
}

describe('exactProxy allow', () => {
  afterEach(closeAll)

  it.each([
    '127.0.0.1',
    '127.1',
    '0',
    '2130706433',
    '0x7f000001',
    '0177.0.0.1',
    '127.000.000.001',
    '127.0.0.1.',
    '::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '0.0.0.0',
    '::',
    '10.1.2.3',
    '::ffff:10.1.2.3',
    '172.16.0.1',
    '192.168.1.1',
    '100.64.0.1',
    '169.254.169.254',
    'fe80::1',
    'fc00::1',
    'fd12:3456::1',
    '224.0.0.1',
    '255.255.255.255',
    'ff02::1',
    '192.0.2.1',
    '240.0.0.1',
    '2001:db8::1',
    '64:ff9b::7f00:1',
    '2002:7f00:1::1',
    '::127.0.0.1',
    'localhost',
    'LOCALHOST',
    'localhost.',
    'foo.localhost',
  ])('refuses %j by default with 403, without calling the transport', async (name) => {
    const { transport, sent } = recordingTransport()
    const errors: WsgiProxyError[] = []
    const app = exactProxy({ transport, onError: (e) => void errors.push(e) })
    const host = name.includes(':') ? `[${name}]:8080` : `${name}:8080`
    const res = await app({
      ...environOf('http://h/'),
      SERVER_NAME: name,
      SERVER_PORT: '8080',
      HTTP_HOST: host,
    })
    expect(res.status).toBe(403)
    expect(res.headers).toContainEqual(['content-type', 'application/problem+json'])
    const body = await text(res)
    // A fixed detail: nothing the client sent comes back.
    expect(problemOf(body)).toEqual({
      type: 'about:blank',
      title: 'Forbidden',
      status: 403,
      code: 'TARGET_NOT_ALLOWED',
      detail:
        'the target host is not in the exactProxy allow list (the proxy operator can add it to allow)',
    })
    expect(sent).toHaveLength(0)
    expect(errors.map((e) => e.code)).toEqual(['TARGET_NOT_ALLOWED'])
    expect(errors[0]?.message).toMatch(/^the target \S+ .*is not in the exactProxy allow list/)
  })

  it.each(['93.184.215.14', '2606:4700::1111', '::ffff:93.184.215.14', 'example.com'])(
    'forwards to the public target %j by default',
    async (name) => {
      const { transport, sent } = recordingTransport()
      const app = exactProxy({ transport })
      const res = await app({ ...environOf('http://h/'), SERVER_NAME: name, SERVER_PORT: '80' })
      expect(res.status).toBe(200)
      expect(sent).toHaveLength(1)
    },
  )

  it.each([
    [['127.0.0.1'], '127.0.0.1', '9000', true],
    [['127.0.0.1'], '127.1', '9000', true],
    [['127.0.0.1'], '::ffff:127.0.0.1', '9000', true],
    [['127.0.0.1'], '127.0.0.2', '9000', false],
    [['127.0.0.1:8080'], '127.0.0.1', '8080', true],
    [['127.0.0.1:8080'], '127.0.0.1', '9000', false],
    [['127.0.0.1:8080,9000'], '127.0.0.1', '9000', true],
    [['127.0.0.1:*'], '127.0.0.1', '1', true],
    [['10.0.0.0/8'], '10.200.0.1', '80', true],
    [['10.0.0.0/8:443'], '10.200.0.1', '80', false],
    [['::1'], '::1', '80', true],
    [['[::1]:*'], '::1', '80', true],
    [['[::1]:8080'], '::1', '80', false],
    [['[fd00::/8]:443'], 'fd12::1', '443', true],
    [['::ffff:10.0.0.0/104'], '10.1.1.1', '80', true],
    [['loopback'], '127.9.9.9', '80', true],
    [['loopback'], 'localhost', '80', true],
    [['uniquelocal'], '192.168.0.10', '80', true],
    [['linklocal'], '169.254.169.254', '80', true],
    [['localhost'], 'localhost', '3000', true],
    [['localhost:3000'], 'localhost.', '3000', true],
    [['localhost:3000'], 'localhost', '3001', false],
    [['127.0.0.1'], 'localhost', '80', false],
    [['*.localhost'], 'app.localhost', '80', true],
    [['*.localhost'], 'localhost', '80', false],
    [['internal.example'], 'INTERNAL.example', '80', true],
    [['*.example.com'], 'a.b.example.com', '80', true],
    [['*.example.com'], 'example.com', '80', false],
    [['*.example.com'], 'badexample.com', '80', false],
    [['public:443'], 'example.com', '443', true],
    [['public:443'], 'example.com', '80', false],
    [['public:443'], '93.184.215.14', '80', false],
    [['10.0.0.0/8'], 'db.internal', '80', false],
    [[], 'example.com', '80', false],
    [[], '93.184.215.14', '80', false],
  ] as const)('with allow %j, target %j port %s is allowed: %s', async (allow, name, port, ok) => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport, allow, onError: () => {} })
    const res = await app({ ...environOf('http://h/'), SERVER_NAME: name, SERVER_PORT: port })
    expect(res.status).toBe(ok ? 200 : 403)
    expect(sent).toHaveLength(ok ? 1 : 0)
  })

  it('checks every address the resolver gives and connects to the checked one, Host unchanged', async () => {
    const { transport, sent } = recordingTransport()
    const asked: string[] = []
    const app = exactProxy({
      transport,
      allow: ['127.0.0.1', '::1'],
      resolve: (name) => {
        asked.push(name)
        return ['::1', '127.0.0.1']
      },
    })
    const res = await app({
      ...environOf('http://upstream.test:9000/p?q=1'),
      SERVER_NAME: 'upstream.test',
      SERVER_PORT: '9000',
    })
    expect(res.status).toBe(200)
    expect(asked).toEqual(['upstream.test'])
    expect(sent[0]?.url.href).toBe('http://[::1]:9000/p?q=1')
    expect(sent[0]?.headers).toContainEqual(['host', 'upstream.test:9000'])
  })

  it('refuses a name that resolves to an internal address, even beside a public one (DNS rebinding)', async () => {
    const { transport, sent } = recordingTransport()
    const errors: WsgiProxyError[] = []
    const app = exactProxy({
      transport,
      resolve: async () => ['93.184.215.14', '::ffff:10.0.0.1'],
      onError: (e) => void errors.push(e),
    })
    const res = await app({
      ...environOf('http://rebind.example/'),
      SERVER_NAME: 'rebind.example',
      SERVER_PORT: '80',
    })
    expect(res.status).toBe(403)
    expect(await text(res)).not.toContain('rebind.example')
    expect(sent).toHaveLength(0)
    expect(errors[0]?.message).toBe(
      'the target rebind.example, which resolves to 10.0.0.1, is not in the exactProxy allow list (add "rebind.example:80" to allow to permit it)',
    )
  })

  it('connects by name to a host a name entry allows, without resolving it', async () => {
    const { transport, sent } = recordingTransport()
    let asked = 0
    const app = exactProxy({
      transport,
      allow: ['db.internal:5984'],
      resolve: () => {
        asked++
        return ['10.0.0.7']
      },
    })
    const res = await app({
      ...environOf('http://db.internal:5984/'),
      SERVER_NAME: 'db.internal',
      SERVER_PORT: '5984',
    })
    expect(res.status).toBe(200)
    expect(asked).toBe(0)
    expect(sent[0]?.url.host).toBe('db.internal:5984')
  })

  it('does not look up a name no entry could allow', async () => {
    let asked = 0
    const app = exactProxy({
      transport: recordingTransport().transport,
      allow: ['db.internal'],
      resolve: () => {
        asked++
        return ['10.0.0.7']
      },
      onError: () => {},
    })
    const res = await app({ ...environOf('http://elsewhere.example/') })
    expect(res.status).toBe(403)
    expect(asked).toBe(0)
  })

  it('answers 502 when the resolver fails or finds nothing', async () => {
    const codes: string[] = []
    for (const resolve of [
      async () => {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND x'), { code: 'ENOTFOUND' })
      },
      () => [],
    ]) {
      const app = exactProxy({
        transport: recordingTransport().transport,
        resolve,
        onError: (e) => void codes.push(e.code),
      })
      const res = await app(environOf('http://nowhere.example/'))
      expect(res.status).toBe(502)
      expect(await text(res)).not.toContain('nowhere.example')
    }
    expect(codes).toEqual(['UPSTREAM_UNREACHABLE', 'UPSTREAM_UNREACHABLE'])
  })

  it('shows the refused target in the body only with exposeErrors', async () => {
    const app = exactProxy({ exposeErrors: true, onError: () => {} })
    const res = await app({ ...environOf('http://127.0.0.1:9/'), HTTP_HOST: '127.0.0.1:9' })
    expect(problemOf(await text(res)).detail).toBe(
      'the target 127.0.0.1:9 is not in the exactProxy allow list (add "127.0.0.1:9" to allow to permit it)',
    )
  })

  it.each([
    ['nope nope', /exactProxy\.allow\.0: expected a host name/],
    ['127.1', /exactProxy\.allow\.0: an IPv4 allow entry must be dotted decimal/],
    ['10.0.0.0/33', /exactProxy\.allow\.0: allow entry prefix length must be 0–32/],
    ['::1:80:x', /exactProxy\.allow\.0: expected a host name/],
    ['example.com:0', /exactProxy\.allow\.0: allow entry ports must be \*/],
    ['example.com:65536', /exactProxy\.allow\.0: allow entry ports must be \*/],
    ['*', /exactProxy\.allow\.0: expected a host name/],
    ['', /exactProxy\.allow\.0: expected a host name/],
  ])('refuses the allow entry %j naming it', (entry, message) => {
    expect(() => exactProxy({ allow: [entry] })).toThrow(message)
    expect(() => exactProxy({ allow: [entry] })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
  })

  it('refuses an allow list that is not an array of strings', () => {
    expect(() => exactProxy({ allow: '127.0.0.1' as unknown as string[] })).toThrow(
      /exactProxy\.allow: expected an array of entries/,
    )
    expect(() => exactProxy({ allow: [1] as unknown as string[] })).toThrow(/exactProxy\.allow\.0/)
  })

  it('refuses a Host naming an unlisted internal port through a real front, and forwards a listed one', async () => {
    const internal = await startCountingUpstream()
    const closed = await startCountingFront({ onError: () => {} })
    const refused = await send(closed.origin, {
      path: '/secret',
      headers: { host: `127.0.0.1:${internal.port}` },
    })
    expect(refused.status).toBe(403)
    expect(refused.body.toString()).not.toContain(String(internal.port))
    expect(internal.hits()).toBe(0)

    const open = await startCountingFront({ allow: [`127.0.0.1:${internal.port}`] })
    const allowed = await send(open.origin, {
      path: '/secret',
      headers: { host: `127.0.0.1:${internal.port}` },
    })
    expect(allowed.status).toBe(200)
    expect(allowed.body.toString()).toBe('internal')
    expect(internal.hits()).toBe(1)
  })
})

describe('parseAllowList', () => {
  it('checks addresses and names as exactProxy does', () => {
    const list = parseAllowList(['10.0.0.0/8:8080', 'public:443', '*.example.com'])
    expect(list.allowsAddress('::ffff:10.1.2.3', 8080)).toBe(true)
    expect(list.allowsAddress('10.1.2.3', 80)).toBe(false)
    expect(list.allowsAddress('93.184.215.14', 443)).toBe(true)
    expect(list.allowsAddress('127.0.0.1', 443)).toBe(false)
    expect(list.allowsAddress('not an address', 443)).toBe(false)
    expect(list.namesHost('API.Example.com.', 80)).toBe(true)
    expect(list.namesHost('example.com', 80)).toBe(false)
  })

  it('throws INVALID_OPTIONS naming the bad entry', () => {
    expect(() => parseAllowList(['ok.example', 'bad entry'])).toThrow(
      /^invalid options: allow\.1: expected a host name .* \(got "bad entry"\)$/,
    )
  })
})

describe('exactProxy loop guard', () => {
  afterEach(closeAll)

  it("appends a Via entry with the process's pseudonym to the client's Via", async () => {
    const { transport, sent } = recordingTransport()
    await exactProxy({ transport })({
      ...environOf('http://h/'),
      HTTP_VIA: '1.0 fred, 1.1 p.example',
    })
    await exactProxy({ transport })(environOf('http://h/'))
    const vias = sent.map((s) => s.headers.filter(([name]) => name === 'via'))
    expect(vias[0]).toEqual([
      ['via', expect.stringMatching(/^1\.0 fred, 1\.1 p\.example, 1\.1 wsgiproxy-[0-9a-f]{16}$/)],
    ])
    const pseudonym = vias[0]?.[0]?.[1].split(' ').at(-1)
    // Another exact proxy in the same process uses the same pseudonym.
    expect(vias[1]).toEqual([['via', `1.1 ${pseudonym}`]])
  })

  it('answers 508 to a request whose Via carries its pseudonym, without calling the transport', async () => {
    const { transport, sent } = recordingTransport()
    const app = exactProxy({ transport, onError: () => {} })
    await app(environOf('http://h/'))
    const pseudonym = sent[0]?.headers.find(([name]) => name === 'via')?.[1].split(' ')[1] ?? ''
    for (const via of [
      `1.1 ${pseudonym}`,
      `1.0 a, HTTP/1.1 ${pseudonym.toUpperCase()} (comment)`,
      `1.1 a,1.1\t${pseudonym}`,
    ]) {
      const res = await app({ ...environOf('http://h/'), HTTP_VIA: via })
      expect(res.status).toBe(508)
      expect(problemOf(await text(res))).toMatchObject({ code: 'LOOP_DETECTED', status: 508 })
    }
    expect(sent).toHaveLength(1)
    const other = await app({
      ...environOf('http://h/'),
      HTTP_VIA: `1.1 ${pseudonym}x, 1.1 x${pseudonym}`,
    })
    expect(other.status).toBe(200)
  })

  it('uses a given pseudonym, and sends no Via and checks none with via: false', async () => {
    const { transport, sent } = recordingTransport()
    await exactProxy({ transport, via: 'edge-1' })({
      ...environOf('http://h/'),
      SERVER_PROTOCOL: 'HTTP/1.0',
    })
    expect(sent[0]?.headers).toContainEqual(['via', '1.0 edge-1'])
    const off = await exactProxy({ transport, via: false })({
      ...environOf('http://h/'),
      HTTP_VIA: '1.1 edge-1',
    })
    expect(off.status).toBe(200)
    expect(sent[1]?.headers).toContainEqual(['via', '1.1 edge-1'])
    expect(() => exactProxy({ via: 'not a token' })).toThrow(/exactProxy\.via/)
  })

  it('answers 508 when isSelf names the target: an address, a localhost name or a resolved name', async () => {
    const { transport, sent } = recordingTransport()
    const seen: string[] = []
    const errors: WsgiProxyError[] = []
    const app = exactProxy({
      transport,
      allow: ['loopback', 'self.test'],
      resolve: () => ['::ffff:127.0.0.1'],
      isSelf: (address, port) => {
        seen.push(`${address} ${port}`)
        return address === '127.0.0.1' && port === 8080
      },
      onError: (e) => void errors.push(e),
    })
    for (const name of ['127.1', '::ffff:7f00:1', 'localhost.', 'self.test']) {
      const res = await app({ ...environOf('http://h/'), SERVER_NAME: name, SERVER_PORT: '8080' })
      expect(res.status).toBe(508)
    }
    expect(sent).toHaveLength(0)
    expect(errors.map((e) => e.code)).toEqual(Array(4).fill('LOOP_DETECTED'))
    expect(errors[3]?.message).toBe(
      'the target self.test:8080 (127.0.0.1) is this proxy itself: the request would come back',
    )
    expect(seen).toContain('127.0.0.1 8080')
    const other = await app({
      ...environOf('http://h/'),
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: '8081',
    })
    expect(other.status).toBe(200)
  })

  it('stops a loop between two proxies after one round', async () => {
    // A forwards to B, B forwards back to A: with two pseudonyms, as two processes would have.
    let portA = 0
    let portB = 0
    const a = await startCountingFront(
      { allow: ['127.0.0.1'], via: 'proxy-a', onError: () => {} },
      toPort(() => portB),
    )
    const b = await startCountingFront(
      { allow: ['127.0.0.1'], via: 'proxy-b', onError: () => {} },
      toPort(() => portA),
    )
    portA = a.port
    portB = b.port
    const res = await send(a.origin, { path: '/round' })
    expect(res.status).toBe(508)
    expect(a.hits()).toBe(2)
    expect(b.hits()).toBe(1)
  })
})
