// compat: 'wsgiproxy-0.1' on both sides (docs/protocol.md): what a WSGIProxy 0.1 front sends is
// restored from a trusted peer and refused in strict mode; what a 0.1 receiver accepts is sent.
// The real Python programs are in apps/interop; these tests pin the details on the wire.
import type { IncomingHttpHeaders } from 'node:http'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type {
  AppResponse,
  Environ,
  OutboundRequest,
  ProtocolWarning,
  ProxyMiddlewareOptions,
} from '../../index.ts'
import {
  createEnvironRestorer,
  createProxyApp,
  createSigner,
  createVerifier,
  MemoryReplayStore,
  proxyMiddleware,
  toEnviron,
} from '../../index.ts'
import { closeAll, startUpstream } from '@wsgiproxy/test-kit/servers'

interface Run {
  status: number
  environ: Environ | undefined
  body: string
}

/** A header value as the wire carries it: the UTF-8 bytes of `text`, one code unit each. */
function utf8Bytes(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1')
}

async function run(
  headers: Record<string, string>,
  options: ProxyMiddlewareOptions,
  { url = 'http://backend:8080/myapp/p/q?a=b', peer = '127.0.0.1' } = {},
): Promise<Run> {
  let seen: Environ | undefined
  const app = proxyMiddleware((environ) => {
    seen = environ
    return { status: 200, headers: [], body: null }
  }, options)
  const response: AppResponse = await app(
    toEnviron(new Request(url, { headers: { host: new URL(url).host, ...headers } }), {
      remoteAddr: peer,
    }),
  )
  let body = ''
  for await (const chunk of response.body ?? []) body += new TextDecoder().decode(chunk)
  return { status: response.status, environ: seen, body }
}

// What a WSGIProxy 0.1 front (Paste's WSGIProxyApp, href http://backend:8080/myapp) sends for a
// request to /front/p/q?a=b on public.example, mounted at /front.
const FROM_01_FRONT = {
  'x-forwarded-for': '203.0.113.9',
  'x-forwarded-server': 'public.example:8443',
  'x-forwarded-scheme': 'https',
  'x-forwarded-script-name': '/front',
  'x-traversal-path': 'myapp',
  'x-wsgiproxy-version': '0.1',
}

const COMPAT = { compat: 'wsgiproxy-0.1', trustIps: ['loopback'], onWarning: () => {} } as const

