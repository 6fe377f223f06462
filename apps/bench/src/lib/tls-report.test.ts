import { describe, expect, it } from 'vitest'
import { summarize, summarizeCells } from './report.ts'
import type { Cell, Sample, Workload } from './report.ts'
import { SERVERS } from './servers.ts'
import { WORKLOADS } from './run.ts'
import { plainTwin, renderTlsMarkdown, tlsCost } from './tls-report.ts'
import { TLS_SERVERS } from './tls-servers.ts'

function sample(rate: number, extra: Partial<Sample> = {}): Sample {
  return {
    rate,
    p50Ms: 1,
    p99Ms: 5,
    requests: 1000,
    errors: 0,
    badStatus: 0,
    cpuMicrosPerRequest: 40,
    peakRssMB: 80,
    ...extra,
  }
}

const cell = (server: string, workload: string, samples: Sample[]): Cell => ({
  server,
  workload,
  samples,
})

const HTTPS: Workload = {
  id: 'https-get-1k-32',
  label: 'HTTPS GET 1 KiB, 32 conns',
  kind: 'load',
  front: 'https',
}
const H2: Workload = { id: 'h2-get-1k-32x4', label: 'HTTP/2 GET 1 KiB', kind: 'load', front: 'h2' }
const SERVER_ROWS = [
  { id: 'https-wsgiproxy-node', label: 'ours over https', front: 'https' as const },
  { id: 'https-http-proxy', label: 'http-proxy over https', front: 'https' as const },
  { id: 'h2-wsgiproxy-node', label: 'ours over h2', front: 'h2' as const },
  { id: 'h2-fastify-http-proxy', label: 'fastify over h2', front: 'h2' as const },
]

describe('plainTwin', () => {
  it('names every HTTPS server and workload after a plain one the run also has', () => {
    const plainIds = new Set([...SERVERS.map((s) => s.id), ...WORKLOADS.map((w) => w.id)])
    const httpsIds = [
      ...TLS_SERVERS.filter((s) => s.front === 'https').map((s) => s.id),
      ...WORKLOADS.filter((w) => w.front === 'https').map((w) => w.id),
    ]
    expect(httpsIds.length).toBeGreaterThan(0)
    expect(httpsIds.filter((id) => !plainIds.has(plainTwin(id) ?? ''))).toEqual([])
    expect(plainTwin('h2-wsgiproxy-node')).toBeUndefined()
  })
})

describe('HTTP/2 summaries', () => {
  it('takes the medians of the mean and the max latency when every sample has them', () => {
    const summary = summarize([
      sample(1, { meanMs: 2, maxMs: 30 }),
      sample(1, { meanMs: 4, maxMs: 10 }),
      sample(1, { meanMs: 3, maxMs: 20 }),
    ])
    expect(summary).toMatchObject({ meanMs: 3, maxMs: 20 })
    expect(summarize([sample(1, { meanMs: 2, maxMs: 30 }), sample(1)]).meanMs).toBeUndefined()
  })
})

describe('renderTlsMarkdown', () => {
  it('prints the HTTPS tables with ratios to the peers and the cost of TLS against plain HTTP', () => {
    const summaries = summarizeCells([
      cell('https-wsgiproxy-node', HTTPS.id, [sample(120), sample(100), sample(110)]),
      cell('https-http-proxy', HTTPS.id, [sample(100)]),
      cell('wsgiproxy-node', 'get-1k-32', [sample(200)]),
      cell('http-proxy', 'get-1k-32', [sample(125)]),
    ])
    expect(tlsCost(summaries, 'https-wsgiproxy-node', HTTPS.id)).toBeCloseTo(0.55)
    const markdown = renderTlsMarkdown(SERVER_ROWS, [HTTPS, H2], summaries)
    expect(markdown).toContain('### HTTPS: Throughput (median, min–max)')
    expect(markdown).toContain('| ours over https | 110 (100–120) |')
    expect(markdown).toContain('| ours over https | 1.00 / 5.00, 40 µs |')
    expect(markdown).toContain('| http-proxy over https | 1.10 |')
    expect(markdown).toContain('### HTTPS: cost of TLS')
    expect(markdown).toContain('| ours over https | 0.55 |')
    expect(markdown).toContain('| http-proxy over https | 0.80 |')
    // No HTTP/2 cell: no HTTP/2 section.
    expect(markdown).not.toContain('### HTTP/2')
  })

  it('prints the HTTP/2 latency as mean / max and leaves out the cost of TLS without plain runs', () => {
    const summaries = summarizeCells([
      cell('h2-wsgiproxy-node', H2.id, [sample(300, { meanMs: 2.5, maxMs: 40 })]),
      cell('h2-fastify-http-proxy', H2.id, [sample(200, { meanMs: 3.5, maxMs: 60 })]),
      cell('https-wsgiproxy-node', HTTPS.id, [sample(100)]),
    ])
    const markdown = renderTlsMarkdown(SERVER_ROWS, [HTTPS, H2], summaries)
    expect(markdown).toContain(
      '### HTTP/2: Latency mean / max (ms, medians; the load tool has no percentiles)',
    )
    expect(markdown).toContain('| ours over h2 | 2.50 / 40.00, 40 µs |')
    expect(markdown).toContain('| fastify over h2 | 1.50 |')
    expect(markdown).not.toContain('cost of TLS')
  })

  it('prints nothing when no HTTPS or HTTP/2 workload was measured', () => {
    expect(renderTlsMarkdown(SERVER_ROWS, [HTTPS, H2], {})).toBe('')
  })
})
