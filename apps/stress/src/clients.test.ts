// Client faults (issue 8, item 4), on both fronts: slowloris connections are cut at the server's
// header timeout while normal requests stay fast; clients that abort at random points leave no
// upstream socket open; request smuggling attempts get 400 and never reach the upstream as two
// requests.
import type { Socket } from 'node:net'
import { connect } from 'node:net'
import { request as httpRequest } from 'node:http'
import { Pool } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { sendRaw } from '@wsgiproxy/test-kit/servers'
import type { Upstream } from './test/harness.ts'
import {
  closeAll,
  PATHS,
  percentile,
  prng,
  sleep,
  startFront,
  startUpstream,
} from './test/harness.ts'
import { scale } from './scale.ts'

const SLOWLORIS = scale(500, 50)
const HEADERS_TIMEOUT = 2_000
const NORMAL_CLIENTS = 4
const ABORTS = scale(1_000, 100)
const SEED = 0x0c11_e475

/** An upstream that answers `ok <url>` and remembers every request line it saw. */
async function startRecordingUpstream(): Promise<Upstream & { seen: string[] }> {
  const seen: string[] = []
  const upstream = await startUpstream(async (req, res) => {
    seen.push(`${req.method} ${req.url}`)
    for await (const chunk of req) void chunk
    const body = `ok ${req.url}`
    res.writeHead(200, { 'content-length': String(Buffer.byteLength(body)) })
    res.end(body)
  })
  return Object.assign(upstream, { seen })
}

interface Slowloris {
  socket: Socket
  opened: number
  closedAfter: Promise<number>
  received: () => string
  /** Sends the next byte of the head, if the connection is still open. */
  drip: () => void
  /** How many bytes of the head were sent. */
  sent: () => number
}

/** A connection that sends `head` one byte per tick and never finishes it. */
function slowloris(port: number, head: string): Slowloris {
  const socket = connect(port, '127.0.0.1')
  const opened = performance.now()
  let received = ''
  let sent = 0
  socket.setEncoding('latin1')
  socket.on('data', (chunk: string) => {
    received += chunk
  })
  socket.on('error', () => {})
  const closedAfter = new Promise<number>((resolve) =>
    socket.once('close', () => resolve(performance.now() - opened)),
  )
  return {
    socket,
    opened,
    closedAfter,
    received: () => received,
    drip: () => {
      if (sent < head.length && socket.writable && !socket.connecting) socket.write(head[sent++]!)
    },
    sent: () => sent,
  }
}