describe('receiving WSGIProxy 0.1 (compat: wsgiproxy-0.1)', () => {
  it('is refused in strict mode, with a hint naming the option', async () => {
    const { status, environ, body } = await run(FROM_01_FRONT, { trustIps: ['loopback'] })
    expect(status).toBe(400)
    expect(environ).toBeUndefined()
    expect(body).toContain(
      'X-WSGIProxy-Version must be 0.2 (a WSGIProxy 0.1 front needs compat: \\"wsgiproxy-0.1\\" on this side)',
    )
  })

  it('restores host, scheme, client, script name and a traversal path without "/"', async () => {
    const { status, environ } = await run(FROM_01_FRONT, COMPAT)
    expect(status).toBe(200)
    expect(environ).toMatchObject({
      HTTP_HOST: 'public.example:8443',
      SERVER_NAME: 'public.example',
      SERVER_PORT: '8443',
      'wsgi.url_scheme': 'https',
      REMOTE_ADDR: '203.0.113.9',
      SCRIPT_NAME: '/front',
      PATH_INFO: '/p/q',
      QUERY_STRING: 'a=b',
    })
    expect(Object.keys(environ ?? {}).filter((key) => key.startsWith('HTTP_X_'))).toEqual([])
  })

  it('reads X-Script-Name only when X-Forwarded-Script-Name is absent', async () => {
    const headers: Record<string, string> = { ...FROM_01_FRONT }
    delete headers['x-forwarded-script-name']
    const { environ } = await run({ ...headers, 'x-script-name': '/legacy' }, COMPAT)
    expect(environ).toMatchObject({ SCRIPT_NAME: '/legacy', PATH_INFO: '/p/q' })
  })

  it('never lets a client of an unmounted 0.1 front choose SCRIPT_NAME with X-Script-Name', async () => {
    // Security regression: the 0.1 front always sends X-Forwarded-Script-Name (empty when it is
    // not mounted) and passes the client's other headers on, X-Script-Name included.
    const { status, environ } = await run(
      { ...FROM_01_FRONT, 'x-forwarded-script-name': '', 'x-script-name': '/inj' },
      COMPAT,
    )
    expect(status).toBe(200)
    expect(environ).toMatchObject({ SCRIPT_NAME: '', PATH_INFO: '/p/q' })
  })

  it('decodes raw UTF-8, empty and b64 values of every kind as text', async () => {
    const { status, environ } = await run(
      {
        ...FROM_01_FRONT,
        'x-wsgiproxy-str-0': 'REMOTE_USER alice',
        'x-wsgiproxy-str-1': utf8Bytes('S_CAFE café ✓'),
        'x-wsgiproxy-str-2': 'S_EMPTY',
        'x-wsgiproxy-str-3': 'S_B64LIKE b64YjY0YUdrPQ==',
        'x-wsgiproxy-str-4': 'S_NEWLINE b64bGluZTEKbGluZTI=',
        'x-wsgiproxy-unicode-0': utf8Bytes('U_CAFE café ✓'),
        'x-wsgiproxy-unicode-1': 'U_NEWLINE b64bGlnbmUK4pyT',
        'x-wsgiproxy-json-0': 'J_OBJ {"a": [1, "\\u00e9"], "b": null}',
      },
      COMPAT,
    )
    expect(status).toBe(200)
    expect(environ).toMatchObject({
      REMOTE_USER: 'alice',
      S_CAFE: 'café ✓',
      S_EMPTY: '',
      S_B64LIKE: 'b64aGk=',
      S_NEWLINE: 'line1\nline2',
      U_CAFE: 'café ✓',
      U_NEWLINE: 'ligne\n✓',
      J_OBJ: { a: [1, 'é'], b: null },
    })
  })

  it('still refuses invalid UTF-8 and control characters in a raw value', async () => {
    for (const value of ['U caf\u00e9', 'U a\u0001b']) {
      const { status, body } = await run(
        { ...FROM_01_FRONT, 'x-wsgiproxy-unicode-0': value },
        COMPAT,
      )
      expect(status).toBe(400)
      expect(body).toContain('invalid X-WSGIProxy-Unicode-0 header')
    }
  })

  it('trusts a 0.1 request by peer address only: a peer outside trustIps gets nothing', async () => {
    const warnings: ProtocolWarning[] = []
    const options = { ...COMPAT, onWarning: (warning: ProtocolWarning) => warnings.push(warning) }
    const { status, environ } = await run(
      { ...FROM_01_FRONT, 'x-wsgiproxy-str-0': 'REMOTE_USER mallory' },
      options,
      { peer: '198.51.100.7' },
    )
    expect(status).toBe(200)
    expect(environ).toMatchObject({ REMOTE_ADDR: '198.51.100.7', SCRIPT_NAME: '' })
    expect(environ?.['REMOTE_USER']).toBeUndefined()
    expect(environ?.PATH_INFO).toBe('/myapp/p/q')
    expect(warnings).toEqual([
      {
        code: 'UNTRUSTED_PEER',
        peer: '198.51.100.7',
        message:
          'ignored the forwarding headers of a request from 198.51.100.7, which is not trusted: to believe a front proxy there, add it to trustIps (trustIps: ["198.51.100.7"]) or sign its requests (said once)',
      },
    ])
  })

  it('never trusts a 0.1 request by its signature alone: 400 from a peer outside trustIps', async () => {
    const key = { id: 'k1', secret: new Uint8Array(32).fill(3) }
    const sent: OutboundRequest[] = []
    const front = createProxyApp({
      href: 'http://backend:8080/myapp',
      compat: 'wsgiproxy-0.1',
      signer: createSigner({ keys: [key] }),
      transport: async (outbound) => {
        sent.push(outbound)
        return { status: 200, headers: [], body: null }
      },
    })
    await front(toEnviron(new Request('http://public.example/p'), { remoteAddr: '203.0.113.9' }))
    const [outbound] = sent
    if (outbound === undefined) throw new Error('nothing was sent')
    const verifier = createVerifier({ keys: [key], replayStore: new MemoryReplayStore() })
    const restore = createEnvironRestorer({
      compat: 'wsgiproxy-0.1',
      verifier,
      onWarning: () => {},
    })
    const request = new Request(outbound.url, { headers: outbound.headers })
    const result = await restore(toEnviron(request, { remoteAddr: '10.0.0.5' }))
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.response.status).toBe(400)
    let body = ''
    for await (const chunk of result.response.body ?? []) body += new TextDecoder().decode(chunk)
    expect(body).toContain('X-WSGIProxy-Version 0.1 is accepted only from a peer in trustIps')
  })

  it('keeps 0.2 requests strict: a traversal path without "/" is still a 400', async () => {
    const { status, body } = await run({ ...FROM_01_FRONT, 'x-wsgiproxy-version': '0.2' }, COMPAT)
    expect(status).toBe(400)
    expect(body).toContain('X-Traversal-Path must be a path starting with /')
  })

  it('drops a pickle value without a codec, saying so once per key', async () => {
    const warnings: ProtocolWarning[] = []
    const options = { ...COMPAT, onWarning: (warning: ProtocolWarning) => warnings.push(warning) }
    const headers = {
      ...FROM_01_FRONT,
      'x-wsgiproxy-pickle-0': 'P_LIST b64KGxwMApJMQphLg==',
      'x-wsgiproxy-pickle-1': 'P_OTHER b64KGxwMApJMQphLg==',
    }
    // One restorer, three requests: each key is named once.
    const restore = createEnvironRestorer(options)
    for (let i = 0; i < 3; i++) {
      const request = new Request('http://backend:8080/myapp/p', { headers })
      const result = await restore(toEnviron(request, { remoteAddr: '127.0.0.1' }))
      expect(result.ok && result.environ['P_LIST']).toBeUndefined()
      expect(result.ok && result.environ.PATH_INFO).toBe('/p')
    }
    expect(warnings).toEqual([
      {
        code: 'PICKLE_DROPPED',
        key: 'P_LIST',
        message:
          'dropped X-WSGIProxy-Pickle-0 (key "P_LIST"): no pickleCodec is configured to decode pickle values (said once per key)',
      },
      {
        code: 'PICKLE_DROPPED',
        key: 'P_OTHER',
        message:
          'dropped X-WSGIProxy-Pickle-1 (key "P_OTHER"): no pickleCodec is configured to decode pickle values (said once per key)',
      },
    ])
  })
})

