// Shared parts of the load, integrity, client-fault and signing stress files: a counting upstream,
// the two proxy fronts (in-process or as a child process whose /proc entry can be read), a load
// generator on an undici Pool, and cleanup.
import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { serve as honoServe } from '@hono/node-server'
import type { ProxyTimeouts, Signer } from '@wsgiproxy/core'
import { createProxyApp } from '@wsgiproxy/core'
import { proxy } from '@wsgiproxy/hono'
import { serve, undiciTransport } from '@wsgiproxy/node'
import { Hono } from 'hono'
import { Pool } from 'undici'

/**
 * The ways of running the proxy: `node` = `serve` + `createProxyApp` + `undiciTransport`;
 * `copy` = the same with the bodies copied between the sockets (`serve({ byteCopy: true })`);
 * `hono` = a Hono app with `proxy()` (its default fetch transport) on `@hono/node-server`.
 */
export type PathName = 'node' | 'copy' | 'hono'

/** Every path, for `describe.each`. */
export const PATHS: readonly PathName[] = ['node', 'copy', 'hono']

interface Closable {
  close(): Promise<void>
}

const open = new Set<Closable>()

/** Registers something started elsewhere, so {@link closeAll} closes it too. */
export function track<T extends Closable>(handle: T): T {
  open.add(handle)
  return handle
}

/** Closes everything the helpers started, newest first (call in afterEach / afterAll). */
export async function closeAll(): Promise<void> {
  const all = [...open].toReversed()
  open.clear()
  for (const handle of all) await handle.close()
}

/** An upstream on 127.0.0.1 port 0 that counts its requests and open connections. */
export interface Upstream {
  port: number
  origin: string
  server: Server
  /** Requests that reached it. */
  requests(): number
  /** Connections open now. */
  openSockets(): number
  /** Requests whose response has not closed yet. */
  inFlight(): number
  close(): Promise<void>
}

