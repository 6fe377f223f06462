import { afterEach, describe, expect, it } from 'vitest'
import type {
  AppResponse,
  ProxyMiddlewareOptions,
  Environ,
  OutboundRequest,
  ReplayStore,
  SigningKey,
  Transport,
  WsgiProxyError,
} from '../../index.ts'
import {
  createProxyApp,
  createSigner,
  createVerifier,
  MemoryReplayStore,
  proxyMiddleware,
  SignatureRejectedError,
  toEnviron,
} from '../../index.ts'
import { signRequest, verifyRequest } from '../../protocol.ts'
import { closeAll, echoEnviron, send, startFetchFront } from '@wsgiproxy/test-kit/servers'

const OLD: SigningKey = { id: 'k2026-05', secret: new Uint8Array(32).fill(1) }
const NEW: SigningKey = { id: 'k2026-11', secret: new Uint8Array(32).fill(2) }

/** A front that records what it would send instead of sending it. */
function recordingFront(options: { keys?: SigningKey[]; bodyDigest?: boolean } = {}): {
  app: ReturnType<typeof createProxyApp>
  sent: OutboundRequest[]
} {
  const sent: OutboundRequest[] = []
  const transport: Transport = async (outbound): Promise<AppResponse> => {
    sent.push(outbound)
    return { status: 200, headers: [], body: null }
  }
  const signer = createSigner({
    keys: options.keys ?? [NEW],
    ...(options.bodyDigest ? { bodyDigest: true } : {}),
  })
  const app = createProxyApp({
    href: 'http://backend.internal:8080/myapp',
    transport,
    signer,
    stringKeys: ['REMOTE_USER'],
  })
  return { app, sent }
}

/** The environ the backend builds from what the front sent (peer: the front's address). */
async function received(
  outbound: OutboundRequest | undefined,
  change: (headers: Array<[string, string]>) => Array<[string, string]> = (h) => h,
  peer = '10.0.0.5',
  url?: string,
): Promise<Environ> {
  if (outbound === undefined) throw new Error('nothing was sent')
  const chunks: Uint8Array[] = []
  for await (const chunk of outbound.body ?? []) chunks.push(chunk)
  const init: RequestInit = { method: outbound.method, headers: change(outbound.headers) }
  if (chunks.length > 0) init.body = Buffer.concat(chunks)
  return toEnviron(new Request(url ?? outbound.url, init), { remoteAddr: peer })
}

async function clientRequest(
  app: ReturnType<typeof createProxyApp>,
  path = '/front/article/1?a=b',
  init: RequestInit = {},
): Promise<void> {
  const request = new Request(`https://public.example${path}`, {
    ...init,
    headers: { host: 'public.example', ...(init.headers as Record<string, string>) },
  })
  await app({
    ...toEnviron(request, { scriptName: '/front', remoteAddr: '203.0.113.9' }),
    REMOTE_USER: 'alice',
  })
}

interface Backend {
  call(environ: Environ): Promise<{
    status: number
    headers: Array<[string, string]>
    body: string
    seen: Environ | undefined
  }>
  rejected: WsgiProxyError[]
  readonly calls: number
}

function backend(
  options: ProxyMiddlewareOptions = {},
  keys: SigningKey[] = [NEW, OLD],
  signed = true,
): Backend {
  const rejected: WsgiProxyError[] = []
  let last: Environ | undefined
  let calls = 0
  const app = proxyMiddleware(
    (environ) => {
      calls++
      last = environ
      return { status: 200, headers: [], body: null }
    },
    {
      ...(signed ? { verifier: createVerifier({ keys }) } : {}),
      onReject: (error) => void rejected.push(error),
      ...options,
    },
  )
  return {
    rejected,
    get calls() {
      return calls
    },
    async call(environ) {
      last = undefined
      const response = await app(environ)
      let body = ''
      for await (const chunk of response.body ?? []) body += new TextDecoder().decode(chunk)
      return { status: response.status, headers: response.headers, body, seen: last }
    },
  }
}

