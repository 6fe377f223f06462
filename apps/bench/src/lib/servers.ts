// The servers a benchmark run starts, each in its own process (see `serve-one.ts`): the upstream,
// this project's two paths and the peers, configured the way their docs recommend for a reverse
// proxy with keep-alive to the upstream.
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { pipeline } from 'node:stream/promises'
import { Agent as HttpAgent } from 'node:http'
import type { ServerType } from '@hono/node-server'
import type { ProxyAppOptions } from '@wsgiproxy/core'

/** A server started by {@link startServer}. */
export interface RunningServer {
  port: number
  close(): Promise<void>
}

/** The upstreams a server is started with: one, or the pool's three (see `pool-servers.ts`). */
export type Upstreams = readonly [URL, ...URL[]]

/** What each benchmarked server is and which path of which project it measures. */
export interface ServerInfo {
  /** Short id used on the command line and in the JSON. */
  id: string
  /** Row label in the tables. */
  label: string
  /** Measured on the pool workloads (three upstreams) instead of the others. Default `false`. */
  pool?: boolean
  /** Starts it in front of `upstreams`; a server that is not a pool's uses the first. */
  start(upstreams: Upstreams): Promise<RunningServer>
}

/** Bytes the upstream serves for `GET /1k`. */
export const SMALL_BODY_BYTES = 1024

// A 64 KiB block reused for every download: the upstream must never be the bottleneck.
const BLOCK = Buffer.alloc(64 * 1024, 0x61)
const SMALL = BLOCK.subarray(0, SMALL_BODY_BYTES)

/** The upstream answers here with the number of other requests it has answered, as text. */
export const REQUEST_COUNT_PATH = '/__bench/requests'

/**
 * The upstream: `GET /1k` (1 KiB), `POST /echo` (the body streamed back),
 * `GET /download/<bytes>` (that many bytes with a Content-Length, written with backpressure) and
 * `GET /__bench/requests` (how many requests it answered, so a run can see how a pool divides them).
 */
export function startUpstream(): Promise<RunningServer> {
  let answered = 0
  return listen(
    createServer((req, res) => {
      const url = req.url ?? '/'
      if (url === REQUEST_COUNT_PATH) {
        res.writeHead(200, { 'content-type': 'text/plain' }).end(String(answered))
        return
      }
      answered++
      if (url === '/1k') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL.length })
        res.end(SMALL)
      } else if (url === '/echo') {
        const type = req.headers['content-type'] ?? 'application/octet-stream'
        const length = req.headers['content-length']
        res.writeHead(
          200,
          length === undefined
            ? { 'content-type': type }
            : { 'content-type': type, 'content-length': length },
        )
        req.pipe(res)
      } else if (url.startsWith('/download/')) {
        void download(res, Number(url.slice('/download/'.length)))
      } else {
        res.writeHead(404).end()
      }
    }),
  )
}

async function download(res: ServerResponse, total: number): Promise<void> {
  if (!Number.isSafeInteger(total) || total < 0) {
    res.writeHead(400).end()
    return
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total })
  let left = total
  while (left > 0 && !res.destroyed) {
    const chunk = left >= BLOCK.length ? BLOCK : BLOCK.subarray(0, left)
    left -= chunk.length
    if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve))
  }
  res.end()
}

/** Listens on a free port of 127.0.0.1 with a long keep-alive timeout. */
export function listen(server: Server): Promise<RunningServer> {
  server.keepAliveTimeout = 60_000
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done())
            server.closeAllConnections()
          }),
      })
    })
  })
}

async function honoListen(
  fetch: (request: Request) => Response | Promise<Response>,
): Promise<RunningServer> {
  const { serve: honoServe } = await import('@hono/node-server')
  return new Promise<RunningServer>((resolve) => {
    const server: ServerType = honoServe({ fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
      resolve({
        port: info.port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      })
    })
  })
}

// RFC 9110 §7.6.1: connection-specific fields a hand-written proxy must not forward.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
])

function endToEnd(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>) {
  const out: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value
  }
  return out
}

function requestBody(req: IncomingMessage): IncomingMessage | null {
  return req.method === 'GET' || req.method === 'HEAD' ? null : req
}

function badGateway(res: ServerResponse): void {
  if (res.headersSent) res.destroy()
  else res.writeHead(502).end()
}

/** http-proxy's `error` listener: 502 when nothing was sent yet, else the connection closes. */
export function onHttpProxyError(
  _error: Error,
  _req: IncomingMessage,
  res: ServerResponse | Socket,
): void {
  if ('writeHead' in res) badGateway(res)
  else res.destroy()
}