/** Starts a counting upstream; a handler that throws drops the connection. */
export async function startUpstream(
  handler: (req: IncomingMessage, res: ServerResponse) => unknown,
): Promise<Upstream> {
  const sockets = new Set<Socket>()
  let requests = 0
  let inFlight = 0
  const server = createServer((req, res) => {
    requests += 1
    inFlight += 1
    res.once('close', () => {
      inFlight -= 1
    })
    Promise.resolve()
      .then(() => handler(req, res))
      .catch(() => res.destroy())
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return track({
    port,
    origin: `http://127.0.0.1:${port}`,
    server,
    requests: () => requests,
    openSockets: () => sockets.size,
    inFlight: () => inFlight,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  })
}

/** Options of an in-process front. */
export interface FrontOptions {
  /** The server's header timeout in ms (`serve`'s option, or the node:http server option). */
  headersTimeout?: number
  /** The forwarding timeouts. Default 30 s each. */
  timeouts?: ProxyTimeouts
  /** Signs every forwarded request. */
  signer?: Signer
}

/** A running proxy front. */
export interface Front {
  port: number
  origin: string
  server: Server
  close(): Promise<void>
}

const DEFAULT_TIMEOUTS: ProxyTimeouts = { headers: 30_000, body: 30_000 }

/** Starts a front of `path` in this process, forwarding everything to `href`. */
export async function startFront(
  path: PathName,
  href: string,
  options: FrontOptions = {},
): Promise<Front> {
  const proxyOptions = {
    href,
    timeouts: options.timeouts ?? DEFAULT_TIMEOUTS,
    ...(options.signer === undefined ? {} : { signer: options.signer }),
  }
  if (path === 'node' || path === 'copy') {
    const transport = undiciTransport()
    const served = await serve(createProxyApp({ ...proxyOptions, transport }), {
      ...(options.headersTimeout === undefined ? {} : { headersTimeout: options.headersTimeout }),
      closeTimeout: 1_000,
      byteCopy: path === 'copy',
    })
    return track({
      port: served.port,
      origin: served.url,
      server: served.server,
      close: async () => {
        await served.close()
        await transport.close()
      },
    })
  }
  const app = new Hono().all('/*', proxy(proxyOptions))
  const headersTimeout = options.headersTimeout
  const server = await new Promise<Server>((resolve) => {
    const s = honoServe(
      {
        fetch: app.fetch,
        port: 0,
        hostname: '127.0.0.1',
        // The same node:http server options `serve` sets for a header timeout.
        ...(headersTimeout === undefined
          ? {}
          : {
              serverOptions: {
                headersTimeout,
                connectionsCheckingInterval: Math.max(50, Math.floor(headersTimeout / 10)),
              },
            }),
      },
      () => resolve(s as Server),
    )
  })
  const { port } = server.address() as AddressInfo
  return track({
    port,
    origin: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  })
}

const FRONT_SCRIPT = fileURLToPath(new URL('./fixtures/front.mjs', import.meta.url))

/** A front running in its own process. */
export interface ChildFront {
  pid: number
  origin: string
  /** The process's resident set size in bytes (VmRSS of /proc/<pid>/status). */
  rss(): number
  /** How many file descriptors the process has open (entries of /proc/<pid>/fd). */
  openFds(): number
  /**
   * RSS at rest: three rounds of two full collections in the child, 300 ms apart (V8 returns freed
   * pages lazily), then VmRSS. Call it with no connection open.
   */
  restingRss(): Promise<number>
  close(): Promise<void>
}

/**
 * Starts `fixtures/front.mjs` (built packages, `--expose-gc`) and waits for its port;
 * `hono-undici` is the Hono front with `undiciTransport()` instead of its default fetch transport.
 */
export async function startChildFront(
  path: PathName | 'hono-undici',
  href: string,
): Promise<ChildFront> {
  const child: ChildProcess = spawn(process.execPath, ['--expose-gc', FRONT_SCRIPT, path, href], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    // Two glibc malloc arenas instead of one per thread: memory freed on a worker thread is then
    // reused instead of stranded, so RSS tracks what the process holds (a common production
    // setting for Node). Without it an idle front's RSS wanders by ±20 MB between readings.
    env: { ...process.env, MALLOC_ARENA_MAX: '2' },
  })
  const pid = child.pid
  if (pid === undefined) throw new Error('the front process did not start')
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const rss = (): number => {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]
    if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`)
    return Number(kb) * 1024
  }
  const handle: ChildFront = track({
    pid,
    origin: '',
    rss,
    openFds: () => readdirSync(`/proc/${pid}/fd`).length,
    restingRss: async () => {
      for (let round = 0; round < 3; round++) {
        await new Promise<void>((resolve) => {
          const onMessage = (message: unknown): void => {
            if (message !== 'gc-done') return
            child.off('message', onMessage)
            resolve()
          }
          child.on('message', onMessage)
          child.send('gc')
        })
        await sleep(300)
      }
      return rss()
    },
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL')
      await exited
    },
  })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (chunk: string) => {
      out += chunk
      const line = out.split('\n')[0]
      if (out.includes('\n') && line !== undefined)
        resolve((JSON.parse(line) as { port: number }).port)
    })
    child.once('exit', (code) => reject(new Error(`the front process exited with ${code}`)))
  })
  handle.origin = `http://127.0.0.1:${port}`
  return handle
}

/** One request of a load run. */
export interface LoadRequest {
  path: string
  method?: string
  headers?: Record<string, string> | string[]
  body?: string | Buffer
}

/** Options of {@link hammer}. */
export interface HammerOptions {
  /** How many requests in all. */
  total: number
  /** Connections (and requests in flight) at once. */
  connections: number
  /** The `i`-th request. */
  request(i: number): LoadRequest
  /** Checks the `i`-th answer; returns a description of what is wrong, or nothing. */
  check(i: number, status: number, body: string): string | undefined
  /** Keep the latency of every request. Default `false`. */
  latencies?: boolean
}

/** What a load run saw. */
export interface HammerResult {
  /** One line per failed request (transport error or failed check). */
  errors: string[]
  /** Wall-clock duration in ms. */
  ms: number
  /** Per-request latencies in ms, when asked for. */
  latencies: number[]
}

/**
 * Sends `total` requests to `origin` over an undici Pool of `connections` keep-alive connections
 * (pipelining 1), `connections` at a time; closes the pool at the end.
 */
export async function hammer(origin: string, options: HammerOptions): Promise<HammerResult> {
  const pool = new Pool(origin, {
    connections: options.connections,
    pipelining: 1,
    headersTimeout: 60_000,
    bodyTimeout: 60_000,
  })
  const errors: string[] = []
  const latencies: number[] = []
  let next = 0
  const started = performance.now()
  const worker = async (): Promise<void> => {
    while (next < options.total) {
      const i = next++
      const { path, method = 'GET', headers, body } = options.request(i)
      const t0 = performance.now()
      try {
        const res = await pool.request({
          path,
          method,
          ...(headers === undefined ? {} : { headers }),
          ...(body === undefined ? {} : { body }),
        })
        const text = await res.body.text()
        if (options.latencies) latencies.push(performance.now() - t0)
        const problem = options.check(i, res.statusCode, text)
        if (problem !== undefined) errors.push(`#${i} ${path}: ${problem}`)
      } catch (error) {
        errors.push(`#${i} ${path}: ${(error as Error).message}`)
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: options.connections }, worker))
  } finally {
    await pool.close()
  }
  return { errors, ms: performance.now() - started, latencies }
}

/** The `p`-th percentile (0–100) of `values`, nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = values.toSorted((a, b) => a - b)
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1] ?? Number.NaN
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Bytes as MB (10^6), one decimal, for reports. */
export function mb(bytes: number): string {
  return `${(bytes / 1_000_000).toFixed(1)} MB`
}

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}