/** A request from 127.0.0.1 with wsgiproxy headers it made up. */
function forgedRequest(): Environ {
  return toEnviron(
    new Request('http://backend/x', {
      headers: { 'x-wsgiproxy-version': '0.2', 'x-forwarded-server': 'evil.example' },
    }),
    { remoteAddr: '127.0.0.1' },
  )
}

describe('warnings of a receiver', () => {
  it('says once, on console.warn by default, that an untrusted peer sent wsgiproxy headers', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
    try {
      const options = { trustIps: ['192.0.2.1'] }
      const app = proxyMiddleware(() => ({ status: 200, headers: [], body: null }), options)
      await app(forgedRequest())
      await app(forgedRequest())
      expect(warn.mock.calls).toEqual([
        [
          'wsgiproxy: ignored the forwarding headers of a request from 127.0.0.1, which is not trusted: to believe a front proxy there, add it to trustIps (trustIps: ["127.0.0.1"]) or sign its requests (said once)',
        ],
      ])
    } finally {
      warn.mockRestore()
    }
  })

  it('says nothing about X-Forwarded-For alone, which any load balancer adds', async () => {
    const warnings: ProtocolWarning[] = []
    await run(
      { 'x-forwarded-for': '203.0.113.9', forwarded: 'for=203.0.113.9' },
      { trustIps: ['192.0.2.1'], onWarning: (warning) => warnings.push(warning) },
    )
    expect(warnings).toEqual([])
  })
})

