import type { IncomingHttpHeaders } from 'node:http'
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  CompositePropagator,
  W3CBaggagePropagator,
  W3CTraceContextPropagator,
} from '@opentelemetry/core'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { ToFetchHandlerOptions } from '../../index.ts'
import { createProxyApp, exactProxy } from '../../index.ts'
import { traceIdOf } from './tracing.ts'
import type { Running } from '@wsgiproxy/test-kit/servers'
import {
  closeAll,
  freePort,
  send,
  startFetchFront,
  startUpstream,
} from '@wsgiproxy/test-kit/servers'

// The caller's own trace: W3C Trace Context (https://www.w3.org/TR/trace-context/).
const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER_SPAN = '00f067aa0ba902b7'
const CALLER_HEADERS = {
  traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01`,
  tracestate: 'caller=secret',
}

/** An SDK that keeps finished spans in memory: registered by `register()`, off by `unregister()`. */
function createSdk(): {
  exporter: InMemorySpanExporter
  register(): void
  unregister(): void
} {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  return {
    exporter,
    register: () => {
      trace.setGlobalTracerProvider(provider)
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
      // As the Node SDK registers by default: trace context and baggage.
      propagation.setGlobalPropagator(
        new CompositePropagator({
          propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
        }),
      )
    },
    unregister: () => {
      trace.disable()
      context.disable()
      propagation.disable()
    },
  }
}

/** An upstream that records the headers of each request and answers `/status/<n>` with n. */
async function recordingUpstream(): Promise<{
  upstream: Running
  received: IncomingHttpHeaders[]
}> {
  const received: IncomingHttpHeaders[] = []
  const upstream = await startUpstream((req, res) => {
    received.push(req.headers)
    const status = /^\/base\/status\/(\d{3})$/.exec(req.url ?? '')?.[1]
    res.writeHead(Number(status ?? 200), { 'content-type': 'text/plain' }).end('upstream body')
  })
  return { upstream, received }
}

/** Front (toFetchHandler on @hono/node-server) → createProxyApp → a recording upstream. */
async function startProxy(
  options: ToFetchHandlerOptions = {},
): Promise<{ front: Running; upstream: Running; received: IncomingHttpHeaders[] }> {
  const { upstream, received } = await recordingUpstream()
  const app = createProxyApp({ href: `${upstream.origin}/base`, onError: () => {} })
  const front = await startFetchFront(app, { onError: () => {}, ...options })
  return { front, upstream, received }
}

/** Polls until `count` spans have ended (the last ends with the response body). */
async function finishedSpans(
  exporter: InMemorySpanExporter,
  count: number,
): Promise<ReadableSpan[]> {
  const deadline = Date.now() + 3_000
  while (exporter.getFinishedSpans().length < count) {
    if (Date.now() > deadline) {
      throw new Error(`expected ${count} spans, got ${exporter.getFinishedSpans().length}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return exporter.getFinishedSpans()
}

function only(spans: readonly ReadableSpan[], kind: SpanKind): ReadableSpan {
  const found = spans.filter((span) => span.kind === kind)
  expect(found, `spans of kind ${SpanKind[kind]}`).toHaveLength(1)
  return found[0] as ReadableSpan
}

/** The `traceparent` a span sends on: version 00, sampled. */
function traceparentOf(span: ReadableSpan): string {
  const { traceId, spanId } = span.spanContext()
  return `00-${traceId}-${spanId}-01`
}

afterEach(closeAll)

// First in the file: nothing has registered an SDK yet.
describe('tracing with no SDK registered', () => {
  it('passes the caller’s traceparent and tracestate to the upstream unchanged', async () => {
    const { front, received } = await startProxy({ trustTraceparent: ['loopback'] })
    const response = await send(front.origin, { path: '/x', headers: CALLER_HEADERS })
    expect(response.status).toBe(200)
    expect(received).toHaveLength(1)
    expect(received[0]).toMatchObject(CALLER_HEADERS)
  })
})