describe.each(PATHS)('%s front: client faults', (path) => {
  afterEach(closeAll)

  it(`cuts ${SLOWLORIS} slowloris connections at the ${HEADERS_TIMEOUT} ms header timeout while normal requests keep a p99 under 100 ms`, async () => {
    const upstream = await startRecordingUpstream()
    const front = await startFront(path, `${upstream.origin}/`, { headersTimeout: HEADERS_TIMEOUT })
    // Longer than the timeout at one byte per second: the head never ends on its own.
    const head = `GET /slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slowloris: ${'x'.repeat(60)}`
    const slow = Array.from({ length: SLOWLORIS }, () => slowloris(front.port, head))
    const drip = setInterval(() => {
      for (const s of slow) s.drip()
    }, 1_000)
    // The first byte as soon as each connection is up, then one a second.
    for (const s of slow) s.socket.once('connect', () => s.drip())

    const pool = new Pool(front.origin, { connections: NORMAL_CLIENTS, pipelining: 1 })
    const latencies: number[] = []
    const errors: string[] = []
    const stop = new AbortController()
    const normal = async (worker: number): Promise<void> => {
      for (let i = 0; !stop.signal.aborted; i++) {
        const t0 = performance.now()
        try {
          const res = await pool.request({ path: `/normal/${worker}/${i}`, method: 'GET' })
          const text = await res.body.text()
          latencies.push(performance.now() - t0)
          if (res.statusCode !== 200 || text !== `ok /normal/${worker}/${i}`) {
            errors.push(`${res.statusCode} ${text.slice(0, 100)}`)
          }
        } catch (error) {
          errors.push((error as Error).message)
        }
        await sleep(5)
      }
    }
    const workers = Array.from({ length: NORMAL_CLIENTS }, (_, w) => normal(w))
    let closedAfter: number[]
    try {
      closedAfter = await Promise.all(slow.map((s) => s.closedAfter))
    } finally {
      clearInterval(drip)
      stop.abort()
      await Promise.all(workers)
      await pool.close()
    }
    const cut408 = slow.filter((s) => s.received().startsWith('HTTP/1.1 408 ')).length
    const p99 = percentile(latencies, 99)
    console.info(
      `[clients ${path}] ${SLOWLORIS} slowloris connections cut after ${Math.round(Math.min(...closedAfter))}` +
        `–${Math.round(Math.max(...closedAfter))} ms (${cut408} with 408); ${latencies.length} normal requests ` +
        `meanwhile, p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, ` +
        `max ${Math.max(...latencies).toFixed(1)} ms, ${errors.length} errors`,
    )
    expect(cut408).toBe(SLOWLORIS)
    // Cut by the server, not by the head running out or by the test.
    expect(slow.every((s) => s.sent() < head.length)).toBe(true)
    expect(Math.min(...closedAfter)).toBeGreaterThanOrEqual(HEADERS_TIMEOUT - 50)
    expect(upstream.seen.filter((line) => line.includes('slowloris'))).toEqual([])
    expect(errors).toEqual([])
    expect(latencies.length).toBeGreaterThan(100)
    expect(p99).toBeLessThan(100)
  })

  it(`leaves no upstream socket open after ${ABORTS} clients abort at random points`, async () => {
    // Each response: headers after 0–100 ms, then 16 KiB every 5 ms for 150 ms.
    const upstream = await startUpstream(async (req, res) => {
      let received = 0
      for await (const chunk of req) received += (chunk as Buffer).length
      const delay = Number(new URL(req.url ?? '/', 'http://u').searchParams.get('delay'))
      await sleep(delay)
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-received': received })
      for (let i = 0; i < 30 && !res.destroyed; i++) {
        res.write(Buffer.alloc(16 * 1024, i))
        await sleep(5)
      }
      res.end()
    })
    upstream.server.keepAliveTimeout = 3_000
    const front = await startFront(path, `${upstream.origin}/`)
    const random = prng(SEED)
    const kinds = { head: 0, request: 0 }

    const client = (i: number): Promise<void> => {
      const abortAfter = Math.floor(random() * 300)
      const delay = Math.floor(random() * 100)
      if (i % 5 === 0) {
        // Mid-head: part of the request line and headers, then gone.
        kinds.head += 1
        const head = `POST /abort/${i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n`
        const cut = 1 + Math.floor(random() * (head.length - 2))
        return new Promise((resolve) => {
          const socket = connect(front.port, '127.0.0.1', () => {
            socket.write(head.slice(0, cut))
            setTimeout(() => socket.destroy(), abortAfter % 50)
          })
          socket.on('error', () => {})
          socket.once('close', () => resolve())
        })
      }
      // A whole request (half with a 256 KiB body sent in pieces), cut 0–300 ms after it starts:
      // while the body goes up, while waiting for the head, mid-response or after it.
      kinds.request += 1
      const upload = i % 2 === 0
      return new Promise((resolve) => {
        const req = httpRequest(`${front.origin}/abort/${i}?delay=${delay}`, {
          method: upload ? 'POST' : 'GET',
          agent: false,
          headers: upload ? { 'content-length': String(256 * 1024) } : {},
        })
        req.on('error', () => {})
        req.on('response', (res) => {
          res.on('error', () => {})
          res.resume()
        })
        req.once('close', () => resolve())
        setTimeout(() => req.destroy(), abortAfter)
        if (upload) {
          void (async () => {
            for (let k = 0; k < 16 && !req.destroyed; k++) {
              req.write(Buffer.alloc(16 * 1024, k))
              await sleep(10)
            }
            if (!req.destroyed) req.end()
          })()
        } else {
          req.end()
        }
      })
    }
    await Promise.all(Array.from({ length: ABORTS }, (_, i) => client(i)))

    // Every upstream exchange ends at once; idle keep-alive sockets go with the pool's timeout.
    await expect.poll(() => upstream.inFlight(), { timeout: 5_000, interval: 50 }).toBe(0)
    await expect.poll(() => upstream.openSockets(), { timeout: 15_000, interval: 100 }).toBe(0)
    const frontConnections = await new Promise<number>((resolve, reject) =>
      front.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
    )
    console.info(
      `[clients ${path}] ${ABORTS} aborting clients (${kinds.head} mid-head, ${kinds.request} cut 0–300 ms ` +
        `into a request); upstream saw ${upstream.requests()} requests, ${upstream.openSockets()} sockets left; ` +
        `front connections left ${frontConnections}`,
    )
    expect(frontConnections).toBe(0)
    // The front still serves.
    const after = await fetch(`${front.origin}/after?delay=0`)
    expect(after.status).toBe(200)
    await after.arrayBuffer()
  })

  it('answers 400 to request smuggling attempts and never sends the upstream a second request', async () => {
    const upstream = await startRecordingUpstream()
    const front = await startFront(path, `${upstream.origin}/`)
    const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
    const attempts: Record<string, string> = {
      'CL.TE': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
      'TE.CL': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2c\r\n${smuggled}\r\n0\r\n\r\n`,
      'TE.CL, obfuscated TE': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n2c\r\n${smuggled}\r\n0\r\n\r\n`,
      'TE.TE, identity and chunked': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${smuggled}`,
      'TE with a space before the colon': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n${smuggled}`,
      'duplicate Content-Length, different': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
      'duplicate Content-Length, equal': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${smuggled.length}\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
      'Content-Length list': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0, ${smuggled.length}\r\n\r\n${smuggled}`,
      'obs-fold in a header': `GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n b\r\n\r\n${smuggled}`,
      'obs-fold hiding Transfer-Encoding': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
      'bare LF line ends': `GET /a HTTP/1.1\nHost: 127.0.0.1\n\n${smuggled}`,
      'bare LF after one header': `GET /a HTTP/1.1\r\nHost: 127.0.0.1\nX-A: b\r\n\r\n${smuggled}`,
      'bare CR': `GET /a HTTP/1.1\rHost: 127.0.0.1\r\n\r\n${smuggled}`,
      'bare LF in a chunk size line': `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n${smuggled}`,
    }
    const outcomes: string[] = []
    for (const [name, bytes] of Object.entries(attempts)) {
      const before = upstream.seen.length
      const answer = await sendRaw(front.port, [bytes], { quietMs: 500, limitMs: 5_000 })
      await sleep(20)
      const upstreamRequests = upstream.seen.slice(before)
      const statusLines = answer.match(/HTTP\/1\.1 \d{3}/g) ?? []
      outcomes.push(
        `${name}: ${JSON.stringify(statusLines)}, upstream ${JSON.stringify(upstreamRequests)}`,
      )
    }
    console.info(`[clients ${path}] smuggling:\n  ${outcomes.join('\n  ')}`)
    for (const outcome of outcomes) {
      // One 400 and nothing else; at most the one request whose head was valid (when the broken
      // chunk framing comes in a later packet), never a second one.
      expect(outcome).toMatch(/: \["HTTP\/1\.1 400"\], upstream \[("POST \/a")?\]$/)
    }
    expect(upstream.seen.filter((line) => line.includes('smuggled'))).toEqual([])
  })
})