describe('X-Forwarded-Host and X-Forwarded-Proto', () => {
  const HEADERS = {
    'x-forwarded-host': 'cdn.example, public.example',
    'x-forwarded-proto': 'https',
    'x-forwarded-for': '203.0.113.9',
  }

  it('are the host and scheme from a trusted peer that sends no X-Forwarded-Server', async () => {
    const { environ } = await run(HEADERS, { trustIps: ['loopback'] })
    expect(environ).toMatchObject({
      HTTP_HOST: 'public.example',
      SERVER_NAME: 'public.example',
      SERVER_PORT: '443',
      'wsgi.url_scheme': 'https',
    })
  })

  it('give way to X-Forwarded-Server and X-Forwarded-Scheme', async () => {
    const { environ } = await run(
      { ...HEADERS, 'x-forwarded-server': 'own.example:8080', 'x-forwarded-scheme': 'http' },
      { trustIps: ['loopback'] },
    )
    expect(environ).toMatchObject({ HTTP_HOST: 'own.example:8080', 'wsgi.url_scheme': 'http' })
  })

  it('are ignored from an untrusted peer', async () => {
    const { environ } = await run(HEADERS, { trustIps: ['192.0.2.1'], onWarning: () => {} })
    expect(environ).toMatchObject({ HTTP_HOST: 'backend:8080', 'wsgi.url_scheme': 'http' })
  })
})

/** Forwards one request for /front/p/q?a=b and answers the headers the upstream got. */
async function forwardOnce(
  options: Omit<Parameters<typeof createProxyApp>[0] & object, 'href'>,
  environOverrides: Partial<Environ> = {},
): Promise<IncomingHttpHeaders> {
  let seen: IncomingHttpHeaders = {}
  const upstream = await startUpstream((req, res) => {
    seen = req.headers
    res.end('ok')
  })
  const app = createProxyApp({ href: `${upstream.origin}/myapp`, ...options })
  const environ = toEnviron(
    new Request('http://public.example/front/p/q?a=b', { headers: { host: 'public.example' } }),
    { remoteAddr: '203.0.113.9' },
  )
  const response = await app({
    ...environ,
    SCRIPT_NAME: '/front',
    PATH_INFO: '/p/q',
    ...environOverrides,
  } as Environ)
  expect(response.status).toBe(200)
  return seen
}

