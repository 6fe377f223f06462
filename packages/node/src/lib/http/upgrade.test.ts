import { createServer } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { createProxyApp, createSigner, createVerifier, toEnviron } from '@wsgiproxy/core'
import { PROTOCOL_VERSION } from '@wsgiproxy/core/protocol'
import type { Environ, EnvironApp } from '@wsgiproxy/core'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket, WebSocketServer } from 'ws'
import type { RawData } from 'ws'
import { serve } from './serve.ts'
import type { Served } from './serve.ts'
import { toNodeUpgradeListener } from './upgrade.ts'
import { undiciTransport } from '@wsgiproxy/core/undici'
import { freePort } from '@wsgiproxy/test-kit/servers'

const plainApp: EnvironApp = () => ({ status: 200, headers: [], body: null })

const cleanups: Array<() => Promise<void> | void> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).toReversed()) await cleanup()
})

interface Upstream {
  port: number
  wss: WebSocketServer
  connections: Array<{ ws: WebSocket; req: IncomingMessage }>
  next(): Promise<{ ws: WebSocket; req: IncomingMessage }>
}

async function echoUpstream(): Promise<Upstream> {
  const server: Server = createServer((_req, res) => res.end('not a websocket'))
  const wss = new WebSocketServer({ server })
  const connections: Upstream['connections'] = []
  const pending: Upstream['connections'] = []
  const waiters: Array<(c: { ws: WebSocket; req: IncomingMessage }) => void> = []
  wss.on('connection', (ws, req) => {
    ws.on('message', (data: RawData, isBinary: boolean) => ws.send(data, { binary: isBinary }))
    const connection = { ws, req }
    connections.push(connection)
    const waiter = waiters.shift()
    if (waiter === undefined) pending.push(connection)
    else waiter(connection)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const peer of wss.clients) peer.terminate()
        wss.close()
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return {
    port: (server.address() as AddressInfo).port,
    wss,
    connections,
    next: () =>
      new Promise((resolve) => {
        const ready = pending.shift()
        if (ready === undefined) waiters.push(resolve)
        else resolve(ready)
      }),
  }
}

async function serveApp(
  app: EnvironApp,
  options: Parameters<typeof serve>[1] = {},
): Promise<Served> {
  const served = await serve(app, { closeTimeout: 100, ...options })
  cleanups.push(() => served.close())
  return served
}

async function proxyTo(href: string, extra: Record<string, unknown> = {}): Promise<Served> {
  const transport = undiciTransport()
  cleanups.push(() => transport.close())
  return serveApp(createProxyApp({ href, transport, onError: () => {}, ...extra }))
}

function client(url: string, protocols?: string[]): WebSocket {
  const ws = new WebSocket(url, protocols)
  ws.on('error', () => {})
  cleanups.push(() => ws.terminate())
  return ws
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => {
    ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }))
  })
}

function refusedStatus(ws: WebSocket): Promise<number> {
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      resolve(res.statusCode ?? 0)
      res.resume()
    })
    ws.once('open', () => reject(new Error('unexpectedly opened')))
  })
}

