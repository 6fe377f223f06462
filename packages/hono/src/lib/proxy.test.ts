import type { IncomingHttpHeaders } from 'node:http'
import { WsgiProxyError } from '@wsgiproxy/core'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { closeAll, freePort, readBody, startUpstream } from '@wsgiproxy/test-kit/servers'
import { recordingErrorHook } from '@wsgiproxy/test-kit/errors'
import type { ProxyOptions } from './proxy.ts'
import { proxy } from './proxy.ts'

interface Seen {
  method: string | undefined
  url: string | undefined
  headers: IncomingHttpHeaders
  body: string
}

/** A real upstream on 127.0.0.1 port 0 that records the requests it gets and answers `ok`. */
async function recordingUpstream(): Promise<{ upstream: Running; seen: Seen[] }> {
  const seen: Seen[] = []
  const upstream = await startUpstream(async (req, res) => {
    const body = (await readBody(req)).toString()
    seen.push({ method: req.method, url: req.url, headers: req.headers, body })
    if (req.url?.endsWith('/redirect')) {
      res.writeHead(302, { location: `http://${req.headers.host}/myapp/moved` })
      res.end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'yes' })
    res.end('ok')
  })
  return { upstream, seen }
}

/** The @hono/node-server env of a request from `address`. */
function peer(address: string): object {
  return { incoming: { socket: { remoteAddress: address } } }
}

const PROTOCOL_HEADERS = {
  'x-forwarded-for': '203.0.113.9',
  'x-forwarded-server': 'public.example',
  'x-forwarded-scheme': 'https',
  'x-forwarded-script-name': '/front',
  'x-traversal-path': '/myapp',
  'x-wsgiproxy-version': '0.2',
}

