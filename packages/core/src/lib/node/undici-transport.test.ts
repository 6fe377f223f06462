import { rmSync } from 'node:fs'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { Socket } from 'node:net'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import type { AppResponse, Environ, EnvironApp, ExactProxyOptions, Transport } from '../../index.ts'
import {
  exactProxy as coreExactProxy,
  fetchTransport,
  toEnviron,
  WsgiProxyError,
} from '../../index.ts'
import { Agent, errors, fetch as undiciFetch } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { describeForwarding } from '@wsgiproxy/test-kit/forwarding-suite'
import { closeAll, freePort, startFetchFront, startUpstream } from '@wsgiproxy/test-kit/servers'
import type { UndiciTransport, UndiciTransportOptions } from './undici-transport.ts'
import { undiciTransport } from './undici-transport.ts'

// Every upstream here is on 127.0.0.1, which the exact proxy refuses unless its allow list names it.
function exactProxy(options: ExactProxyOptions = {}): EnvironApp {
  return coreExactProxy({ allow: ['127.0.0.1'], ...options })
}

const transports: UndiciTransport[] = []
const cleanups: Array<() => Promise<void> | void> = []

function transportFor(options?: UndiciTransportOptions): UndiciTransport {
  const transport = undiciTransport(options)
  transports.push(transport)
  return transport
}

afterEach(async () => {
  await closeAll()
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()))
  await Promise.all(transports.splice(0).map((transport) => transport.close()))
})

// The shared forwarding suite (docs/design.md §8) behind a fetch front, with this transport.
describeForwarding('toFetchHandler on @hono/node-server, undiciTransport', (port, options) => {
  const proxy = exactProxy({ ...options, transport: transportFor() })
  return startFetchFront((environ) =>
    proxy({
      ...environ,
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(port),
      HTTP_HOST: `127.0.0.1:${port}`,
    }),
  )
})

const quiet: ExactProxyOptions = { onError: () => {} }

/** An environ for `url` that the exact proxy sends to 127.0.0.1:`port`, Host kept. */
function environFor(url: string, port: number, init?: RequestInit): Environ {
  return {
    ...toEnviron(new Request(url, init)),
    HTTP_HOST: new URL(url).host,
    SERVER_NAME: '127.0.0.1',
    SERVER_PORT: String(port),
  }
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

async function bodyOf(response: AppResponse): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  for await (const chunk of response.body ?? []) chunks.push(chunk)
  return Buffer.concat(chunks)
}

async function listen(
  server: Server | ReturnType<typeof createNetServer>,
  path?: string,
): Promise<void> {
  await new Promise<void>((resolve) => {
    if (path === undefined) server.listen(0, '127.0.0.1', resolve)
    else server.listen(path, resolve)
  })
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  )
}

