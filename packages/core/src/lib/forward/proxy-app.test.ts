import * as fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import type {
  AppResponse,
  Environ,
  EnvironApp,
  OutboundRequest,
  Transport,
  UpgradeTarget,
} from '../../index.ts'
import { createProxyApp, proxyMiddleware, toEnviron } from '../../index.ts'
import { rewriteLocation } from './_location.ts'
import type { Running } from '@wsgiproxy/test-kit/servers'
import {
  closeAll,
  echoEnviron,
  send,
  startFetchFront,
  startUpstream,
} from '@wsgiproxy/test-kit/servers'

const EXTRA = {
  str: {
    REMOTE_USER: 'alice',
    'x.empty': '',
    'x.b64': 'b64abc',
    'x.padded': '  padded  ',
    'x.newline': 'a\nb',
    'x.nul': '\u0000',
    'x.latin1': 'é',
    'x.long': 'x'.repeat(3 * 1024),
  },
  unicode: {
    'u.ascii': 'plain ASCII',
    'u.empty': '',
    'u.b64': 'b64abc',
    'u.padded': '  padded  ',
    'u.newline': 'a\nb',
    'u.nul': '\u0000',
    'u.accent': 'é',
    'u.japanese': '日本',
    'u.emoji': '😀🎉',
    'u.long': 'y'.repeat(3 * 1024),
  },
  json: {
    'j.nested': { a: [1, { b: 'c', d: null }], e: true, f: '日本', g: 1.5 },
    'j.string': 'b64',
    'j.list': [],
  },
} as const

function withExtraKeys(app: EnvironApp): EnvironApp {
  return (environ) => app({ ...environ, ...EXTRA.str, ...EXTRA.unicode, ...EXTRA.json })
}

/** Front on 127.0.0.1 mounted at /front → backend trusting only 127.0.0.1. */
async function startPair(
  frontOptions: Partial<Parameters<typeof createProxyApp>[0]> = {},
  backendApp: EnvironApp = echoEnviron as EnvironApp,
): Promise<{ front: Running; backend: Running }> {
  const backend = await startFetchFront(proxyMiddleware(backendApp, { trustIps: ['127.0.0.1'] }))
  const proxy = createProxyApp({
    href: `${backend.origin}/myapp?x=1`,
    stringKeys: Object.keys(EXTRA.str),
    unicodeKeys: Object.keys(EXTRA.unicode),
    jsonKeys: Object.keys(EXTRA.json),
    onError: () => {},
    ...frontOptions,
  })
  const front = await startFetchFront(withExtraKeys(proxy), { scriptName: '/front' })
  return { front, backend }
}

function json(body: Buffer): Record<string, unknown> {
  return JSON.parse(body.toString()) as Record<string, unknown>
}

