// One behavioural suite for forwarding (docs/design.md §8), replayed across fronts and transports.
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { IncomingMessage } from 'node:http'
import { request as httpRequest } from 'node:http'
import { connect as http2Connect, constants as http2Constants } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { gunzipSync, gzipSync } from 'node:zlib'
import { afterEach, describe, expect, it } from 'vitest'
import type { ExactProxyOptions } from '@wsgiproxy/core'
import type { ClientRequest, ClientResponse, Running } from './servers.ts'
import {
  closeAll,
  freePort,
  headerLines,
  readBody,
  send,
  sendHttp2,
  sha256,
  startUpstream,
} from './servers.ts'

/**
 * How the suite's client speaks to the front: HTTP/1.1 in cleartext, HTTP/1.1 over TLS, or
 * HTTP/2 over TLS (ALPN `h2`).
 */
export type FrontProtocol = 'http/1.1' | 'https' | 'h2'

/** A running front; over TLS, with the CA certificate (PEM) the client trusts. */
export interface ProxyFront extends Running {
  ca?: string
}

/** Starts a front that forwards every request to 127.0.0.1:`upstreamPort` with the exact proxy. */
export type StartProxy = (upstreamPort: number, options: ExactProxyOptions) => Promise<ProxyFront>

const quiet: ExactProxyOptions = { onError: () => {} }
const MiB = 1024 * 1024

/**
 * Declares the forwarding suite for one front and transport, its client speaking `protocol` to
 * the front. Every case runs over every protocol, adapted where an HTTP/2 client cannot send or
 * does not see what an HTTP/1.1 one does (each place says why). Long by nature: its body is the
 * list of cases, one `it` each, and splitting it would only scatter the list.
 *
 * @param label - names the front and transport in the describe block
 * @param startProxy - starts the front for one case (closed by `closeAll`)
 * @param protocol - what the client speaks to the front. Default `'http/1.1'`.
 */