describe('undiciTransport', () => {
  it('sends a Host different from the connect address as given', async () => {
    let host: string | undefined
    const upstream = await startUpstream((req, res) => {
      host = req.headers.host
      res.end('ok')
    })
    const app = exactProxy({ transport: transportFor() })
    const response = await app(environFor('http://public.example:8443/x', upstream.port))
    expect(response.status).toBe(200)
    expect((await bodyOf(response)).toString()).toBe('ok')
    expect(host).toBe('public.example:8443')
  })

  it('passes a gzip body through still encoded, Content-Encoding and Content-Length intact', async () => {
    const gz = gzipSync('compressible '.repeat(1000))
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': String(gz.length) })
      res.end(gz)
    })
    const app = exactProxy({ transport: transportFor() })
    const response = await app(
      environFor('http://h/', upstream.port, { headers: { 'accept-encoding': 'gzip' } }),
    )
    expect(response.headers).toContainEqual(['content-encoding', 'gzip'])
    expect(response.headers).toContainEqual(['content-length', String(gz.length)])
    expect((await bodyOf(response)).equals(gz)).toBe(true)
  })

  it('keeps repeated response headers separate and in order, with the reason phrase', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.statusMessage = 'Fine Indeed'
      res.setHeader('Set-Cookie', ['a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT', 'b=2'])
      res.end()
    })
    const app = exactProxy({ transport: transportFor() })
    const response = await app(environFor('http://h/', upstream.port))
    expect(response.statusText).toBe('Fine Indeed')
    expect(response.headers.filter(([name]) => name.toLowerCase() === 'set-cookie')).toEqual([
      ['Set-Cookie', 'a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT'],
      ['Set-Cookie', 'b=2'],
    ])
  })

  it('answers HEAD, 204 and 304 with a null body', async () => {
    const sockets = new Set<Socket>()
    const upstream = await startUpstream((req, res) => {
      sockets.add(req.socket)
      const status = req.method === 'HEAD' ? 200 : req.headers['if-none-match'] ? 304 : 204
      res.writeHead(status, { 'content-length': '0', etag: '"x"' })
      res.end()
    })
    const app = exactProxy({ transport: transportFor() })
    const noContent = await app(environFor('http://h/', upstream.port))
    expect(noContent).toMatchObject({ status: 204, body: null })
    await nextTurn()
    const notModified = await app(
      environFor('http://h/', upstream.port, { headers: { 'if-none-match': '"x"' } }),
    )
    expect(notModified).toMatchObject({ status: 304, body: null })
    await nextTurn()
    const head = await app(environFor('http://h/', upstream.port, { method: 'HEAD' }))
    expect(head).toMatchObject({ status: 200, body: null })
    // The unread empty bodies left their socket in the pool.
    expect(sockets.size).toBe(1)
  })

  it('reuses one upstream socket for sequential requests (keep-alive)', async () => {
    let connections = 0
    const server = createServer((_req, res) => res.end('ok'))
    server.on('connection', () => connections++)
    await listen(server)
    const { port } = server.address() as { port: number }
    const app = exactProxy({ transport: transportFor() })
    for (let i = 0; i < 2; i++) {
      const response = await app(environFor(`http://h/${i}`, port))
      expect((await bodyOf(response)).toString()).toBe('ok')
      // undici returns the socket to the pool just after the body ends; a request sent in the
      // same turn would find it busy and open another connection.
      await nextTurn()
    }
    expect(connections).toBe(1)
  })

  it('sends every request over a unix socket with socketPath', async () => {
    const path = join(tmpdir(), `wsgiproxy-undici-${process.pid}-${Date.now()}.sock`)
    rmSync(path, { force: true })
    cleanups.push(() => rmSync(path, { force: true }))
    let seen: Record<string, string | undefined> = {}
    const server = createServer((req, res) => {
      seen = { host: req.headers.host, url: req.url }
      res.end('over unix')
    })
    await listen(server, path)
    const app = exactProxy({
      allow: ['backend.internal'],
      transport: transportFor({ socketPath: path }),
    })
    const response = await app({
      ...toEnviron(new Request('http://public.example/p?q=1')),
      HTTP_HOST: 'public.example',
      SERVER_NAME: 'backend.internal',
      SERVER_PORT: '80',
    })
    expect((await bodyOf(response)).toString()).toBe('over unix')
    expect(seen).toEqual({ host: 'public.example', url: '/p?q=1' })
  })

  it('answers 502 UPSTREAM_UNREACHABLE when the unix socket does not exist', async () => {
    const codes: string[] = []
    const path = join(tmpdir(), `wsgiproxy-undici-missing-${process.pid}.sock`)
    const app = exactProxy({
      transport: transportFor({ socketPath: path }),
      onError: (error) => void codes.push(error.code),
    })
    const response = await app(environFor('http://h/', 80))
    expect(response.status).toBe(502)
    expect(codes).toEqual(['UPSTREAM_UNREACHABLE'])
  })

  it('answers 502 UPSTREAM_UNREACHABLE when the upstream refuses', async () => {
    const codes: string[] = []
    const app = exactProxy({
      transport: transportFor(),
      onError: (error) => void codes.push(error.code),
    })
    const response = await app(environFor('http://h/', await freePort()))
    expect(response.status).toBe(502)
    expect(response.headers).toContainEqual(['content-type', 'application/problem+json'])
    expect(codes).toEqual(['UPSTREAM_UNREACHABLE'])
  })

  it('answers 502 UPSTREAM_INVALID_RESPONSE when the upstream does not speak HTTP', async () => {
    const server = createNetServer((socket) => socket.end('garbage\r\n\r\n'))
    await listen(server)
    const { port } = server.address() as { port: number }
    const codes: string[] = []
    const app = exactProxy({
      transport: transportFor(),
      onError: (error) => void codes.push(error.code),
    })
    const response = await app(environFor('http://h/', port))
    expect(response.status).toBe(502)
    expect(codes).toEqual(['UPSTREAM_INVALID_RESPONSE'])
  })

  it('answers 504 through the exact proxy headers timeout, not undici’s', async () => {
    const upstream = await startUpstream(() => {})
    const codes: string[] = []
    const app = exactProxy({
      transport: transportFor(),
      timeouts: { headers: 200 },
      onError: (error) => void codes.push(error.code),
    })
    const response = await app(environFor('http://h/', upstream.port))
    expect(response.status).toBe(504)
    expect(codes).toEqual(['UPSTREAM_HEADERS_TIMEOUT'])
  })

  it('maps a connect timeout to 504 UPSTREAM_CONNECT_TIMEOUT', async () => {
    // A real connect timeout cannot happen on loopback, so the connector fails the way undici's
    // own does when its timer fires (ConnectTimeoutError, UND_ERR_CONNECT_TIMEOUT).
    const agent = new Agent({
      connect: (_options, callback) => callback(new errors.ConnectTimeoutError(), null),
    })
    cleanups.push(() => agent.close())
    const codes: string[] = []
    const app = exactProxy({
      transport: transportFor({ dispatcher: agent }),
      onError: (error) => void codes.push(error.code),
    })
    const response = await app(environFor('http://h/', 9))
    expect(response.status).toBe(504)
    expect(codes).toEqual(['UPSTREAM_CONNECT_TIMEOUT'])
  })

  it('closes the upstream request within 1 s when wsgiproxy.signal aborts', async () => {
    let arrived!: () => void
    const arrival = new Promise<void>((resolve) => (arrived = resolve))
    let closedAt = 0
    const upstream = await startUpstream((req: IncomingMessage, res: ServerResponse) => {
      res.on('close', () => (closedAt = Date.now()))
      req.resume()
      arrived()
    })
    const client = new AbortController()
    const app = exactProxy({ ...quiet, transport: transportFor() })
    const pending = app({
      ...environFor('http://h/', upstream.port),
      'wsgiproxy.signal': client.signal,
    })
    await arrival
    const abortedAt = Date.now()
    client.abort()
    expect((await pending).status).toBe(499)
    await expect.poll(() => closedAt, { timeout: 1_000, interval: 10 }).toBeGreaterThan(0)
    expect(closedAt - abortedAt).toBeLessThan(1_000)
  })

  it('closes the upstream response when the body is abandoned mid-stream', async () => {
    let closedAt = 0
    const upstream = await startUpstream((_req, res) => {
      res.on('close', () => (closedAt = Date.now()))
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first chunk')
    })
    const app = exactProxy({ ...quiet, transport: transportFor() })
    const response = await app(environFor('http://h/', upstream.port))
    const iterator = (response.body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
    expect(Buffer.from((await iterator.next()).value as Uint8Array).toString()).toBe('first chunk')
    const abandonedAt = Date.now()
    await iterator.return?.()
    await expect.poll(() => closedAt, { timeout: 1_000, interval: 10 }).toBeGreaterThan(0)
    expect(closedAt - abandonedAt).toBeLessThan(1_000)
  })

  it('pauses the upstream while the body is not read (backpressure), then delivers every byte', async () => {
    const total = 64 * 1024 * 1024
    let written = 0
    const upstream = await startUpstream(async (_req, res) => {
      res.writeHead(200, { 'content-length': String(total) })
      const block = Buffer.alloc(64 * 1024, 0x62)
      while (written < total && !res.destroyed) {
        written += block.length
        if (!res.write(block)) await new Promise((resolve) => res.once('drain', resolve))
      }
      res.end()
    })
    const app = exactProxy({ ...quiet, transport: transportFor() })
    const response = await app(environFor('http://h/', upstream.port))
    const iterator = (response.body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
    let received = (await iterator.next()).value?.byteLength ?? 0
    await new Promise((resolve) => setTimeout(resolve, 300))
    // Socket buffers on both ends and the transport's 64 KiB queue: far below the 64 MiB.
    expect(written).toBeLessThan(16 * 1024 * 1024)
    for (;;) {
      const next = await iterator.next()
      if (next.done) break
      received += next.value.byteLength
    }
    expect(received).toBe(total)
  })

  it('cancels at once through a plain signal when called without core (no cancellation hook)', async () => {
    let closed = false
    const upstream = await startUpstream((req) => {
      // Never answers; notes when the transport gives the request up.
      req.socket.on('close', () => (closed = true))
    })
    const transport = transportFor()
    const outbound = (signal: AbortSignal): Parameters<Transport>[0] => ({
      url: new URL(`http://127.0.0.1:${upstream.port}/`),
      method: 'GET',
      headers: [['host', `127.0.0.1:${upstream.port}`]],
      body: null,
      signal,
    })
    const client = new AbortController()
    const pending = transport(outbound(client.signal))
    await new Promise((resolve) => setTimeout(resolve, 50))
    client.abort()
    await expect(pending).rejects.toMatchObject({ code: 'CLIENT_ABORTED' })
    await expect.poll(() => closed, { timeout: 1_000, interval: 10 }).toBe(true)
    // A signal that is already aborted: nothing is sent.
    await expect(transport(outbound(AbortSignal.abort()))).rejects.toMatchObject({
      code: 'CLIENT_ABORTED',
    })
  })

  it('answers 400 when the request body does not match its Content-Length', async () => {
    const upstream = await startUpstream((req, res) => {
      req.resume()
      req.on('end', () => res.end('ok'))
    })
    const codes: string[] = []
    const app = exactProxy({
      transport: transportFor(),
      onError: (error) => void codes.push(error.code),
    })
    const environ = environFor('http://h/', upstream.port, { method: 'POST', body: 'hello' })
    const response = await app({ ...environ, CONTENT_LENGTH: '10' })
    expect(response.status).toBe(400)
    expect(codes).toEqual(['BAD_REQUEST'])
  })

  it('leaves a given dispatcher open on close()', async () => {
    const upstream = await startUpstream((_req, res) => res.end('ok'))
    const agent = new Agent()
    cleanups.push(() => agent.close())
    const transport = undiciTransport({ dispatcher: agent })
    await transport.close()
    const response = await exactProxy({ transport })(environFor('http://h/', upstream.port))
    expect((await bodyOf(response)).toString()).toBe('ok')
  })

  it.each([
    [{ connectTimeout: 0 }, 'connectTimeout'],
    [{ keepAliveTimeout: -1 }, 'keepAliveTimeout'],
    [{ connections: 1.5 }, 'connections'],
    [{ socketPath: '' }, 'socketPath'],
    [{ dispatcher: {} }, 'dispatcher'],
    [{ dispatcher: new Agent(), connections: 2 }, 'connections'],
    [{ keepAlive: true }, 'keepAlive'],
  ])('refuses invalid options %j', (options, named) => {
    const attempt = (): unknown => undiciTransport(options as UndiciTransportOptions)
    expect(attempt).toThrow(WsgiProxyError)
    expect(attempt).toThrow(named)
    expect(attempt).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS', expose: true }))
  })
})

