import { describe, expect, it } from 'vitest'
import * as z from 'zod'
import type { AppResponse, Environ, ProxyMiddlewareOptions, WsgiProxyError } from '../../index.ts'
import {
  createEnvironRestorer,
  createVerifier,
  MemoryReplayStore,
  proxyMiddleware,
  toEnviron,
} from '../../index.ts'

interface Run {
  status: number
  environ: Environ | undefined
  body: string
}

async function run(
  headers: Record<string, string>,
  options: ProxyMiddlewareOptions = { trustIps: ['loopback'] },
  { url = 'http://backend:8080/myapp/article/1?q=1', peer = '127.0.0.1' } = {},
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

const FORWARDED = {
  'x-forwarded-for': '203.0.113.9',
  'x-forwarded-server': 'public.example',
  'x-forwarded-scheme': 'https',
  'x-forwarded-script-name': '/front',
  'x-traversal-path': '/myapp',
  'x-traversal-query-string': 'q=1',
  'x-wsgiproxy-version': '0.2',
}

describe('proxyMiddleware', () => {
  it('restores host, scheme, client address, script name and path from a trusted front', async () => {
    const { status, environ } = await run(FORWARDED)
    expect(status).toBe(200)
    expect(environ).toMatchObject({
      HTTP_HOST: 'public.example',
      SERVER_NAME: 'public.example',
      SERVER_PORT: '443',
      'wsgi.url_scheme': 'https',
      REMOTE_ADDR: '203.0.113.9',
      SCRIPT_NAME: '/front',
      PATH_INFO: '/article/1',
      QUERY_STRING: 'q=1',
    })
    expect(
      Object.keys(environ ?? {}).filter((k) => /FORWARDED|TRAVERSAL|WSGIPROXY/.test(k)),
    ).toEqual([])
  })

  it('strips every protocol header and decodes nothing when trust is not configured', async () => {
    const { environ } = await run(
      {
        ...FORWARDED,
        'x-wsgiproxy-str-0': 'REMOTE_USER root',
        signature: 'x',
        'signature-input': 'y',
        forwarded: 'for=1.2.3.4',
      },
      {},
    )
    expect(environ).toMatchObject({
      HTTP_HOST: 'backend:8080',
      REMOTE_ADDR: '127.0.0.1',
      SCRIPT_NAME: '',
      PATH_INFO: '/myapp/article/1',
    })
    expect(environ?.['REMOTE_USER']).toBeUndefined()
    expect(
      Object.keys(environ ?? {}).filter((k) => /FORWARDED|TRAVERSAL|WSGIPROXY|SIGNATURE/.test(k)),
    ).toEqual([])
  })

  it('trusts nobody outside trustIps', async () => {
    const { environ } = await run(FORWARDED, { trustIps: ['10.0.0.0/8'] }, { peer: '192.0.2.1' })
    expect(environ).toMatchObject({
      REMOTE_ADDR: '192.0.2.1',
      'wsgi.url_scheme': 'http',
      SCRIPT_NAME: '',
    })
  })

  it('walks X-Forwarded-For from the peer through trusted hops only', async () => {
    const { environ } = await run(
      { 'x-forwarded-for': '6.6.6.6, 198.51.100.1, 10.0.0.2' },
      { trustIps: ['loopback', '10.0.0.0/8'] },
    )
    expect(environ?.REMOTE_ADDR).toBe('198.51.100.1')
  })

  it('treats a traversal path equal to the whole path as an empty PATH_INFO', async () => {
    const { environ } = await run({ 'x-traversal-path': '/myapp/' }, undefined, {
      url: 'http://b/myapp',
    })
    expect(environ?.PATH_INFO).toBe('')
  })

  it.each([
    [{ 'x-traversal-path': '/other' }, 'X-Traversal-Path'],
    [{ 'x-traversal-path': '/my' }, 'X-Traversal-Path'],
    [{ 'x-forwarded-script-name': 'front' }, 'X-Forwarded-Script-Name'],
    [{ 'x-forwarded-scheme': 'ftp' }, 'X-Forwarded-Scheme'],
    [{ 'x-forwarded-server': 'evil.example/path?' }, 'X-Forwarded-Server'],
    [{ 'x-wsgiproxy-version': '0.1' }, 'X-WSGIProxy-Version'],
    [{ 'x-wsgiproxy-str-0': 'REMOTE_USER b64!!!' }, 'X-WSGIProxy-Str-0'],
    [{ 'x-wsgiproxy-unicode-0': 'k b64ww==' }, 'X-WSGIProxy-Unicode-0'],
    [{ 'x-wsgiproxy-json-0': 'k {"__proto__":{"x":1}}' }, 'X-WSGIProxy-Json-0'],
    [{ 'x-wsgiproxy-json-0': 'k {nope' }, 'X-WSGIProxy-Json-0'],
    [{ 'x-wsgiproxy-str-0': 'wsgi.input x' }, 'X-WSGIProxy-Str-0'],
    [{ 'x-wsgiproxy-str-0': 'novalue' }, 'X-WSGIProxy-Str-0'],
  ])('answers 400 naming the header for %j, without calling the app', async (headers, named) => {
    const rejected: WsgiProxyError[] = []
    const result = await run(headers, {
      trustIps: ['loopback'],
      onReject: (e) => void rejected.push(e),
    })
    expect(result.status).toBe(400)
    expect(result.environ).toBeUndefined()
    expect(JSON.parse(result.body)).toMatchObject({ status: 400 })
    expect(result.body.toLowerCase()).toContain(named.toLowerCase())
    expect(rejected).toHaveLength(1)
  })

  it.each(['hasOwnProperty', 'toString', 'valueOf', '__defineGetter__', 'isPrototypeOf'])(
    'refuses the extra key %s with 400 instead of shadowing an Object method in the environ',
    async (key) => {
      const result = await run({ 'x-wsgiproxy-str-0': `${key} evil` })
      expect(result.status).toBe(400)
      expect(result.environ).toBeUndefined()
      expect(result.body).toContain('X-WSGIProxy-Str-0')
      expect(result.body).not.toContain('evil')
    },
  )

  it('answers 431 to more protocol headers than the cap', async () => {
    const headers: Record<string, string> = {}
    for (let i = 0; i < 65; i++) headers[`x-wsgiproxy-str-${i}`] = `k${i} v`
    const result = await run(headers, { trustIps: ['loopback'] })
    expect(result.status).toBe(431)
  })

  it('validates JSON keys with their zod schema', async () => {
    const jsonSchemas = { 'x.roles': z.array(z.enum(['admin', 'user'])) }
    const ok = await run(
      { 'x-wsgiproxy-json-0': 'x.roles ["user"]' },
      { trustIps: ['loopback'], jsonSchemas },
    )
    expect(ok.environ?.['x.roles']).toEqual(['user'])
    const bad = await run(
      { 'x-wsgiproxy-json-0': 'x.roles ["root"]' },
      { trustIps: ['loopback'], jsonSchemas },
    )
    expect(bad.status).toBe(400)
  })

  describe('configured values (as the original middleware)', () => {
    it('forces SCRIPT_NAME with prefix', async () => {
      const { environ } = await run({}, { prefix: '/bar/' }, { url: 'http://b/foo' })
      expect(environ).toMatchObject({ SCRIPT_NAME: '/bar', PATH_INFO: '/foo' })
    })

    it('moves popPrefix from PATH_INFO to SCRIPT_NAME', async () => {
      expect(
        (await run({}, { popPrefix: '/bar' }, { url: 'http://b/bar/foo' })).environ,
      ).toMatchObject({
        SCRIPT_NAME: '/bar',
        PATH_INFO: '/foo',
      })
      expect((await run({}, { popPrefix: '/bar' }, { url: 'http://b/bar' })).environ).toMatchObject(
        {
          SCRIPT_NAME: '/bar',
          PATH_INFO: '',
        },
      )
    })

    it('answers 400 when the path does not start with popPrefix', async () => {
      expect((await run({}, { popPrefix: '/bar' }, { url: 'http://b/barn' })).status).toBe(400)
    })

    it('keeps %2F in the rest of the path after popPrefix', async () => {
      const { environ } = await run({}, { popPrefix: '/bar' }, { url: 'http://b/bar/a%2Fb' })
      expect(environ).toMatchObject({
        SCRIPT_NAME: '/bar',
        PATH_INFO: '/a/b',
        'wsgiproxy.raw_path': '/bar/a%2Fb',
      })
    })

    it('forces scheme, host with port, domain and port', async () => {
      expect((await run({}, { scheme: 'https' })).environ?.['wsgi.url_scheme']).toBe('https')
      expect((await run({}, { host: 'example.com:8443' })).environ).toMatchObject({
        HTTP_HOST: 'example.com:8443',
        SERVER_NAME: 'example.com',
        SERVER_PORT: '8443',
      })
      expect((await run({}, { domain: 'example.com' })).environ).toMatchObject({
        HTTP_HOST: 'example.com:8080',
        SERVER_NAME: 'example.com',
        SERVER_PORT: '8080',
      })
      expect((await run({}, { port: 9000 })).environ).toMatchObject({
        HTTP_HOST: 'backend:9000',
        SERVER_NAME: 'backend',
        SERVER_PORT: '9000',
      })
      expect((await run({}, { domain: 'example.com', port: '81' })).environ).toMatchObject({
        HTTP_HOST: 'example.com:81',
        SERVER_NAME: 'example.com',
        SERVER_PORT: '81',
      })
    })

    it('applies configured values after the forwarded ones', async () => {
      const { environ } = await run(FORWARDED, {
        trustIps: ['loopback'],
        scheme: 'http',
        popPrefix: '/article',
      })
      expect(environ).toMatchObject({
        'wsgi.url_scheme': 'http',
        SCRIPT_NAME: '/front/article',
        PATH_INFO: '/1',
      })
    })

    it.each([
      [{ prefix: '/a', popPrefix: '/b' }, /prefix and proxyMiddleware\.popPrefix/],
      [{ host: 'a:1', domain: 'b' }, /host and proxyMiddleware\.domain/],
      [{ host: 'a:1', port: 2 }, /host and proxyMiddleware\.port/],
      [{ host: 'example.com' }, /host must be host:port/],
      [{ domain: 'example.com:80' }, /domain must be a host name without port/],
      [{ port: 70000 }, /port must be 0–65535/],
      [{ prefix: 'bar' }, /prefix must start with "\/"/],
      [{ trustIps: ['10.0.0.0/33'] }, /10\.0\.0\.0\/33/],
      [{ scheme: 'ftp' }, /scheme/],
    ] as Array<[ProxyMiddlewareOptions, RegExp]>)(
      'throws at construction for %j',
      (options, message) => {
        expect(() =>
          proxyMiddleware(() => ({ status: 200, headers: [], body: null }), options),
        ).toThrow(message)
      },
    )
  })
})

function restoreWith(
  environ: Partial<Environ>,
  headers: Record<string, string>,
  options: ProxyMiddlewareOptions = { trustIps: ['loopback'] },
) {
  let seen: Environ | undefined
  const app = proxyMiddleware((env) => {
    seen = env
    return { status: 200, headers: [], body: null }
  }, options)
  const base = toEnviron(new Request('http://b/myapp/x', { headers: { host: 'b', ...headers } }), {
    remoteAddr: '127.0.0.1',
  })
  return Promise.resolve(app({ ...base, ...environ })).then((response) => ({ response, seen }))
}

describe('proxyMiddleware edge cases', () => {
  it('replaces the traversal path when this app is itself mounted at or below it', async () => {
    const headers = { 'x-traversal-path': '/myapp', 'x-forwarded-script-name': '/front' }
    const atMount = await restoreWith({ SCRIPT_NAME: '/myapp', PATH_INFO: '/x' }, headers)
    expect(atMount.seen).toMatchObject({ SCRIPT_NAME: '/front', PATH_INFO: '/x' })
    const below = await restoreWith({ SCRIPT_NAME: '/myapp/sub', PATH_INFO: '/x' }, headers)
    expect(below.seen).toMatchObject({ SCRIPT_NAME: '/front/sub', PATH_INFO: '/x' })
  })

  it.each(['/fr?x=1', '//evil.com', '/front, /x', 'front', '/a b'])(
    'answers 400 to X-Forwarded-Script-Name %j',
    async (value) => {
      const { response } = await restoreWith({}, { 'x-forwarded-script-name': value })
      expect(response.status).toBe(400)
    },
  )

  it.each(['pub.example:99999', 'pub.example:-1', 'a b'])(
    'answers 400 to X-Forwarded-Server %j',
    async (value) => {
      const { response } = await restoreWith({}, { 'x-forwarded-server': value })
      expect(response.status).toBe(400)
    },
  )

  it('strips the legacy X-Script-Name and X-Scheme headers', async () => {
    const { seen } = await restoreWith({}, { 'x-script-name': '/evil', 'x-scheme': 'https' }, {})
    expect(seen?.['HTTP_X_SCRIPT_NAME']).toBeUndefined()
    expect(seen?.['HTTP_X_SCHEME']).toBeUndefined()
  })

  it('keeps the configured prefix out of the popPrefix error', async () => {
    const result = await run({}, { popPrefix: '/secret-mount' }, { url: 'http://b/other' })
    expect(result.status).toBe(400)
    expect(result.body).not.toContain('secret-mount')
  })

  it('brackets an IPv6 domain once', async () => {
    expect((await run({}, { domain: '[::1]' })).environ).toMatchObject({
      HTTP_HOST: '[::1]:8080',
      SERVER_NAME: '::1',
    })
  })
})

/** The environ a backend on 127.0.0.1 builds for `/myapp/article/1?q=1` with these headers. */
function request(headers: Record<string, string>): Environ {
  return toEnviron(
    new Request('http://backend:8080/myapp/article/1?q=1', {
      headers: { host: 'backend:8080', ...headers },
    }),
    { remoteAddr: '127.0.0.1' },
  )
}

describe('createEnvironRestorer', () => {
  it('answers the environ proxyMiddleware would pass its app', async () => {
    const options: ProxyMiddlewareOptions = { trustIps: ['loopback'], popPrefix: '/article' }
    const result = await createEnvironRestorer(options)(request(FORWARDED))
    const { environ: expected } = await run(FORWARDED, options)
    expect(result.ok).toBe(true)
    if (!result.ok) return
    const { 'wsgi.input': _input, 'wsgiproxy.signal': _signal, ...restored } = result.environ
    const { 'wsgi.input': _i, 'wsgiproxy.signal': _s, ...wanted } = expected ?? {}
    expect(restored).toEqual(wanted)
    expect(restored).toMatchObject({ SCRIPT_NAME: '/front/article', PATH_INFO: '/1' })
  })

  it('strips the protocol headers of an untrusted peer and restores nothing', async () => {
    const result = await createEnvironRestorer({ trustIps: ['10.0.0.0/8'] })(request(FORWARDED))
    expect(result.ok && result.environ).toMatchObject({
      REMOTE_ADDR: '127.0.0.1',
      HTTP_HOST: 'backend:8080',
      SCRIPT_NAME: '',
      PATH_INFO: '/myapp/article/1',
    })
    expect(result.ok && result.environ['HTTP_X_FORWARDED_FOR']).toBeUndefined()
  })

  it('answers the refusal instead of an environ, without throwing', async () => {
    const reasons: string[] = []
    const restore = createEnvironRestorer({
      verifier: createVerifier({
        keys: [{ id: 'k', secret: new Uint8Array(32).fill(7) }],
        replayStore: new MemoryReplayStore(),
      }),
      requireSignature: true,
      onReject: (error) => void reasons.push(error.code),
    })
    const result = await restore(request(FORWARDED))
    expect(result.ok).toBe(false)
    if (result.ok) return
    expect(result.response.status).toBe(401)
    expect(result.response.headers).toContainEqual([
      'www-authenticate',
      'Signature realm="wsgiproxy"',
    ])
    expect(reasons).toEqual(['SIGNATURE_INVALID'])
  })

  it('names itself in option errors', () => {
    expect(() => createEnvironRestorer({ prefix: '/a', popPrefix: '/b' })).toThrow(
      'createEnvironRestorer.prefix and createEnvironRestorer.popPrefix cannot be given together',
    )
  })
})
