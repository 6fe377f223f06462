import type {
  AppResponse,
  Environ,
  OutboundRequest,
  ProxyAppOptions,
  SigningKey,
  Verifier,
} from '@wsgiproxy/core'
import {
  createProxyApp,
  createSigner,
  createVerifier,
  MemoryReplayStore,
  SignatureRejectedError,
  toEnviron,
  WsgiProxyError,
} from '@wsgiproxy/core'
import { Hono } from 'hono'
import { describe, expect, expectTypeOf, it } from 'vitest'
import type { WsgiProxyOptions, WsgiProxyVariables } from './wsgi-proxy.ts'
import { wsgiProxy } from './wsgi-proxy.ts'

const KEY: SigningKey = { id: 'k1', secret: new Uint8Array(32).fill(7) }
const OTHER_KEY: SigningKey = { id: 'k1', secret: new Uint8Array(32).fill(8) }

const FORWARDED = {
  'x-forwarded-for': '203.0.113.9',
  'x-forwarded-server': 'public.example',
  'x-forwarded-scheme': 'https',
  'x-forwarded-script-name': '/front',
  'x-traversal-path': '/myapp',
  'x-wsgiproxy-version': '0.2',
}

interface Seen {
  environ: Environ
  originalUrl: URL
  body: string
}

/**
 * A backend Hono app behind wsgiProxy whose handlers record what they see, and a `send` that
 * makes a request to it from a peer address (as @hono/node-server reports it).
 */
function backend(options: WsgiProxyOptions): {
  send: (request: Request, peer?: string) => Promise<Response>
  seen: Seen[]
} {
  const seen: Seen[] = []
  const app = new Hono<{ Variables: WsgiProxyVariables }>()
  app.use(wsgiProxy(options))
  app.all('*', async (c) => {
    const environ = c.get('environ')
    expectTypeOf(environ).toEqualTypeOf<Environ>()
    expectTypeOf(c.get('originalUrl')).toEqualTypeOf<URL>()
    seen.push({ environ, originalUrl: c.get('originalUrl'), body: await c.req.text() })
    return c.text('handled')
  })
  return {
    seen,
    send: async (request, peer = '127.0.0.1') =>
      app.request(request, undefined, { incoming: { socket: { remoteAddress: peer } } }),
  }
}

/** What a front proxy sends to http://backend:8080/myapp for `path` (signed with a signer). */
async function fromFront(
  path: string,
  options: Partial<ProxyAppOptions> = {},
  init: RequestInit = {},
): Promise<Request> {
  let sent: OutboundRequest | undefined
  const front = createProxyApp({
    href: 'http://backend:8080/myapp',
    transport: async (outbound): Promise<AppResponse> => {
      sent = outbound
      return { status: 204, headers: [], body: null }
    },
    ...options,
  })
  const request = new Request(`https://public.example${path}`, init)
  await front({
    ...toEnviron(request, { scriptName: '/front', remoteAddr: '203.0.113.9' }),
    REMOTE_USER: 'alice',
  })
  if (sent === undefined) throw new Error('the front sent nothing')
  const chunks: Uint8Array[] = []
  for await (const chunk of sent.body ?? []) chunks.push(chunk)
  return new Request(sent.url, {
    method: sent.method,
    headers: sent.headers,
    ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}),
  })
}

/** A verifier of KEY with its own replay store. */
function freshVerifier(): Verifier {
  return createVerifier({ keys: [KEY], replayStore: new MemoryReplayStore() })
}

/**
 * A verifier that accepts every request after reading its body whole, as a digest check does,
 * and hands back `payload` as the replacement body, counting how often that body is read.
 */
function bufferingVerifier(body: string): {
  verifier: Verifier
  payload: Uint8Array
  reads: { count: number }
} {
  const payload = new TextEncoder().encode(body)
  const reads = { count: 0 }
  const verifier: Verifier = {
    async verify(environ) {
      const received: Uint8Array[] = []
      for await (const chunk of environ['wsgi.input'] ?? []) received.push(chunk)
      return {
        status: 'valid',
        keyid: KEY.id,
        covered: new Set(),
        body: {
          async *[Symbol.asyncIterator]() {
            reads.count++
            yield payload
          },
        },
      }
    },
  }
  return { verifier, payload, reads }
}

/** A request to the backend with these headers set by hand. */
function direct(headers: Record<string, string> = {}, path = '/myapp/article/1?q=1'): Request {
  return new Request(`http://backend:8080${path}`, { headers })
}

