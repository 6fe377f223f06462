// serve({ byteCopy: true }) on real sockets: what the byte-copying front does itself (pipelining,
// framing both ways, trailers, limits, timeouts, stale upstream connections, early answers,
// backpressure) and what it hands to node:http mid-connection (Upgrade, HTTP/1.0, Expect).
// The forwarding suite (node-forwarding.test.ts) and the stress suite run on it as well.
import { createHash, randomBytes } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect, createServer as createNetServer } from 'node:net'
import type { AddressInfo, Server as NetServer, Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import type { AppResponse, EnvironApp, ProxyAppOptions } from '@wsgiproxy/core'
import { createProxyApp, WsgiProxyError } from '@wsgiproxy/core'
import { closeAll, register, registerServed, startUpstream } from '@wsgiproxy/test-kit/servers'
import { undiciTransport } from '@wsgiproxy/core/undici'
import { llhttp } from './_llhttp.ts'
import { serve } from './serve.ts'
import type { Served, ServeOptions } from './serve.ts'

afterEach(closeAll)

/** A byte-copying front for `createProxyApp(proxy)` with its own transport, closed after the case. */
async function copyFront(
  proxy: Omit<ProxyAppOptions, 'transport'>,
  options: ServeOptions = {},
): Promise<Served> {
  const transport = undiciTransport()
  const served = await serve(createProxyApp({ onError: () => {}, ...proxy, transport }), {
    ...options,
    byteCopy: true,
    closeTimeout: 1_000,
  })
  registerServed(served, transport)
  return served
}

/** {@link copyFront} for `href`, errors not logged. */
function front(href: string, options: ServeOptions = {}): Promise<Served> {
  return copyFront({ href }, options)
}

/** A raw HTTP/1.1 client on one connection: writes bytes, reads until `done` says so. */
interface RawClient {
  socket: Socket
  text(): string
  /** Resolves with everything read once `done(text)` holds, or the connection closed. */
  until(done: (text: string) => boolean): Promise<string>
  closed: Promise<void>
}

function rawClient(port: number): RawClient {
  const socket = connect(port, '127.0.0.1')
  let text = ''
  const waiters = new Set<() => void>()
  let ended = false
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => {
    text += chunk
    for (const wake of waiters) wake()
  })
  socket.on('error', () => {})
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      ended = true
      for (const wake of waiters) wake()
      resolve()
    }),
  )
  return {
    socket,
    text: () => text,
    closed,
    until: (done) =>
      new Promise((resolve) => {
        const check = (): void => {
          if (done(text) || ended) {
            waiters.delete(check)
            resolve(text)
          }
        }
        waiters.add(check)
        check()
      }),
  }
}

/**
 * A client whose POST the upstream answered (`early`) from its head alone, its 10 body bytes not
 * sent yet, on a front whose keep-alive timeout is 300 ms.
 */
async function answeredEarly(proxy: Served): Promise<RawClient> {
  proxy.server.keepAliveTimeout = 300
  const client = rawClient(proxy.port)
  client.socket.write('POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n')
  await client.until((t) => t.endsWith('early'))
  return client
}

const count = (text: string, part: string): number => text.split(part).length - 1

/**
 * Whether `holds()` stays true for `ms` in a row (checked every 20 ms) within 20 s: a state that
 * lasts, which a front without backpressure would leave within milliseconds.
 */
