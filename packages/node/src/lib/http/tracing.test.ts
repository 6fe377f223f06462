import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { createProxyApp, createSigner, createVerifier, proxyMiddleware } from '@wsgiproxy/core'
import type { EnvironApp, ProxyAppOptions, SigningKey } from '@wsgiproxy/core'
import { signRequest } from '@wsgiproxy/core/protocol'
import { undiciTransport } from '@wsgiproxy/core/undici'
import { closeAll, freePort, send, startUpstream } from '@wsgiproxy/test-kit/servers'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { APP, NODE, cleanupSpawners, spawner, waitFor } from '@wsgiproxy/test-kit/spawner-helpers'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { WebSocket, WebSocketServer } from 'ws'
import { serve } from './serve.ts'
import type { ServeOptions, Served } from './serve.ts'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

// The caller's own trace: W3C Trace Context (https://www.w3.org/TR/trace-context/).
const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'
const CALLER_TRACEPARENT = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`

const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })

beforeAll(() => {
  trace.setGlobalTracerProvider(provider)
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
})
afterAll(async () => {
  trace.disable()
  context.disable()
  propagation.disable()
  await provider.shutdown()
})
beforeEach(() => exporter.reset())

const cleanups: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).toReversed()) await cleanup()
  await closeAll()
  await cleanupSpawners()
})

async function serveApp(app: EnvironApp, options: ServeOptions = {}): Promise<Served> {
  const served = await serve(app, { closeTimeout: 100, ...options })
  cleanups.push(() => served.close())
  return served
}

/** `createProxyApp` over undici, closed (with its pool) in cleanup. */
function proxyApp(options: ProxyAppOptions): ReturnType<typeof createProxyApp> {
  const transport = undiciTransport()
  const app = createProxyApp({ transport, onError: () => {}, ...options })
  cleanups.push(async () => {
    await app.pool?.close()
    await transport.close()
  })
  return app
}

/** A node:http upstream (no spans of its own) that records each request's traceparent. */
async function recordingUpstream(): Promise<{
  upstream: Running
  received: IncomingHttpHeaders[]
}> {
  const received: IncomingHttpHeaders[] = []
  const upstream = await startUpstream((req, res) => {
    received.push(req.headers)
    res.writeHead(200, { 'content-type': 'text/plain' }).end('upstream body')
  })
  return { upstream, received }
}

/** Polls until `count` spans have ended that pass `filter`; returns them. */
async function spansWhere(
  count: number,
  filter: (span: ReadableSpan) => boolean = () => true,
): Promise<ReadableSpan[]> {
  const found = (): ReadableSpan[] => exporter.getFinishedSpans().filter(filter)
  await waitFor(() => found().length >= count, { message: `${count} spans` })
  return found()
}

const inTrace =
  (traceId: string) =>
  (span: ReadableSpan): boolean =>
    span.spanContext().traceId === traceId

function only(spans: readonly ReadableSpan[], kind: SpanKind): ReadableSpan {
  const found = spans.filter((span) => span.kind === kind)
  expect(found, `spans of kind ${SpanKind[kind]}`).toHaveLength(1)
  return found[0] as ReadableSpan
}

const traceparentOf = (span: ReadableSpan): string =>
  `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`

const isChildOf = (child: ReadableSpan, parent: ReadableSpan): boolean =>
  child.spanContext().traceId === parent.spanContext().traceId &&
  child.parentSpanContext?.spanId === parent.spanContext().spanId

describe('tracing through serve', () => {
  it('records a server span and a client span for a plain request', async () => {
    const { upstream, received } = await recordingUpstream()
    const front = await serveApp(proxyApp({ href: `${upstream.origin}/base` }))
    const response = await send(front.url, { path: '/p?q=secret' })
    expect(response.status).toBe(200)
    const spans = await spansWhere(2)
    expect(spans).toHaveLength(2)
    const frontServer = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)
    expect(frontServer.parentSpanContext).toBeUndefined()
    expect(frontServer.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/p',
      'url.scheme': 'http',
      'server.address': '127.0.0.1',
      'client.address': '127.0.0.1',
      'http.response.status_code': 200,
    })
    expect(isChildOf(client, frontServer)).toBe(true)
    expect(client.attributes).toMatchObject({
      'url.full': `${upstream.origin}/base/p`,
      'server.port': upstream.port,
      'http.response.status_code': 200,
    })
    expect(received.map((headers) => headers.traceparent)).toEqual([traceparentOf(client)])
  })

  it('records each try of a retried request as a client span of the one server span', async () => {
    const { upstream } = await recordingUpstream()
    const dead = `http://127.0.0.1:${await freePort()}`
    const front = await serveApp(
      proxyApp({
        href: [dead, upstream.origin],
        balance: 'round-robin',
        retries: { attempts: 2 },
        ejection: false,
      }),
    )
    expect((await send(front.url, { path: '/r' })).status).toBe(200)
    const spans = await spansWhere(3)
    expect(spans).toHaveLength(3)
    const server = only(spans, SpanKind.SERVER)
    const tries = spans.filter((span) => span.kind === SpanKind.CLIENT)
    const [first, second] = tries.toSorted(
      (a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1],
    ) as [ReadableSpan, ReadableSpan]
    expect(isChildOf(first, server)).toBe(true)
    expect(isChildOf(second, server)).toBe(true)
    expect(first.attributes).toMatchObject({
      'url.full': `${dead}/r`,
      'error.type': 'UPSTREAM_UNREACHABLE',
    })
    expect(first.attributes['http.request.resend_count']).toBeUndefined()
    expect(first.status.code).toBe(SpanStatusCode.ERROR)
    expect(second.attributes).toMatchObject({
      'url.full': `${upstream.origin}/r`,
      'http.request.resend_count': 1,
      'http.response.status_code': 200,
    })
    expect(second.attributes['error.type']).toBeUndefined()
    expect(server.attributes['http.response.status_code']).toBe(200)
    expect(server.status.code).toBe(SpanStatusCode.UNSET)
  })

  it('records a spawner’s start on the request that caused it, and its stop on a span of its own', async () => {
    const backend = spawner({ command: [NODE, APP] })
    const front = await serveApp(backend.app)
    const response = await send(front.url, { path: '/first' })
    expect(response.status).toBe(200)
    const pid = backend.status().pid
    const server = (await spansWhere(1, (span) => span.kind === SpanKind.SERVER))[0] as ReadableSpan
    const events = server.events.map((event) => event.name)
    expect(events).toEqual(['wsgiproxy.spawner.spawn', 'wsgiproxy.spawner.ready'])
    expect(server.events[0]?.attributes).toMatchObject({
      'wsgiproxy.spawner.name': backend.name,
      'process.pid': pid,
      'wsgiproxy.spawner.attempt': 1,
    })
    expect(server.events[1]?.attributes).toMatchObject({ 'process.pid': pid })
    const client = only(await spansWhere(1, inTrace(server.spanContext().traceId)), SpanKind.CLIENT)
    expect(isChildOf(client, server)).toBe(true)

    // A second request finds the backend ready: no spawner event on its span.
    exporter.reset()
    await send(front.url, { path: '/second' })
    const again = (await spansWhere(1, (span) => span.kind === SpanKind.SERVER))[0] as ReadableSpan
    expect(again.events).toEqual([])

    exporter.reset()
    await backend.close()
    const own = await spansWhere(2, (span) => span.kind === SpanKind.INTERNAL)
    expect(own.map((span) => span.name).toSorted()).toEqual([
      'wsgiproxy.spawner.exit',
      'wsgiproxy.spawner.stop',
    ])
    for (const span of own) {
      expect(span.parentSpanContext).toBeUndefined()
      expect(span.events.map((event) => event.name)).toEqual([span.name])
      expect(span.attributes).toMatchObject({
        'wsgiproxy.spawner.name': backend.name,
        'process.pid': pid,
      })
    }
  })

  it('records an idle stop on root spans of its own, not under the request that started it', async () => {
    const backend = spawner({ command: [NODE, APP], idleTimeout: 300 })
    const front = await serveApp(backend.app)
    expect((await send(front.url)).status).toBe(200)
    const pid = backend.status().pid
    const request = (await spansWhere(1, (span) => span.kind === SpanKind.SERVER))[0]
    await waitFor(() => backend.status().state === 'idle', { message: 'the idle stop' })
    const own = await spansWhere(3, (span) => span.kind === SpanKind.INTERNAL)
    expect(own.map((span) => span.name).toSorted()).toEqual([
      'wsgiproxy.spawner.exit',
      'wsgiproxy.spawner.idle_stop',
      'wsgiproxy.spawner.stop',
    ])
    for (const span of own) {
      expect(span.parentSpanContext).toBeUndefined()
      expect(span.spanContext().traceId).not.toBe(request?.spanContext().traceId)
      expect(span.attributes['process.pid']).toBe(pid)
    }
  })

  describe('a backend refusing a request’s signature', () => {
    const KEY: SigningKey = { id: 'k-trace', secret: new Uint8Array(32).fill(7) }
    const WRONG: SigningKey = { id: 'k-trace', secret: new Uint8Array(32).fill(9) }

    async function signedBackend(): Promise<Served> {
      return serveApp(
        proxyMiddleware(() => ({ status: 200, headers: [], body: null }), {
          verifier: createVerifier({ keys: [KEY] }),
          requireSignature: true,
          onReject: () => {},
        }),
      )
    }

    it.each([
      ['an unsigned request', 'malformed', (url: string) => Promise.resolve(new Request(url))],
      [
        'a request signed with another secret',
        'bad_mac',
        (url: string) => signRequest(new Request(url), createSigner({ keys: [WRONG] })),
      ],
    ])('records the refusal of %s on its server span', async (_what, reason, request) => {
      const backend = await signedBackend()
      const response = await fetch(await request(`${backend.url}/x`))
      expect(response.status).toBe(401)
      await response.arrayBuffer()
      const server = only(await spansWhere(1), SpanKind.SERVER)
      expect(server.events.map((event) => event.name)).toEqual(['wsgiproxy.request.refused'])
      expect(server.events[0]?.attributes).toEqual({
        'wsgiproxy.refusal.code': 'SIGNATURE_INVALID',
        'wsgiproxy.refusal.reason': reason,
        'http.response.status_code': 401,
      })
      expect(server.attributes['http.response.status_code']).toBe(401)
      expect(server.status.code).toBe(SpanStatusCode.UNSET)
    })

    it('records no refusal for a well signed request', async () => {
      const backend = await signedBackend()
      const signed = await signRequest(
        new Request(`${backend.url}/x`),
        createSigner({ keys: [KEY] }),
      )
      const response = await fetch(signed)
      expect(response.status).toBe(200)
      const server = only(await spansWhere(1), SpanKind.SERVER)
      expect(server.events).toEqual([])
    })
  })

  it('records a WebSocket upgrade as a server span and a client span that end with the 101', async () => {
    const server = createServer((_req, res) => res.end('not a websocket'))
    const wss = new WebSocketServer({ server })
    const upgrades: IncomingMessage[] = []
    wss.on('connection', (_ws, req) => upgrades.push(req))
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
    const upstreamPort = (server.address() as AddressInfo).port
    const front = await serveApp(proxyApp({ href: `http://127.0.0.1:${upstreamPort}/ws` }))
    const ws = new WebSocket(`ws://127.0.0.1:${front.port}/chat`, {
      headers: { traceparent: CALLER_TRACEPARENT, tracestate: 'caller=secret' },
    })
    ws.on('error', () => {})
    cleanups.push(() => ws.terminate())
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    const spans = await spansWhere(2)
    const serverSpan = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)
    expect(isChildOf(client, serverSpan)).toBe(true)
    expect(serverSpan.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/chat',
      'http.response.status_code': 101,
    })
    expect(serverSpan.links.map((link) => link.context.traceId)).toEqual([CALLER_TRACE])
    expect(client.attributes).toMatchObject({
      'url.full': `http://127.0.0.1:${upstreamPort}/ws/chat`,
      'http.response.status_code': 101,
    })
    expect(client.status.code).toBe(SpanStatusCode.UNSET)
    expect(upgrades).toHaveLength(1)
    expect(upgrades[0]?.headers.traceparent).toBe(traceparentOf(client))
    expect(upgrades[0]?.headers.tracestate).toBeUndefined()
  })

  it('fails the spans of an upgrade no upstream answered', async () => {
    const front = await serveApp(proxyApp({ href: `http://127.0.0.1:${await freePort()}/` }))
    const ws = new WebSocket(`ws://127.0.0.1:${front.port}/`)
    ws.on('error', () => {})
    cleanups.push(() => ws.terminate())
    const status = await new Promise<number>((resolve) => {
      ws.once('unexpected-response', (_req, res: IncomingMessage) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
    })
    expect(status).toBe(502)
    const spans = await spansWhere(2)
    expect(only(spans, SpanKind.CLIENT).attributes['error.type']).toBe('UPSTREAM_UNREACHABLE')
    expect(only(spans, SpanKind.SERVER).attributes).toMatchObject({
      'http.response.status_code': 502,
      'error.type': '502',
    })
  })

  it('ends the spans of an upgrade whose client left before the upstream answered', async () => {
    // An upstream that takes the connection and the request, and never answers.
    const held: Socket[] = []
    let request = ''
    const silent = createNetServer((socket) => {
      held.push(socket)
      socket.setEncoding('latin1')
      socket.on('data', (text: string) => (request += text))
    })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of held) socket.destroy()
          silent.close(() => resolve())
        }),
    )
    const upstreamPort = (silent.address() as AddressInfo).port
    const front = await serveApp(proxyApp({ href: `http://127.0.0.1:${upstreamPort}/` }))
    const ws = new WebSocket(`ws://127.0.0.1:${front.port}/`)
    ws.on('error', () => {})
    await waitFor(() => request.includes('\r\n\r\n'), { message: 'the upgrade request upstream' })
    ws.terminate()
    const spans = await spansWhere(2)
    for (const span of spans) {
      expect(span.attributes['error.type']).toBe('CLIENT_ABORTED')
      expect(span.attributes['http.response.status_code']).toBeUndefined()
    }
    expect(spans.map((span) => span.kind).toSorted()).toEqual(
      [SpanKind.SERVER, SpanKind.CLIENT].toSorted(),
    )
  })

  describe('trustTraceparent', () => {
    it('makes a loopback caller’s traceparent the parent', async () => {
      const front = await serveApp(() => ({ status: 204, headers: [], body: null }), {
        trustTraceparent: ['loopback'],
      })
      await send(front.url, { headers: { traceparent: CALLER_TRACEPARENT } })
      const server = only(await spansWhere(1), SpanKind.SERVER)
      expect(server.parentSpanContext).toMatchObject({
        traceId: CALLER_TRACE,
        spanId: CALLER_SPAN,
        isRemote: true,
      })
      expect(server.links).toEqual([])
    })

    it('by default makes the caller’s traceparent a link of a new trace', async () => {
      const front = await serveApp(() => ({ status: 204, headers: [], body: null }))
      await send(front.url, { headers: { traceparent: CALLER_TRACEPARENT } })
      const server = only(await spansWhere(1), SpanKind.SERVER)
      expect(server.parentSpanContext).toBeUndefined()
      expect(server.spanContext().traceId).not.toBe(CALLER_TRACE)
      expect(server.links.map((link) => link.context)).toMatchObject([
        { traceId: CALLER_TRACE, spanId: CALLER_SPAN },
      ])
    })

    it('carries the trace from a front to a backend that trusts loopback', async () => {
      const backend = await serveApp(
        proxyMiddleware(() => ({ status: 200, headers: [], body: null }), {
          trustIps: ['127.0.0.1'],
        }),
        { trustTraceparent: ['loopback'] },
      )
      const front = await serveApp(proxyApp({ href: backend.url }))
      // The caller is untrusted at the front: the backend must see the front's trace, not it.
      await send(front.url, { path: '/x', headers: { traceparent: CALLER_TRACEPARENT } })
      const spans = await spansWhere(3)
      expect(spans).toHaveLength(3)
      const servers = spans.filter((span) => span.kind === SpanKind.SERVER)
      const frontServer = servers.find((span) => span.attributes['server.port'] === front.port)
      const backendServer = servers.find((span) => span.attributes['server.port'] === backend.port)
      const client = only(spans, SpanKind.CLIENT)
      if (frontServer === undefined || backendServer === undefined) {
        throw new Error('expected a server span on each side')
      }
      expect(isChildOf(client, frontServer)).toBe(true)
      expect(isChildOf(backendServer, client)).toBe(true)
      expect(backendServer.parentSpanContext?.isRemote).toBe(true)
      expect(backendServer.spanContext().traceId).not.toBe(CALLER_TRACE)
      expect(backendServer.links).toEqual([])
    })
  })
})