describe('createProxyApp and proxyMiddleware end to end', () => {
  afterEach(closeAll)

  it('restores the request as the client made it, with every extra key exact', async () => {
    const { front } = await startPair()
    const res = await send(front.origin, {
      path: '/front/article/1?a=b',
      localAddress: '127.0.0.2',
      headers: { 'x-custom': 'kept' },
    })
    expect(res.status).toBe(200)
    const seen = json(res.body)
    expect(seen).toMatchObject({
      REQUEST_METHOD: 'GET',
      SCRIPT_NAME: '/front',
      PATH_INFO: '/article/1',
      QUERY_STRING: 'a=b&x=1',
      HTTP_HOST: `127.0.0.1:${front.port}`,
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(front.port),
      'wsgi.url_scheme': 'http',
      REMOTE_ADDR: '127.0.0.2',
      HTTP_X_CUSTOM: 'kept',
    })
    for (const [key, value] of Object.entries({ ...EXTRA.str, ...EXTRA.unicode, ...EXTRA.json })) {
      expect({ key, value: seen[key] }).toEqual({ key, value })
    }
    expect(
      Object.keys(seen).filter((k) => /^HTTP_(X_FORWARDED|X_TRAVERSAL|X_WSGIPROXY)/.test(k)),
    ).toEqual([])
  })

  it('sends only the href query when the request has none, and "/" for the mount root', async () => {
    const { front } = await startPair()
    const seen = json((await send(front.origin, { path: '/front' })).body)
    expect(seen).toMatchObject({ SCRIPT_NAME: '/front', PATH_INFO: '', QUERY_STRING: 'x=1' })
  })

  it('keeps %2F and non-ASCII segments of the path through both hops', async () => {
    const { front } = await startPair()
    const seen = json((await send(front.origin, { path: '/front/a%2Fb/%C3%A9t%C3%A9' })).body)
    expect(seen).toMatchObject({ SCRIPT_NAME: '/front', PATH_INFO: '/a/b/été' })
    expect(seen['wsgiproxy.raw_path']).toBe('/front/a%2Fb/%C3%A9t%C3%A9')
  })

  it('streams request bodies to the backend', async () => {
    let received = ''
    const { front } = await startPair({}, async (environ) => {
      for await (const chunk of environ['wsgi.input'] ?? [])
        received += Buffer.from(chunk).toString()
      return { status: 204, headers: [], body: null }
    })
    const res = await send(front.origin, {
      method: 'POST',
      path: '/front/upload',
      body: ['a', 'b', 'c'],
    })
    expect(res.status).toBe(204)
    expect(received).toBe('abc')
  })

  it('deletes the protocol headers a client sends to the front', async () => {
    const { front } = await startPair({ stringKeys: [], unicodeKeys: [], jsonKeys: [] })
    const res = await send(front.origin, {
      path: '/front/x',
      localAddress: '127.0.0.2',
      headers: {
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-server': 'evil.example',
        'x-forwarded-scheme': 'https',
        'x-forwarded-script-name': '/evil',
        'x-traversal-path': '/evil',
        'x-wsgiproxy-str-0': 'REMOTE_USER root',
        'x-wsgiproxy-version': '0.1',
        forwarded: 'for=6.6.6.6',
      },
    })
    expect(res.status).toBe(200)
    const seen = json(res.body)
    expect(seen).toMatchObject({
      REMOTE_ADDR: '127.0.0.2',
      HTTP_HOST: `127.0.0.1:${front.port}`,
      'wsgi.url_scheme': 'http',
      SCRIPT_NAME: '/front',
      PATH_INFO: '/x',
    })
    expect(seen['REMOTE_USER']).toBeUndefined()
    expect(seen['HTTP_FORWARDED']).toBeUndefined()
  })

  it('lets a client reaching the backend directly inject nothing', async () => {
    const { backend } = await startPair()
    const res = await send(backend.origin, {
      path: '/myapp/page',
      localAddress: '127.0.0.3',
      headers: {
        'x-forwarded-for': '6.6.6.6',
        'x-forwarded-server': 'evil.example',
        'x-forwarded-scheme': 'https',
        'x-forwarded-script-name': '/evil',
        'x-traversal-path': '/myapp',
        'x-wsgiproxy-str-0': 'REMOTE_USER root',
        'x-wsgiproxy-json-0': 'j.admin true',
        'x-wsgiproxy-version': '0.2',
        X_Forwarded_For: '6.6.6.6',
        forwarded: 'for=6.6.6.6;proto=https',
      },
    })
    expect(res.status).toBe(200)
    const seen = json(res.body)
    expect(seen).toMatchObject({
      REMOTE_ADDR: '127.0.0.3',
      HTTP_HOST: `127.0.0.1:${backend.port}`,
      'wsgi.url_scheme': 'http',
      SCRIPT_NAME: '',
      PATH_INFO: '/myapp/page',
    })
    expect(seen['REMOTE_USER']).toBeUndefined()
    expect(seen['j.admin']).toBeUndefined()
    expect(Object.keys(seen).filter((k) => /FORWARDED|TRAVERSAL|WSGIPROXY/.test(k))).toEqual([])
  })

  it('rewrites redirects that point at the backend to public paths that name no host', async () => {
    const locations: Record<string, string> = {}
    const backend = await startUpstream((req, res) => {
      res.writeHead(302, { location: locations[req.url ?? ''] ?? '/' })
      res.end()
    })
    const proxy = createProxyApp({ href: `${backend.origin}/myapp`, onError: () => {} })
    const front = await startFetchFront(proxy, { scriptName: '/front' })
    const cases: Array<[string, string]> = [
      // Host-less: the public host would come from the client's Host (RFC 9110 §10.2.2).
      [`${backend.origin}/myapp/login?next=%2F#top`, '/front/login?next=%2F#top'],
      [`${backend.origin}/myapp`, '/front'],
      ['/myapp/login', '/front/login'],
      ['edit', 'edit'],
      ['../list', '../list'],
      ['https://other.example/myapp/x', 'https://other.example/myapp/x'],
      // The backend's own address never reaches the client, not even outside the href path.
      [`${backend.origin}/elsewhere`, '/elsewhere'],
      [`http://localhost:${backend.port}/admin?a=1`, '/admin?a=1'],
      ['/myapplication', '/myapplication'],
    ]
    for (const [index, [location]] of cases.entries()) locations[`/myapp/case/${index}`] = location
    for (const [index, [location, expected]] of cases.entries()) {
      const res = await send(front.origin, { path: `/front/case/${index}` })
      expect({ location, got: res.headers.location }).toEqual({ location, got: expected })
    }
  })

  it('never lets a forged Host choose where a rewritten redirect points', async () => {
    const backend = await startUpstream((req, res) => {
      res.writeHead(302, {
        location: `http://${req.headers.host}/myapp/login`,
        'content-location': `http://${req.headers.host}/myapp/page`,
      })
      res.end()
    })
    const proxy = createProxyApp({ href: `${backend.origin}/myapp`, onError: () => {} })
    const front = await startFetchFront(proxy, { scriptName: '/front' })
    const res = await send(front.origin, {
      path: '/front/x',
      headers: { host: 'evil.example' },
    })
    expect(res.status).toBe(302)
    expect(res.headers.location).toBe('/front/login')
    expect(res.headers['content-location']).toBe('/front/page')
  })

  it('leaves redirects alone with rewriteLocation: false', async () => {
    const backend = await startUpstream((_req, res) => {
      res.writeHead(301, { location: '/myapp/moved' })
      res.end()
    })
    const proxy = createProxyApp({ href: `${backend.origin}/myapp`, rewriteLocation: false })
    const front = await startFetchFront(proxy, { scriptName: '/front' })
    expect((await send(front.origin, { path: '/front/x' })).headers.location).toBe('/myapp/moved')
  })
})

