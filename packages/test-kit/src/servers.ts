// Test helpers: real servers on 127.0.0.1 port 0 and real HTTP clients (HTTP/1.1 in cleartext or
// over TLS, HTTP/2 over TLS), closed in cleanup.
import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer, request as httpRequest } from 'node:http'
import { connect as http2Connect, constants as http2Constants } from 'node:http2'
import type { OutgoingHttpHeaders } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { Writable } from 'node:stream'
import { serve } from '@hono/node-server'
import type { EnvironApp, ToFetchHandlerOptions } from '@wsgiproxy/core'
import { toFetchHandler } from '@wsgiproxy/core'

export interface Running {
  port: number
  origin: string
  close(): Promise<void>
}

const running = new Set<Running>()

/** Registers a server started elsewhere so `closeAll` closes it too. */
export function register(handle: Running): Running {
  running.add(handle)
  return handle
}

/**
 * Registers a front started with `serve()` so `closeAll` closes it, then what it owns (its
 * transport, say), in that order.
 */
export function registerServed(
  served: { port: number; url: string; close(): Promise<void> },
  ...owned: Array<{ close(): Promise<void> }>
): Running {
  return register({
    port: served.port,
    origin: served.url,
    close: async () => {
      await served.close()
      for (const part of owned) await part.close()
    },
  })
}

/** Closes every server the helpers started (call in afterEach). */
export async function closeAll(): Promise<void> {
  const all = [...running]
  running.clear()
  await Promise.all(all.map((s) => s.close()))
}

function track(server: Server, sockets: Set<Socket>): Running {
  const port = (server.address() as AddressInfo).port
  const handle: Running = {
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
  running.add(handle)
  return handle
}

function socketsOf(server: Server): Set<Socket> {
  const sockets = new Set<Socket>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  return sockets
}

/** A node:http upstream on 127.0.0.1 port 0. */
export async function startUpstream(
  handler: (req: IncomingMessage, res: ServerResponse) => unknown,
): Promise<Running> {
  // A handler that fails (the proxy aborted the request it was reading) just drops the socket.
  const server = createServer((req, res) => {
    Promise.resolve()
      .then(() => handler(req, res))
      .catch(() => res.destroy())
  })
  const sockets = socketsOf(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return track(server, sockets)
}

/** Serves an environ app through toFetchHandler on @hono/node-server, 127.0.0.1 port 0. */
export async function startFetchFront(
  app: EnvironApp,
  options?: ToFetchHandlerOptions,
): Promise<Running> {
  const fetch = toFetchHandler(app, options)
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s as Server))
  })
  const sockets = socketsOf(server)
  return track(server, sockets)
}

export interface ClientResponse {
  status: number
  statusText: string
  headers: IncomingHttpHeaders
  rawHeaders: string[]
  body: Buffer
}

export interface ClientRequest {
  method?: string
  path?: string
  headers?: Record<string, string | string[]>
  /** A whole body, or chunks written one by one (chunked when no content-length is given). */
  body?: Buffer | string | Iterable<Buffer | string>
  /** Wait for `100 Continue` before writing the body. */
  expectContinue?: boolean
  /** Connect from this local address (any of 127.0.0.0/8 works on Linux). */
  localAddress?: string
  /** The CA certificate (PEM) to trust for an `https:` origin. Default: Node's bundled CAs. */
  ca?: string
}

/**
 * A real HTTP/1.1 client request (no agent reuse): node:http, or node:https for an `https:`
 * origin (trusting `options.ca`).
 */
export function send(origin: string, options: ClientRequest = {}): Promise<ClientResponse> {
  const url = new URL(options.path ?? '/', origin)
  return new Promise((resolve, reject) => {
    const common = {
      method: options.method ?? 'GET',
      headers: options.headers ?? {},
      agent: false,
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    } as const
    const req =
      url.protocol === 'https:'
        ? httpsRequest(url, { ...common, ...(options.ca === undefined ? {} : { ca: options.ca }) })
        : httpRequest(url, common)
    req.on('error', reject)
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', reject)
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          statusText: res.statusMessage ?? '',
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body: Buffer.concat(chunks),
        }),
      )
    })
    const writeBody = (): void => {
      const { body } = options
      if (body === undefined) req.end()
      else if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body)
      else {
        for (const chunk of body) req.write(chunk)
        req.end()
      }
    }
    if (options.expectContinue) req.on('continue', writeBody)
    else writeBody()
  })
}

/**
 * A real HTTP/2 client request over TLS (node:http2, ALPN `h2`, one session per request, closed
 * after it), answered as {@link send} answers: `:status` as `status`, no reason phrase (HTTP/2 has
 * none), the headers without pseudo-headers. A request without a body ends its stream with its
 * headers. Rejects when the stream is reset with an error code (RFC 9113 §6.4), closes without
 * its end, or its body does not match its Content-Length (malformed: RFC 9113 §8.1.1).
 */
