import { createServer } from 'node:http'
import { connect, createServer as createNetServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { createProxyApp } from '@wsgiproxy/core'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { WebSocket, WebSocketServer } from 'ws'
import { attemptSmuggle, SMUGGLED_PATH, startRecorder } from '@wsgiproxy/test-kit/smuggling'
import type { Recorder } from '@wsgiproxy/test-kit/smuggling'
import { cleanupSpawners, NODE, spawner, waitFor } from '@wsgiproxy/test-kit/spawner-helpers'
import { serve } from './serve.ts'
import type { ServeOptions, Served } from './serve.ts'
import { toNodeUpgradeListener } from './upgrade.ts'
import { undiciTransport } from '@wsgiproxy/core/undici'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const RECORDER = join(
  fileURLToPath(new URL('.', import.meta.url)),
  '..',
  '..',
  'test',
  'fixtures',
  'recorder.mjs',
)

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).toReversed()) await cleanup()
  await cleanupSpawners()
})

async function recorder(): Promise<Recorder> {
  const started = await startRecorder()
  cleanups.push(() => started.close())
  return started
}

// Whether `front` copies bytes (`serve({ byteCopy: true })`): the Upgrade cases run both ways,
// since the byte-copying front hands Upgrade requests to node:http mid-connection.
let copying = false

async function front(href: string, options: ServeOptions = {}, timeouts = {}): Promise<Served> {
  const transport = undiciTransport()
  const app = createProxyApp({ href, transport, timeouts })
  const served = await serve(app, { closeTimeout: 100, byteCopy: copying, ...options })
  cleanups.push(async () => {
    await served.close()
    await transport.close()
  })
  return served
}

/** A TCP server that accepts connections and never answers; `closed` once all have closed. */
async function silentUpstream(): Promise<{
  port: number
  open: () => number
  closed: Promise<void>
}> {
  const sockets = new Set<Socket>()
  let resolveClosed: (() => void) | undefined
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve))
  const raw = createNetServer((socket) => {
    sockets.add(socket)
    socket.resume()
    socket.on('close', () => {
      sockets.delete(socket)
      if (sockets.size === 0) resolveClosed?.()
    })
  })
  await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve))
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        raw.close(() => resolve())
      }),
  )
  return {
    port: (raw.address() as AddressInfo).port,
    open: () => sockets.size,
    closed,
  }
}

async function wsUpstream(): Promise<{ port: number; wss: WebSocketServer }> {
  const server = createServer((_req, res) => res.end('not a websocket'))
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => ws.on('message', (data, binary) => ws.send(data, { binary })))
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
  return { port: (server.address() as AddressInfo).port, wss }
}

function openWs(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
    cleanups.push(() => ws.terminate())
  })
}

