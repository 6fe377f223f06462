// `tracing` in the config: spans of the running command reach an OTLP/HTTP collector (a real
// HTTP server here, reading the JSON the SDK's exporter sends), the upstream gets the client
// span's traceparent, and every JSON log line of a request names the trace.
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { cleanup, startCli, startUpstream } from './test/run-cli.ts'
import { tempDir, writeConfig } from './test/workers.ts'

interface OtlpValue {
  stringValue?: string
  intValue?: string | number
}
interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes: Array<{ key: string; value: OtlpValue }>
  links?: Array<{ traceId: string; spanId: string }>
}
interface OtlpExport {
  resourceSpans: Array<{
    resource: { attributes: Array<{ key: string; value: OtlpValue }> }
    scopeSpans: Array<{ spans: OtlpSpan[] }>
  }>
}

// OTLP's SpanKind numbers (opentelemetry-proto trace.proto).
const SERVER = 2
const CLIENT = 3

const collectors: Server[] = []

afterEach(cleanup)
afterAll(async () => {
  await Promise.all(collectors.map((server) => new Promise((resolve) => server.close(resolve))))
})

// An OTLP/HTTP traces receiver: keeps every export it gets, answers 200 `{}`.
async function startCollector(): Promise<{ url: string; exports: OtlpExport[] }> {
  const exports: OtlpExport[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => (body += chunk))
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.headers['content-type'] === 'application/json') {
        exports.push(JSON.parse(body) as OtlpExport)
      }
      res.setHeader('content-type', 'application/json')
      res.end('{}')
    })
  })
  collectors.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`, exports }
}

function spansOf(exports: OtlpExport[]): Array<OtlpSpan & { service: string | undefined }> {
  return exports.flatMap((each) =>
    each.resourceSpans.flatMap((resource) => {
      const service = resource.resource.attributes.find((a) => a.key === 'service.name')?.value
        .stringValue
      return resource.scopeSpans.flatMap((scope) =>
        scope.spans.map((span) => ({ ...span, service })),
      )
    }),
  )
}

function attribute(span: OtlpSpan, key: string): string | number | undefined {
  const value = span.attributes.find((a) => a.key === key)?.value
  if (value === undefined) return undefined
  return value.stringValue ?? Number(value.intValue)
}

describe('wsgiproxy serve with tracing', () => {
  it('exports a server span and a client span per request, propagates the trace and logs its id', async () => {
    const collector = await startCollector()
    const upstream = await startUpstream()
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    writeConfig(file, {
      logFormat: 'json',
      tracing: { otlp: collector.url, serviceName: 'front-under-test' },
      routes: [{ path: '/', type: 'proxy', href: upstream }],
    })
    const cli = await startCli(['serve', '--config', file])
    const clientTrace = '0af7651916cd43dd8448eb211c80319c'
    const response = await fetch(`${cli.url}/hello?secret=1`, {
      headers: { traceparent: `00-${clientTrace}-b7ad6b7169203331-01`, tracestate: 'a=b' },
    })
    expect(response.status).toBe(200)
    const seen = (await response.json()) as { headers: Record<string, string> }
    // A client is not trusted by default: the upstream sees a new trace, never the client's.
    const sent = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(seen.headers.traceparent ?? '')
    expect(sent).not.toBeNull()
    const traceId = sent?.[1] ?? ''
    expect(traceId).not.toBe(clientTrace)
    expect(seen.headers.tracestate).toBeUndefined()

    const requestLine = await cli.waitFor(/\{[^\n]*"type":"request"[^\n]*\}/)
    expect(JSON.parse(requestLine[0])).toMatchObject({ path: '/hello', trace_id: traceId })

    // SIGTERM flushes the batch before the process ends.
    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    const spans = spansOf(collector.exports).filter((span) => span.traceId === traceId)
    const server = spans.find((span) => span.kind === SERVER)
    const client = spans.find((span) => span.kind === CLIENT)
    expect(server).toBeDefined()
    expect(client).toBeDefined()
    expect(server?.service).toBe('front-under-test')
    expect(server?.parentSpanId ?? '').toBe('')
    expect(server?.links?.[0]?.traceId).toBe(clientTrace)
    expect(attribute(server as OtlpSpan, 'url.path')).toBe('/hello')
    expect(attribute(server as OtlpSpan, 'http.response.status_code')).toBe(200)
    expect(client?.parentSpanId).toBe(server?.spanId)
    expect(client?.spanId).toBe(sent?.[2])
    expect(attribute(client as OtlpSpan, 'url.full')).toBe(`${upstream}/hello`)
  })

  it('continues the trace of a front in trustTraceparent', async () => {
    const collector = await startCollector()
    const upstream = await startUpstream()
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    writeConfig(file, {
      tracing: { otlp: collector.url, trustTraceparent: ['loopback'] },
      routes: [{ path: '/', type: 'proxy', href: upstream }],
    })
    const cli = await startCli(['serve', '--config', file])
    const frontTrace = '4bf92f3577b34da6a3ce929d0e0e4736'
    const response = await fetch(`${cli.url}/`, {
      headers: { traceparent: `00-${frontTrace}-00f067aa0ba902b7-01` },
    })
    const seen = (await response.json()) as { headers: Record<string, string> }
    expect(seen.headers.traceparent).toMatch(new RegExp(`^00-${frontTrace}-[0-9a-f]{16}-01$`))
    const line = await cli.waitFor(/ 200 \d+ms \S+ trace=([0-9a-f]{32})/)
    expect(line[1]).toBe(frontTrace)
    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    const server = spansOf(collector.exports).find((span) => span.kind === SERVER)
    expect(server?.traceId).toBe(frontTrace)
    expect(server?.parentSpanId).toBe('00f067aa0ba902b7')
    expect(server?.service).toBe('wsgiproxy')
  })

  it('takes the collector from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT in the other commands', async () => {
    const collector = await startCollector()
    const upstream = await startUpstream()
    const cli = await startCli(['proxy', upstream, '--listen', '127.0.0.1:0'], undefined, {
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: collector.url,
      OTEL_SERVICE_NAME: 'from-env',
    })
    expect((await fetch(`${cli.url}/env`)).status).toBe(200)
    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    const spans = spansOf(collector.exports)
    expect(spans.map((span) => [span.kind, span.service]).toSorted()).toEqual([
      [SERVER, 'from-env'],
      [CLIENT, 'from-env'],
    ])
  })

  it('stays off without tracing: the client traceparent passes and no trace id is logged', async () => {
    const upstream = await startUpstream()
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    writeConfig(file, { logFormat: 'json', routes: [{ path: '/', type: 'proxy', href: upstream }] })
    const cli = await startCli(['serve', '--config', file])
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
    const response = await fetch(`${cli.url}/`, { headers: { traceparent } })
    const seen = (await response.json()) as { headers: Record<string, string> }
    expect(seen.headers.traceparent).toBe(traceparent)
    const requestLine = await cli.waitFor(/\{[^\n]*"type":"request"[^\n]*\}/)
    expect(JSON.parse(requestLine[0])).not.toHaveProperty('trace_id')
  })
})