function recording(): { transport: Transport; sent: OutboundRequest[] } {
  const sent: OutboundRequest[] = []
  return {
    sent,
    transport: async (outbound): Promise<AppResponse> => {
      sent.push(outbound)
      return { status: 200, headers: [], body: null }
    },
  }
}

function headerMap(outbound: OutboundRequest | undefined): Record<string, string> {
  return Object.fromEntries(outbound?.headers ?? [])
}

describe('createProxyApp', () => {
  it('sends the href Host, the protocol headers and the joined query', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://10.0.0.5:8080/myapp?some=querystring', transport })
    const environ: Environ = {
      ...toEnviron(
        new Request('https://public.example/front/article/1?a=b', {
          headers: { host: 'public.example' },
        }),
        {
          scriptName: '/front',
          remoteAddr: '203.0.113.9',
        },
      ),
    }
    await app(environ)
    expect(sent[0]?.url.href).toBe('http://10.0.0.5:8080/myapp/article/1?a=b&some=querystring')
    expect(headerMap(sent[0])).toEqual({
      host: '10.0.0.5:8080',
      'x-forwarded-for': '203.0.113.9',
      'x-forwarded-server': 'public.example',
      'x-forwarded-scheme': 'https',
      'x-forwarded-script-name': '/front',
      'x-traversal-path': '/myapp',
      'x-traversal-query-string': 'some=querystring',
      'x-wsgiproxy-version': '0.2',
    })
  })

  it('emits an RFC 7239 Forwarded header with quoted IPv6 and host:port', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend:8080/', transport, forwarded: true })
    await app(
      toEnviron(
        new Request('http://public.example:8443/x', { headers: { host: 'public.example:8443' } }),
        {
          remoteAddr: '2001:db8::7',
        },
      ),
    )
    expect(headerMap(sent[0])['forwarded']).toBe(
      'for="[2001:db8::7]";host="public.example:8443";proto=http',
    )
    await app(
      toEnviron(new Request('http://public.example/x', { headers: { host: 'public.example' } })),
    )
    expect(headerMap(sent[1])['forwarded']).toBe('for=unknown;host=public.example;proto=http')
  })

  it('numbers extra-key headers from 0 per kind and skips absent keys', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({
      href: 'http://backend/',
      transport,
      stringKeys: ['REMOTE_USER', 'absent', 'x.s'],
      jsonKeys: ['x.j'],
    })
    await app({
      ...toEnviron(new Request('http://h/')),
      REMOTE_USER: 'bob',
      'x.s': 's',
      'x.j': [1],
    })
    const lines = (sent[0]?.headers ?? []).filter(
      ([name]) => name.startsWith('x-wsgiproxy-') && name !== 'x-wsgiproxy-version',
    )
    expect(lines).toEqual([
      ['x-wsgiproxy-str-0', 'REMOTE_USER bob'],
      ['x-wsgiproxy-str-1', 'x.s s'],
      ['x-wsgiproxy-json-0', 'x.j [1]'],
    ])
  })

  it('refuses a PATH_INFO with a dot segment instead of resolving it outside the href path', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend/myapp', transport, onError: () => {} })
    const res = await app({ ...toEnviron(new Request('http://h/')), PATH_INFO: '/../admin' })
    expect(res.status).toBe(400)
    expect(sent).toHaveLength(0)
  })

  it('sends only the href query when the environ has no QUERY_STRING', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend/?x=1', transport })
    const environ: Environ = toEnviron(new Request('http://h/p'))
    delete (environ as Partial<Environ>).QUERY_STRING
    await app(environ)
    expect(sent[0]?.url.search).toBe('?x=1')
  })

  it('deletes the legacy X-Script-Name a client sends', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend/', transport })
    await app(
      toEnviron(
        new Request('http://h/', { headers: { 'x-script-name': '/evil', 'x-scheme': 'https' } }),
      ),
    )
    expect(headerMap(sent[0])['x-script-name']).toBeUndefined()
    expect(headerMap(sent[0])['x-scheme']).toBeUndefined()
  })

  // Each steers a backend framework that believes it (nginx real_ip, Rails Client-IP,
  // Symfony/Laravel X-Original-URL, Express method-override) past the front's mount and address.
  const SPOOFABLE: Record<string, string> = {
    'x-real-ip': '6.6.6.6',
    'true-client-ip': '6.6.6.6',
    'x-client-ip': '6.6.6.6',
    'client-ip': '6.6.6.6',
    'cf-connecting-ip': '6.6.6.6',
    'fastly-client-ip': '6.6.6.6',
    'x-cluster-client-ip': '6.6.6.6',
    'x-original-url': '/admin',
    'x-rewrite-url': '/admin',
    'x-original-host': 'evil.example',
    'x-host': 'evil.example',
    'x-http-method-override': 'DELETE',
    'x-http-method': 'DELETE',
    'x-method-override': 'DELETE',
    'x-forwarded-prefix': '/evil',
    'x-forwarded-uri': '/admin',
    'x-forwarded-path': '/admin',
  }

  it('deletes the routing and identity headers a client sends', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend/myapp', transport })
    await app(
      toEnviron(new Request('http://h/x', { headers: { ...SPOOFABLE, 'x-custom': 'kept' } })),
    )
    const forwarded = headerMap(sent[0])
    for (const name of Object.keys(SPOOFABLE)) {
      expect({ name, value: forwarded[name] }).toEqual({ name, value: undefined })
    }
    expect(forwarded['x-custom']).toBe('kept')
  })

  it('deletes them from upgrade requests too', async () => {
    const app = createProxyApp({ href: 'http://backend/myapp' })
    const target = await app.prepareUpgrade(
      toEnviron(new Request('http://h/ws', { headers: { ...SPOOFABLE, upgrade: 'websocket' } })),
    )
    const names = 'headers' in target ? target.headers.map(([name]) => name) : ['no target']
    expect(names.filter((name) => name in SPOOFABLE)).toEqual([])
  })

  it('forwards the client headers named in trustClientHeaders, whatever their case', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({
      href: 'http://backend/',
      transport,
      trustClientHeaders: ['CF-Connecting-IP', 'x-real-ip'],
    })
    await app(toEnviron(new Request('http://h/', { headers: SPOOFABLE })))
    const forwarded = headerMap(sent[0])
    expect(forwarded['cf-connecting-ip']).toBe('6.6.6.6')
    expect(forwarded['x-real-ip']).toBe('6.6.6.6')
    expect(forwarded['true-client-ip']).toBeUndefined()
    expect(forwarded['x-original-url']).toBeUndefined()
  })

  it('refuses a trustClientHeaders name the front does not delete or always replaces', () => {
    expect(() => createProxyApp({ href: 'http://h/', trustClientHeaders: ['x-realip'] })).toThrow(
      /trustClientHeaders names "x-realip", not one the front deletes; expected one of x-real-ip/,
    )
    expect(() =>
      createProxyApp({ href: 'http://h/', trustClientHeaders: ['X-Forwarded-For'] }),
    ).toThrow(/"X-Forwarded-For", a protocol header, which the front always replaces/)
  })

  it('refuses bad options at construction with a clear message', () => {
    expect(() => createProxyApp({ href: 'ftp://h/' })).toThrow(/href must use http or https/)
    expect(() => createProxyApp({ href: 'not a url' })).toThrow(/href is not a URL/)
    expect(() => createProxyApp({ href: 'http://u:p@h/' })).toThrow(/credentials/)
    expect(() => createProxyApp({ href: 'http://h/', pickleKeys: ['x'] })).toThrow(/pickleCodec/)
    expect(() => createProxyApp({ href: 'http://h/', stringKeys: ['wsgi.input'] })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
    expect(() => createProxyApp({ href: 'http://h/', stringKeys: ['__proto__'] })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
  })

  it('forwards pickle keys through the given codec and a receiver decodes them', async () => {
    const codec = {
      stringify: (v: unknown) => JSON.stringify(v),
      parse: (t: string) => JSON.parse(t) as unknown,
    }
    const { transport, sent } = recording()
    const app = createProxyApp({
      href: 'http://backend/',
      transport,
      pickleKeys: ['x.p'],
      pickleCodec: codec,
    })
    await app({ ...toEnviron(new Request('http://h/')), 'x.p': { deep: ['v'] } })
    const forwarded = new Request('http://backend/', { headers: sent[0]?.headers ?? [] })
    let seen: Environ | undefined
    const receiver = proxyMiddleware(
      (environ) => {
        seen = environ
        return { status: 204, headers: [], body: null }
      },
      { trustIps: ['127.0.0.1'], pickleCodec: codec },
    )
    await receiver(toEnviron(forwarded, { remoteAddr: '127.0.0.1' }))
    expect(seen?.['x.p']).toEqual({ deep: ['v'] })
    const withoutCodec = proxyMiddleware(
      (environ) => {
        seen = environ
        return { status: 204, headers: [], body: null }
      },
      { trustIps: ['127.0.0.1'] },
    )
    await withoutCodec(toEnviron(forwarded, { remoteAddr: '127.0.0.1' }))
    expect(seen?.['x.p']).toBeUndefined()
    expect(Object.keys(seen ?? {}).some((key) => key.startsWith('HTTP_X_WSGIPROXY'))).toBe(false)
  })
})