describe('WebSocket forwarding through the proxy app', () => {
  it('tells a pool how each upgrade went, so a dead target is ejected', async () => {
    const live = await echoUpstream()
    const dead = await freePort()
    const transport = undiciTransport()
    cleanups.push(() => transport.close())
    const app = createProxyApp({
      href: [`http://127.0.0.1:${dead}`, `http://127.0.0.1:${live.port}`],
      balance: 'round-robin',
      ejection: { consecutiveFailures: 2 },
      transport,
      onError: () => {},
    })
    cleanups.push(() => app.pool?.close())
    const proxy = await serveApp(app)
    const outcomes: Array<number | 'open'> = []
    for (let i = 0; i < 6; i++) {
      const ws = client(`ws://127.0.0.1:${proxy.port}/`)
      outcomes.push(
        await new Promise<number | 'open'>((resolve) => {
          ws.once('open', () => resolve('open'))
          ws.once('unexpected-response', (_req, res: IncomingMessage) => {
            res.resume()
            resolve(res.statusCode ?? 0)
          })
        }),
      )
      ws.terminate()
    }
    // Round robin: dead, live, dead (ejected now), then live only.
    expect(outcomes).toEqual([502, 'open', 502, 'open', 'open', 'open'])
    expect(app.pool?.status().targets.map((t) => t.state)).toEqual(['ejected', 'healthy'])
  })

  it('echoes 10,000 messages in order through the proxy', async () => {
    const upstream = await echoUpstream()
    const proxy = await proxyTo(`http://127.0.0.1:${upstream.port}/myapp`)
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat`)
    await opened(ws)
    const count = 10_000
    const received: string[] = []
    const done = new Promise<void>((resolve) => {
      ws.on('message', (data: RawData) => {
        received.push(data.toString())
        if (received.length === count) resolve()
      })
    })
    for (let i = 0; i < count; i++) ws.send(`message ${i} ${'x'.repeat(i % 50)}`)
    await done
    expect(received).toEqual(
      Array.from({ length: count }, (_, i) => `message ${i} ${'x'.repeat(i % 50)}`),
    )
  })

  it('propagates a close from the client to the upstream', async () => {
    const upstream = await echoUpstream()
    const proxy = await proxyTo(`http://127.0.0.1:${upstream.port}/myapp`)
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat`)
    const connection = upstream.next()
    await opened(ws)
    const { ws: server } = await connection
    const serverClosed = closed(server)
    ws.close(4001, 'client bye')
    expect(await serverClosed).toEqual({ code: 4001, reason: 'client bye' })
  })

  it("aborts the environ's signal when a spliced connection closes", async () => {
    const upstream = await echoUpstream()
    const transport = undiciTransport()
    cleanups.push(() => transport.close())
    const proxy = createProxyApp({
      href: `http://127.0.0.1:${upstream.port}/`,
      transport,
      onError: () => {},
    })
    let signal: AbortSignal | undefined
    const app = Object.assign((environ: Environ) => proxy(environ), {
      prepareUpgrade: (environ: Environ) => {
        signal = environ['wsgiproxy.signal']
        return proxy.prepareUpgrade(environ)
      },
    })
    const served = await serveApp(app)
    const ws = client(`ws://127.0.0.1:${served.port}/`)
    await opened(ws)
    await upstream.next()
    // Open: the app can count the connection as in flight until the signal aborts.
    expect(signal?.aborted).toBe(false)
    ws.close()
    await closed(ws)
    await new Promise<void>((resolve) => {
      if (signal?.aborted) resolve()
      else signal?.addEventListener('abort', () => resolve(), { once: true })
    })
    expect(signal?.aborted).toBe(true)
  })

  it('propagates a close from the upstream to the client with its code', async () => {
    const upstream = await echoUpstream()
    const proxy = await proxyTo(`http://127.0.0.1:${upstream.port}/myapp`)
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat`)
    const connection = upstream.next()
    const clientClosed = closed(ws)
    await opened(ws)
    const { ws: server } = await connection
    server.close(4002, 'server bye')
    expect(await clientClosed).toEqual({ code: 4002, reason: 'server bye' })
  })

  it('sends the protocol headers, the traversal path and the subprotocol upstream', async () => {
    const upstream = await echoUpstream()
    const proxy = await proxyTo(`http://127.0.0.1:${upstream.port}/myapp?x=1`)
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat/room?a=b`, ['chat.v1'])
    const connection = upstream.next()
    await opened(ws)
    const { req } = await connection
    expect(req.url).toBe('/myapp/chat/room?a=b&x=1')
    expect(req.headers.host).toBe(`127.0.0.1:${upstream.port}`)
    expect(req.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(req.headers['x-forwarded-server']).toBe(`127.0.0.1:${proxy.port}`)
    expect(req.headers['x-forwarded-scheme']).toBe('http')
    expect(req.headers['x-traversal-path']).toBe('/myapp')
    expect(req.headers['x-traversal-query-string']).toBe('x=1')
    expect(req.headers['x-wsgiproxy-version']).toBe(PROTOCOL_VERSION)
    expect(req.headers.upgrade?.toLowerCase()).toBe('websocket')
    expect(req.headers.connection?.toLowerCase()).toBe('upgrade')
    expect(ws.protocol).toBe('chat.v1')
  })

  it('drops protocol headers the client sent', async () => {
    const upstream = await echoUpstream()
    const proxy = await proxyTo(`http://127.0.0.1:${upstream.port}/myapp`)
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/`, {
      headers: { 'X-Forwarded-For': '6.6.6.6', 'X-WSGIProxy-Str-1': 'evil' },
    })
    ws.on('error', () => {})
    cleanups.push(() => ws.terminate())
    const connection = upstream.next()
    await opened(ws)
    const { req } = await connection
    expect(req.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(req.headers['x-wsgiproxy-str-1']).toBeUndefined()
  })

  it('signs the upgrade request so that the upstream verifies it', async () => {
    const keys = [{ id: 'k1', secret: new Uint8Array(32).fill(7) }]
    const upstream = await echoUpstream()
    const proxy = await proxyTo(`http://127.0.0.1:${upstream.port}/myapp`, {
      signer: createSigner({ keys }),
    })
    const ws = client(`ws://127.0.0.1:${proxy.port}/signed?q=1`)
    const connection = upstream.next()
    await opened(ws)
    const { req } = await connection
    expect(req.headers['signature']).toBeDefined()
    const headers = new Headers()
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      headers.append(req.rawHeaders[i] as string, req.rawHeaders[i + 1] as string)
    }
    const request = new Request(`http://${req.headers.host}${req.url}`, { headers })
    const verifier = createVerifier({ keys })
    const outcome = await verifier.verify(toEnviron(request, { remoteAddr: '127.0.0.1' }))
    expect(outcome.status).toBe('valid')

    const wrong = createVerifier({ keys: [{ id: 'k1', secret: new Uint8Array(32).fill(8) }] })
    const bad = await wrong.verify(toEnviron(request, { remoteAddr: '127.0.0.1' }))
    expect(bad.status).toBe('invalid')
  })

  it('answers 502 when the upstream refuses the connection', async () => {
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as AddressInfo).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const proxy = await proxyTo(`http://127.0.0.1:${port}/myapp`)
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat`)
    expect(await refusedStatus(ws)).toBe(502)
  })

  it('answers a problem (400) instead of connecting for a bad request', async () => {
    const upstream = await echoUpstream()
    const proxy = await proxyTo(`http://127.0.0.1:${upstream.port}/myapp`)
    const socket = connect(proxy.port, '127.0.0.1')
    socket.on('error', () => {})
    cleanups.push(() => {
      socket.destroy()
    })
    socket.write(
      'GET /chat HTTP/1.1\r\nHost: bad host\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    )
    let text = ''
    socket.setEncoding('utf8')
    for await (const chunk of socket) text += chunk as string
    expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/)
    expect(text).toMatch(/\r\nconnection: close\r\n/)
    expect(text).toContain('application/problem+json')
    expect(upstream.connections).toHaveLength(0)
  })

  it('passes an upstream refusal of the upgrade through', async () => {
    const server = createServer((_req, res) => res.end())
    server.on('upgrade', (_req, socket) => {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const proxy = await proxyTo(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat`)
    expect(await refusedStatus(ws)).toBe(403)
  })

  // A connect timeout cannot be produced here: tests only reach loopback, which never times out.

  it('answers 501 for an app without prepareUpgrade', async () => {
    const proxy = await serveApp(plainApp)
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat`)
    expect(await refusedStatus(ws)).toBe(501)
  })

  it('closes open upgraded connections on close()', async () => {
    const upstream = await echoUpstream()
    const transport = undiciTransport()
    cleanups.push(() => transport.close())
    const proxy = await serve(
      createProxyApp({ href: `http://127.0.0.1:${upstream.port}/`, transport }),
      { closeTimeout: 20 },
    )
    const ws = client(`ws://127.0.0.1:${proxy.port}/chat`)
    await opened(ws)
    const clientClosed = closed(ws)
    await proxy.close()
    expect((await clientClosed).code).toBe(1006)
  })

  it('rejects a bad connectTimeout', () => {
    expect(() =>
      toNodeUpgradeListener(() => ({ status: 200, headers: [], body: null }), {
        connectTimeout: 0,
      }),
    ).toThrow(/connectTimeout/)
  })
})
