// Upstream faults (issue 8, item 3): an upstream that refuses, resets, talks garbage, sends 1 MiB
// of headers, never answers, stalls its body or closes keep-alive sockets at random. Each fault
// gives its documented status (DESIGN §8), and afterwards the proxy keeps serving, has no socket
// left open to the faulty upstream, and the next normal request succeeds. Three paths: node
// (serve + createProxyApp + undiciTransport), hono with its default fetch transport, and hono
// with undiciTransport.
import type { Server } from 'node:http'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { createServer as createNetServer } from 'node:net'
import { serve as honoServe } from '@hono/node-server'
import type { ProxyAppOptions } from '@wsgiproxy/core'
import { createProxyApp } from '@wsgiproxy/core'
import { proxy } from '@wsgiproxy/hono'
import { serve, undiciTransport } from '@wsgiproxy/node'
import { Hono } from 'hono'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '@wsgiproxy/test-kit/servers'
import { scale } from './scale.ts'

const TIMEOUTS = { headers: 500, body: 500 }
const MiB = 1024 * 1024

interface Front {
  origin: string
  close(): Promise<void>
}

type PathName = 'node' | 'copy' | 'hono-fetch' | 'hono-undici'

/** Starts the proxy front of one path, forwarding to `href`. */
async function startFront(path: PathName, href: string): Promise<Front> {
  const options = { href, timeouts: TIMEOUTS, onError: (): void => {} } satisfies ProxyAppOptions
  if (path === 'node' || path === 'copy') {
    const transport = undiciTransport()
    const served = await serve(createProxyApp({ ...options, transport }), {
      byteCopy: path === 'copy',
    })
    return {
      origin: served.url,
      close: async () => {
        await served.close()
        await transport.close()
      },
    }
  }
  const transport = path === 'hono-undici' ? undiciTransport() : undefined
  const app = new Hono().all(
    '/*',
    proxy({ ...options, ...(transport === undefined ? {} : { transport }) }),
  )
  const server = await new Promise<Server>((resolve) => {
    const s = honoServe({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () =>
      resolve(s as Server),
    )
  })
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await transport?.close()
    },
  }
}

interface Outcome {
  status: number
  body: Buffer
  /** The response ended cleanly (all of its body, a clean end). */
  complete: boolean
  /** The client saw an error while reading the body. */
  errored: boolean
}

/** One request through the proxy with a fresh connection; a cut body is reported, not thrown. */
function get(origin: string, path: string, method = 'GET', body?: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(new URL(path, origin), { method, agent: false })
    req.on('error', reject)
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer to ${method} ${path}`)))
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      let errored = false
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', () => {
        errored = true
      })
      res.on('close', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks),
          complete: res.complete && !errored,
          errored: errored || !res.complete,
        }),
      )
    })
    req.end(body)
  })
}

/**
 * A raw TCP upstream: `/ok` gets a normal keep-alive 200, every other path its fault. Counts the
 * sockets that carried a fault request and are still open.
 */
async function startFaultyUpstream(): Promise<{
  port: number
  origin: string
  openFaultSockets(): number
  close(): Promise<void>
}> {
  const faultSockets = new Set<Socket>()
  const all = new Set<Socket>()
  const server = createNetServer((socket) => {
    all.add(socket)
    socket.on('close', () => {
      all.delete(socket)
      faultSockets.delete(socket)
    })
    socket.on('error', () => {})
    let buffered = ''
    socket.on('data', (data: Buffer) => {
      buffered += data.toString('latin1')
      let end = buffered.indexOf('\r\n\r\n')
      while (end >= 0) {
        const head = buffered.slice(0, end)
        buffered = buffered.slice(end + 4)
        const path = head.split(' ')[1] ?? '/'
        if (path === '/ok') {
          socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=5\r\n\r\nok')
        } else {
          faultSockets.add(socket)
          fault(path, socket)
        }
        end = buffered.indexOf('\r\n\r\n')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    openFaultSockets: () => faultSockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of all) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

function fault(path: string, socket: Socket): void {
  switch (path) {
    case '/reset-before-headers':
      socket.resetAndDestroy()
      return
    case '/reset-mid-body':
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${MiB}\r\n\r\n`)
      socket.write(Buffer.alloc(64 * 1024, 0x61), () =>
        setTimeout(() => socket.resetAndDestroy(), 20),
      )
      return
    case '/reset-mid-chunked':
      socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n')
      socket.write(`10000\r\n${'a'.repeat(0x10000)}\r\n`, () =>
        setTimeout(() => socket.resetAndDestroy(), 20),
      )
      return
    case '/garbage':
      socket.end('SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02\xff garbage \r\n\r\n')
      return
    case '/huge-headers': {
      const line = `x-pad: ${'h'.repeat(1000)}\r\n`
      socket.write('HTTP/1.1 200 OK\r\n')
      socket.write(line.repeat(Math.ceil(MiB / line.length)))
      socket.write('content-length: 2\r\n\r\nok')
      return
    }
    case '/never-headers':
      return
    case '/stall-body':
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n')
      socket.write(Buffer.alloc(1000, 0x62))
      return
    default:
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n')
  }
}