async function heldFor(ms: number, holds: () => boolean): Promise<boolean> {
  const limit = performance.now() + 20_000
  let since: number | undefined
  while (performance.now() < limit) {
    if (!holds()) since = undefined
    else {
      since ??= performance.now()
      if (performance.now() - since >= ms) return true
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return false
}

/** A raw upstream: answers each connection's bytes with `answer` (until it returns undefined). */
async function rawUpstream(
  answer: (request: string, socket: Socket) => string | undefined,
): Promise<{ port: number; href: string; connections: () => number; requests: string[] }> {
  const requests: string[] = []
  let connections = 0
  const sockets = new Set<Socket>()
  const server: NetServer = createNetServer((socket) => {
    connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let buffered = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      buffered += chunk
      // One request per head here: the cases send no request bodies to raw upstreams.
      let end = buffered.indexOf('\r\n\r\n')
      while (end >= 0) {
        const request = buffered.slice(0, end + 4)
        buffered = buffered.slice(end + 4)
        requests.push(request)
        const reply = answer(request, socket)
        if (reply !== undefined) socket.write(reply, 'latin1')
        end = buffered.indexOf('\r\n\r\n')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  register({
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  })
  return { port, href: `http://127.0.0.1:${port}`, connections: () => connections, requests }
}

/** An upstream that answers `<method> <url> <sha256 of the body>` and records the requests. */
async function hashingUpstream(): Promise<{ href: string; seen: string[] }> {
  const seen: string[] = []
  const upstream = await startUpstream(async (req: IncomingMessage, res: ServerResponse) => {
    const hash = createHash('sha256')
    for await (const chunk of req) hash.update(chunk as Buffer)
    const line = `${req.method} ${req.url} ${hash.digest('hex').slice(0, 12)}`
    seen.push(line)
    res.setHeader('content-length', Buffer.byteLength(line))
    if (req.trailers['x-check'] !== undefined) res.setHeader('x-trailer', req.trailers['x-check'])
    res.end(line)
  })
  return { href: upstream.origin, seen }
}

/** Answers a 64 MiB Content-Length body with backpressure, noting how far it got and whether it waits. */
async function writeBig(
  res: ServerResponse,
  progress: { written: number; waiting: boolean },
): Promise<void> {
  const MiB = 1024 * 1024
  res.writeHead(200, { 'content-length': String(64 * MiB) })
  const block = Buffer.alloc(MiB, 0x62)
  while (progress.written < 64 * MiB && !res.destroyed) {
    progress.written += block.length
    if (!res.write(block)) {
      progress.waiting = true
      await new Promise((resolve) => res.once('drain', resolve))
      progress.waiting = false
    }
  }
  res.end()
}

const noContent: EnvironApp = (): AppResponse => ({ status: 204, headers: [], body: null })

const sha = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 12)

describe('serve({ byteCopy: true })', () => {
  it('answers pipelined requests in order, each body copied whole (Content-Length and chunked)', async () => {
    const upstream = await hashingUpstream()
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write(
      'POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello' +
        'POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n' +
        'GET /three HTTP/1.1\r\nHost: a\r\n\r\n',
    )
    const text = await client.until((t) => t.includes('GET /three'))
    const bodies = [...text.matchAll(/(?:POST|GET) \/\w+ [0-9a-f]{12}/g)].map((m) => m[0])
    expect(bodies).toEqual([
      `POST /one ${sha('hello')}`,
      `POST /two ${sha('abcde')}`,
      `GET /three ${sha('')}`,
    ])
    expect(upstream.seen).toEqual(bodies)
  })

  it("drops a request's trailer fields and keeps only the fields a trailer may carry in a response", async () => {
    const upstream = await startUpstream(async (req, res) => {
      for await (const chunk of req) void chunk
      const seen = Object.keys(req.trailers).join(',')
      res.writeHead(200, { trailer: 'x-sum, set-cookie', 'x-seen': `[${seen}]` })
      res.write('body')
      res.addTrailers({ 'x-sum': '42', 'set-cookie': 'a=b' })
      res.end()
    })
    const proxy = await front(upstream.origin)
    const client = rawClient(proxy.port)
    client.socket.write(
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n' +
        'X-Forwarded-For: 6.6.6.6\r\nX-WSGIProxy-Str-1: REMOTE_USER YWRtaW4\r\nX-Check: yes\r\n\r\n',
    )
    const text = await client.until((t) => t.includes('\r\n0\r\n') && t.endsWith('\r\n\r\n'))
    // The app never saw them: none of its rules for protocol or spoofable headers could apply.
    expect(text).toMatch(/x-seen: \[\]\r\n/i)
    expect(text).toMatch(/transfer-encoding: chunked\r\n/i)
    const trailer = text.slice(text.indexOf('\r\n0\r\n') + 5)
    expect(trailer).toMatch(/^x-sum: 42\r\n/im)
    expect(trailer).not.toMatch(/set-cookie/i)
  })

  it('frames a close-delimited response as chunked and keeps the client connection', async () => {
    const upstream = await rawUpstream((request, socket) => {
      socket.end(
        `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end ${request.split(' ')[1]}`,
      )
      return undefined
    })
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.until((t) => t.includes('0\r\n\r\n'))
    client.socket.write('GET /b HTTP/1.1\r\nHost: a\r\n\r\n')
    const text = await client.until((t) => count(t, '0\r\n\r\n') === 2)
    expect(count(text, 'HTTP/1.1 200 OK')).toBe(2)
    expect(text).toContain('until the end /a')
    expect(text).toContain('until the end /b')
    expect(text).toMatch(/transfer-encoding: chunked/i)
    expect(upstream.connections()).toBe(2)
  })

  it('drops a 1xx interim answer and passes the final one', async () => {
    const upstream = await rawUpstream(
      () =>
        'HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
    )
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
    const text = await client.until((t) => t.endsWith('\r\n\r\nok'))
    expect(text.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true)
    expect(text).not.toContain('103')
  })

  it('answers HEAD, 204 and 304 without a body, Content-Length kept on HEAD', async () => {
    const upstream = await startUpstream((req, res) => {
      if (req.url === '/204') res.writeHead(204).end()
      else if (req.url === '/304') res.writeHead(304, { etag: '"x"' }).end()
      else
        res
          .writeHead(200, { 'content-length': '10' })
          .end(req.method === 'HEAD' ? '' : '0123456789')
    })
    const proxy = await front(upstream.origin)
    const client = rawClient(proxy.port)
    client.socket.write(
      'HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\n' +
        'GET /304 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n',
    )
    const text = await client.until((t) => t.endsWith('0123456789'))
    const heads = text.split('HTTP/1.1 ').slice(1)
    expect(heads.map((h) => h.slice(0, 3))).toEqual(['200', '204', '304', '200'])
    expect(heads[0]).toMatch(/content-length: 10\r\n/i)
    expect(heads[0]).toMatch(/\r\n\r\n$/)
    expect(heads[1]).toMatch(/\r\n\r\n$/)
    expect(heads[2]).toMatch(/etag: "x"\r\n/i)
  })

  it('sends a GET again on a new connection when the upstream closed a kept one meanwhile', async () => {
    let served = 0
    const upstream = await rawUpstream((_request, socket) => {
      served++
      // Keep-alive in words, then the connection closes right after the answer.
      setImmediate(() => socket.destroy())
      return `HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${served}`
    })
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.until((t) => t.endsWith('\r\n\r\n1'))
    // Wait for the front to see the close, or not: either way the answer must be a 200.
    client.socket.write('GET /2 HTTP/1.1\r\nHost: a\r\n\r\n')
    const text = await client.until((t) => t.endsWith('\r\n\r\n2'))
    expect(count(text, 'HTTP/1.1 200 OK')).toBe(2)
  })

  it('answers an upstream that answers early and closes, and stays consistent', async () => {
    const upstream = await rawUpstream((_request, socket) => {
      socket.end('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
      return undefined
    })
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n')
    const block = Buffer.alloc(64 * 1024, 0x61)
    for (let i = 0; i < 16; i++) client.socket.write(block)
    const text = await client.until((t) => t.includes('\r\n\r\n'))
    expect(text.startsWith('HTTP/1.1 413 ')).toBe(true)
  })

  it('answers 431 to more header lines than maxHeaders and to a head over 16 KiB, 400 to a bad one', async () => {
    const upstream = await hashingUpstream()
    const proxy = await front(upstream.href, { maxHeaders: 10 })
    const many = Array.from({ length: 11 }, (_, i) => `X-H${i}: v\r\n`).join('')
    const tooMany = rawClient(proxy.port)
    tooMany.socket.write(`GET / HTTP/1.1\r\nHost: a\r\n${many}\r\n`)
    expect(await tooMany.until((t) => t.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 431 /)
    const large = rawClient(proxy.port)
    large.socket.write(`GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'b'.repeat(17 * 1024)}\r\n\r\n`)
    expect(await large.until((t) => t.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 431 /)
    const bad = rawClient(proxy.port)
    bad.socket.write(
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    )
    expect(await bad.until((t) => t.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 400 /)
    await Promise.all([tooMany.closed, large.closed, bad.closed])
    expect(upstream.seen).toEqual([])
  })

  it('answers 408 and closes when a head takes longer than the headers timeout', async () => {
    const upstream = await hashingUpstream()
    const proxy = await front(upstream.href, { clientHeadersTimeout: 300 })
    const client = rawClient(proxy.port)
    client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n')
    const started = performance.now()
    await client.closed
    expect(client.text()).toMatch(/^HTTP\/1\.1 408 /)
    // Not before the timeout; the upper side is the test's own timeout.
    expect(performance.now() - started).toBeGreaterThanOrEqual(250)
  })

  it('hands the connection to node:http for an Upgrade after a copied request', async () => {
    const upgrades = await rawUpstream((request, socket) => {
      if (!/upgrade: websocket/i.test(request)) {
        return 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst'
      }
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      )
      socket.on('data', (chunk) => socket.write(`echo:${String(chunk)}`))
      return undefined
    })
    const proxy = await front(upgrades.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.until((t) => t.endsWith('first'))
    client.socket.write(
      'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    await client.until((t) => t.includes('101 Switching Protocols'))
    client.socket.write('ping')
    const text = await client.until((t) => t.includes('echo:ping'))
    expect(text).toContain('echo:ping')
    expect(upgrades.requests).toHaveLength(2)
  })

  it('hands the connection to node:http for an HTTP/1.0 request and for Expect: 100-continue', async () => {
    const upstream = await hashingUpstream()
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET /copied HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.until((t) => t.includes(`GET /copied ${sha('')}`))
    client.socket.write(
      'POST /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n',
    )
    await client.until((t) => t.includes('100 Continue'))
    client.socket.write('hi')
    await client.until((t) => t.includes(`POST /expect ${sha('hi')}`))
    client.socket.write('GET /old HTTP/1.0\r\nHost: a\r\n\r\n')
    await client.closed
    expect(client.text()).toContain(`GET /old ${sha('')}`)
    expect(client.text()).toMatch(/HTTP\/1\.1 200 OK[\s\S]*GET \/old/)
    expect(upstream.seen).toEqual([
      `GET /copied ${sha('')}`,
      `POST /expect ${sha('hi')}`,
      `GET /old ${sha('')}`,
    ])
  })

  it('holds a response back while the client does not read, and an upload while the upstream does not', async () => {
    const MiB = 1024 * 1024
    const progress = { written: 0, waiting: false }
    const stalled: Array<() => void> = []
    const upstream = await startUpstream(async (req, res) => {
      if (req.url === '/upload') {
        // Reads nothing until the case lets it.
        await new Promise<void>((resolve) => stalled.push(resolve))
        let bytes = 0
        for await (const chunk of req) bytes += (chunk as Buffer).length
        res.end(String(bytes))
        return
      }
      await writeBig(res, progress)
    })
    const proxy = await front(upstream.origin)

    // A client that reads nothing: the upstream must stay stopped (far below 64 MiB) for a while,
    // which a front that kept reading at loopback speed would never let happen.
    const reader = rawClient(proxy.port)
    reader.socket.pause()
    reader.socket.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n')
    expect(await heldFor(500, () => progress.waiting && progress.written < 32 * MiB)).toBe(true)
    let received = 0
    reader.socket.removeAllListeners('data')
    reader.socket.on('data', (chunk: Buffer | string) => (received += chunk.length))
    reader.socket.resume()
    await expect.poll(() => received > 64 * MiB, { timeout: 30_000 }).toBe(true)

    // An upstream that reads nothing: the client's own buffer must stay full for a while.
    const writer = rawClient(proxy.port)
    writer.socket.write(`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${64 * MiB}\r\n\r\n`)
    writer.socket.write(Buffer.alloc(64 * MiB, 0x63))
    expect(await heldFor(500, () => writer.socket.writableLength > 32 * MiB)).toBe(true)
    for (const release of stalled) release()
    const text = await writer.until((t) => t.endsWith(String(64 * MiB)))
    expect(text).toMatch(/^HTTP\/1\.1 200 /)
  })

  it('copies a Content-Length body byte for byte to a client that stops reading now and then', async () => {
    // Random bytes in small pieces (small reads at the front), to a client that stops reading
    // until every socket between is full, four times: the front reads the upstream into a buffer
    // it uses again, so bytes still waiting in the client's socket when the sockets fill must
    // never be overwritten by the next read.
    const MiB = 1024 * 1024
    const body = randomBytes(48 * MiB)
    let waiting = false
    const upstream = await startUpstream(async (_req, res) => {
      res.writeHead(200, { 'content-length': String(body.length) })
      let at = 0
      while (at < body.length && !res.destroyed) {
        const piece = body.subarray(at, at + 1 + Math.floor(Math.random() * 8 * 1024))
        at += piece.length
        if (res.write(piece)) await new Promise((resolve) => setImmediate(resolve))
        else {
          waiting = true
          await new Promise((resolve) => res.once('drain', resolve))
          waiting = false
        }
      }
      res.end()
    })
    const proxy = await front(upstream.origin)
    const response = await new Promise<IncomingMessage>((resolve, reject) =>
      httpRequest(proxy.url, resolve).on('error', reject).end(),
    )
    const hash = createHash('sha256')
    let bytes = 0
    let next = 0
    let filled = 0
    for await (const chunk of response) {
      hash.update(chunk as Buffer)
      bytes += (chunk as Buffer).length
      if (bytes >= next && next <= 24 * MiB) {
        next += 8 * MiB
        if (await heldFor(0, () => waiting)) filled++
      }
    }
    expect(filled).toBe(4)
    expect(bytes).toBe(body.length)
    expect(hash.digest('hex')).toBe(createHash('sha256').update(body).digest('hex'))
  })

  it('cuts the client off when the upstream closes before its Content-Length body ended', async () => {
    const upstream = await rawUpstream((_request, socket) => {
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc', 'latin1')
      return undefined
    })
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.closed
    // The head as the upstream sent it, then the 3 bytes that came, then the end: never 100.
    expect(client.text()).toMatch(/^HTTP\/1\.1 200 OK\r\nContent-Length: 100\r\n\r\nabc$/)
  })

  it('times a request that came in the same read as the end of an early-answered body as its own', async () => {
    // The upstream answers the POST from its head; the rest of the POST's body and the next
    // request then come in one read, after that exchange has ended. The next request must not be
    // cut off by the keep-alive timeout of the idle time before it.
    let slow: Socket | undefined
    const upstream = await rawUpstream((request, socket) => {
      if (request.includes('GET /slow ')) {
        slow = socket
        return undefined
      }
      return 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly'
    })
    const proxy = await front(upstream.href)
    const client = await answeredEarly(proxy)
    client.socket.write('0123456789GET /slow HTTP/1.1\r\nHost: a\r\n\r\n')
    await expect.poll(() => slow !== undefined, { timeout: 10_000 }).toBe(true)
    // Longer than the keep-alive timeout (300 ms), well inside the request timeout (300 s).
    await new Promise((resolve) => setTimeout(resolve, 900))
    slow?.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow', 'latin1')
    const text = await client.until((t) => t.endsWith('slow'))
    expect(count(text, 'HTTP/1.1 200 OK')).toBe(2)
  })

  it('times a request whose head only begins in the read that ends an early-answered body', async () => {
    const upstream = await rawUpstream((request) =>
      request.includes('GET /next ')
        ? 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext'
        : 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly',
    )
    const proxy = await front(upstream.href)
    const client = await answeredEarly(proxy)
    // The end of the body and the first bytes of the next head in one read, the rest of the head
    // later than the keep-alive timeout (300 ms), well inside the headers timeout (60 s).
    client.socket.write('0123456789GET /next HTTP/1.1\r\nHo')
    await new Promise((resolve) => setTimeout(resolve, 900))
    client.socket.write('st: a\r\n\r\n')
    const text = await client.until((t) => t.endsWith('next'))
    expect(count(text, 'HTTP/1.1 200 OK')).toBe(2)
  })

  it('sends a GET with a body again when its head ended a read and the kept connection was closed', async () => {
    const served = new WeakMap<Socket, number>()
    const upstream = await rawUpstream((_request, socket) => {
      const n = (served.get(socket) ?? 0) + 1
      served.set(socket, n)
      if (n > 1) {
        socket.destroy() // a kept connection the upstream closed meanwhile
        return undefined
      }
      return 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
    })
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.until((t) => t.endsWith('\r\n\r\nok'))
    // The head alone: the exchange starts with no body byte read, finds the kept connection
    // closed and sends the head again on a new one (the third request the upstream sees); the
    // body follows.
    client.socket.write('GET /search HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n')
    await expect.poll(() => upstream.requests.length, { timeout: 10_000 }).toBe(3)
    client.socket.write('hello')
    const text = await client.until((t) => count(t, 'HTTP/1.1 ') === 2 && t.endsWith('ok'))
    expect(
      text
        .split('HTTP/1.1 ')
        .slice(1)
        .map((answer) => answer.slice(0, 3)),
    ).toEqual(['200', '200'])
  })

  it('never resumes an upstream connection that the next exchange holds back for its client', async () => {
    // Client A does not read; its chunked answer ends in a read that leaves A's socket over its
    // high-water mark, so A's exchange waits for A to drain while the connection goes back to the
    // pool. Client B takes it and does not read either: when A drains, B's upstream must stay
    // held back.
    const MiB = 1024 * 1024
    const progress = { written: 0, waiting: false }
    let send: ((piece: Buffer) => boolean) | undefined
    let finish: ((last: Buffer) => void) | undefined
    const upstream = await startUpstream(async (req, res) => {
      if (req.url === '/a') {
        res.writeHead(200, { 'content-type': 'text/plain' }) // chunked
        send = (piece) => res.write(piece)
        await new Promise<void>((resolve) => {
          finish = (last) => {
            res.end(last)
            resolve()
          }
        })
        return
      }
      await writeBig(res, progress)
    })
    const proxy = await front(upstream.origin)
    const fronts: Socket[] = []
    proxy.server.on('connection', (socket: Socket) => fronts.push(socket))
    const a = rawClient(proxy.port)
    a.socket.pause()
    a.socket.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\n')
    await expect.poll(() => send !== undefined && fronts.length === 1).toBe(true)
    const toA = fronts[0] as Socket
    // Small pieces until the sockets to A are full: bytes wait in A's socket, under its mark.
    while (toA.writableLength === 0) {
      send?.(Buffer.alloc(4 * 1024, 0x61))
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
    expect(toA.writableLength).toBeLessThan(toA.writableHighWaterMark)
    finish?.(Buffer.alloc(60 * 1024, 0x61))
    const b = rawClient(proxy.port)
    b.socket.pause()
    b.socket.write('GET /b HTTP/1.1\r\nHost: a\r\n\r\n')
    expect(await heldFor(300, () => progress.waiting && progress.written < 32 * MiB)).toBe(true)
    a.socket.resume()
    await a.until((t) => t.endsWith('0\r\n\r\n'))
    expect(await heldFor(500, () => progress.waiting && progress.written < 32 * MiB)).toBe(true)
  }, 60_000)

  it('passes a response with 32 or more header fields (llhttp hands them over early)', async () => {
    const fields = Array.from({ length: 40 }, (_, i) => `X-H${i}: v${i}\r\n`).join('')
    const upstream = await rawUpstream(
      () => `HTTP/1.1 200 OK\r\n${fields}Content-Length: 2\r\n\r\nok`,
    )
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
    const text = await client.until((t) => t.endsWith('\r\n\r\nok'))
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(text).toContain('X-H39: v39\r\n')
  })

  it('passes on nothing an upstream sends past its response, and never reuses that connection', async () => {
    const upstream = await rawUpstream((request) =>
      request.startsWith('GET /a ')
        ? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi' +
          'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Injected: 1\r\n\r\nevil!'
        : request.startsWith('HEAD ')
          ? 'HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n<html>hello</html>'
          : `HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n${request.split(' ')[1]}`,
    )
    const proxy = await front(upstream.href)
    const first = rawClient(proxy.port)
    first.socket.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /bb HTTP/1.1\r\nHost: a\r\n\r\n')
    const text = await first.until((t) => t.endsWith('/bb'))
    expect(count(text, 'HTTP/1.1 200')).toBe(2)
    expect(text).not.toContain('evil')
    const head = rawClient(proxy.port)
    head.socket.write('HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n')
    await head.until((t) => t.endsWith('\r\n\r\n'))
    const other = rawClient(proxy.port)
    other.socket.write('GET /cc HTTP/1.1\r\nHost: a\r\n\r\n')
    const answer = await other.until((t) => t.endsWith('/cc'))
    expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n\/cc$/)
  })

  it('answers 502 to a status below 100 and passes none of its body on', async () => {
    const injected =
      'HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/\r\nContent-Length: 0\r\n\r\n'
    const upstream = await rawUpstream(
      () => `HTTP/1.1 099 X\r\nContent-Length: ${injected.length}\r\n\r\n${injected}`,
    )
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.closed
    expect(client.text()).toMatch(/^HTTP\/1\.1 502 /)
    expect(client.text()).not.toContain('elsewhere')
  })

  it('forwards a method by its own name (QUERY)', async () => {
    const upstream = await hashingUpstream()
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('QUERY /q HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\na')
    await client.until((t) => t.includes(`QUERY /q ${sha('a')}`))
    expect(upstream.seen).toEqual([`QUERY /q ${sha('a')}`])
  })

  it('sends a POST once when a kept upstream connection closes without an answer', async () => {
    const upstream = await rawUpstream((request, socket) => {
      if (request.startsWith('GET ')) return 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1'
      socket.destroy()
      return undefined
    })
    const proxy = await front(upstream.href)
    const client = rawClient(proxy.port)
    client.socket.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.until((t) => t.endsWith('\r\n\r\n1'))
    client.socket.write('POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n')
    await client.closed
    expect(client.text()).toMatch(/HTTP\/1\.1 502 /)
    expect(upstream.requests.filter((r) => r.startsWith('POST /pay'))).toHaveLength(1)
  })

  it('closes a connection whose client asked for close, whether or not the client closes its side', async () => {
    const upstream = await hashingUpstream()
    const served = await front(upstream.href)
    const socket = connect({ port: served.port, host: '127.0.0.1', allowHalfOpen: true })
    socket.on('error', () => {})
    socket.resume()
    socket.write('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    await new Promise((resolve) => socket.once('end', resolve))
    const open = (): Promise<number> =>
      new Promise((resolve) => served.server.getConnections((_error, n) => resolve(n)))
    await expect.poll(open, { timeout: 5_000 }).toBe(0)
    socket.destroy()
  })

  it('answers 408 to a request body slower than the request timeout', async () => {
    const upstream = await hashingUpstream()
    const proxy = await front(upstream.href, {
      clientHeadersTimeout: 200,
      clientRequestTimeout: 600,
    })
    const client = rawClient(proxy.port)
    client.socket.write('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n')
    const drip = setInterval(() => client.socket.write('x'), 100)
    await client.closed
    clearInterval(drip)
    expect(client.text()).toMatch(/^HTTP\/1\.1 408 /)
  })

  it('forwards no pipelined request after the answer that closes a draining connection', async () => {
    let answerEarly!: () => void
    const early = new Promise<void>((resolve) => (answerEarly = resolve))
    const seen: string[] = []
    const upstream = await startUpstream(async (req, res) => {
      seen.push(`${req.method} ${req.url}`)
      if (req.url === '/early') {
        // Answers before the body, then reads it.
        res.end('early')
        answerEarly()
      }
      for await (const chunk of req) void chunk
      if (req.url !== '/early') res.end('late')
    })
    const served = await front(upstream.origin)
    const client = rawClient(served.port)
    client.socket.write('POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n')
    await early
    const drained = served.drain()
    client.socket.write('helloGET /second HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.closed
    await drained
    expect(client.text()).toMatch(/connection: close/i)
    expect(client.text()).not.toContain('late')
    expect(seen).toEqual(['POST /early'])
  })

  it("writes the app's own answers as the node listener does: no body to HEAD, statusText, any size", async () => {
    const big = 'x'.repeat(100_000)
    const served = await copyFront({
      href: 'http://127.0.0.1:1/',
      onError: (): AppResponse => ({
        status: 599,
        statusText: 'Custom',
        headers: [['content-type', 'text/plain']],
        body: (async function* () {
          yield new TextEncoder().encode(big)
        })(),
      }),
    })
    const head = rawClient(served.port)
    head.socket.write('HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n')
    await head.closed
    expect(head.text()).toMatch(/^HTTP\/1\.1 599 Custom\r\n/)
    expect(head.text().endsWith('\r\n\r\n')).toBe(true)
    const get = rawClient(served.port)
    get.socket.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n')
    await get.closed
    expect(get.text()).toMatch(/^HTTP\/1\.1 599 Custom\r\n/)
    expect(get.text()).toMatch(/\r\ndate: /i)
    expect(get.text().replaceAll(/\r\n[0-9a-f]+\r\n/g, '')).toContain(big)
  })

  it('names an upstream answer that is not HTTP/1.1 as the node listener does', async () => {
    const codes: string[] = []
    const upstream = await rawUpstream(() => 'NOT HTTP AT ALL\r\n\r\n')
    const served = await copyFront({
      href: upstream.href,
      onError: (error) => void codes.push(error.code),
    })
    const client = rawClient(served.port)
    client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.closed
    expect(client.text()).toMatch(/^HTTP\/1\.1 502 /)
    expect(codes).toEqual(['UPSTREAM_INVALID_RESPONSE'])
  })

  it('waits for one drain at a time while the client does not read many small chunks', async () => {
    const warnings: string[] = []
    const onWarning = (warning: Error): void => void warnings.push(warning.name)
    process.on('warning', onWarning)
    try {
      const upstream = await startUpstream(async (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' })
        const tiny = Buffer.alloc(64, 0x74)
        for (let round = 0; round < 40 && !res.destroyed; round++) {
          // Many small chunks per write: each becomes a chunk of the client's response.
          for (let i = 0; i < 2_000; i++) res.write(tiny)
          await new Promise((resolve) => setImmediate(resolve))
        }
        res.end()
      })
      const proxy = await front(upstream.origin)
      const client = rawClient(proxy.port)
      client.socket.pause()
      client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
      let received = 0
      // Once held back for a while, read it all: every chunk comes, and no listener piled up.
      expect(await heldFor(300, () => client.socket.readableLength > 0)).toBe(true)
      client.socket.removeAllListeners('data')
      client.socket.on('data', (chunk: Buffer | string) => (received += chunk.length))
      client.socket.resume()
      await expect.poll(() => received > 40 * 2_000 * 64, { timeout: 20_000 }).toBe(true)
      expect(warnings).not.toContain('MaxListenersExceededWarning')
    } finally {
      process.off('warning', onWarning)
    }
  })

  it("follows the server's keepAliveTimeout set after serve()", async () => {
    const upstream = await hashingUpstream()
    const served = await front(upstream.href)
    served.server.keepAliveTimeout = 200
    const client = rawClient(served.port)
    client.socket.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
    await client.until((t) => t.includes(`GET / ${sha('')}`))
    const idleFrom = performance.now()
    await client.closed
    // Closed after about 200 ms; the default (5 s) would be far above this bound.
    expect(performance.now() - idleFrom).toBeLessThan(4_000)
  })

  it('refuses byteCopy beside tls or http2, and an app that cannot prepare from the head', async () => {
    await expect(serve(noContent, { byteCopy: true })).rejects.toThrow(/prepareCopy/)
    await expect(serve(noContent, { byteCopy: true, http2: 'h2c' })).rejects.toThrow(
      /byteCopy.*cleartext HTTP\/1\.1/,
    )
    const pooled = createProxyApp({
      href: ['http://127.0.0.1:1/', 'http://127.0.0.1:2/'],
      onError: () => {},
    })
    await expect(serve(pooled, { byteCopy: true })).rejects.toBeInstanceOf(WsgiProxyError)
    await pooled.pool?.close()
  })

  it("finds node:_http_common's parser in the shape it relies on", () => {
    const { HTTPParser, methods } = llhttp()
    expect(methods).toContain('GET')
    const parser = new HTTPParser()
    parser.initialize(HTTPParser.REQUEST, {}, 16 * 1024, 0)
    const seen: unknown[] = []
    parser[HTTPParser.kOnHeadersComplete] = (
      major: number,
      minor: number,
      flat: string[],
      method: number,
      url: string,
    ): number => {
      seen.push(major, minor, flat, methods[method], url)
      return 21
    }
    parser[HTTPParser.kOnBody] = (chunk: Buffer): void => void seen.push(String(chunk))
    parser[HTTPParser.kOnMessageComplete] = (): void => void seen.push('complete')
    const bytes = Buffer.from('POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi')
    const paused = parser.execute(bytes)
    expect(paused).toMatchObject({ code: 'HPE_PAUSED', bytesParsed: bytes.length - 2 })
    parser.resume()
    expect(parser.execute(bytes.subarray(bytes.length - 2))).toBe(2)
    expect(seen).toEqual([
      1,
      1,
      ['Host', 'h', 'Content-Length', '2'],
      'POST',
      '/p',
      'hi',
      'complete',
    ])
    parser.close()
  })
})
