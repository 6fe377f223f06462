// Heavy behaviour tests of the Node fast path (serve() + exactProxy + undiciTransport()): many
// concurrent requests, clients aborting mid-response, and 1 GiB streamed each way.
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Agent as HttpAgent, createServer, request as httpRequest } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { closeAll, register, sha256, startUpstream, writeAll } from '@wsgiproxy/test-kit/servers'
import { startNodeExactProxy } from '@wsgiproxy/test-kit/node-proxy'

const MiB = 1024 * 1024
const MB = 1_000_000
const LOAD_TIMEOUTS = { timeouts: { headers: 30_000, body: 30_000 } }

/** An upstream that counts its open connections and the requests whose 'close' has not fired. */
async function startCountingUpstream(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<
  Running & { openSockets(): number; openUsedSockets(): number; inFlight(): number; seen(): number }
> {
  const sockets = new Set<Socket>()
  let inFlight = 0
  let seen = 0
  // Sockets that carried at least one request (undici may also open spare ones that never do).
  const used = new WeakSet<Socket>()
  const server = createServer((req, res) => {
    used.add(req.socket)
    inFlight += 1
    seen += 1
    res.on('close', () => {
      inFlight -= 1
    })
    handler(req, res)
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const handle = {
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
    openSockets: () => sockets.size,
    openUsedSockets: () => [...sockets].filter((socket) => used.has(socket)).length,
    inFlight: () => inFlight,
    seen: () => seen,
  }
  register(handle)
  return handle
}

/** The resident set size of a process, from /proc/<pid>/status (Linux). */
function rssOf(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match === null ? Number.NaN : Number(match[1]) * 1024
}

/** Samples a process's RSS every 50 ms; `stop()` gives the peak seen. */
function sampleRss(pid: number): { stop(): number } {
  let peak = rssOf(pid)
  const timer = setInterval(() => {
    peak = Math.max(peak, rssOf(pid))
  }, 50)
  return {
    stop() {
      clearInterval(timer)
      return Math.max(peak, rssOf(pid))
    },
  }
}

interface Transfer {
  sha256: string
  length: number
}

/** Runs one transfer, sampling the proxy's RSS from just before it starts until it ends. */
async function measure(
  pid: number,
  run: () => Promise<Transfer>,
): Promise<{ result: Transfer; growth: number; ms: number }> {
  const before = rssOf(pid)
  const sampler = sampleRss(pid)
  const started = performance.now()
  try {
    const result = await run()
    return { result, growth: sampler.stop() - before, ms: performance.now() - started }
  } finally {
    sampler.stop()
  }
}

const EXACT_FRONT = fileURLToPath(new URL('../../test/fixtures/exact-front.mjs', import.meta.url))

/** Starts the exact proxy in a child process; killed by pid when the test's servers close. */
async function startChildProxy(upstreamPort: number): Promise<Running & { pid: number }> {
  const child = spawn(process.execPath, [EXACT_FRONT, String(upstreamPort)], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    // Two malloc arenas keep RSS readings steady; the default lets idle RSS wander by tens of MB.
    env: { ...process.env, MALLOC_ARENA_MAX: '2' },
  })
  const pid = child.pid ?? -1
  const port = await new Promise<number>((resolve, reject) => {
    let output = ''
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (text: string) => {
      output += text
      const match = /\{"port":(\d+)\}/.exec(output)
      if (match !== null) resolve(Number(match[1]))
    })
    child.once('exit', (code) => reject(new Error(`the proxy process exited with ${code}`)))
  })
  const running = register({
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve()
        else {
          child.once('exit', () => resolve())
          process.kill(pid, 'SIGKILL')
        }
      }),
  })
  return { ...running, pid }
}