async function waitFor(check: () => boolean, ms = 3_000): Promise<boolean> {
  const until = Date.now() + ms
  while (!check()) {
    if (Date.now() > until) return false
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return true
}

const PATHS: PathName[] = ['node', 'copy', 'hono-fetch', 'hono-undici']
const ROUNDS = scale(20, 2)

describe.each(PATHS)('upstream faults, %s path', (path) => {
  let upstream: Awaited<ReturnType<typeof startFaultyUpstream>>
  let front: Front

  beforeAll(async () => {
    upstream = await startFaultyUpstream()
    front = await startFront(path, upstream.origin)
  })
  afterAll(async () => {
    await front.close()
    await upstream.close()
  })

  /** After a fault: no socket to the upstream left open for it, and a normal request works. */
  async function expectRecovered(): Promise<void> {
    expect(await waitFor(() => upstream.openFaultSockets() === 0)).toBe(true)
    const next = await get(front.origin, '/ok')
    expect(next.status).toBe(200)
    expect(next.body.toString()).toBe('ok')
  }

  it('connection refused: 502, then serves once the upstream listens', async () => {
    const port = await freePort()
    const refused = await startFront(path, `http://127.0.0.1:${port}`)
    try {
      for (let i = 0; i < ROUNDS; i++) {
        const res = await get(refused.origin, '/x')
        expect(res.status).toBe(502)
        expect(res.body.toString()).not.toContain(String(port))
      }
      const server = createServer((_req, res) => res.end('up'))
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
      try {
        const res = await get(refused.origin, '/x')
        expect(res.status).toBe(200)
        expect(res.body.toString()).toBe('up')
      } finally {
        server.closeAllConnections()
        await new Promise<void>((resolve) => server.close(() => resolve()))
      }
    } finally {
      await refused.close()
    }
  })

  it.each([
    ['/reset-before-headers', 502],
    ['/garbage', 502],
    ['/huge-headers', 502],
    ['/never-headers', 504],
  ])('%s answers %i', async (faultPath, status) => {
    for (let i = 0; i < ROUNDS; i++) {
      const res = await get(front.origin, faultPath)
      expect(res.status).toBe(status)
      expect(res.complete).toBe(true)
      await expectRecovered()
    }
  })

  it.each(['/reset-mid-body', '/reset-mid-chunked', '/stall-body'])(
    '%s: the client sees a cut response, never a clean end',
    async (faultPath) => {
      for (let i = 0; i < ROUNDS; i++) {
        const res = await get(front.origin, faultPath)
        expect(res.status).toBe(200)
        expect(res.errored).toBe(true)
        expect(res.complete).toBe(false)
        await expectRecovered()
      }
    },
  )
})

describe.each(PATHS)('an upstream closing keep-alive sockets at random, %s path', (path) => {
  const REQUESTS = scale(2_000, 200)

  it(`${REQUESTS} sequential requests: idempotent ones never fail, others 200 or 502`, async () => {
    let served = 0
    let seed = 1
    const random = (): number => {
      seed = (seed * 48271) % 2147483647
      return seed / 2147483647
    }
    // Answers, then often closes the socket a moment later without `Connection: close`: a
    // client that reuses it may write its next request just as it goes away.
    const server = createServer((req, res) => {
      served++
      req.resume()
      req.on('end', () => {
        res.end('fine')
        const r = random()
        if (r < 0.5) setTimeout(() => req.socket.destroy(), Math.floor(random() * 4))
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    const front = await startFront(path, `http://127.0.0.1:${port}`)
    const counts: Record<string, Record<number, number>> = { GET: {}, HEAD: {}, POST: {} }
    try {
      for (let i = 0; i < REQUESTS; i++) {
        const method = i % 3 === 0 ? 'POST' : i % 3 === 1 ? 'GET' : 'HEAD'
        const res = await get(
          front.origin,
          `/r${i}`,
          method,
          method === 'POST' ? 'data' : undefined,
        )
        const byStatus = counts[method] as Record<number, number>
        byStatus[res.status] = (byStatus[res.status] ?? 0) + 1
        if (i % 7 === 0) await new Promise((resolve) => setTimeout(resolve, random() * 3))
      }
      console.log(`keep-alive closes, ${path}: ${JSON.stringify(counts)}, upstream saw ${served}`)
      expect(Object.keys(counts['GET'] ?? {})).toEqual(['200'])
      expect(Object.keys(counts['HEAD'] ?? {})).toEqual(['200'])
      for (const status of Object.keys(counts['POST'] ?? {}))
        expect(['200', '502']).toContain(status)
      const next = await get(front.origin, '/last')
      expect(next.status).toBe(200)
    } finally {
      await front.close()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })
})