function upgradeEnviron(upgrade: string | undefined): Environ {
  const environ = toEnviron(new Request('http://public.example/ws'), { remoteAddr: '10.1.1.1' })
  return upgrade === undefined ? environ : { ...environ, HTTP_UPGRADE: upgrade }
}

function upgradeLines(target: UpgradeTarget | AppResponse): Array<[string, string]> {
  if (!('url' in target)) throw new Error(`expected a target (got status ${target.status})`)
  return target.headers.filter(([name]) => name === 'upgrade' || name === 'connection')
}

function upgradeTarget(
  options: Partial<Parameters<typeof createProxyApp>[0]>,
): Promise<UpgradeTarget | AppResponse> {
  const app = createProxyApp({ href: 'http://backend/', ...options })
  return app.prepareUpgrade(upgradeEnviron('websocket'))
}

describe('createProxyApp prepareUpgrade', () => {
  it.each([
    ['websocket', 'websocket'],
    ['WebSocket', 'WebSocket'],
    ['websocket, h2c/1', 'websocket, h2c/1'],
    [' websocket ,\t, foo/1.0 ', 'websocket, foo/1.0'],
  ])('sends Upgrade %j upstream as %j, with Connection: upgrade', async (offered, sent) => {
    const app = createProxyApp({ href: 'http://backend:8080/myapp' })
    const target = await app.prepareUpgrade(upgradeEnviron(offered))
    expect(upgradeLines(target)).toEqual([
      ['connection', 'upgrade'],
      ['upgrade', sent],
    ])
  })

  it.each([
    ['websocket foo'],
    ['web socket'],
    ['websocket;q=1'],
    ['a/b/c'],
    ['/1'],
    ['websocket/'],
    ['"websocket"'],
    ['websocket\u0000'],
    ['websocket\r\nx-injected: 1'],
    ['wébsocket'],
  ])('answers 400 to Upgrade %j, which is not a list of protocol tokens', async (offered) => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend/', transport, onError: () => {} })
    const answer = await app.prepareUpgrade(upgradeEnviron(offered))
    expect(answer).toMatchObject({ status: 400 })
    expect(sent).toHaveLength(0)
  })

  it.each([[undefined], [''], [' , ,']])('answers 400 to an empty Upgrade %j', async (offered) => {
    const app = createProxyApp({ href: 'http://backend/', onError: () => {} })
    expect(await app.prepareUpgrade(upgradeEnviron(offered))).toMatchObject({ status: 400 })
  })

  it('gives the upgrade the headers timeout of any request', async () => {
    expect(await upgradeTarget({})).toMatchObject({ headersTimeout: 60_000 })
    expect(await upgradeTarget({ timeouts: { upstreamHeaders: 1_500 } })).toMatchObject({
      headersTimeout: 1_500,
    })
    const off = await upgradeTarget({ timeouts: { upstreamHeaders: false } })
    expect('url' in off && !('headersTimeout' in off)).toBe(true)
  })
})