/**
 * The node listener over `createProxyApp` with undici and every protocol header on
 * (X-Forwarded-*, X-Traversal-*, Forwarded): `wsgiproxy-node`, and the pool's entries.
 */
export async function startNodeListener(
  options: Pick<ProxyAppOptions, 'href' | 'balance'>,
): Promise<RunningServer> {
  const { createProxyApp } = await import('@wsgiproxy/core')
  const { serve, undiciTransport } = await import('@wsgiproxy/node')
  return serve(createProxyApp({ ...options, transport: undiciTransport(), forwarded: true }))
}

/** Every server a run can start, in table order. Each imports only what it measures. */
export const SERVERS: readonly ServerInfo[] = [
  {
    id: 'wsgiproxy-node',
    label: 'wsgiproxy node listener + undici',
    start: ([upstream]) => startNodeListener({ href: upstream }),
  },
  {
    id: 'wsgiproxy-fetch',
    label: 'wsgiproxy fetch path + undici, @hono/node-server',
    start: async ([upstream]) => {
      const { createProxyApp, toFetchHandler } = await import('@wsgiproxy/core')
      const { undiciTransport } = await import('@wsgiproxy/node')
      const app = createProxyApp({ href: upstream, transport: undiciTransport(), forwarded: true })
      return honoListen(toFetchHandler(app))
    },
  },
  {
    id: 'wsgiproxy-fetch-global',
    label: 'wsgiproxy fetch path + global fetch, @hono/node-server',
    start: async ([upstream]) => {
      const { createProxyApp, fetchTransport, toFetchHandler } = await import('@wsgiproxy/core')
      const app = createProxyApp({ href: upstream, transport: fetchTransport(), forwarded: true })
      return honoListen(toFetchHandler(app))
    },
  },
  {
    id: 'http-proxy',
    label: 'http-proxy 1.18.1',
    start: async ([upstream]) => {
      const { default: httpProxy } = await import('http-proxy')
      const proxy = httpProxy.createProxyServer({
        target: upstream.origin,
        agent: new HttpAgent({ keepAlive: true }),
        xfwd: true,
      })
      proxy.on('error', onHttpProxyError)
      return listen(createServer((req, res) => proxy.web(req, res)))
    },
  },
  {
    id: 'fastify-http-proxy',
    label: '@fastify/http-proxy 11.6.3 (fastify 5.12.8)',
    start: async ([upstream]) => {
      const { default: Fastify } = await import('fastify')
      const { default: fastifyHttpProxy } = await import('@fastify/http-proxy')
      const app = Fastify({ logger: false })
      await app.register(fastifyHttpProxy, { upstream: upstream.origin })
      await app.listen({ port: 0, host: '127.0.0.1' })
      return { port: (app.server.address() as AddressInfo).port, close: () => app.close() }
    },
  },
  {
    id: 'hono-proxy',
    label: 'hono/proxy (hono 4.13.19), @hono/node-server 2.1.9',
    start: async ([upstream]) => {
      const { Hono } = await import('hono')
      const { proxy } = await import('hono/proxy')
      const app = new Hono()
      app.all('*', (c) => {
        const url = new URL(c.req.url)
        return proxy(`${upstream.origin}${url.pathname}${url.search}`, c.req.raw)
      })
      return honoListen(app.fetch)
    },
  },
  {
    id: 'undici-stream',
    label: 'hand-written node:http + undici 7.30.2 Pool.stream',
    start: async ([upstream]) => {
      const { Pool } = await import('undici')
      const pool = new Pool(upstream.origin)
      return listen(
        createServer((req, res) => {
          pool
            .stream(
              {
                path: req.url ?? '/',
                method: req.method ?? 'GET',
                headers: endToEnd(req.headers),
                body: requestBody(req),
              },
              ({ statusCode, headers }) => {
                res.writeHead(statusCode, endToEnd(headers))
                return res
              },
            )
            .catch(() => badGateway(res))
        }),
      )
    },
  },
  {
    id: 'undici-request',
    label: 'hand-written node:http + undici 7.30.2 Pool.request',
    start: async ([upstream]) => {
      const { Pool } = await import('undici')
      const pool = new Pool(upstream.origin)
      return listen(
        createServer((req, res) => {
          pool
            .request({
              path: req.url ?? '/',
              method: req.method ?? 'GET',
              headers: endToEnd(req.headers),
              body: requestBody(req),
            })
            .then(async ({ statusCode, headers, body }) => {
              res.writeHead(statusCode, endToEnd(headers))
              await pipeline(body, res)
            })
            .catch(() => badGateway(res))
        }),
      )
    },
  },
]