export function sendHttp2(origin: string, options: ClientRequest = {}): Promise<ClientResponse> {
  const url = new URL(options.path ?? '/', origin)
  const method = options.method ?? 'GET'
  return new Promise((resolve, reject) => {
    const session = http2Connect(url.origin, {
      ...(options.ca === undefined ? {} : { ca: options.ca }),
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    })
    let done = false
    const fail = (error: Error): void => {
      if (done) return
      done = true
      session.destroy()
      reject(error)
    }
    session.on('error', fail)
    const headers: OutgoingHttpHeaders = {
      ...options.headers,
      ':method': method,
      ':path': `${url.pathname}${url.search}`,
    }
    const { body } = options
    const stream = session.request(headers, { endStream: body === undefined })
    let status = 0
    let head: IncomingHttpHeaders = {}
    let rawHeaders: string[] = []
    let ended = false
    const chunks: Buffer[] = []
    stream.on('response', (fields) => {
      status = Number(fields[':status'])
      head = {}
      rawHeaders = []
      for (const [name, value] of Object.entries(fields)) {
        if (name.startsWith(':') || value === undefined) continue
        head[name] = value
        for (const one of Array.isArray(value) ? value : [value]) rawHeaders.push(name, String(one))
      }
    })
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.on('end', () => (ended = true))
    stream.on('error', fail)
    stream.on('close', () => {
      const received = Buffer.concat(chunks)
      const length = head['content-length']
      const bodiless = method === 'HEAD' || status === 204 || status === 304
      if (stream.rstCode !== http2Constants.NGHTTP2_NO_ERROR) {
        fail(new Error(`the stream was reset (code ${stream.rstCode})`))
      } else if (!ended || status === 0) {
        fail(new Error('the stream closed before the response ended'))
      } else if (!bodiless && length !== undefined && Number(length) !== received.length) {
        fail(new Error(`the body has ${received.length} bytes, Content-Length ${length}`))
      } else if (!done) {
        done = true
        session.close()
        resolve({ status, statusText: '', headers: head, rawHeaders, body: received })
      }
    })
    const writeBody = (): void => {
      if (body === undefined) return
      if (typeof body === 'string' || Buffer.isBuffer(body)) stream.end(body)
      else {
        for (const chunk of body) stream.write(chunk)
        stream.end()
      }
    }
    if (options.expectContinue) stream.on('continue', writeBody)
    else writeBody()
  })
}

/** SHA-256 of a buffer, hex. */
export function sha256(data: Buffer | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Reads a whole request body. */
export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Header values of a raw header list, by lower-case name. */
export function headerLines(rawHeaders: string[], name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() === name) out.push(rawHeaders[i + 1] ?? '')
  }
  return out
}

/** A port nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * Writes raw bytes to a server and collects everything it answers until it closes the connection
 * or `quietMs` pass without data; never hangs longer than `limitMs`.
 */
export async function sendRaw(
  port: number,
  chunks: Array<string | Buffer>,
  { quietMs = 300, limitMs = 5_000, endAfterWrite = false } = {},
): Promise<string> {
  const { connect } = await import('node:net')
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const received: Buffer[] = []
    let quiet: ReturnType<typeof setTimeout> | undefined
    const finish = (): void => {
      clearTimeout(quiet)
      clearTimeout(limit)
      socket.destroy()
      resolve(Buffer.concat(received).toString('latin1'))
    }
    const limit = setTimeout(finish, limitMs)
    socket.on('data', (data) => {
      received.push(data)
      clearTimeout(quiet)
      quiet = setTimeout(finish, quietMs)
    })
    socket.on('error', finish)
    socket.on('close', finish)
    socket.on('connect', () => {
      for (const chunk of chunks) socket.write(chunk)
      if (endAfterWrite) socket.end()
    })
  })
}

/** An environ app that answers its environ as JSON (streams and signals left out). */
export function echoEnviron(environ: Record<string, unknown>): {
  status: number
  headers: Array<[string, string]>
  body: AsyncIterable<Uint8Array>
} {
  const visible: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(environ)) {
    if (key === 'wsgi.input' || key === 'wsgiproxy.signal') continue
    visible[key] = value
  }
  const bytes = new TextEncoder().encode(JSON.stringify(visible))
  return {
    status: 200,
    headers: [['content-type', 'application/json']],
    body: (async function* () {
      yield bytes
    })(),
  }
}

/** Writes every chunk to `out`, waiting for 'drain' whenever it asks to; fails if it closes. */
export async function writeAll(out: Writable, chunks: Iterable<Buffer>): Promise<void> {
  for (const chunk of chunks) {
    if (out.destroyed) throw new Error('stream destroyed while writing')
    if (!out.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          out.off('close', onClose)
          resolve()
        }
        const onClose = (): void => {
          out.off('drain', onDrain)
          reject(new Error('stream closed while waiting for drain'))
        }
        out.once('drain', onDrain)
        out.once('close', onClose)
      })
    }
  }
}
