import { describe, expect, it } from 'vitest'
import { summarizeCells } from './report.ts'
import type { Cell, Sample, Workload } from './report.ts'
import { renderSigningMarkdown } from './signing-report.ts'

function sample(rate: number, p99Ms: number): Sample {
  return {
    rate,
    p50Ms: 1,
    p99Ms,
    requests: 1000,
    errors: 0,
    badStatus: 0,
    cpuMicrosPerRequest: 120,
    peakRssMB: 90,
  }
}

const workloads: Workload[] = [
  { id: 'signing-get-1k-32', label: 'signed GET 1 KiB, 32 conns', kind: 'load', signing: true },
]
const servers = [
  { id: 'signing-memory', label: 'memory' },
  { id: 'signing-redis', label: 'redis' },
]
const cell = (server: string, samples: Sample[]): Cell => ({
  server,
  workload: 'signing-get-1k-32',
  samples,
})

describe('renderSigningMarkdown', () => {
  it('prints each replay store with its throughput against the in-process one', () => {
    const summaries = summarizeCells([
      cell('signing-memory', [sample(4000, 10), sample(5000, 12)]),
      cell('signing-redis', [sample(3600, 14)]),
    ])
    const markdown = renderSigningMarkdown(servers, workloads, summaries)
    expect(markdown).toContain('### Signing: replay store, signed GET 1 KiB, 32 conns (medians)')
    expect(markdown).toContain('| memory | 4500 (4000–5000) | 1.00 / 11.00 | 120 | 1.00 |')
    expect(markdown).toContain('| redis | 3600 (3600–3600) | 1.00 / 14.00 | 120 | 0.80 |')
  })

  it('prints nothing when the signing workload was not measured', () => {
    expect(renderSigningMarkdown(servers, workloads, {})).toBe('')
  })
})