/** The fastest of three calls of rewriteLocation, in milliseconds. */
function fastestRewrite(value: string, mapping: Parameters<typeof rewriteLocation>[1]): number {
  let best = Infinity
  for (let run = 0; run < 3; run++) {
    const started = performance.now()
    rewriteLocation(value, mapping)
    best = Math.min(best, performance.now() - started)
  }
  return best
}

describe('rewriteLocation', () => {
  const mapping = {
    backendOrigin: 'http://10.0.0.5:8080',
    backendPath: '/myapp',
    publicPath: '/front',
  }
  it.each([
    // Host-less, so the client's Host never chooses the target (RFC 9110 §10.2.2).
    ['http://10.0.0.5:8080/myapp/a?b=1', '/front/a?b=1'],
    ['http://10.0.0.5:8080/myapp', '/front'],
    ['//10.0.0.5:8080/myapp/a', '/front/a'],
    ['/myapp/a', '/front/a'],
    ['/myapp', '/front'],
    ['/other', '/other'],
    ['/myappx', '/myappx'],
    ['a/b', 'a/b'],
    ['?page=2', '?page=2'],
    // The backend's own socket outside the href path: path kept, internal origin dropped.
    ['http://10.0.0.5:8080/admin', '/admin'],
    ['http://10.0.0.5:8080/myappx#f', '/myappx#f'],
    ['HTTP://10.0.0.5:8080/admin', '/admin'],
    ['http://10.0.0.5:8080', '/'],
    // The same socket under the other scheme, and loopback names the backend may use for itself.
    ['https://10.0.0.5:8080/myapp/a', '/front/a'],
    ['http://127.0.0.1:8080/other', '/other'],
    ['http://localhost:8080/myapp/a', '/front/a'],
    ['http://localhost.:8080/x', '/x'],
    ['http://app.localhost:8080/x', '/x'],
    ['http://[::1]:8080/x', '/x'],
    ['http://0.0.0.0:8080/x', '/x'],
    ['http://[::ffff:127.0.0.1]:8080/x', '/x'],
    ['http://user:pw@10.0.0.5:8080/myapp/a', '/front/a'],
    ['ht\ttp://10.0.0.5:8080/admin', '/admin'],
    // Other ports and hosts are left alone: a backend may send the client to a login service.
    ['http://10.0.0.5:9090/myapp/a', 'http://10.0.0.5:9090/myapp/a'],
    ['http://127.0.0.1:9090/x', 'http://127.0.0.1:9090/x'],
    ['http://10.0.0.6:8080/x', 'http://10.0.0.6:8080/x'],
    ['https://login.example/auth?next=%2F', 'https://login.example/auth?next=%2F'],
    ['//login.example/x', '//login.example/x'],
    ['mailto:x@example.com', 'mailto:x@example.com'],
    ['http://[', 'http://['],
  ])('maps %j to %j', (value, expected) => {
    expect(rewriteLocation(value, mapping)).toBe(expected)
  })

  it('never produces a reference that names another host', () => {
    const atRoot = { ...mapping, publicPath: '' }
    expect(rewriteLocation('/myapp//evil.com/', atRoot)).toBe('/.//evil.com/')
    expect(rewriteLocation('http://10.0.0.5:8080//evil.com/', mapping)).toBe('/.//evil.com/')
    const backendRoot = { ...mapping, backendPath: '', publicPath: '' }
    for (const value of [
      '/.//evil.com/x',
      '/%2e//evil.com',
      '/foo/..//evil.com',
      '/.\\/evil.com',
    ]) {
      const rewritten = rewriteLocation(value, backendRoot)
      expect({ value, origin: new URL(rewritten, 'https://public.example/a/b').origin }).toEqual({
        value,
        origin: 'https://public.example',
      })
    }
  })

  it('never lets the backend origin through and keeps a rewritten value on the public origin', () => {
    const backendRoot = { ...mapping, backendPath: '', publicPath: '' }
    const reference = fc.oneof(
      fc.webUrl(),
      fc.string(),
      fc
        .tuple(
          fc.constantFrom('http://10.0.0.5:8080', '//10.0.0.5:8080', 'http://127.0.0.1:8080', ''),
          fc.webPath(),
          fc.constantFrom('', '?q=1', '#f'),
        )
        .map((parts) => parts.join('')),
    )
    fc.assert(
      fc.property(reference, fc.constantFrom(mapping, backendRoot), (value, where) => {
        const rewritten = rewriteLocation(value, where)
        // As a browser on https://public.example/a/b reads the header.
        const resolved = URL.parse(rewritten, 'https://public.example/a/b')
        const leaks = ['10.0.0.5:8080', '127.0.0.1:8080'].includes(resolved?.host ?? '')
        const moved = rewritten !== value && resolved?.origin !== 'https://public.example'
        expect({ value, leaks, moved }).toEqual({ value, leaks: false, moved: false })
      }),
    )
  })

  it('reads a value with a long run of inner whitespace in linear time', () => {
    const letters = fastestRewrite(`http://10.0.0.5:8080/myapp/a${'b'.repeat(64 * 1024)}a`, mapping)
    const spaces = fastestRewrite(`http://10.0.0.5:8080/myapp/a${' '.repeat(64 * 1024)}a`, mapping)
    expect(spaces).toBeLessThan(10 * letters + 20)
  })

  it('leaves path-absolute values already under the public path alone', () => {
    const backendRoot = { ...mapping, backendPath: '' }
    expect(rewriteLocation('/front/login', backendRoot)).toBe('/front/login')
    expect(rewriteLocation('/login', backendRoot)).toBe('/front/login')
    const nested = { ...mapping, publicPath: '/myapp/v2' }
    expect(rewriteLocation('/myapp/v2/login', nested)).toBe('/myapp/v2/login')
  })

  it('maps a backend at the root under the public script name', () => {
    const root = { ...mapping, backendPath: '', publicPath: '' }
    expect(rewriteLocation('http://10.0.0.5:8080/a', root)).toBe('/a')
    expect(rewriteLocation('/a', { ...root, publicPath: '/front' })).toBe('/front/a')
    expect(rewriteLocation('http://10.0.0.5:8080/front/a', { ...root, publicPath: '/front' })).toBe(
      '/front/front/a',
    )
  })
})