/**
 * A raw upstream that answers the first request on each connection with a keep-alive 200 and
 * closes the connection, unanswered, when a second request arrives on it: a keep-alive socket
 * the server dropped just as the client reused it.
 */
async function startStaleSocketUpstream(): Promise<{ port: number; requests(): number }> {
  let requests = 0
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    let answered = false
    let buffered = ''
    socket.on('data', (data: Buffer) => {
      buffered += data.toString('latin1')
      while (buffered.includes('\r\n\r\n')) {
        const end = buffered.indexOf('\r\n\r\n')
        const head = buffered.slice(0, end)
        const length = /content-length: *(\d+)/i.exec(head)?.[1]
        if (buffered.length < end + 4 + Number(length ?? 0)) return
        buffered = buffered.slice(end + 4 + Number(length ?? 0))
        requests++
        if (answered) {
          socket.destroy()
          return
        }
        answered = true
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  )
  return { port: (server.address() as { port: number }).port, requests: () => requests }
}

/** Sends one request through `transport` and reads its whole body; gives the status. */
async function sendTo(
  transport: Transport,
  port: number,
  method: string,
  body: string | null = null,
): Promise<number> {
  const response = await transport({
    url: new URL(`http://127.0.0.1:${port}/`),
    method,
    headers: body === null ? [] : [['content-length', String(body.length)]],
    body:
      body === null
        ? null
        : (async function* () {
            yield new TextEncoder().encode(body)
          })(),
    signal: new AbortController().signal,
  })
  let bytes = 0
  for await (const chunk of response.body ?? []) bytes += chunk.byteLength
  expect(bytes).toBe(method === 'GET' || method === 'POST' ? 2 : bytes)
  return response.status
}

describe.each([
  ['undiciTransport', () => transportFor({ connections: 1 })],
  [
    "fetchTransport (undici's fetch)",
    () => {
      const agent = new Agent({ connections: 1 })
      cleanups.push(() => agent.close())
      return fetchTransport({
        fetch: (input, init) =>
          undiciFetch(input as string, { ...(init as object), dispatcher: agent }) as never,
      })
    },
  ],
])('%s on a keep-alive socket the upstream closed', (_name, makeTransport) => {
  it('sends a GET or OPTIONS once more on a new connection instead of answering 502', async () => {
    const upstream = await startStaleSocketUpstream()
    // One socket per origin, so each request after the first goes out on a reused one.
    const transport = makeTransport()
    for (const method of ['GET', 'OPTIONS', 'GET']) {
      expect(await sendTo(transport, upstream.port, 'GET')).toBe(200)
      expect(await sendTo(transport, upstream.port, method)).toBe(200)
    }
    // Some went out twice: on the stale socket, then on a new one.
    expect(upstream.requests()).toBeGreaterThan(6)
  })

  it('does not send a POST again: it fails as UPSTREAM_RESET', async () => {
    const upstream = await startStaleSocketUpstream()
    // One socket per origin, so each request after the first goes out on a reused one.
    const transport = makeTransport()
    expect(await sendTo(transport, upstream.port, 'GET')).toBe(200)
    await expect(sendTo(transport, upstream.port, 'POST', 'data')).rejects.toMatchObject({
      code: 'UPSTREAM_RESET',
    })
    expect(upstream.requests()).toBe(2)
  })
})