describe('sending to a WSGIProxy 0.1 receiver (compat: wsgiproxy-0.1)', () => {
  afterEach(closeAll)

  it('sends version 0.1, X-Script-Name and the traversal path the old middleware accepts', async () => {
    const headers = await forwardOnce({ compat: 'wsgiproxy-0.1' })
    expect(headers).toMatchObject({
      'x-wsgiproxy-version': '0.1',
      'x-forwarded-script-name': '/front',
      'x-script-name': '/front',
      'x-traversal-path': '/myapp',
      'x-forwarded-server': 'public.example',
      'x-forwarded-for': '203.0.113.9',
    })
  })

  it('sends text as raw UTF-8, JSON ASCII-only, and b64 only where 0.1 needs it', async () => {
    const headers = await forwardOnce(
      {
        compat: 'wsgiproxy-0.1',
        stringKeys: ['S_CAFE', 'S_EMPTY', 'S_NEWLINE', 'S_B64LIKE', 'S_PADDED', 'S_DEL'],
        unicodeKeys: ['U_CAFE'],
        jsonKeys: ['J_OBJ'],
      },
      {
        S_CAFE: 'café ✓',
        S_EMPTY: '',
        S_NEWLINE: 'line1\nline2',
        S_B64LIKE: 'b64aGk=',
        S_PADDED: ' padded ',
        S_DEL: 'a\u007fb',
        U_CAFE: 'café ✓',
        J_OBJ: { a: [1, 'é'], b: null },
      },
    )
    const text = (name: string): string =>
      Buffer.from(String(headers[name]), 'latin1').toString('utf8')
    expect(text('x-wsgiproxy-str-0')).toBe('S_CAFE café ✓')
    expect(headers['x-wsgiproxy-str-1']).toBe('S_EMPTY b64')
    expect(headers['x-wsgiproxy-str-2']).toBe(`S_NEWLINE b64${btoa('line1\nline2')}`)
    expect(headers['x-wsgiproxy-str-3']).toBe(`S_B64LIKE b64${btoa('b64aGk=')}`)
    expect(headers['x-wsgiproxy-str-4']).toBe(`S_PADDED b64${btoa(' padded ')}`)
    expect(headers['x-wsgiproxy-str-5']).toBe(`S_DEL b64${btoa('a\u007fb')}`)
    expect(text('x-wsgiproxy-unicode-0')).toBe('U_CAFE café ✓')
    expect(headers['x-wsgiproxy-json-0']).toBe('J_OBJ {"a":[1,"\\u00e9"],"b":null}')
  })

  it('round-trips through a receiver in compat mode', async () => {
    let restored: Environ | undefined
    const backend = proxyMiddleware(
      (environ) => {
        restored = environ
        return { status: 200, headers: [], body: null }
      },
      { compat: 'wsgiproxy-0.1', trustIps: ['loopback'] },
    )
    const upstream = await startUpstream(async (req, res) => {
      const headers: Record<string, string> = {}
      for (const [name, value] of Object.entries(req.headers)) {
        if (typeof value === 'string') headers[name] = value
      }
      const environ = toEnviron(new Request(`http://${req.headers.host}${req.url}`, { headers }), {
        remoteAddr: '127.0.0.1',
      })
      res.statusCode = (await backend(environ)).status
      res.end()
    })
    const values = { S_CAFE: 'café ✓', S_EMPTY: '', S_NEWLINE: 'a\nb', U_X: 'b64x', J: [1, 'é'] }
    const app = createProxyApp({
      href: `${upstream.origin}/myapp`,
      compat: 'wsgiproxy-0.1',
      stringKeys: ['S_CAFE', 'S_EMPTY', 'S_NEWLINE'],
      unicodeKeys: ['U_X'],
      jsonKeys: ['J'],
    })
    const environ = toEnviron(new Request('http://public.example/p?a=b'), {
      remoteAddr: '203.0.113.9',
    })
    expect((await app({ ...environ, ...values } as Environ)).status).toBe(200)
    expect(restored).toMatchObject({
      ...values,
      REMOTE_ADDR: '203.0.113.9',
      HTTP_HOST: 'public.example',
      PATH_INFO: '/p',
      QUERY_STRING: 'a=b',
    })
  })

  it('sends X-Forwarded-Host and X-Forwarded-Proto with xForwarded', async () => {
    const headers = await forwardOnce({ xForwarded: true })
    expect(headers).toMatchObject({
      'x-forwarded-host': 'public.example',
      'x-forwarded-proto': 'http',
      'x-wsgiproxy-version': '0.2',
    })
    expect(headers['x-script-name']).toBeUndefined()
    const plain = await forwardOnce({})
    expect(plain['x-forwarded-host']).toBeUndefined()
  })
})
