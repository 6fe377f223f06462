import { describe, expect, it } from 'vitest'
import { formatSpread, renderPoolMarkdown } from './pool-report.ts'
import { summarize, summarizeCells } from './report.ts'
import type { Cell, Sample, Workload } from './report.ts'

function sample(rate: number, spread?: number[]): Sample {
  return {
    rate,
    p50Ms: 1,
    p99Ms: 5,
    requests: 1000,
    errors: 0,
    badStatus: 0,
    cpuMicrosPerRequest: 40,
    peakRssMB: 80,
    ...(spread === undefined ? {} : { spread }),
  }
}

const cell = (server: string, samples: Sample[]): Cell => ({
  server,
  workload: 'pool-get-1k-32',
  samples,
})

describe('pool summaries', () => {
  it('sums the requests per upstream over the samples, and has none unless every sample counted', () => {
    expect(summarize([sample(1, [10, 20, 30]), sample(1, [1, 2, 3])]).spread).toEqual([11, 22, 33])
    expect(summarize([sample(1, [10, 20, 30]), sample(1)]).spread).toBeUndefined()
  })

  it('prints the requests per upstream with their shares', () => {
    expect(formatSpread([500, 300, 200])).toBe('500 / 300 / 200 (50.0 / 30.0 / 20.0 %)')
    expect(formatSpread([0, 0, 0])).toBe('0 / 0 / 0 (– / – / – %)')
  })
})

describe('renderPoolMarkdown', () => {
  const workloads: Workload[] = [
    { id: 'pool-get-1k-32', label: 'pool of 3, GET 1 KiB, 32 conns', kind: 'load', pool: true },
  ]

  it('prints each pool server against the single target and the http-proxy round robin', () => {
    const summaries = summarizeCells([
      cell('pool-wsgiproxy-node', [sample(90, [30, 30, 30]), sample(90, [40, 20, 30])]),
      cell('pool-wsgiproxy-node-single', [sample(100, [60, 0, 0])]),
      cell('pool-http-proxy-rr', [sample(75, [20, 20, 20])]),
    ])
    const markdown = renderPoolMarkdown(
      [
        { id: 'pool-wsgiproxy-node', label: 'pool' },
        { id: 'pool-wsgiproxy-node-single', label: 'single' },
        { id: 'pool-http-proxy-rr', label: 'http-proxy rr' },
      ],
      workloads,
      summaries,
    )
    expect(markdown).toContain('### pool of 3, GET 1 KiB, 32 conns')
    expect(markdown).toContain(
      '| pool | 90 (90–90) | 1.00 / 5.00 | 40 | 0.90 | 1.20 | 70 / 50 / 60 (38.9 / 27.8 / 33.3 %) |',
    )
    expect(markdown).toContain(
      '| single | 100 (100–100) | 1.00 / 5.00 | 40 | 1.00 | 1.33 | 60 / 0 / 0',
    )
  })

  it('prints nothing when no pool workload was measured', () => {
    expect(renderPoolMarkdown([{ id: 'pool-wsgiproxy-node', label: 'pool' }], workloads, {})).toBe(
      '',
    )
  })
})
