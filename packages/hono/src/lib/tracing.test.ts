// Tracing through the Hono adapters: with an OpenTelemetry SDK registered (an in-memory
// exporter here), `proxy()` makes a SERVER span per request and a CLIENT span per upstream try,
// and `trustTraceparent` decides whether the caller's traceparent is the parent or a link.
import { context, propagation, SpanKind, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { Hono } from 'hono'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { closeAll, startUpstream } from '@wsgiproxy/test-kit/servers'
import { proxy } from './proxy.ts'

const exporter = new InMemorySpanExporter()

beforeAll(() => {
  trace.setGlobalTracerProvider(
    new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
  )
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
})

afterAll(() => {
  trace.disable()
  context.disable()
  propagation.disable()
})

afterEach(async () => {
  exporter.reset()
  await closeAll()
})

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CALLER = `00-${CALLER_TRACE}-00f067aa0ba902b7-01`

// A request from `address` as @hono/node-server's env says it.
function from(address: string): object {
  return { incoming: { socket: { remoteAddress: address } } }
}

async function traced(trustTraceparent?: string[]): Promise<{ sent: string | undefined }> {
  let sent: string | undefined
  const upstream = await startUpstream((req, res) => {
    sent = req.headers.traceparent as string | undefined
    res.end('ok')
  })
  const app = new Hono().all(
    '/api/*',
    proxy({
      href: upstream.origin,
      ...(trustTraceparent === undefined ? {} : { trustTraceparent }),
    }),
  )
  const response = await app.request(
    '/api/x',
    { headers: { traceparent: CALLER } },
    from('10.1.2.3'),
  )
  expect(await response.text()).toBe('ok')
  return { sent }
}

describe('proxy() with an OpenTelemetry SDK', () => {
  it('makes a server span and a client span, and links an untrusted caller', async () => {
    const { sent } = await traced()
    const spans = exporter.getFinishedSpans()
    const server = spans.find((span) => span.kind === SpanKind.SERVER)
    const client = spans.find((span) => span.kind === SpanKind.CLIENT)
    expect(server?.attributes).toMatchObject({
      'http.request.method': 'GET',
      'url.path': '/api/x',
      'client.address': '10.1.2.3',
      'http.response.status_code': 200,
    })
    expect(server?.spanContext().traceId).not.toBe(CALLER_TRACE)
    expect(server?.links.map((link) => link.context.traceId)).toEqual([CALLER_TRACE])
    expect(client?.parentSpanContext?.spanId).toBe(server?.spanContext().spanId)
    expect(sent).toBe(`00-${server?.spanContext().traceId}-${client?.spanContext().spanId}-01`)
  })

  it('continues the trace of a caller in trustTraceparent', async () => {
    const { sent } = await traced(['10.0.0.0/8'])
    const server = exporter.getFinishedSpans().find((span) => span.kind === SpanKind.SERVER)
    expect(server?.spanContext().traceId).toBe(CALLER_TRACE)
    expect(server?.parentSpanContext?.spanId).toBe('00f067aa0ba902b7')
    expect(server?.links).toEqual([])
    expect(sent?.startsWith(`00-${CALLER_TRACE}-`)).toBe(true)
  })
})
