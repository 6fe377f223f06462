// The servers a benchmark run starts, each in its own process (see `serve-one.ts`): the upstream,
// this project's two paths and the peers, configured the way their docs recommend for a reverse
// proxy with keep-alive to the upstream.
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Server as HttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { pipeline } from 'node:stream/promises'
import { Agent as HttpAgent } from 'node:http'
import type { ServerType } from '@hono/node-server'
import type { FastifyInstance, RawServerBase } from 'fastify'
import type { ProxyAppOptions } from '@wsgiproxy/core'
import type { BenchCertificate } from './certificate.ts'

/** A server started by {@link startServer}. */
export interface RunningServer {
  port: number
  close(): Promise<void>
}

/** The upstreams a server is started with: one, or the pool's three (see `pool-servers.ts`). */
export type Upstreams = readonly [URL, ...URL[]]

/**
 * How the load speaks to a server: `http` (HTTP/1.1 in clear), `https` (HTTP/1.1 over TLS) or
 * `h2` (HTTP/2 over TLS, chosen by ALPN). The upstream is always plain HTTP/1.1 on loopback.
 */
export type Front = 'http' | 'https' | 'h2'

/** What each benchmarked server is and which path of which project it measures. */
export interface ServerInfo {
  /** Short id used on the command line and in the JSON. */
  id: string
  /** Row label in the tables. */
  label: string
  /** Measured on the pool workloads (three upstreams) instead of the others. Default `false`. */
  pool?: boolean
  /** Measured on the workloads of this front only (see `tls-servers.ts`). Default `http`. */
  front?: Front
  /** Measured on the signing workload only (see `signing-servers.ts`). Default `false`. */
  signing?: boolean
  /** Needs the run's Redis (its URL in `BENCH_REDIS_URL`). Default `false`. */
  redis?: boolean
  /**
   * Starts it in front of `upstreams`; a server that is not a pool's uses the first. `certificate`
   * is the run's, given to every server when a workload needs TLS; a TLS server refuses to start
   * without it.
   */
  start(upstreams: Upstreams, certificate?: BenchCertificate): Promise<RunningServer>
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
export function listen(server: Server | HttpsServer): Promise<RunningServer> {
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

/**
 * Serves a fetch handler on `@hono/node-server`, over HTTPS with `certificate` the way its README
 * shows (`createServer` from `node:https`, the key and certificate as `serverOptions`).
 */
export async function honoListen(
  fetch: (request: Request) => Response | Promise<Response>,
  certificate?: BenchCertificate,
): Promise<RunningServer> {
  const { serve: honoServe } = await import('@hono/node-server')
  const https =
    certificate === undefined
      ? {}
      : {
          createServer: (await import('node:https')).createServer,
          serverOptions: { key: certificate.key, cert: certificate.cert },
        }
  return new Promise<RunningServer>((resolve) => {
    const server: ServerType = honoServe(
      { fetch, port: 0, hostname: '127.0.0.1', ...https },
      (info) => {
        resolve({
          port: info.port,
          close: () => new Promise<void>((done) => server.close(() => done())),
        })
      },
    )
  })
}

/** RFC 9110 §7.6.1: connection-specific fields a hand-written proxy must not forward. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
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

/** How a server faces the client: plain HTTP unless `tls` is given. */
export interface FrontOptions {
  /** Serve HTTPS with this key and certificate. Default: plain HTTP. */
  tls?: BenchCertificate
  /** With `tls`: HTTP/2 by ALPN, HTTP/1.1 on the same port. Default `false`. */
  http2?: boolean
  /** `serve({ byteCopy: true })`: the bodies copied between the sockets. Default `false`. */
  byteCopy?: boolean
}

/**
 * The node listener over `createProxyApp` with undici and every protocol header on
 * (X-Forwarded-*, X-Traversal-*, Forwarded): `wsgiproxy-node`, the pool's entries and, with
 * `front`, the HTTPS and HTTP/2 ones.
 */
export async function startNodeListener(
  options: Pick<ProxyAppOptions, 'href' | 'balance'>,
  front: FrontOptions = {},
): Promise<RunningServer> {
  const { createProxyApp } = await import('@wsgiproxy/core')
  const { serve, undiciTransport } = await import('@wsgiproxy/node')
  const app = createProxyApp({ ...options, transport: undiciTransport(), forwarded: true })
  return serve(app, {
    ...(front.tls === undefined ? {} : { tls: { key: front.tls.key, cert: front.tls.cert } }),
    ...(front.http2 === undefined ? {} : { http2: front.http2 }),
    ...(front.byteCopy === true ? { byteCopy: true } : {}),
  })
}

/**
 * http-proxy with a keep-alive agent and `xfwd`, on a `node:http` server, or with `tls` on a
 * `node:https` one calling `proxy.web` (its `ssl` option starts a server whose port it keeps
 * private). X-Forwarded-Proto says `https` then.
 */
export async function startHttpProxy(
  upstream: URL,
  front: Pick<FrontOptions, 'tls'> = {},
): Promise<RunningServer> {
  const { default: httpProxy } = await import('http-proxy')
  const proxy = httpProxy.createProxyServer({
    target: upstream.origin,
    agent: new HttpAgent({ keepAlive: true }),
    xfwd: true,
  })
  proxy.on('error', onHttpProxyError)
  const listener = (req: IncomingMessage, res: ServerResponse): void => proxy.web(req, res)
  if (front.tls === undefined) return listen(createServer(listener))
  const { createServer: createHttpsServer } = await import('node:https')
  return listen(createHttpsServer({ key: front.tls.key, cert: front.tls.cert }, listener))
}

/**
 * @fastify/http-proxy on fastify; with `tls`, fastify's `https` option, and with `http2` too its
 * `http2: true` with `https.allowHTTP1` (fastify's HTTP/2 docs). The plugin's own `http2` option
 * is about the upstream, which stays HTTP/1.1.
 */
export async function startFastifyHttpProxy(
  upstream: URL,
  front: FrontOptions = {},
): Promise<RunningServer> {
  const { default: Fastify } = await import('fastify')
  const { tls, http2 = false } = front
  if (tls === undefined) return fastifyProxy(Fastify({ logger: false }), upstream)
  const https = { key: tls.key, cert: tls.cert }
  return http2
    ? fastifyProxy(
        Fastify({ logger: false, http2: true, https: { ...https, allowHTTP1: true } }),
        upstream,
      )
    : fastifyProxy(Fastify({ logger: false, https }), upstream)
}

// One function per server type: the instances of fastify's overloads do not share `register`.
async function fastifyProxy<S extends RawServerBase>(
  app: FastifyInstance<S>,
  upstream: URL,
): Promise<RunningServer> {
  const { default: fastifyHttpProxy } = await import('@fastify/http-proxy')
  await app.register(fastifyHttpProxy, { upstream: upstream.origin })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { port: (app.server.address() as AddressInfo).port, close: () => app.close() }
}

/** hono's `proxy()` helper on `@hono/node-server`, over HTTPS with `tls`. */
export async function startHonoProxy(
  upstream: URL,
  front: Pick<FrontOptions, 'tls'> = {},
): Promise<RunningServer> {
  const { Hono } = await import('hono')
  const { proxy } = await import('hono/proxy')
  const app = new Hono()
  app.all('*', (c) => {
    const url = new URL(c.req.url)
    return proxy(`${upstream.origin}${url.pathname}${url.search}`, c.req.raw)
  })
  return honoListen(app.fetch, front.tls)
}

/** Every server a run can start, in table order. Each imports only what it measures. */
export const SERVERS: readonly ServerInfo[] = [
  {
    id: 'wsgiproxy-node',
    label: 'wsgiproxy node listener + undici',
    start: ([upstream]) => startNodeListener({ href: upstream }),
  },
  {
    id: 'wsgiproxy-node-copy',
    label: 'wsgiproxy node, serve({ byteCopy: true })',
    start: ([upstream]) => startNodeListener({ href: upstream }, { byteCopy: true }),
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
    start: ([upstream]) => startHttpProxy(upstream),
  },
  {
    id: 'fastify-http-proxy',
    label: '@fastify/http-proxy 11.6.3 (fastify 5.12.8)',
    start: ([upstream]) => startFastifyHttpProxy(upstream),
  },
  {
    id: 'hono-proxy',
    label: 'hono/proxy (hono 4.13.19), @hono/node-server 2.1.9',
    start: ([upstream]) => startHonoProxy(upstream),
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
  {
    id: 'raw-copy',
    label: 'byte copy, no HTTP objects (issue 20 experiment, bench only)',
    start: async ([upstream]) => (await import('./raw-copy.ts')).startRawCopy(upstream),
  },
  {
    id: 'raw-copy-llhttp',
    label: "byte copy with node:http's parser (llhttp) (issue 20 experiment, bench only)",
    start: async ([upstream]) =>
      (await import('./raw-copy-llhttp.ts')).startRawCopyLlhttp(upstream),
  },
]