function onlySeen(seen: Seen[]): Seen {
  expect(seen).toHaveLength(1)
  const [first] = seen
  if (first === undefined) throw new Error('no handler ran')
  return first
}

describe('wsgiProxy', () => {
  describe('with trustIps', () => {
    it('restores the original request from a trusted peer and exposes its URL', async () => {
      const { send, seen } = backend({ trustIps: ['loopback'] })
      const response = await send(direct(FORWARDED))
      expect(response.status).toBe(200)
      expect(await response.text()).toBe('handled')
      const { environ, originalUrl } = onlySeen(seen)
      expect(environ).toMatchObject({
        REMOTE_ADDR: '203.0.113.9',
        HTTP_HOST: 'public.example',
        SERVER_NAME: 'public.example',
        SERVER_PORT: '443',
        'wsgi.url_scheme': 'https',
        SCRIPT_NAME: '/front',
        PATH_INFO: '/article/1',
        QUERY_STRING: 'q=1',
      })
      expect(environ['HTTP_X_FORWARDED_FOR']).toBeUndefined()
      expect(originalUrl.href).toBe('https://public.example/front/article/1?q=1')
    })

    it('ignores the protocol headers of an untrusted peer and still calls the handlers', async () => {
      const { send, seen } = backend({ trustIps: ['loopback'] })
      const response = await send(
        direct({ ...FORWARDED, 'x-wsgiproxy-str-0': 'REMOTE_USER admin' }),
        '198.51.100.66',
      )
      expect(response.status).toBe(200)
      const { environ, originalUrl } = onlySeen(seen)
      expect(environ).toMatchObject({
        REMOTE_ADDR: '198.51.100.66',
        SERVER_NAME: 'backend',
        SERVER_PORT: '8080',
        'wsgi.url_scheme': 'http',
        SCRIPT_NAME: '',
        PATH_INFO: '/myapp/article/1',
      })
      expect(environ['REMOTE_USER']).toBeUndefined()
      expect(
        Object.keys(environ).filter((key) => /FORWARDED|TRAVERSAL|WSGIPROXY/.test(key)),
      ).toEqual([])
      expect(originalUrl.href).toBe('http://backend:8080/myapp/article/1?q=1')
    })

    it('trusts nothing by default', async () => {
      const { send, seen } = backend({})
      await send(direct(FORWARDED))
      expect(onlySeen(seen).environ.REMOTE_ADDR).toBe('127.0.0.1')
    })

    it('checks trustIps against the address getRemoteAddr finds', async () => {
      const { send, seen } = backend({
        trustIps: ['10.0.0.0/8'],
        getRemoteAddr: (c) => c.req.header('x-test-peer'),
      })
      await send(direct({ ...FORWARDED, 'x-test-peer': '10.1.2.3' }))
      expect(onlySeen(seen).environ.REMOTE_ADDR).toBe('203.0.113.9')
    })

    it('answers 400 problem+json to malformed forwarded data without calling the handlers', async () => {
      const rejected: string[] = []
      const { send, seen } = backend({
        trustIps: ['loopback'],
        onReject: (error) => void rejected.push(error.code),
      })
      const response = await send(direct({ ...FORWARDED, 'x-forwarded-scheme': 'gopher' }))
      expect(response.status).toBe(400)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      expect(seen).toEqual([])
      expect(rejected).toEqual(['BAD_REQUEST'])
    })

    it('applies the forced values', async () => {
      const { send, seen } = backend({ trustIps: ['loopback'], popPrefix: '/article' })
      await send(direct(FORWARDED))
      const { environ, originalUrl } = onlySeen(seen)
      expect([environ.SCRIPT_NAME, environ.PATH_INFO]).toEqual(['/front/article', '/1'])
      expect(originalUrl.pathname).toBe('/front/article/1')
    })
  })

  describe('with a verifier', () => {
    it('restores a request the front signed, extra keys included', async () => {
      const { send, seen } = backend({ verifier: freshVerifier() })
      const request = await fromFront('/front/article/1?a=b', {
        signer: createSigner({ keys: [KEY] }),
        stringKeys: ['REMOTE_USER'],
      })
      const response = await send(request, '192.0.2.200')
      expect(response.status).toBe(200)
      const { environ, originalUrl } = onlySeen(seen)
      expect(environ).toMatchObject({
        REMOTE_ADDR: '203.0.113.9',
        REMOTE_USER: 'alice',
        SCRIPT_NAME: '/front',
        PATH_INFO: '/article/1',
      })
      expect(originalUrl.href).toBe('https://public.example/front/article/1?a=b')
    })

    it.each([
      [
        'a header changed after signing',
        async (): Promise<Request> => {
          const signed = await fromFront('/front/x', { signer: createSigner({ keys: [KEY] }) })
          const headers = new Headers(signed.headers)
          headers.set('x-forwarded-for', '198.51.100.1')
          return new Request(signed.url, { headers })
        },
        'bad_mac',
      ],
      [
        'a signature made with another secret',
        () => fromFront('/front/x', { signer: createSigner({ keys: [OTHER_KEY] }) }),
        'bad_mac',
      ],
    ])('answers 401 to %s without calling the handlers', async (_, forge, reason) => {
      const reasons: string[] = []
      const { send, seen } = backend({
        verifier: freshVerifier(),
        onReject: (error) =>
          void reasons.push(error instanceof SignatureRejectedError ? error.reason : error.code),
      })
      const response = await send(await forge())
      expect(response.status).toBe(401)
      expect(response.headers.get('www-authenticate')).toBe('Signature realm="wsgiproxy"')
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      expect(await response.text()).not.toContain(reason)
      expect(seen).toEqual([])
      expect(reasons).toEqual([reason])
    })

    it('answers 401 to a replayed request', async () => {
      const { send, seen } = backend({ verifier: freshVerifier() })
      const request = await fromFront('/front/x', { signer: createSigner({ keys: [KEY] }) })
      expect((await send(request.clone())).status).toBe(200)
      expect((await send(request)).status).toBe(401)
      expect(seen).toHaveLength(1)
    })

    it('serves an unsigned request untrusted, or refuses it with requireSignature', async () => {
      const lenient = backend({ verifier: freshVerifier() })
      expect((await lenient.send(direct(FORWARDED))).status).toBe(200)
      expect(onlySeen(lenient.seen).environ.REMOTE_ADDR).toBe('127.0.0.1')
      const strict = backend({ verifier: freshVerifier(), requireSignature: true })
      const response = await strict.send(direct(FORWARDED))
      expect(response.status).toBe(401)
      expect(strict.seen).toEqual([])
    })

    it('gives handlers the body the verifier buffered to check its digest', async () => {
      const { send, seen } = backend({
        verifier: createVerifier({ keys: [KEY], bodyDigest: true }),
      })
      const request = await fromFront(
        '/front/upload',
        { signer: createSigner({ keys: [KEY], bodyDigest: true }) },
        { method: 'POST', body: 'signed payload', headers: { 'content-type': 'text/plain' } },
      )
      const response = await send(request)
      expect(response.status).toBe(200)
      const { environ, body } = onlySeen(seen)
      expect(body).toBe('signed payload')
      expect(environ.REQUEST_METHOD).toBe('POST')
    })

    it('streams the buffered body to the handlers without reading or copying it again', async () => {
      const { verifier, payload, reads } = bufferingVerifier('{"signed":true}')
      const app = new Hono<{ Variables: WsgiProxyVariables }>()
      app.use(wsgiProxy({ verifier }))
      app.post('/json', async (c) => {
        const readsBefore = reads.count
        return c.json({ readsBefore, body: await c.req.json(), readsAfter: reads.count })
      })
      app.post('/stream', async (c) => {
        const input = c.get('environ')['wsgi.input']
        const chunks: Uint8Array[] = []
        for await (const chunk of input ?? []) chunks.push(chunk)
        return c.json({
          sameStream: input !== null && input === c.req.raw.body,
          sameBytes: chunks.length === 1 && chunks[0] === payload,
        })
      })
      const post = async (path: string): Promise<Response> =>
        app.request(`http://backend:8080${path}`, { method: 'POST', body: '{"signed":true}' })

      // The middleware leaves the bytes unread; the handler's one read is the only one.
      expect(await (await post('/json')).json()).toEqual({
        readsBefore: 0,
        body: { signed: true },
        readsAfter: 1,
      })
      // The environ's wsgi.input is c.req's body, and it yields the verifier's own bytes.
      expect(await (await post('/stream')).json()).toEqual({ sameStream: true, sameBytes: true })
    })
  })

  it('answers 400 problem+json to a Host header that is not host[:port]', async () => {
    const { send, seen } = backend({ trustIps: ['loopback'] })
    const response = await send(direct({ host: 'a b' }))
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ code: 'BAD_REQUEST' })
    expect(seen).toEqual([])
  })

  describe('onError', () => {
    it('is called with the error and no environ when none can be built, and its response is sent', async () => {
      const calls: unknown[] = []
      const { send, seen } = backend({
        trustIps: ['loopback'],
        onError: (error, environ) => {
          calls.push([error instanceof WsgiProxyError, error.code, environ])
          return { status: 421, headers: [['x-hook', 'yes']], body: null }
        },
      })
      const response = await send(direct({ host: 'a b' }))
      expect(response.status).toBe(421)
      expect(response.headers.get('x-hook')).toBe('yes')
      expect(calls).toEqual([[true, 'BAD_REQUEST', undefined]])
      expect(seen).toEqual([])
    })

    it('gets a throwing getRemoteAddr as APP_ERROR with its cause; no answer keeps the 500', async () => {
      const errors: WsgiProxyError[] = []
      const { send, seen } = backend({
        getRemoteAddr: () => {
          throw new Error('no socket')
        },
        onError: (error) => void errors.push(error),
      })
      const response = await send(direct())
      expect(response.status).toBe(500)
      expect(await response.json()).toMatchObject({ code: 'APP_ERROR' })
      expect(errors.map((error) => [error.code, String(error.cause)])).toEqual([
        ['APP_ERROR', 'Error: no socket'],
      ])
      expect(seen).toEqual([])
    })

    it('answers a fixed 500 when the hook throws', async () => {
      const { send } = backend({
        onError: () => {
          throw new Error('hook bug')
        },
      })
      const response = await send(direct({ host: 'a b' }))
      expect(response.status).toBe(500)
      expect(await response.text()).toBe('Internal Server Error')
    })

    it('leaves refused signatures to onReject', async () => {
      const hooks: string[] = []
      const { send } = backend({
        verifier: freshVerifier(),
        requireSignature: true,
        onReject: () => void hooks.push('onReject'),
        onError: () => void hooks.push('onError'),
      })
      expect((await send(direct(FORWARDED))).status).toBe(401)
      expect(hooks).toEqual(['onReject'])
    })
  })

  it('answers HEAD through the handlers without a body', async () => {
    const { send, seen } = backend({ trustIps: ['loopback'] })
    const response = await send(new Request('http://backend:8080/x', { method: 'HEAD' }))
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('')
    expect(onlySeen(seen).environ.REQUEST_METHOD).toBe('HEAD')
  })

  it('throws INVALID_OPTIONS at construction for conflicting options', () => {
    expect(() => wsgiProxy({ host: 'example.com:443', domain: 'example.com' })).toThrow(
      /host and .*domain cannot be given together/,
    )
  })

  it('names wsgiProxy in option errors, maxHeaders and getRemoteAddr included', () => {
    const conflict = optionError(() =>
      wsgiProxy({ host: 'example.com:443', domain: 'example.com' }),
    )
    expect(conflict).toMatch(/^invalid options: wsgiProxy\.host and wsgiProxy\.domain/)
    expect(conflict).not.toContain('createEnvironRestorer')
    expect(optionError(() => wsgiProxy({ maxHeaders: 0 }))).toMatch(
      /^invalid options: wsgiProxy\.maxHeaders: /,
    )
    expect(
      optionError(() => wsgiProxy({ getRemoteAddr: 'x-real-ip' as unknown as () => undefined })),
    ).toBe('invalid options: wsgiProxy.getRemoteAddr: expected a function')
    expect(optionError(() => wsgiProxy({ onError: 500 as unknown as () => undefined }))).toBe(
      'invalid options: wsgiProxy.onError: expected a function',
    )
    expect(optionError(() => wsgiProxy({ trustIps: 'loopback' as unknown as string[] }))).toMatch(
      /^invalid options: wsgiProxy\.trustIps: /,
    )
    const unknown = optionError(() => wsgiProxy({ trustIp: ['loopback'] } as WsgiProxyOptions))
    expect(unknown).toMatch(/^invalid options: wsgiProxy: .*"trustIp"/)
  })

  it('types c.get on an app declared with WsgiProxyVariables', () => {
    const app = new Hono<{ Variables: WsgiProxyVariables }>().use(wsgiProxy())
    app.get('/', (c) => {
      expectTypeOf(c.get('environ').REMOTE_ADDR).toEqualTypeOf<string | undefined>()
      expectTypeOf(c.get('originalUrl').pathname).toEqualTypeOf<string>()
      return c.text('')
    })
  })
})

/** The message of the INVALID_OPTIONS error that `build` throws. */
function optionError(build: () => unknown): string {
  let caught: unknown
  try {
    build()
  } catch (error) {
    caught = error
  }
  expect(caught).toMatchObject({ code: 'INVALID_OPTIONS' })
  return (caught as Error).message
}