const header = (name: string) => (headers: Array<[string, string]>) =>
  headers.find(([n]) => n === name)?.[1]

describe('signed forwarding (createProxyApp signer → proxyMiddleware verifier)', () => {
  afterEach(closeAll)

  it('restores a signed request with its extra keys, without trustIps', async () => {
    const front = recordingFront()
    await clientRequest(front.app)
    const b = backend()
    const result = await b.call(await received(front.sent[0]))
    expect(result.status).toBe(200)
    expect(result.seen).toMatchObject({
      HTTP_HOST: 'public.example',
      'wsgi.url_scheme': 'https',
      REMOTE_ADDR: '203.0.113.9',
      SCRIPT_NAME: '/front',
      PATH_INFO: '/article/1',
      QUERY_STRING: 'a=b',
      REMOTE_USER: 'alice',
    })
    expect(
      Object.keys(result.seen ?? {}).filter((k) => /SIGNATURE|FORWARDED|WSGIPROXY/.test(k)),
    ).toEqual([])
  })

  it.each([
    ['method', (h: Array<[string, string]>) => h, { method: 'PUT' }],
    [
      'path',
      (h: Array<[string, string]>) => h,
      { url: 'http://backend.internal:8080/myapp/admin?a=b' },
    ],
    [
      'query',
      (h: Array<[string, string]>) => h,
      { url: 'http://backend.internal:8080/myapp/article/1?a=c' },
    ],
    [
      'authority',
      (h: Array<[string, string]>) =>
        h.map(([n, v]): [string, string] => (n === 'host' ? [n, 'other.internal:8080'] : [n, v])),
      {},
    ],
    [
      'a covered header',
      (h: Array<[string, string]>) =>
        h.map(([n, v]): [string, string] => (n === 'x-forwarded-for' ? [n, '6.6.6.6'] : [n, v])),
      {},
    ],
    [
      'a removed covered header',
      (h: Array<[string, string]>) => h.filter(([n]) => n !== 'x-wsgiproxy-str-0'),
      {},
    ],
  ] as const)(
    'answers 401 with a challenge and a generic body to a tampered %s',
    async (_what, change, where) => {
      const front = recordingFront()
      await clientRequest(front.app)
      const outbound = front.sent[0]!
      const environ = await received(
        outbound,
        change,
        '10.0.0.5',
        'url' in where ? where.url : undefined,
      )
      if ('method' in where) environ.REQUEST_METHOD = where.method
      const b = backend()
      const result = await b.call(environ)
      expect(result.status).toBe(401)
      expect(result.headers).toContainEqual(['www-authenticate', 'Signature realm="wsgiproxy"'])
      expect(result.body).not.toMatch(/bad_mac|coverage|malformed|signature rejected \(/)
      expect(b.calls).toBe(0)
      expect(b.rejected[0]).toBeInstanceOf(SignatureRejectedError)
    },
  )

  it('answers 400 to a tampered body when body digests are on', async () => {
    const front = recordingFront({ bodyDigest: true })
    await clientRequest(front.app, '/front/upload', { method: 'POST', body: 'original' })
    const outbound = front.sent[0]!
    outbound.body = (async function* () {
      yield new TextEncoder().encode('tampered')
    })()
    const b = backend({ verifier: createVerifier({ keys: [NEW], bodyDigest: true }) })
    const result = await b.call(await received(outbound))
    expect(result.status).toBe(400)
    expect(b.calls).toBe(0)
  })

  it('passes the verified body to the app when body digests are on', async () => {
    const front = recordingFront({ bodyDigest: true })
    await clientRequest(front.app, '/front/upload', { method: 'POST', body: 'original' })
    let body = ''
    const app = proxyMiddleware(
      async (environ) => {
        for await (const chunk of environ['wsgi.input'] ?? [])
          body += new TextDecoder().decode(chunk)
        return { status: 204, headers: [], body: null }
      },
      { verifier: createVerifier({ keys: [NEW], bodyDigest: true }) },
    )
    expect((await app(await received(front.sent[0]))).status).toBe(204)
    expect(body).toBe('original')
  })

  it('strips an unsigned protocol header added on the way instead of trusting it', async () => {
    const front = recordingFront()
    await clientRequest(front.app)
    const b = backend()
    const result = await b.call(
      await received(front.sent[0], (h) => [
        ...h,
        ['x-wsgiproxy-str-1', 'REMOTE_USER root'],
        ['x-wsgiproxy-json-0', 'x.admin true'],
        ['x-forwarded-proto', 'http'],
      ]),
    )
    expect(result.status).toBe(200)
    expect(result.seen?.['REMOTE_USER']).toBe('alice')
    expect(result.seen?.['x.admin']).toBeUndefined()
    expect(result.seen?.['HTTP_X_FORWARDED_PROTO']).toBeUndefined()
  })

  it('answers 401 to a replayed request; the app runs once', async () => {
    const front = recordingFront()
    await clientRequest(front.app)
    const b = backend()
    expect((await b.call(await received(front.sent[0]))).status).toBe(200)
    expect((await b.call(await received(front.sent[0]))).status).toBe(401)
    expect(b.calls).toBe(1)
    expect((b.rejected[0] as SignatureRejectedError).reason).toBe('replay')
  })

  it('answers 503 with Retry-After when the replay store is full', async () => {
    const front = recordingFront()
    await clientRequest(front.app)
    const full: ReplayStore = { checkAndSet: async () => 'full' }
    const b = backend({ verifier: createVerifier({ keys: [NEW], replayStore: full }) })
    const result = await b.call(await received(front.sent[0]))
    expect(result.status).toBe(503)
    expect(result.headers).toContainEqual(['retry-after', '1'])
    expect(JSON.parse(result.body)).toMatchObject({ status: 503, code: 'REPLAY_STORE_FULL' })
    expect(b.calls).toBe(0)
  })

  it('answers 503 problem+json REPLAY_STORE_UNAVAILABLE when the store cannot be reached or throws', async () => {
    const unavailable: ReplayStore = { checkAndSet: async () => 'unavailable' }
    const throwing: ReplayStore = {
      checkAndSet: async () => {
        throw new Error('connect ECONNREFUSED 10.0.0.7:6379')
      },
    }
    for (const replayStore of [unavailable, throwing]) {
      const front = recordingFront()
      await clientRequest(front.app)
      const b = backend({ verifier: createVerifier({ keys: [NEW], replayStore }) })
      const result = await b.call(await received(front.sent[0]))
      expect(result.status).toBe(503)
      expect(result.headers).toContainEqual(['content-type', 'application/problem+json'])
      expect(result.headers).toContainEqual(['retry-after', '1'])
      // The client learns the code, never the store's address.
      expect(JSON.parse(result.body)).toEqual({
        type: 'about:blank',
        title: 'Service Unavailable',
        status: 503,
        detail: 'the service is temporarily unavailable',
        code: 'REPLAY_STORE_UNAVAILABLE',
      })
      expect(b.calls).toBe(0)
      expect((b.rejected[0] as SignatureRejectedError).reason).toBe('replay_store_unavailable')
      expect(b.rejected[0]?.code).toBe('REPLAY_STORE_UNAVAILABLE')
    }
  })

  it('answers 431 to an oversized Signature header', async () => {
    const front = recordingFront()
    await clientRequest(front.app)
    const b = backend()
    const result = await b.call(
      await received(front.sent[0], (h) =>
        h.map(([n, v]): [string, string] =>
          n === 'signature' ? [n, `${v}, x=:${'A'.repeat(9000)}:`] : [n, v],
        ),
      ),
    )
    expect(result.status).toBe(431)
  })

  it('answers 401 to an unknown key id and to a forged MAC sent straight to the backend', async () => {
    const front = recordingFront({ keys: [{ id: 'stranger', secret: new Uint8Array(32).fill(9) }] })
    await clientRequest(front.app)
    expect((await backend().call(await received(front.sent[0]))).status).toBe(401)
    const forged = recordingFront({ keys: [{ id: NEW.id, secret: new Uint8Array(32).fill(9) }] })
    await clientRequest(forged.app)
    expect((await backend().call(await received(forged.sent[0]))).status).toBe(401)
  })

  it('treats a request without signature as untrusted, or refuses it with requireSignature', async () => {
    const direct = toEnviron(
      new Request('http://backend.internal:8080/myapp/x', {
        headers: { 'x-forwarded-for': '1.2.3.4', 'x-wsgiproxy-str-0': 'REMOTE_USER root' },
      }),
      { remoteAddr: '198.51.100.9' },
    )
    const open = await backend().call(direct)
    expect(open.status).toBe(200)
    expect(open.seen).toMatchObject({ REMOTE_ADDR: '198.51.100.9' })
    expect(open.seen?.['REMOTE_USER']).toBeUndefined()
    const strict = await backend({ requireSignature: true }).call(direct)
    expect(strict.status).toBe(401)
  })

  it('does not let an X-Forwarded-For chain spoof IP trust', async () => {
    const spoof = toEnviron(
      new Request('http://backend.internal:8080/myapp/x', {
        headers: { 'x-forwarded-for': '10.0.0.5, 127.0.0.1', 'x-forwarded-scheme': 'https' },
      }),
      { remoteAddr: '198.51.100.9' },
    )
    const b = backend({ trustIps: ['loopback', '10.0.0.0/8'] }, [], false)
    const result = await b.call(spoof)
    expect(result.seen).toMatchObject({ REMOTE_ADDR: '198.51.100.9', 'wsgi.url_scheme': 'http' })
  })

  it('requires both signature and trusted peer by default, either with mode any', async () => {
    const front = recordingFront()
    await clientRequest(front.app)
    const all = await backend({ trustIps: ['127.0.0.1'] }).call(await received(front.sent[0]))
    expect(all.seen).toMatchObject({ REMOTE_ADDR: '10.0.0.5', 'wsgi.url_scheme': 'http' })
    const front2 = recordingFront()
    await clientRequest(front2.app)
    const any = await backend({ trustIps: ['127.0.0.1'], mode: 'any' }).call(
      await received(front2.sent[0]),
    )
    expect(any.seen).toMatchObject({ REMOTE_ADDR: '203.0.113.9', 'wsgi.url_scheme': 'https' })
  })

  it('rotates keys without failing a request, then refuses the retired key', async () => {
    const b = backend({}, [NEW, OLD])
    for (const keys of [[OLD], [NEW, OLD]]) {
      const front = recordingFront({ keys })
      await clientRequest(front.app)
      expect((await b.call(await received(front.sent[0]))).status).toBe(200)
    }
    const stale = recordingFront({ keys: [OLD] })
    await clientRequest(stale.app)
    const retired = backend({}, [NEW])
    expect((await retired.call(await received(stale.sent[0]))).status).toBe(401)
    expect((retired.rejected[0] as SignatureRejectedError).reason).toBe('unknown_key')
  })

  it('signs and verifies over real sockets end to end', async () => {
    const verifier = createVerifier({ keys: [NEW, OLD], replayStore: new MemoryReplayStore() })
    const server = await startFetchFront(
      proxyMiddleware(echoEnviron as never, { verifier, requireSignature: true }),
    )
    const proxy = createProxyApp({
      href: `${server.origin}/myapp?x=1`,
      signer: createSigner({ keys: [NEW] }),
      stringKeys: ['REMOTE_USER'],
      onError: () => {},
    })
    const front = await startFetchFront((environ) => proxy({ ...environ, REMOTE_USER: 'alice' }), {
      scriptName: '/front',
    })
    const res = await send(front.origin, {
      path: '/front/article/1?a=b',
      localAddress: '127.0.0.2',
    })
    expect(res.status).toBe(200)
    expect(JSON.parse(res.body.toString())).toMatchObject({
      SCRIPT_NAME: '/front',
      PATH_INFO: '/article/1',
      QUERY_STRING: 'a=b&x=1',
      REMOTE_ADDR: '127.0.0.2',
      REMOTE_USER: 'alice',
    })
    const direct = await send(server.origin, {
      path: '/myapp/x',
      headers: { 'x-wsgiproxy-str-0': 'REMOTE_USER root' },
    })
    expect(direct.status).toBe(401)
    expect(direct.headers['www-authenticate']).toBe('Signature realm="wsgiproxy"')
  })
})

describe('signRequest and verifyRequest', () => {
  it('sign a Fetch request that verifies, and report tampering', async () => {
    const signer = createSigner({ keys: [NEW] })
    const verifier = createVerifier({ keys: [NEW] })
    const signed = await signRequest(
      new Request('http://backend.internal/x?y=1', {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'x-forwarded-for': '203.0.113.9' },
        body: 'hello',
      }),
      signer,
    )
    expect(header('signature-input')([...signed.headers])).toMatch(/^wsgiproxy=/)
    expect((await verifyRequest(signed.clone(), verifier)).status).toBe('valid')
    const tampered = new Request(signed.url.replace('y=1', 'y=2'), {
      method: 'POST',
      headers: signed.headers,
      body: 'hello',
    })
    expect(await verifyRequest(tampered, verifier)).toMatchObject({
      status: 'invalid',
      httpStatus: 401,
    })
  })
})

