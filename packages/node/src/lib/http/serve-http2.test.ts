// serve({ tls, http2: true }): HTTP/2 by ALPN and HTTP/1.1 (with its upgrades) on one port.
import { connect as http2Connect, constants as http2Constants } from 'node:http2'
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { createProxyApp } from '@wsgiproxy/core'
import type { AppResponse, EnvironApp } from '@wsgiproxy/core'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket, WebSocketServer } from 'ws'
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

const environEcho: EnvironApp = (environ) => ({
  status: 200,
  headers: [['content-type', 'application/json']],
  body: text(
    JSON.stringify({
      protocol: environ.SERVER_PROTOCOL,
      host: environ.HTTP_HOST,
      scheme: environ['wsgi.url_scheme'],
      path: environ.PATH_INFO,
      query: environ.QUERY_STRING,
      custom: environ.HTTP_X_CUSTOM,
    }),
  ),
})

async function start(app: EnvironApp) {
  const served = await serve(app, { tls: cert, http2: true, closeTimeout: 10_000 })
  cleanups.push(() => served.close())
  return served
}

function session(port: number): ClientHttp2Session {
  const client = http2Connect(`https://localhost:${port}`, { ca: cert.cert })
  client.on('error', () => {})
  cleanups.push(() => client.destroy())
  return client
}

function h2(
  client: ClientHttp2Session,
  headers: Record<string, string>,
  body?: string,
): Promise<{ headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = client.request(headers)
    let received = ''
    let head: IncomingHttpHeaders = {}
    req.on('response', (h) => (head = h))
    req.setEncoding('utf8').on('data', (chunk: string) => (received += chunk))
    req.once('end', () => resolve({ headers: head, body: received }))
    req.once('error', reject)
    req.end(body)
  })
}