describe('proxy', () => {
  afterEach(closeAll)

  it('balances over several targets and sends a GET refused by one to another', async () => {
    const one = await recordingUpstream()
    const two = await recordingUpstream()
    const dead = await freePort()
    const app = new Hono().all(
      '/front/*',
      proxy({
        href: [
          `${one.upstream.origin}/myapp`,
          `${two.upstream.origin}/myapp`,
          `http://127.0.0.1:${dead}`,
        ],
        balance: 'round-robin',
        retries: { header: 'x-tries' },
      }),
    )
    const tries: Array<string | null> = []
    for (let i = 0; i < 6; i++) {
      const response = await app.request('http://public.example/front/x', {}, peer('203.0.113.9'))
      expect(response.status).toBe(200)
      tries.push(response.headers.get('x-tries'))
      await response.arrayBuffer()
    }
    expect(one.seen.length + two.seen.length).toBe(6)
    expect(one.seen.length).toBeGreaterThanOrEqual(2)
    expect(two.seen.length).toBeGreaterThanOrEqual(2)
    expect(tries).toContain('2')
    expect(one.seen[0]?.headers['x-forwarded-script-name']).toBe('/front')
  })

  it('reports a bad target of a list', () => {
    expect(() => proxy({ href: ['http://127.0.0.1:1', 'ftp://x'] })).toThrow(
      'invalid options: proxy.href.1: expected http or https (got "ftp")',
    )
    expect(() => proxy({ href: 'http://127.0.0.1:1', balance: 'random' as 'round-robin' })).toThrow(
      "createProxyApp.balance: expected 'least-outstanding'",
    )
  })

  it('forwards to href with the protocol headers of the matched route', async () => {
    const { upstream, seen } = await recordingUpstream()
    const app = new Hono().all('/front/*', proxy({ href: `${upstream.origin}/myapp?k=v` }))
    const response = await app.request(
      'https://public.example/front/article/a%2Fb?a=1',
      { headers: { 'x-custom': 'kept' } },
      peer('203.0.113.9'),
    )
    expect(response.status).toBe(200)
    expect(response.headers.get('x-upstream')).toBe('yes')
    expect(await response.text()).toBe('ok')
    expect(seen).toHaveLength(1)
    const [request] = seen
    expect(request?.url).toBe('/myapp/article/a%2Fb?a=1&k=v')
    expect(request?.headers).toMatchObject({
      ...PROTOCOL_HEADERS,
      host: `127.0.0.1:${upstream.port}`,
      'x-traversal-query-string': 'k=v',
      'x-custom': 'kept',
    })
  })

  it('forwards environ keys the environ option takes from the context, such as REMOTE_USER', async () => {
    const { upstream, seen } = await recordingUpstream()
    const app = new Hono<{ Variables: { user: string } }>()
    app.use('/front/*', async (c, next) => {
      c.set('user', 'alice')
      await next()
    })
    app.all(
      '/front/*',
      proxy({
        href: upstream.origin,
        environ: (c) => ({ REMOTE_USER: c.get('user') as string, 'x.unset': undefined }),
        stringKeys: ['REMOTE_USER', 'x.unset'],
      }),
    )
    const response = await app.request('http://public.example/front/x', {}, peer('203.0.113.9'))
    expect(response.status).toBe(200)
    expect(seen[0]?.headers['x-wsgiproxy-str-0']).toBe('REMOTE_USER alice')
    expect(seen[0]?.headers['x-wsgiproxy-str-1']).toBeUndefined()
  })

  it('answers 500 when the environ option names a key the request sets itself', async () => {
    const { upstream, seen } = await recordingUpstream()
    const messages: string[] = []
    const app = new Hono().all(
      '/front/*',
      proxy({
        href: upstream.origin,
        environ: () => ({ REMOTE_ADDR: '10.0.0.1' }),
        onError: (error) => void messages.push(`${error.code}: ${error.message}`),
      }),
    )
    const response = await app.request('http://public.example/front/x', {}, peer('203.0.113.9'))
    expect(response.status).toBe(500)
    expect(seen).toEqual([])
    expect(messages).toEqual([
      'APP_ERROR: an extra environ key (toFetchHandler\'s extraEnviron, the environ option of the Hono adapters) must not be a key the protocol sets itself (CGI keys, HTTP_*, wsgi.*, wsgiproxy.*) (got "REMOTE_ADDR")',
    ])
  })

  it('deletes the protocol headers the client sent before setting its own', async () => {
    const { upstream, seen } = await recordingUpstream()
    const app = new Hono().all('/*', proxy({ href: upstream.origin }))
    await app.request(
      'http://public.example/x',
      {
        headers: {
          'x-forwarded-for': '198.51.100.66',
          'x-forwarded-script-name': '/evil',
          'x-wsgiproxy-str-0': 'REMOTE_USER admin',
          forwarded: 'for=198.51.100.66',
        },
      },
      peer('192.0.2.1'),
    )
    const headers = seen[0]?.headers ?? {}
    expect(headers['x-forwarded-for']).toBe('192.0.2.1')
    expect(headers['x-forwarded-script-name']).toBeUndefined()
    expect(headers['x-wsgiproxy-str-0']).toBeUndefined()
    expect(headers['forwarded']).toBeUndefined()
  })

  it('streams a POST body and sends the client address getRemoteAddr finds', async () => {
    const { upstream, seen } = await recordingUpstream()
    const app = new Hono().all(
      '/api/*',
      proxy({ href: upstream.origin, getRemoteAddr: (c) => c.req.header('x-real-ip') }),
    )
    const response = await app.request('http://public.example/api/items', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-real-ip': '198.51.100.7' },
      body: '{"a":1}',
    })
    expect(response.status).toBe(200)
    expect(seen[0]).toMatchObject({
      method: 'POST',
      url: '/items',
      body: '{"a":1}',
      headers: {
        'content-type': 'application/json',
        'x-forwarded-for': '198.51.100.7',
        'x-forwarded-script-name': '/api',
      },
    })
  })

  it('rewrites a redirect to the backend into a public path that names no host', async () => {
    const { upstream } = await recordingUpstream()
    const app = new Hono().all('/front/*', proxy({ href: `${upstream.origin}/myapp` }))
    const response = await app.request('https://public.example/front/redirect')
    expect(response.status).toBe(302)
    expect(response.headers.get('location')).toBe('/front/moved')
  })

  it('answers HEAD without a body', async () => {
    const { upstream, seen } = await recordingUpstream()
    const app = new Hono().all('/*', proxy({ href: upstream.origin }))
    const response = await app.request('http://public.example/x', { method: 'HEAD' })
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('')
    expect(seen[0]?.method).toBe('HEAD')
  })

  it('answers 502 problem+json without the upstream address when it refuses', async () => {
    const port = await freePort()
    const codes: string[] = []
    const app = new Hono().all(
      '/*',
      proxy({ href: `http://127.0.0.1:${port}`, onError: (error) => void codes.push(error.code) }),
    )
    const response = await app.request('http://public.example/x')
    expect(response.status).toBe(502)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    expect(await response.text()).not.toContain(String(port))
    expect(codes).toEqual(['UPSTREAM_UNREACHABLE'])
  })

  it('calls onError with the error and environ of a forwarding failure and sends its response', async () => {
    const port = await freePort()
    const calls: unknown[] = []
    const app = new Hono().all(
      '/api/*',
      proxy({
        href: `http://127.0.0.1:${port}`,
        onError: (error, environ) => {
          expect(error).toBeInstanceOf(WsgiProxyError)
          calls.push([error.code, environ?.SCRIPT_NAME, environ?.PATH_INFO])
          return { status: 503, headers: [['retry-after', '7']], body: null }
        },
      }),
    )
    const response = await app.request('http://public.example/api/x')
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).toBe('7')
    expect(calls).toEqual([['UPSTREAM_UNREACHABLE', '/api', '/x']])
  })

  it('calls onError without an environ for a request it cannot turn into one', async () => {
    const { upstream, seen } = await recordingUpstream()
    const { onError, calls } = recordingErrorHook()
    const app = new Hono().all(
      '/*',
      proxy({
        href: upstream.origin,
        onError,
      }),
    )
    const response = await app.request('http://public.example/x', { headers: { host: 'a b' } })
    expect(response.status).toBe(421)
    expect(calls).toEqual([['BAD_REQUEST', undefined]])
    expect(seen).toEqual([])
  })

  it.each([
    [{ href: 'ftp://example.com' }, /^invalid options: proxy\.href: expected http or https/],
    [{ href: 'http://user:secret@example.com' }, /^invalid options: proxy\.href: .*credentials/],
    [{}, /^invalid options: proxy\.href: /],
    [{ href: 'http://h', maxHeaders: 0 }, /^invalid options: proxy\.maxHeaders: /],
    [
      { href: 'http://h', onError: 'log' },
      /^invalid options: proxy\.onError: expected a function$/,
    ],
    [{ href: 'http://h', getRemoteAddr: 1 }, /^invalid options: proxy\.getRemoteAddr: /],
    [{ href: 'http://h', stringKeys: 'REMOTE_USER' }, /^invalid options: proxy\.stringKeys: /],
    [
      { href: 'http://h', timeouts: { headers: 0 } },
      /^invalid options: proxy\.timeouts\.headers: /,
    ],
    [
      { href: 'http://h', pickleKeys: ['x'] },
      /^invalid options: proxy\.pickleKeys needs proxy\.pickleCodec/,
    ],
    [{ href: 'http://h', hreff: 'x' }, /^invalid options: proxy: .*"hreff"/],
  ])('names proxy and the option in the error for %j', (options, message) => {
    let caught: unknown
    try {
      proxy(options as ProxyOptions)
    } catch (error) {
      caught = error
    }
    expect(caught).toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(message),
    })
    expect(String(caught)).not.toContain('createProxyApp')
    expect(String(caught)).not.toContain('secret')
  })

  it('takes a URL string for { href }', async () => {
    const { upstream, seen } = await recordingUpstream()
    const app = new Hono().all('/front/*', proxy(`${upstream.origin}/myapp`))
    const response = await app.request('http://public.example/front/a?b=1')
    expect(await response.text()).toBe('ok')
    expect(seen.map((request) => request.url)).toEqual(['/myapp/a?b=1'])
    expect(seen[0]?.headers['x-forwarded-script-name']).toBe('/front')
    const fromUrl = new Hono().all('/*', proxy(new URL(upstream.origin)))
    expect((await fromUrl.request('http://public.example/c')).status).toBe(200)
    expect(seen.map((request) => request.url)).toEqual(['/myapp/a?b=1', '/c'])
  })

  it.each([
    [8080, 'invalid options: proxy: expected a URL string or an options object (got 8080)'],
    [null, 'invalid options: proxy: expected a URL string or an options object (got null)'],
    [
      ['http://h'],
      'invalid options: proxy: expected a URL string or an options object (got an array)',
    ],
    [{ hrf: 'http://h' }, 'invalid options: proxy: unknown option "hrf" (did you mean "href"?)'],
    [
      { href: 'http://h', maxHeader: 10 },
      'invalid options: proxy: unknown option "maxHeader" (did you mean "maxHeaders"?)',
    ],
    [
      { target: 'http://h', changeOrigin: true },
      'invalid options: proxy: unknown option "target" (use "href", the URL to forward to; its path goes in front of the request path); ' +
        `proxy: unknown option "changeOrigin" (the Host sent is always the href's, as with changeOrigin: true; the client's goes in X-Forwarded-Server)`,
    ],
    [
      { href: 'http://h', proxyTimeout: 5_000, maxHeaders: 0 },
      'invalid options: proxy: unknown option "proxyTimeout" (use "timeouts": { upstreamHeaders: ms }, how long the upstream may take to answer); ' +
        'proxy.maxHeaders: Too small: expected number to be >=1',
    ],
    [
      { href: 'http://h', timeouts: { upstreamHeader: 5_000 } },
      'invalid options: proxy.timeouts: unknown option "upstreamHeader" (did you mean "upstreamHeaders"?)',
    ],
  ])('explains %j in one message: unknown options first, with what to use', (options, message) => {
    let caught: unknown
    try {
      proxy(options as ProxyOptions)
    } catch (error) {
      caught = error
    }
    expect(caught).toBeInstanceOf(WsgiProxyError)
    expect((caught as WsgiProxyError).message).toBe(message)
  })
})