describe('Node fast path under load', () => {
  afterEach(closeAll)

  it('answers 1,000 concurrent GET requests with no errors', { timeout: 60_000 }, async () => {
    const upstream = await startUpstream((req, res) => {
      const body = `hello ${req.url ?? ''}`
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': Buffer.byteLength(body),
      })
      res.end(body)
    })
    const front = await startNodeExactProxy(upstream.port, LOAD_TIMEOUTS)
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 100 })
    try {
      const one = (i: number): Promise<{ status: number; body: string }> =>
        new Promise((resolve, reject) => {
          const req = httpRequest(`${front.origin}/item/${i}?n=${i}`, { agent }, (res) => {
            const chunks: Buffer[] = []
            res.on('data', (chunk: Buffer) => chunks.push(chunk))
            res.on('error', reject)
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
            )
          })
          req.on('error', reject)
          req.end()
        })
      const results = await Promise.allSettled(Array.from({ length: 1_000 }, (_, i) => one(i)))
      const failures = results.filter((r) => r.status === 'rejected')
      expect(failures).toEqual([])
      results.forEach((result, i) => {
        expect(result).toEqual({
          status: 'fulfilled',
          value: { status: 200, body: `hello /item/${i}?n=${i}` },
        })
      })
    } finally {
      agent.destroy()
    }
  })

  it(
    '200 clients that abort mid-response leave no open upstream sockets',
    { timeout: 60_000 },
    async () => {
      // Every upstream response sends a first chunk and then stays open forever, so no upstream
      // socket can ever finish a response and go back to undici's pool as an idle keep-alive
      // socket. Hence the strict check: every upstream socket that carried a request must be
      // closed (not merely idle) and every upstream request must have fired 'close'. undici may
      // also open a few spare connections for queued requests that were then sent on another
      // socket; those never carry a request and are legitimately pooled until its keep-alive
      // timeout (default 4 s) closes them, so they are checked in a second, longer poll:
      // in the end no upstream connection may be left open at all.
      const upstream = await startCountingUpstream((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        res.write(Buffer.alloc(1024, 'x'))
      })
      const front = await startNodeExactProxy(upstream.port, LOAD_TIMEOUTS)
      const CLIENTS = 200
      const aborted = await Promise.all(
        Array.from(
          { length: CLIENTS },
          (_, i) =>
            new Promise<number>((resolve, reject) => {
              const req = httpRequest(`${front.origin}/stream/${i}`, { agent: false }, (res) => {
                if (res.statusCode !== 200) {
                  reject(new Error(`client ${i}: status ${res.statusCode}`))
                  return
                }
                res.once('data', (chunk: Buffer) => {
                  req.destroy()
                  resolve(chunk.length)
                })
              })
              req.on('error', (error) => {
                // destroy() without an error emits none; anything else is a failure.
                reject(error)
              })
              req.end()
            }),
        ),
      )
      expect(aborted).toHaveLength(CLIENTS)
      expect(aborted.every((n) => n > 0)).toBe(true)
      expect(upstream.seen()).toBe(CLIENTS)
      await expect
        .poll(() => ({ usedSockets: upstream.openUsedSockets(), inFlight: upstream.inFlight() }), {
          timeout: 3_000,
          interval: 50,
        })
        .toEqual({ usedSockets: 0, inFlight: 0 })
      await expect.poll(() => upstream.openSockets(), { timeout: 10_000, interval: 100 }).toBe(0)
    },
  )

  it(
    'streams 1 GiB each way with SHA-256 equality and proxy RSS growth under 64 MB',
    { timeout: 120_000 },
    async () => {
      const block = randomBytes(MiB)
      const BLOCKS = 1024
      const expected = (() => {
        const hash = createHash('sha256')
        for (let i = 0; i < BLOCKS; i++) hash.update(block)
        return hash.digest('hex')
      })()

      const upstream = await startUpstream(async (req, res) => {
        if (req.method === 'PUT') {
          const hash = createHash('sha256')
          let length = 0
          for await (const chunk of req) {
            hash.update(chunk as Buffer)
            length += (chunk as Buffer).length
          }
          const body = JSON.stringify({ sha256: hash.digest('hex'), length })
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(body)
          return
        }
        const blocks = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('blocks'))
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': String(blocks * MiB),
        })
        await writeAll(
          res,
          Array.from({ length: blocks }, () => block),
        )
        res.end()
      })
      const front = await startChildProxy(upstream.port)

      const upload = (blocks: number): Promise<Transfer> =>
        new Promise((resolve, reject) => {
          const req = httpRequest(
            `${front.origin}/upload`,
            {
              method: 'PUT',
              agent: false,
              headers: {
                'content-type': 'application/octet-stream',
                'content-length': String(blocks * MiB),
              },
            },
            (res) => {
              const chunks: Buffer[] = []
              res.on('data', (chunk: Buffer) => chunks.push(chunk))
              res.on('error', reject)
              res.on('end', () => {
                if (res.statusCode !== 200) {
                  reject(new Error(`upload status ${res.statusCode}`))
                  return
                }
                resolve(JSON.parse(Buffer.concat(chunks).toString()) as never)
              })
            },
          )
          req.on('error', reject)
          writeAll(
            req,
            Array.from({ length: blocks }, () => block),
          ).then(() => req.end(), reject)
        })

      const download = (blocks: number): Promise<Transfer> =>
        new Promise((resolve, reject) => {
          const req = httpRequest(
            `${front.origin}/download?blocks=${blocks}`,
            { agent: false },
            (res) => {
              if (res.statusCode !== 200) {
                reject(new Error(`download status ${res.statusCode}`))
                res.resume()
                return
              }
              const hash = createHash('sha256')
              let length = 0
              res.on('data', (chunk: Buffer) => {
                hash.update(chunk)
                length += chunk.length
              })
              res.on('error', reject)
              res.on('end', () => resolve({ sha256: hash.digest('hex'), length }))
            },
          )
          req.on('error', reject)
          req.end()
        })

      // Warm-up: both paths once with one block, so lazy allocations are done before the baseline.
      expect(await upload(1)).toEqual({ sha256: sha256(block), length: MiB })
      expect(await download(1)).toEqual({ sha256: sha256(block), length: MiB })

      const up = await measure(front.pid, () => upload(BLOCKS))
      const down = await measure(front.pid, () => download(BLOCKS))
      const report = (label: string, m: { growth: number; ms: number }): string =>
        `${label}: RSS growth ${(m.growth / MB).toFixed(1)} MB in ${(m.ms / 1000).toFixed(1)} s`
      console.info(`${report('upload 1 GiB', up)}; ${report('download 1 GiB', down)}`)

      expect(up.result).toEqual({ sha256: expected, length: BLOCKS * MiB })
      expect(down.result).toEqual({ sha256: expected, length: BLOCKS * MiB })
      // Object form so a failure shows which direction grew and by how much.
      expect({ upload: up.growth < 64 * MB, growth: up.growth }).toMatchObject({ upload: true })
      expect({ download: down.growth < 64 * MB, growth: down.growth }).toMatchObject({
        download: true,
      })
    },
  )
})