describe('serve with http2', () => {
  it('answers HTTP/2 with the environ saying HTTP/2, https and the :authority as Host', async () => {
    const served = await start(environEcho)
    const answer = await h2(session(served.port), { ':path': '/a/b?c=d', 'x-custom': 'yes' })
    expect(answer.headers[':status']).toBe(200)
    expect(JSON.parse(answer.body)).toEqual({
      protocol: 'HTTP/2',
      host: `localhost:${served.port}`,
      scheme: 'https',
      path: '/a/b',
      query: 'c=d',
      custom: 'yes',
    })
  })

  it('forwards an HTTP/2 upload to an HTTP/1.1 upstream and back, intact', async () => {
    const upstream = await startUpstream(async (req, res) => {
      const body = await readBody(req)
      res.setHeader('x-upstream-version', req.httpVersion)
      res.setHeader('x-upstream-host', req.headers.host ?? '')
      res.end(body)
    })
    const served = await start(createProxyApp({ href: upstream.origin, onError: () => {} }))
    const payload = 'x'.repeat(300_000)
    const answer = await h2(session(served.port), { ':path': '/up', ':method': 'POST' }, payload)
    expect(answer.headers[':status']).toBe(200)
    expect(answer.headers['x-upstream-version']).toBe('1.1')
    expect(answer.headers['x-upstream-host']).toBe(`127.0.0.1:${upstream.port}`)
    expect(answer.body).toBe(payload)
  })

  it('serves HTTP/1.1 clients on the same port', async () => {
    const served = await start(environEcho)
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: served.port,
          path: '/h1',
          ca: cert.cert,
          servername: 'localhost',
          agent: false,
        },
        (res) => {
          let received = ''
          res.setEncoding('utf8').on('data', (chunk: string) => (received += chunk))
          res.once('end', () => resolve(received))
        },
      )
      req.once('error', reject)
      req.end()
    })
    expect(JSON.parse(body)).toMatchObject({ protocol: 'HTTP/1.1', path: '/h1', scheme: 'https' })
  })

  it('forwards a WebSocket upgrade over HTTP/1.1 on the same port', async () => {
    const wss = new WebSocketServer({ noServer: true })
    cleanups.push(() => wss.close())
    const { createServer } = await import('node:http')
    const wsServer = createServer()
    wsServer.on('upgrade', (req, socket, head) => {
      wss.handleUpgrade(req, socket, head, (ws) =>
        ws.on('message', (data) => ws.send(`echo ${String(data)}`)),
      )
    })
    await new Promise<void>((resolve) => wsServer.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise<void>((resolve) => wsServer.close(() => resolve())))
    const { port } = wsServer.address() as { port: number }
    const served = await start(
      createProxyApp({ href: `http://127.0.0.1:${port}`, onError: () => {} }),
    )
    const ws = new WebSocket(`wss://localhost:${served.port}/chat`, { ca: cert.cert })
    cleanups.push(() => ws.terminate())
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    const reply = new Promise<string>((resolve) =>
      ws.once('message', (data) => resolve(String(data))),
    )
    ws.send('hi')
    expect(await reply).toBe('echo hi')
  })

  it('drops connection-specific headers and turns a status HTTP/2 cannot carry into 502', async () => {
    const served = await start((environ) =>
      environ.PATH_INFO === '/odd'
        ? { status: 799, headers: [], body: null }
        : {
            status: 200,
            headers: [
              ['connection', 'close'],
              ['keep-alive', 'timeout=5'],
              ['transfer-encoding', 'chunked'],
              ['upgrade', 'h2c'],
              ['x-kept', 'yes'],
            ],
            body: text('fine'),
          },
    )
    const client = session(served.port)
    const fine = await h2(client, { ':path': '/fine' })
    expect(fine.headers[':status']).toBe(200)
    expect(fine.headers['x-kept']).toBe('yes')
    expect(fine.headers.connection).toBeUndefined()
    expect(fine.body).toBe('fine')
    const odd = await h2(client, { ':path': '/odd' })
    expect(odd.headers[':status']).toBe(502)
    expect(JSON.parse(odd.body)).toMatchObject({ code: 'UPSTREAM_INVALID_RESPONSE' })
  })

  it('resets the stream with INTERNAL_ERROR, never a clean end, when the body fails mid-stream', async () => {
    let received!: () => void
    const firstChunk = new Promise<void>((resolve) => (received = resolve))
    const served = await start(() => ({
      status: 200,
      headers: [['content-type', 'text/plain']],
      body: {
        async *[Symbol.asyncIterator]() {
          yield new TextEncoder().encode('partial')
          await firstChunk
          throw new Error('the upstream went away')
        },
      },
    }))
    const stream = session(served.port).request({ ':path': '/' }, { endStream: true })
    const events: string[] = []
    stream.once('data', () => received())
    stream.on('end', () => events.push('end'))
    stream.on('error', () => events.push('error'))
    await new Promise((resolve) => stream.once('close', resolve))
    // node:http2 ends the body cleanly on RST_STREAM with NO_ERROR, which a plain destroy sends.
    expect(stream.rstCode).toBe(http2Constants.NGHTTP2_INTERNAL_ERROR)
    expect(events).toEqual(['error'])
  })

  it('closes idle HTTP/2 sessions and HTTP/1.1 connections at once on close()', async () => {
    const served = await serve(environEcho, { tls: cert, http2: true, closeTimeout: 30_000 })
    const client = session(served.port)
    await h2(client, { ':path': '/' })
    const started = Date.now()
    await served.close()
    // Without closing them, close() would wait for the 30 s timeout.
    expect(Date.now() - started).toBeLessThan(15_000)
  })

  it('needs tls', async () => {
    await expect(serve(environEcho, { http2: true } as never)).rejects.toThrow(
      "invalid options: serve.http2: needs tls: HTTP/2 is offered over TLS (ALPN); for cleartext HTTP/2 only (h2c, no HTTP/1.1 clients) say http2: 'h2c'",
    )
  })
})

describe("serve with http2: 'h2c'", () => {
  it('answers cleartext HTTP/2 with prior knowledge, the environ saying HTTP/2 and http', async () => {
    const served = await serve(environEcho, { http2: 'h2c', closeTimeout: 30_000 })
    cleanups.push(() => served.close())
    expect(served.url).toBe(`http://127.0.0.1:${served.port}`)
    const client = http2Connect(served.url)
    client.on('error', () => {})
    cleanups.push(() => client.destroy())
    const answer = await h2(client, { ':path': '/c?d=e', 'x-custom': 'h2c' })
    expect(answer.headers[':status']).toBe(200)
    expect(JSON.parse(answer.body)).toEqual({
      protocol: 'HTTP/2',
      host: `127.0.0.1:${served.port}`,
      scheme: 'http',
      path: '/c',
      query: 'd=e',
      custom: 'h2c',
    })
    // Idle sessions get GOAWAY on close(), as over TLS: no wait for the 30 s close timeout.
    const started = Date.now()
    await served.close()
    expect(Date.now() - started).toBeLessThan(15_000)
  }, 20_000)

  it('is cleartext: refused with tls', async () => {
    await expect(serve(environEcho, { tls: cert, http2: 'h2c' } as never)).rejects.toThrow(
      "invalid options: serve.http2: 'h2c' is cleartext HTTP/2: with tls, say http2: true",
    )
  })
})
