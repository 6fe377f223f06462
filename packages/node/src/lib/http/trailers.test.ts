// Trailers through the node listener: from an upstream (HTTP/1.1 chunked, HTTP/2) or an app to
// HTTP/1.1 and HTTP/2 clients, the fields a trailer must not carry dropped, TE: trailers passed
// to an HTTP/2 upstream, and request trailers not passed on.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { request as httpRequest } from 'node:http'
import type { ClientHttp2Session, Http2Server } from 'node:http2'
import { connect as http2Connect, constants, createServer as createH2cServer } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { createProxyApp } from '@wsgiproxy/core'
import type { AppResponse, EnvironApp } from '@wsgiproxy/core'
import { undiciTransport } from '@wsgiproxy/core/undici'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { closeAll, readBody, startUpstream } from '@wsgiproxy/test-kit/servers'
import { selfSignedCertificate } from '@wsgiproxy/test-kit/tls'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import { serve } from './serve.ts'

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).toReversed()) await cleanup()
  await closeAll()
})

let cert: TestCertificate
beforeAll(async () => {
  cert = await selfSignedCertificate(['localhost'])
})

const text = (value: string): AppResponse['body'] => ({
  async *[Symbol.asyncIterator]() {
    yield new TextEncoder().encode(value)
  },
})

/** A node:http upstream answering `body` in two chunks, then these trailers. */
function trailing(trailers: Array<[string, string]>) {
  return (_req: IncomingMessage, res: ServerResponse): void => {
    res.setHeader('content-type', 'text/plain')
    res.write('hello ')
    res.write('world')
    res.addTrailers(trailers)
    res.end()
  }
}

// Allowed trailers, and one of each kind a trailer must not carry (RFC 9110 §6.5.1).
const MIXED: Array<[string, string]> = [
  ['x-checksum', 'sha256=abc'],
  ['content-type', 'text/html'],
  ['set-cookie', 'session=stolen'],
  ['authorization', 'Basic eDp5'],
  ['cache-control', 'no-store'],
  ['x-checksum', 'second'],
]

async function startProxy(href: string, options: { http2?: true } = {}) {
  const transport = undiciTransport()
  cleanups.push(() => transport.close())
  const app = createProxyApp({ href, transport, onError: () => {} })
  const served = await serve(app, options.http2 ? { tls: cert, http2: true } : {})
  cleanups.push(() => served.close())
  return served
}

async function serveApp(app: EnvironApp, http2 = false) {
  const served = await serve(app, http2 ? { tls: cert, http2: true } : {})
  cleanups.push(() => served.close())
  return served
}

interface H1Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
  rawTrailers: string[]
}

/** An HTTP/1.1 request with node:http; `trailers` are sent after a chunked body. */
function h1(
  url: string,
  init: { method?: string; body?: string[]; trailers?: Array<[string, string]> } = {},
): Promise<H1Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: init.method ?? 'GET', agent: false })
    req.on('error', reject)
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
      res.on('error', reject)
      res.on('end', () => {
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          rawTrailers: res.rawTrailers,
        })
      })
    })
    for (const chunk of init.body ?? []) req.write(chunk)
    if (init.trailers !== undefined) req.addTrailers(init.trailers)
    req.end()
  })
}

function session(port: number): ClientHttp2Session {
  const client = http2Connect(`https://localhost:${port}`, { ca: cert.cert })
  client.on('error', () => {})
  cleanups.push(() => client.destroy())
  return client
}

interface H2Answer {
  headers: IncomingHttpHeaders
  /** Whether the response's HEADERS frame ended the stream. */
  endedWithHeaders: boolean
  body: string
  trailers: IncomingHttpHeaders | undefined
}

function h2(client: ClientHttp2Session, headers: Record<string, string>): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const req = client.request(headers)
    const answer: H2Answer = { headers: {}, endedWithHeaders: false, body: '', trailers: undefined }
    req.on('response', (head, flags) => {
      answer.headers = head
      answer.endedWithHeaders = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0
    })
    req.on('trailers', (trailers) => (answer.trailers = trailers))
    req.setEncoding('utf8').on('data', (chunk: string) => (answer.body += chunk))
    req.once('end', () => resolve(answer))
    req.once('error', reject)
    req.end()
  })
}

/** The trailers a client got, without Node's symbol for sensitive headers. */
function fields(headers: IncomingHttpHeaders | undefined): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers ?? {}))
}