export function describeForwarding(
  label: string,
  startProxy: StartProxy,
  protocol: FrontProtocol = 'http/1.1',
): void {
  const h2 = protocol === 'h2'
  const clientRequest = h2 ? sendHttp2 : send
  // The client of the protocol, trusting the front's CA over TLS.
  const request = (front: ProxyFront, options: ClientRequest = {}): Promise<ClientResponse> =>
    clientRequest(front.origin, front.ca === undefined ? options : { ...options, ca: front.ca })
  const cleanups: Array<() => void> = []
  // The front must serve what the client speaks: an `https:` origin exactly when over TLS.
  const startFront: StartProxy = async (upstreamPort, options) => {
    const front = await startProxy(upstreamPort, options)
    expect(new URL(front.origin).protocol).toBe(protocol === 'http/1.1' ? 'http:' : 'https:')
    return front
  }

  describe(`forwarding (${label})`, () => {
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0)) cleanup()
      await closeAll()
    })

    /**
     * A GET left open for a case to abort as a client of the protocol does: HTTP/1.x closes the
     * connection, HTTP/2 resets the stream with CANCEL (RFC 9113 §8.7) and keeps its session open,
     * so the front must notice the stream alone. The session is closed after the case.
     */
    function openGet(
      front: ProxyFront,
      path: string,
    ): { firstChunk(): Promise<void>; abort(): void } {
      const url = new URL(path, front.origin)
      if (h2) {
        const session = http2Connect(url.origin, front.ca === undefined ? {} : { ca: front.ca })
        session.on('error', () => {})
        cleanups.push(() => session.destroy())
        const stream = session.request({ ':path': path }, { endStream: true })
        stream.on('error', () => {})
        return {
          firstChunk: async () => void (await once(stream, 'data')),
          abort: () => stream.close(http2Constants.NGHTTP2_CANCEL),
        }
      }
      const req =
        url.protocol === 'https:'
          ? httpsRequest(url, { agent: false, ...(front.ca === undefined ? {} : { ca: front.ca }) })
          : httpRequest(url, { agent: false })
      req.on('error', () => {})
      req.end()
      return {
        firstChunk: async () => {
          const [res] = (await once(req, 'response')) as [IncomingMessage]
          await once(res, 'data')
        },
        abort: () => req.destroy(),
      }
    }

    it('forwards a GET with its path, query and headers and the upstream Host', async () => {
      let seen: Record<string, string | undefined> = {}
      const upstream = await startUpstream((req, res) => {
        seen = {
          method: req.method,
          url: req.url,
          host: req.headers.host,
          custom: req.headers['x-custom'] as string,
        }
        res.end('hello')
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy, {
        path: '/a%2Fb/c%C3%A9?x=1&y=%20',
        headers: { 'x-custom': 'yes' },
      })
      expect(res.status).toBe(200)
      expect(res.body.toString()).toBe('hello')
      expect(seen).toEqual({
        method: 'GET',
        url: '/a%2Fb/c%C3%A9?x=1&y=%20',
        host: `127.0.0.1:${upstream.port}`,
        custom: 'yes',
      })
    })

    it('streams a POST with Content-Length', async () => {
      let seen: Record<string, string | undefined> = {}
      const upstream = await startUpstream(async (req, res) => {
        const body = await readBody(req)
        seen = {
          length: req.headers['content-length'],
          te: req.headers['transfer-encoding'],
          body: body.toString(),
        }
        res.end('ok')
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy, {
        method: 'POST',
        headers: { 'content-length': '11', 'content-type': 'text/plain' },
        body: 'hello world',
      })
      expect(res.status).toBe(200)
      expect(seen).toEqual({ length: '11', te: undefined, body: 'hello world' })
    })

    // HTTP/2 has no chunked coding (RFC 9113 §8.2.2): there the body goes in DATA frames alone.
    it(`streams a ${h2 ? 'POST in DATA frames' : 'chunked POST'} that has no Content-Length`, async () => {
      let seen: Record<string, string | undefined> = {}
      const upstream = await startUpstream(async (req, res) => {
        seen = { length: req.headers['content-length'], body: (await readBody(req)).toString() }
        res.end('ok')
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy, {
        method: 'POST',
        body: ['one,', 'two,', 'three'],
      })
      expect(res.status).toBe(200)
      expect(seen['body']).toBe('one,two,three')
      // An intermediary may re-frame: chunked again, or a Content-Length that is exactly right
      // (undici measures a body that has fully arrived before it sends).
      expect([undefined, '13']).toContain(seen['length'])
    })

    it('answers Expect: 100-continue and does not forward Expect', async () => {
      let seen: Record<string, string | undefined> = {}
      const upstream = await startUpstream(async (req, res) => {
        seen = { expect: req.headers.expect, body: (await readBody(req)).toString() }
        res.end('ok')
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy, {
        method: 'PUT',
        headers: { expect: '100-continue', 'content-length': '4' },
        body: 'data',
        expectContinue: true,
      })
      expect(res.status).toBe(200)
      expect(seen).toEqual({ expect: undefined, body: 'data' })
    })

    it('passes a 64 MiB upload and a 64 MiB download intact (SHA-256)', async () => {
      const block = randomBytes(MiB)
      const total = 64
      const expected = sha256(Buffer.concat(Array.from({ length: total }, () => block)))
      const upstream = await startUpstream(async (req, res) => {
        if (req.method === 'POST') {
          res.end(sha256(await readBody(req)))
          return
        }
        res.setHeader('content-length', String(total * MiB))
        for (let i = 0; i < total; i++) {
          if (!res.write(block)) await once(res, 'drain')
        }
        res.end()
      })
      const proxy = await startFront(upstream.port, quiet)
      const upload = await request(proxy, {
        method: 'POST',
        body: Array.from({ length: total }, () => block),
      })
      expect(upload.body.toString()).toBe(expected)
      const download = await request(proxy)
      expect(download.body.length).toBe(total * MiB)
      expect(sha256(download.body)).toBe(expected)
    }, 60_000)

    it('answers HEAD with the upstream headers and no body', async () => {
      const upstream = await startUpstream((req, res) => {
        res.setHeader('content-length', '1234')
        res.setHeader('x-method', req.method ?? '')
        res.end()
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy, { method: 'HEAD' })
      expect(res.status).toBe(200)
      expect(res.headers['x-method']).toBe('HEAD')
      expect(res.headers['content-length']).toBe('1234')
      expect(res.body.length).toBe(0)
    })

    it('passes a redirect through without following it, Set-Cookie included', async () => {
      let requests = 0
      const upstream = await startUpstream((_req, res) => {
        requests++
        res.writeHead(302, { location: '/elsewhere', 'set-cookie': ['a=1; Path=/'] })
        res.end()
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy, { path: '/start' })
      expect(res.status).toBe(302)
      expect(res.headers.location).toBe('/elsewhere')
      expect(res.headers['set-cookie']).toEqual(['a=1; Path=/'])
      expect(requests).toBe(1)
    })

    it('keeps several Set-Cookie headers separate', async () => {
      const cookies = ['a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT', 'b=2; HttpOnly']
      const upstream = await startUpstream((_req, res) => {
        res.setHeader('set-cookie', cookies)
        res.end('ok')
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy)
      expect(headerLines(res.rawHeaders, 'set-cookie')).toEqual(cookies)
    })

    it('never delivers a decoded body that still says Content-Encoding: gzip', async () => {
      const text = 'compressible '.repeat(1000)
      const gz = gzipSync(text)
      const upstream = await startUpstream((_req, res) => {
        res.writeHead(200, {
          'content-encoding': 'gzip',
          'content-length': String(gz.length),
          'content-type': 'text/plain',
        })
        res.end(gz)
      })
      const proxy = await startFront(upstream.port, quiet)
      const res = await request(proxy, { headers: { 'accept-encoding': 'gzip' } })
      expect(res.status).toBe(200)
      // Either the bytes pass through still encoded, or they were decoded and say so.
      const encoding = res.headers['content-encoding']
      expect([undefined, 'gzip']).toContain(encoding)
      const decoded = encoding === 'gzip' ? gunzipSync(res.body) : res.body
      expect(decoded.toString()).toBe(text)
      expect(res.headers['content-length'] ?? String(res.body.length)).toBe(String(res.body.length))
    })

    it('keeps Content-Encoding and Content-Length on HEAD and 304', async () => {
      const upstream = await startUpstream((req, res) => {
        const status = req.headers['if-none-match'] ? 304 : 200
        res.writeHead(status, { 'content-encoding': 'gzip', 'content-length': '77', etag: '"x"' })
        res.end()
      })
      const proxy = await startFront(upstream.port, quiet)
      const head = await request(proxy, { method: 'HEAD' })
      expect(head.headers['content-encoding']).toBe('gzip')
      expect(head.headers['content-length']).toBe('77')
      const notModified = await request(proxy, { headers: { 'if-none-match': '"x"' } })
      expect(notModified.status).toBe(304)
      expect(notModified.headers['content-encoding']).toBe('gzip')
      expect(notModified.body.length).toBe(0)
    })

    it('strips hop-by-hop headers in both directions, Connection-nominated ones included', async () => {
      let seen: Record<string, unknown> = {}
      const upstream = await startUpstream((req, res) => {
        seen = req.headers
        res.setHeader('connection', 'x-internal')
        res.setHeader('x-internal', 'secret')
        res.setHeader('proxy-authenticate', 'Basic realm="up"')
        res.setHeader('keep-alive', 'timeout=99')
        res.setHeader('x-kept', 'yes')
        res.end('ok')
      })
      const proxy = await startFront(upstream.port, quiet)
      // An HTTP/2 request must not carry connection-specific fields, nor TE other than
      // `trailers` (RFC 9113 §8.2.2; node:http2 refuses to send them): it sends the others.
      const connectionFields = {
        connection: 'x-secret, keep-alive, te',
        'x-secret': '1',
        'keep-alive': 'timeout=5',
        'proxy-connection': 'keep-alive',
      }
      const res = await request(proxy, {
        method: 'POST',
        body: ['chunked so that Trailer is allowed'],
        headers: {
          ...(h2 ? {} : connectionFields),
          te: h2 ? 'trailers' : 'deflate;q=0.5, trailers',
          trailer: 'x-checksum',
          'proxy-authorization': 'Basic Zm9vOmJhcg==',
          'x-kept': 'yes',
        },
      })
      expect(res.status).toBe(200)
      const hopByHop = ['x-secret', 'trailer', 'proxy-authorization', 'proxy-connection']
      expect(Object.keys(seen).filter((name) => hopByHop.includes(name))).toEqual([])
      // TE is this hop's: only its `trailers` goes on, from a transport that passes trailers back.
      expect([undefined, 'trailers']).toContain(seen.te)
      expect(seen['keep-alive']).not.toBe('timeout=5')
      expect(seen['x-kept']).toBe('yes')
      // An HTTP/2 response carries no connection-specific field at all (RFC 9113 §8.2.2), so there
      // `keep-alive` is absent by the protocol; `x-internal` and `proxy-authenticate` are the proxy's.
      expect(res.headers['x-internal']).toBeUndefined()
      expect(res.headers['proxy-authenticate']).toBeUndefined()
      expect(res.headers['keep-alive']).not.toBe('timeout=99')
      expect(res.headers['x-kept']).toBe('yes')
    })

    it('answers 502 problem+json without internal addresses when the upstream refuses', async () => {
      const port = await freePort()
      const errors: string[] = []
      const proxy = await startFront(port, { onError: (e) => void errors.push(e.code) })
      const res = await request(proxy)
      expect(res.status).toBe(502)
      expect(res.headers['content-type']).toBe('application/problem+json')
      const problem = JSON.parse(res.body.toString()) as { status: number; detail: string }
      expect(problem.status).toBe(502)
      expect(problem.detail).not.toContain('127.0.0.1')
      expect(problem.detail).not.toContain(String(port))
      // A front in another process reports its errors asynchronously (a line on its stdout).
      await expect.poll(() => errors).toEqual(['UPSTREAM_UNREACHABLE'])
    })

    it('answers 504 at the headers timeout when the upstream never answers', async () => {
      const upstream = await startUpstream(() => {})
      const proxy = await startFront(upstream.port, {
        ...quiet,
        timeouts: { upstreamHeaders: 300 },
      })
      const started = Date.now()
      const res = await request(proxy)
      expect(res.status).toBe(504)
      expect(JSON.parse(res.body.toString())).toMatchObject({ status: 504 })
      expect(Date.now() - started).toBeLessThan(5_000)
    })

    it('ends the response when the upstream body stalls past the body timeout', async () => {
      let upstreamClosed = false
      const upstream = await startUpstream((_req, res) => {
        res.writeHead(200, { 'content-length': '100' })
        res.write('partial')
        res.on('close', () => (upstreamClosed = true))
      })
      const proxy = await startFront(upstream.port, { ...quiet, timeouts: { upstreamBody: 300 } })
      await expect(request(proxy)).rejects.toBeInstanceOf(Error)
      await expect.poll(() => upstreamClosed, { timeout: 2_000 }).toBe(true)
    })

    it('closes the upstream request within 1 s when the client aborts before the response', async () => {
      let arrived!: () => void
      const arrival = new Promise<void>((resolve) => (arrived = resolve))
      let closedAt = 0
      const upstream = await startUpstream((req, res) => {
        res.on('close', () => (closedAt = Date.now()))
        req.resume()
        arrived()
      })
      const proxy = await startFront(upstream.port, quiet)
      const req = openGet(proxy, '/slow')
      await arrival
      const abortedAt = Date.now()
      req.abort()
      await expect.poll(() => closedAt, { timeout: 1_000, interval: 10 }).toBeGreaterThan(0)
      expect(closedAt - abortedAt).toBeLessThan(1_000)
    })

    it('closes the upstream request within 1 s when the client aborts mid-body', async () => {
      let closedAt = 0
      const upstream = await startUpstream((_req, res) => {
        res.on('close', () => (closedAt = Date.now()))
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('first chunk')
      })
      const proxy = await startFront(upstream.port, quiet)
      const req = openGet(proxy, '/stream')
      await req.firstChunk()
      const abortedAt = Date.now()
      req.abort()
      await expect.poll(() => closedAt, { timeout: 1_000, interval: 10 }).toBeGreaterThan(0)
      expect(closedAt - abortedAt).toBeLessThan(1_000)
    })
  })
}