/** The status line and headers of an HTTP answer to a raw Upgrade request. */
function rawUpgrade(port: number, upgrade = 'websocket'): Promise<{ head: string; ms: number }> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    socket.setEncoding('latin1')
    socket.on('connect', () =>
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: ${upgrade}\r\n` +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      ),
    )
    socket.on('data', (chunk: string) => (text += chunk))
    socket.on('error', reject)
    socket.on('close', () => resolve({ head: text, ms: performance.now() - started }))
    cleanups.push(() => void socket.destroy())
  })
}

describe.each([false, true])(
  'Upgrade requests through serve(createProxyApp), byteCopy %s',
  (byteCopy) => {
    beforeEach(() => {
      copying = byteCopy
    })
    afterEach(() => {
      copying = false
    })

    it('never lets a second request reach the upstream after a non-101 answer', async () => {
      const upstream = await recorder()
      const served = await front(`http://127.0.0.1:${upstream.port}`)
      const result = await attemptSmuggle(served.port)
      expect(result.received).toMatch(/^HTTP\/1\.1 200 /)
      expect(result.received.toLowerCase()).toContain('connection: close')
      expect(result.received).toContain('seen /public/x')
      expect(result.closedByFront).toBe(true)
      // Once every upstream connection has closed (the pooled one of an ordinary request after the
      // transport's keep-alive timeout, about 4 s), nothing more can reach it.
      await upstream.settled()
      expect(upstream.urls).toEqual(['/public/x'])
      expect(upstream.urls).not.toContain(SMUGGLED_PATH)
    }, 20_000)

    it('serves an Upgrade it does not forward (h2c) as an ordinary request and closes after it', async () => {
      const upstream = await recorder()
      const served = await front(`http://127.0.0.1:${upstream.port}`)
      const result = await attemptSmuggle(served.port, {
        upgrade: 'h2c',
        connection: 'Upgrade, HTTP2-Settings',
      })
      expect(result.received).toMatch(/^HTTP\/1\.1 200 /)
      expect(result.received).toContain('seen /public/x')
      expect(result.closedByFront).toBe(true)
      await upstream.settled()
      expect(upstream.urls).toEqual(['/public/x'])
      expect(upstream.headers[0]?.upgrade).toBeUndefined()
      expect(upstream.headers[0]?.['http2-settings']).toBeUndefined()
    }, 20_000)

    it('forwards an Upgrade protocol named in upgradeProtocols', async () => {
      const upstream = await recorder()
      const served = await front(`http://127.0.0.1:${upstream.port}`, {
        upgradeProtocols: ['websocket', 'x-custom'],
      })
      const result = await attemptSmuggle(served.port, { upgrade: 'X-Custom/2' })
      expect(result.received).toMatch(/^HTTP\/1\.1 200 /)
      await upstream.settled()
      expect(upstream.urls).toEqual(['/public/x'])
      expect(upstream.headers[0]?.upgrade).toBe('X-Custom/2')
    }, 20_000)

    it('answers 502 when the upstream switches to a protocol the client did not ask for', async () => {
      const server = createNetServer((socket) => {
        socket.once('data', () =>
          socket.write(
            'HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n',
          ),
        )
        socket.on('error', () => {})
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const port = (server.address() as AddressInfo).port
      const served = await front(`http://127.0.0.1:${port}`)
      const { head } = await rawUpgrade(served.port)
      expect(head).toMatch(/^HTTP\/1\.1 502 /)
      expect(head).not.toContain('101')
    })

    it('answers 504 for an upstream that never answers, within the headers timeout, and closes both sides', async () => {
      const upstream = await silentUpstream()
      const served = await front(`http://127.0.0.1:${upstream.port}`, {}, { headers: 300 })
      const { head, ms } = await rawUpgrade(served.port)
      expect(head).toMatch(/^HTTP\/1\.1 504 /)
      expect(head).toContain('application/problem+json')
      // Not before the timeout; the upper bound only says it did not hang (a loaded machine may
      // take a while, but nothing near the test's own limit).
      expect(ms).toBeGreaterThanOrEqual(290)
      await upstream.closed
      expect(upstream.open()).toBe(0)
    })

    it('answers 503 with Retry-After past maxUpgradeConnections, and accepts again after one closes', async () => {
      const upstream = await wsUpstream()
      const served = await front(`http://127.0.0.1:${upstream.port}`, { maxUpgradeConnections: 2 })
      const url = `ws://127.0.0.1:${served.port}/`
      const first = await openWs(url)
      await openWs(url)
      const { head } = await rawUpgrade(served.port)
      expect(head).toMatch(/^HTTP\/1\.1 503 /)
      expect(head.toLowerCase()).toContain('retry-after: 1')
      const closed = new Promise((resolve) => first.once('close', resolve))
      first.close()
      await closed
      // The front counts the tunnel closed once its client socket closes: retry until it has.
      await waitFor(
        async () => {
          const ws = new WebSocket(url)
          const ok = await new Promise<boolean>((resolve) => {
            ws.once('open', () => resolve(true))
            ws.once('error', () => resolve(false))
          })
          ws.terminate()
          return ok
        },
        { timeout: 10_000, message: 'a new tunnel to be accepted' },
      )
    })

    it('keeps a tunnel with traffic open past upgradeIdleTimeout and closes it once idle', async () => {
      const upstream = await wsUpstream()
      const served = await front(`http://127.0.0.1:${upstream.port}`, { upgradeIdleTimeout: 1_000 })
      const ws = await openWs(`ws://127.0.0.1:${served.port}/`)
      let closed = false
      const whenClosed = new Promise((resolve) => ws.once('close', resolve)).then(
        () => (closed = true),
      )
      // Traffic every 200 ms for 2.5 s (2.5 idle timeouts): the tunnel stays open, so the timeout
      // counts silence, not the tunnel's age. Each echo is awaited, so every gap is real traffic.
      const until = performance.now() + 2_500
      let lastTraffic = performance.now()
      while (performance.now() < until) {
        const echoed = new Promise((resolve) => ws.once('message', resolve))
        ws.send('still here')
        await echoed
        lastTraffic = performance.now()
        expect(closed).toBe(false)
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
      await whenClosed
      expect(performance.now() - lastTraffic).toBeGreaterThanOrEqual(990)
    }, 20_000)

    it('rewrites Location in an ordinary answer to an upgrade, never leaking the backend address', async () => {
      const backend = createServer((_req, res) => {
        res.writeHead(302, {
          location: `http://127.0.0.1:${(backend.address() as AddressInfo).port}/admin/login`,
        })
        res.end()
      })
      await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve))
      cleanups.push(() => new Promise<void>((resolve) => backend.close(() => resolve())))
      const port = (backend.address() as AddressInfo).port
      const served = await front(`http://127.0.0.1:${port}/app`)
      const { head } = await rawUpgrade(served.port)
      expect(head).toMatch(/^HTTP\/1\.1 302 /)
      expect(head.toLowerCase()).toContain('location: /admin/login')
      expect(head).not.toContain(`127.0.0.1:${port}`)
    })

    it('cuts an ordinary answer to an upgrade that stalls, freeing its tunnel slot', async () => {
      const stalled = createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.write('data: first\n\n')
        // and nothing more
      })
      await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve))
      cleanups.push(
        () =>
          new Promise<void>((resolve) => {
            stalled.closeAllConnections()
            stalled.close(() => resolve())
          }),
      )
      const served = await front(`http://127.0.0.1:${(stalled.address() as AddressInfo).port}`, {
        upgradeIdleTimeout: 300,
        maxUpgradeConnections: 1,
      })
      // Without the timeout this never resolves: the answer would hold both sockets forever.
      const { head, ms } = await rawUpgrade(served.port)
      expect(head).toMatch(/^HTTP\/1\.1 200 /)
      expect(head).toContain('data: first')
      expect(ms).toBeGreaterThanOrEqual(290)
    })

    it('answers 502 to a 101 that does not switch (no Connection: upgrade)', async () => {
      const server = createNetServer((socket) => {
        socket.once('data', () =>
          socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'),
        )
        socket.on('error', () => {})
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      const served = await front(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
      const { head } = await rawUpgrade(served.port)
      expect(head).toMatch(/^HTTP\/1\.1 502 /)
    })

    it('rejects bad upgrade options', () => {
      const app = createProxyApp({ href: 'http://127.0.0.1:1' })
      expect(() => toNodeUpgradeListener(app, { protocols: ['web socket'] })).toThrow(/protocols/)
      expect(() => toNodeUpgradeListener(app, { idleTimeout: -1 })).toThrow(/idleTimeout/)
      expect(() => toNodeUpgradeListener(app, { maxConnections: 0 })).toThrow(/maxConnections/)
      expect(() => toNodeUpgradeListener(app, { headersTimeout: 1.5 })).toThrow(/headersTimeout/)
      expect(() =>
        toNodeUpgradeListener(app, { headersTimeout: 1_000, upstreamHeadersTimeout: 1_000 }),
      ).toThrow(
        'invalid options: toNodeUpgradeListener.headersTimeout: cannot be given with toNodeUpgradeListener.upstreamHeadersTimeout (headersTimeout is its deprecated name)',
      )
    })

    it.each(['upstreamHeadersTimeout', 'headersTimeout'] as const)(
      "answers 504 at %s when the app's target names no timeout of its own",
      async (name) => {
        const upstream = await silentUpstream()
        const origin = `127.0.0.1:${upstream.port}`
        const app = Object.assign(() => ({ status: 404, headers: [], body: null }), {
          prepareUpgrade: async () => ({
            url: new URL(`http://${origin}/ws`),
            method: 'GET',
            headers: [
              ['host', origin],
              ['connection', 'upgrade'],
              ['upgrade', 'websocket'],
            ] as Array<[string, string]>,
          }),
        })
        const server = createServer()
        server.on('upgrade', toNodeUpgradeListener(app, { [name]: 300 }))
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
        cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
        const { head, ms } = await rawUpgrade((server.address() as AddressInfo).port)
        expect(head).toMatch(/^HTTP\/1\.1 504 /)
        expect(ms).toBeGreaterThanOrEqual(290)
      },
    )
  },
)

describe('Upgrade requests through the spawner', () => {
  it('never lets a second request reach the spawned backend after a non-101 answer', async () => {
    const backend = spawner({ command: [NODE, RECORDER] })
    const served = await serve(backend.app, { closeTimeout: 100 })
    cleanups.push(() => served.close())
    const result = await attemptSmuggle(served.port)
    expect(result.received).toMatch(/^HTTP\/1\.1 200 /)
    expect(result.closedByFront).toBe(true)
    const output = (): string[] =>
      backend.logs.filter((entry) => entry.stream === 'stdout').map((entry) => entry.text)
    // The backend reports each connection's end: once the last one after the request has closed,
    // nothing more can reach it.
    await waitFor(
      () => {
        const seen = output()
        const index = seen.indexOf('request /public/x')
        if (seen.includes(`request ${SMUGGLED_PATH}`)) return true
        return index !== -1 && seen.slice(index).includes('connections 0')
      },
      { timeout: 15_000, message: 'the backend connection to close' },
    )
    expect(output().filter((line) => line.startsWith('request '))).toEqual(['request /public/x'])
  }, 30_000)
})