describe('createProxyApp with a signer', () => {
  it('refuses more extra keys than a signature can cover, at construction', () => {
    const stringKeys = Array.from({ length: 18 }, (_, i) => `k${i}`)
    expect(() =>
      createProxyApp({ href: 'http://b/', signer: createSigner({ keys: [NEW] }), stringKeys }),
    ).toThrow(/at most 17 extra keys \(got 18\)/)
    expect(() =>
      createProxyApp({
        href: 'http://b/',
        signer: createSigner({ keys: [NEW] }),
        stringKeys: stringKeys.slice(1),
      }),
    ).not.toThrow()
  })
})

describe('signed forwarding hardening', () => {
  it('refuses a Content-Type added on the way when body digests are on', async () => {
    const front = recordingFront({ bodyDigest: true })
    // Bytes get no Content-Type, so the front signs none.
    const body = new TextEncoder().encode('a=1')
    await clientRequest(front.app, '/front/upload', { method: 'POST', body })
    expect(front.sent[0]?.headers.some(([n]) => n === 'content-type')).toBe(false)
    const b = backend({ verifier: createVerifier({ keys: [NEW], bodyDigest: true }) })
    const result = await b.call(
      await received(front.sent[0], (h) => [
        ...h,
        ['content-type', 'application/x-www-form-urlencoded'],
      ]),
    )
    expect(result.status).toBe(401)
    expect((b.rejected[0] as SignatureRejectedError).reason).toBe('coverage')
  })

  it('sends the Host it signs, so a Host-preserving transport verifies too', async () => {
    const sent: OutboundRequest[] = []
    const app = createProxyApp({
      href: 'https://backend.internal/',
      signer: createSigner({ keys: [NEW] }),
      transport: async (outbound) => {
        sent.push(outbound)
        return { status: 200, headers: [], body: null }
      },
    })
    await clientRequest(app, '/front/x')
    const host = sent[0]?.headers.find(([n]) => n === 'host')?.[1]
    expect(host).toBe(sent[0]?.url.host)
    // The backend behind TLS termination sees plain http and the Host as sent.
    const environ = await received(sent[0], (h) => h, '10.0.0.5', `http://${host}/x`)
    expect((await backend().call(environ)).status).toBe(200)
  })

  it('refuses requireSignature without a verifier at construction', () => {
    expect(() =>
      proxyMiddleware(() => ({ status: 200, headers: [], body: null }), { requireSignature: true }),
    ).toThrow(/requireSignature needs proxyMiddleware\.verifier/)
  })

  it('answers 401 to a signed request from outside trustIps when the signature is required', async () => {
    const front = recordingFront()
    await clientRequest(front.app)
    const b = backend({ trustIps: ['127.0.0.1'], requireSignature: true })
    const result = await b.call(await received(front.sent[0]))
    expect(result.status).toBe(401)
    expect(b.calls).toBe(0)
  })
})