describe('tracing through toFetchHandler and createProxyApp', () => {
  const sdk = createSdk()
  beforeAll(sdk.register)
  afterAll(sdk.unregister)
  beforeEach(() => sdk.exporter.reset())

  it('records a server span and its child client span, with the HTTP attributes', async () => {
    const { front, upstream, received } = await startProxy()
    const response = await send(front.origin, {
      path: '/a/b?token=secret',
      headers: { 'user-agent': 'tracing-test/1' },
    })
    expect(response.status).toBe(200)
    const spans = await finishedSpans(sdk.exporter, 2)
    expect(spans).toHaveLength(2)
    const server = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)

    expect(server.parentSpanContext).toBeUndefined()
    expect(server.links).toEqual([])
    expect(client.spanContext().traceId).toBe(server.spanContext().traceId)
    expect(client.parentSpanContext?.spanId).toBe(server.spanContext().spanId)

    expect(server.name).toBe('GET')
    expect(server.attributes).toEqual({
      'http.request.method': 'GET',
      'url.scheme': 'http',
      'url.path': '/a/b',
      'network.protocol.version': '1.1',
      'server.address': '127.0.0.1',
      'server.port': front.port,
      'client.address': '127.0.0.1',
      'user_agent.original': 'tracing-test/1',
      'http.response.status_code': 200,
    })
    expect(server.status.code).toBe(SpanStatusCode.UNSET)

    expect(client.name).toBe('GET')
    expect(client.attributes).toEqual({
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': upstream.port,
      'url.full': `${upstream.origin}/base/a/b`,
      'http.response.status_code': 200,
    })
    expect(client.status.code).toBe(SpanStatusCode.UNSET)
    // The query may carry secrets: no attribute holds it.
    expect(JSON.stringify(spans.map((span) => span.attributes))).not.toContain('secret')

    expect(received).toHaveLength(1)
    expect(received[0]?.traceparent).toBe(traceparentOf(client))
  })

  it('records a method the conventions do not name as _OTHER, and at most 512 characters of a user agent', async () => {
    const { front } = await startProxy()
    const agent = 'a'.repeat(4_000)
    const response = await send(front.origin, {
      method: 'PROPFIND',
      headers: { 'user-agent': agent },
    })
    expect(response.status).toBe(200)
    const spans = await finishedSpans(sdk.exporter, 2)
    for (const span of spans) {
      expect(span.name).toBe('HTTP')
      expect(span.attributes).toMatchObject({
        'http.request.method': '_OTHER',
        'http.request.method_original': 'PROPFIND',
      })
    }
    expect(only(spans, SpanKind.SERVER).attributes['user_agent.original']).toBe(agent.slice(0, 512))
  })

  it('sends the upstream no baggage an untrusted caller sent, and a trusted caller’s on', async () => {
    const untrusted = await startProxy()
    await send(untrusted.front.origin, { headers: { ...CALLER_HEADERS, baggage: 'user=attacker' } })
    expect(untrusted.received).toHaveLength(1)
    expect(untrusted.received[0]?.baggage).toBeUndefined()

    const trusted = await startProxy({ trustTraceparent: ['loopback'] })
    await send(trusted.front.origin, { headers: { ...CALLER_HEADERS, baggage: 'user=front' } })
    expect(trusted.received).toHaveLength(1)
    expect(trusted.received[0]?.baggage).toBe('user=front')
    expect(trusted.received[0]?.traceparent).toMatch(new RegExp(`^00-${CALLER_TRACE}-`))
  })

  it('gives work outside a request the trace id of a span in progress only, not of one that ended', () => {
    const span = trace.getTracer('test').startSpan('request')
    context.with(trace.setSpan(context.active(), span), () => {
      expect(traceIdOf()).toBe(span.spanContext().traceId)
      // A backend a request started still runs in that request's context after it is over.
      span.end()
      expect(traceIdOf()).toBeUndefined()
    })
  })

  it('fails both spans with error.type when the upstream answers 5xx', async () => {
    const { front } = await startProxy()
    expect((await send(front.origin, { path: '/status/503' })).status).toBe(503)
    const spans = await finishedSpans(sdk.exporter, 2)
    for (const span of [only(spans, SpanKind.SERVER), only(spans, SpanKind.CLIENT)]) {
      expect(span.attributes).toMatchObject({
        'http.response.status_code': 503,
        'error.type': '503',
      })
      expect(span.status.code).toBe(SpanStatusCode.ERROR)
    }
  })

  it('fails the client span on 4xx but not the server span', async () => {
    const { front } = await startProxy()
    expect((await send(front.origin, { path: '/status/404' })).status).toBe(404)
    const spans = await finishedSpans(sdk.exporter, 2)
    const server = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)
    expect(server.attributes['http.response.status_code']).toBe(404)
    expect(server.attributes['error.type']).toBeUndefined()
    expect(server.status.code).toBe(SpanStatusCode.UNSET)
    expect(client.attributes).toMatchObject({ 'error.type': '404' })
    expect(client.status.code).toBe(SpanStatusCode.ERROR)
  })

  it('names the failure of a try that reached no upstream in error.type', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`
    const app = createProxyApp({ href: dead, retries: false, onError: () => {} })
    const front = await startFetchFront(app, { onError: () => {} })
    expect((await send(front.origin, { path: '/x' })).status).toBe(502)
    const spans = await finishedSpans(sdk.exporter, 2)
    const server = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)
    expect(client.attributes).toMatchObject({
      'url.full': `${dead}/x`,
      'error.type': 'UPSTREAM_UNREACHABLE',
    })
    expect(client.attributes['http.response.status_code']).toBeUndefined()
    expect(client.status.code).toBe(SpanStatusCode.ERROR)
    expect(client.parentSpanContext?.spanId).toBe(server.spanContext().spanId)
    expect(server.attributes).toMatchObject({
      'http.response.status_code': 502,
      'error.type': '502',
    })
    expect(server.status.code).toBe(SpanStatusCode.ERROR)
  })

  it('starts a new trace linked to an untrusted caller’s traceparent, and sends only ours', async () => {
    const { front, received } = await startProxy()
    await send(front.origin, { path: '/x', headers: CALLER_HEADERS })
    const spans = await finishedSpans(sdk.exporter, 2)
    const server = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)
    expect(server.spanContext().traceId).not.toBe(CALLER_TRACE)
    expect(server.parentSpanContext).toBeUndefined()
    expect(server.links).toHaveLength(1)
    expect(server.links[0]?.context).toMatchObject({
      traceId: CALLER_TRACE,
      spanId: CALLER_SPAN,
      isRemote: true,
    })
    expect(server.links[0]?.attributes).toEqual({ 'wsgiproxy.link': 'untrusted-parent' })
    expect(received).toHaveLength(1)
    expect(received[0]?.traceparent).toBe(traceparentOf(client))
    // The caller's tracestate belongs to the trace we did not join.
    expect(received[0]?.tracestate).toBeUndefined()
  })

  it('links the traceparent of a caller outside the trustTraceparent list', async () => {
    const { front } = await startProxy({ trustTraceparent: ['10.0.0.0/8'] })
    await send(front.origin, { path: '/x', headers: CALLER_HEADERS })
    const server = only(await finishedSpans(sdk.exporter, 2), SpanKind.SERVER)
    expect(server.spanContext().traceId).not.toBe(CALLER_TRACE)
    expect(server.links.map((link) => link.context.spanId)).toEqual([CALLER_SPAN])
  })

  it('continues a trusted caller’s trace (trustTraceparent), sending our span as the parent', async () => {
    const { front, received } = await startProxy({ trustTraceparent: ['loopback'] })
    await send(front.origin, { path: '/x', headers: CALLER_HEADERS })
    const spans = await finishedSpans(sdk.exporter, 2)
    const server = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)
    expect(server.spanContext().traceId).toBe(CALLER_TRACE)
    expect(server.parentSpanContext).toMatchObject({
      traceId: CALLER_TRACE,
      spanId: CALLER_SPAN,
      isRemote: true,
    })
    expect(server.links).toEqual([])
    expect(client.spanContext().traceId).toBe(CALLER_TRACE)
    expect(received).toHaveLength(1)
    expect(received[0]?.traceparent).toBe(traceparentOf(client))
    expect(received[0]?.traceparent).not.toContain(CALLER_SPAN)
    // The trace's tracestate goes on with the trace, once.
    expect(received[0]?.tracestate).toBe(CALLER_HEADERS.tracestate)
  })

  it('records exactProxy’s try as a client span of the request', async () => {
    const { upstream, received } = await recordingUpstream()
    const proxy = exactProxy({ allow: ['127.0.0.1'], onError: () => {} })
    const front = await startFetchFront(
      (environ) =>
        proxy({
          ...environ,
          SERVER_NAME: '127.0.0.1',
          SERVER_PORT: String(upstream.port),
          HTTP_HOST: `127.0.0.1:${upstream.port}`,
        }),
      { onError: () => {} },
    )
    await send(front.origin, { path: '/base/y?q=1', headers: CALLER_HEADERS })
    const spans = await finishedSpans(sdk.exporter, 2)
    const server = only(spans, SpanKind.SERVER)
    const client = only(spans, SpanKind.CLIENT)
    expect(client.parentSpanContext?.spanId).toBe(server.spanContext().spanId)
    expect(client.attributes).toMatchObject({
      'url.full': `${upstream.origin}/base/y`,
      'server.port': upstream.port,
      'http.response.status_code': 200,
    })
    expect(received[0]?.traceparent).toBe(traceparentOf(client))
    expect(received[0]?.tracestate).toBeUndefined()
  })
})

describe('tracing after the SDK is disabled', () => {
  const first = createSdk()
  const second = createSdk()
  afterAll(second.unregister)

  it('records nothing and passes the caller’s trace fields on unchanged', async () => {
    first.register()
    first.unregister()
    const { front, received } = await startProxy()
    await send(front.origin, { path: '/off', headers: CALLER_HEADERS })
    expect(received[0]).toMatchObject(CALLER_HEADERS)
    // A request after registering again: its spans end after any the first request could have
    // left, so once they are in, the first request has recorded nothing.
    first.register()
    await send(front.origin, { path: '/on' })
    const spans = await finishedSpans(first.exporter, 2)
    expect(spans).toHaveLength(2)
    expect(only(spans, SpanKind.SERVER).attributes['url.path']).toBe('/on')
    expect(received[1]?.traceparent).toBe(traceparentOf(only(spans, SpanKind.CLIENT)))
    first.unregister()
  })

  it('sends spans to a provider registered after another was disabled', async () => {
    first.exporter.reset()
    second.register()
    const { front } = await startProxy()
    await send(front.origin, { path: '/second' })
    const spans = await finishedSpans(second.exporter, 2)
    expect(only(spans, SpanKind.SERVER).attributes['url.path']).toBe('/second')
    expect(first.exporter.getFinishedSpans()).toEqual([])
  })
})