describe('trailers through serve over HTTP/1.1', () => {
  it('passes an upstream’s trailers to the client after a chunked body, forbidden fields dropped', async () => {
    const upstream = await startUpstream(trailing(MIXED))
    const served = await startProxy(upstream.origin)
    const answer = await h1(`${served.url}/t`)
    expect(answer.status).toBe(200)
    expect(answer.headers['transfer-encoding']).toBe('chunked')
    expect(answer.headers['content-type']).toBe('text/plain')
    expect(answer.body).toBe('hello world')
    expect(answer.rawTrailers).toEqual(['x-checksum', 'sha256=abc', 'x-checksum', 'second'])
  })

  it('drops the trailers of a response with Content-Length, which cannot carry them', async () => {
    const served = await serveApp(() => ({
      status: 200,
      headers: [['content-length', '5']],
      body: text('fixed'),
      trailers: () => [['x-checksum', 'abc']],
    }))
    const answer = await h1(`${served.url}/`)
    expect(answer.headers['content-length']).toBe('5')
    expect(answer.body).toBe('fixed')
    expect(answer.rawTrailers).toEqual([])
  })

  it('does not pass a request’s trailers on to the upstream, and forwards its body', async () => {
    let seen: { body: string; trailers: string[] } | undefined
    const upstream = await startUpstream(async (req, res) => {
      const body = (await readBody(req)).toString()
      seen = { body, trailers: req.rawTrailers }
      res.end('ok')
    })
    const served = await startProxy(upstream.origin)
    const answer = await h1(`${served.url}/up`, {
      method: 'POST',
      body: ['part one, ', 'part two'],
      trailers: [['x-request-checksum', 'abc']],
    })
    expect(answer.body).toBe('ok')
    expect(seen).toEqual({ body: 'part one, part two', trailers: [] })
  })
})

describe('trailers through serve over HTTP/2', () => {
  it('passes an upstream’s trailers to an HTTP/2 client, forbidden fields dropped', async () => {
    const upstream = await startUpstream(trailing(MIXED))
    const served = await startProxy(upstream.origin, { http2: true })
    const answer = await h2(session(served.port), { ':path': '/t' })
    expect(answer.headers[':status']).toBe(200)
    expect(answer.body).toBe('hello world')
    expect(fields(answer.trailers)).toEqual({ 'x-checksum': 'sha256=abc, second' })
  })

  it('ends the stream with the headers when there is neither body nor trailers, else sends them', async () => {
    const served = await serveApp(
      (environ) => ({
        status: 200,
        headers: [
          ['content-type', 'application/grpc'],
          ['grpc-status', '5'],
        ],
        body: null,
        ...(environ.PATH_INFO === '/with-trailers' ? { trailers: () => [['x-late', 'yes']] } : {}),
      }),
      true,
    )
    const client = session(served.port)
    const bare = await h2(client, { ':path': '/bare' })
    const withTrailers = await h2(client, { ':path': '/with-trailers' })
    expect([bare.endedWithHeaders, bare.headers['grpc-status'], bare.trailers]).toEqual([
      true,
      '5',
      undefined,
    ])
    expect(withTrailers.endedWithHeaders).toBe(false)
    expect(fields(withTrailers.trailers)).toEqual({ 'x-late': 'yes' })
  })

  it('passes TE: trailers from an HTTP/2 client on to an HTTP/2 upstream, and the trailers back', async () => {
    const seen: IncomingHttpHeaders[] = []
    const upstream: Http2Server = createH2cServer()
    upstream.on('stream', (stream, headers) => {
      seen.push(headers)
      stream.respond({ ':status': 200 }, { waitForTrailers: true })
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      stream.end('h2')
    })
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise((resolve) => upstream.close(resolve)))
    const port = (upstream.address() as AddressInfo).port
    const transport = undiciTransport({ http2: 'h2c' })
    cleanups.push(() => transport.close())
    const served = await serveApp(
      createProxyApp({ href: `http://127.0.0.1:${port}`, transport, onError: () => {} }),
      true,
    )
    const client = session(served.port)
    const answer = await h2(client, { ':path': '/svc', ':method': 'POST', te: 'trailers' })
    expect(answer.body).toBe('h2')
    expect(seen[0]?.te).toBe('trailers')
    expect(fields(answer.trailers)).toEqual({ 'grpc-status': '0' })
  })
})
