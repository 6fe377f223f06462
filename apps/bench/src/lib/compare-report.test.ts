import { describe, expect, it } from 'vitest'
import { compareRows, renderCompareMarkdown } from './compare-report.ts'
import { summarizeCells } from './report.ts'
import type { Cell, Sample } from './report.ts'

function sample(rate: number, p99Ms: number, cpu: number, rss: number): Sample {
  return {
    rate,
    p50Ms: 1,
    p99Ms,
    requests: 1000,
    errors: 0,
    badStatus: 0,
    cpuMicrosPerRequest: cpu,
    peakRssMB: rss,
  }
}

const cells: Cell[] = [
  {
    server: 'wsgiproxy-node@A',
    workload: 'get-1k-32',
    samples: [sample(1000, 10, 50, 100), sample(2000, 10, 50, 100)],
  },
  {
    server: 'wsgiproxy-node@B',
    workload: 'get-1k-32',
    samples: [sample(1200, 5, 40, 90), sample(2000, 5, 40, 110)],
  },
  // Measured by A only: no row.
  { server: 'wsgiproxy-fetch@A', workload: 'get-1k-32', samples: [sample(500, 1, 1, 1)] },
]

describe('bench:compare', () => {
  const rounds = Object.fromEntries(
    cells.map((cell) => [cell.server, { [cell.workload]: cell.samples.map((s) => s.rate) }]),
  )
  const rows = compareRows(
    summarizeCells(cells),
    rounds,
    ['wsgiproxy-node', 'wsgiproxy-fetch'],
    ['get-1k-32'],
    ['A', 'B'],
  )

  it('gives B / A of the medians, round by round, and the peak RSS difference', () => {
    expect(rows).toEqual([
      {
        server: 'wsgiproxy-node',
        workload: 'get-1k-32',
        rate: 1600 / 1500,
        rateRange: [1, 1.2],
        p99: 0.5,
        cpu: 0.8,
        rssDeltaMB: 10,
      },
    ])
  })

  it('renders them under both names', () => {
    const markdown = renderCompareMarkdown(
      rows,
      ['HEAD~1 (abc1234)', '. (def5678)'],
      [{ id: 'get-1k-32', label: 'GET 1 KiB, 32 conns' }],
    )
    expect(markdown).toContain('### . (def5678) / HEAD~1 (abc1234)')
    expect(markdown).toContain(
      '| wsgiproxy-node | GET 1 KiB, 32 conns | 1.067 | 1.000–1.200 | 0.500 | 0.800 | +10 |',
    )
    expect(renderCompareMarkdown([], ['a', 'b'], [])).toBe('')
  })
})
