import { describe, expect, it } from 'vitest'
import { parseWrkOutput } from './load.ts'
import { checkTargets, median, renderMarkdown, summarize, summarizeCells } from './report.ts'
import type { Cell, Sample, Workload } from './report.ts'
import { rotate } from './run.ts'

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

const cell = (
  server: string,
  workload: string,
  rates: number[],
  extra: Partial<Sample> = {},
): Cell => ({
  server,
  workload,
  samples: rates.map((r) => sample(r, extra)),
})

describe('median and summaries', () => {
  it('takes the middle value, or the mean of the middle two, and NaN for nothing', () => {
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(median([])).toBeNaN()
  })

  it('summarizes rates by median and range, memory by the highest peak, errors by sum', () => {
    const summary = summarize([
      sample(100, { peakRssMB: 90, errors: 1 }),
      sample(300, { p99Ms: 9, badStatus: 2 }),
      sample(200, { peakRssMB: 70 }),
    ])
    expect(summary).toMatchObject({ rate: 200, rateMin: 100, rateMax: 300, p99Ms: 5 })
    expect(summary.peakRssMB).toBe(90)
    expect(summary.errors + summary.badStatus).toBe(3)
  })
})

describe('targets', () => {
  it('checks each target of the issue against its bound, in both directions', () => {
    const summaries = summarizeCells([
      cell('wsgiproxy-node', 'get-1k-32', [130, 125, 135]),
      cell('http-proxy', 'get-1k-32', [100, 100, 100]),
      cell('wsgiproxy-node', 'get-1k-128', [120]),
      cell('http-proxy', 'get-1k-128', [100]),
      { ...cell('wsgiproxy-node', 'download', [95], { peakRssMB: 130 }), restRssMB: 58 },
      cell('http-proxy', 'download', [100], { peakRssMB: 110 }),
      cell('wsgiproxy-fetch', 'get-1k-32', [260]),
      cell('hono-proxy', 'get-1k-32', [100]),
      cell('wsgiproxy-fetch', 'get-1k-128', [240], { peakRssMB: 151 }),
      cell('hono-proxy', 'get-1k-128', [100]),
      cell('wsgiproxy-fetch', 'download', [100]),
      cell('hono-proxy', 'download', [100]),
    ])
    const byName = Object.fromEntries(checkTargets(summaries).map((t) => [t.description, t]))
    expect(byName['node path / http-proxy, get-1k-32']).toMatchObject({ value: 1.3, met: true })
    expect(byName['node path / http-proxy, get-1k-128']).toMatchObject({ value: 1.2, met: false })
    expect(byName['node path peak RSS, download (MB, http-proxy + 15)']).toMatchObject({
      value: 130,
      bound: 125,
      met: false,
    })
    expect(byName['node path RSS at rest (MB)']).toMatchObject({ value: 58, met: true })
    expect(byName['node path p99 / http-proxy p99, get-1k-32']).toMatchObject({
      value: 1,
      met: true,
    })
    expect(byName['fetch path / hono-proxy, get-1k-32']).toMatchObject({ value: 2.6, met: true })
    expect(byName['fetch path / hono-proxy, get-1k-128']).toMatchObject({ value: 2.4, met: false })
    expect(byName['fetch path / hono-proxy, download MiB/s']).toMatchObject({ value: 1, met: true })
    expect(byName['fetch path peak RSS, get-1k-128 (MB)']).toMatchObject({ value: 151, met: false })
    // Nothing measured, nothing claimed.
    expect(byName['node path / http-proxy, echo-64k']).toBeUndefined()
  })
})

describe('renderMarkdown', () => {
  it('prints one row per server with the median and range, ratios and the targets', () => {
    const workloads: Workload[] = [{ id: 'get-1k-32', label: 'GET 1 KiB, 32 conns', kind: 'load' }]
    const summaries = summarizeCells([
      { ...cell('wsgiproxy-node', 'get-1k-32', [150, 140, 160]), restRssMB: 61 },
      cell('http-proxy', 'get-1k-32', [100, 90, 110], { errors: 2 }),
    ])
    const markdown = renderMarkdown({
      title: 'run',
      context: ['machine: test'],
      servers: [
        { id: 'wsgiproxy-node', label: 'ours' },
        { id: 'http-proxy', label: 'http-proxy' },
      ],
      workloads,
      summaries,
      targets: checkTargets(summaries),
    })
    expect(markdown).toContain('| ours | 150 (140–160) |')
    expect(markdown).toContain('| ours | 61 | 80 |')
    expect(markdown).toContain('| http-proxy | 100 (90–110) ⚠ 6 errors |')
    expect(markdown).toContain('| http-proxy | 1.50 |')
    expect(markdown).toContain('- met: node path / http-proxy, get-1k-32 = 1.50 (≥ 1.25)')
  })
})

describe('parseWrkOutput', () => {
  it('reads the JSON line of the wrk script, latency in ms and errors summed', () => {
    const output =
      'Running 5s test @ http://127.0.0.1:1/1k\n  1 threads and 32 connections\n' +
      'WRK_JSON {"requests":50000,"duration_us":5000000,"connect":0,"read":2,"write":0,"timeout":1,"status":3,"p50_us":1250,"p99_us":4000}\n'
    expect(parseWrkOutput(output)).toEqual({
      requests: 50000,
      seconds: 5,
      requestsPerSecond: 10000,
      p50Ms: 1.25,
      p99Ms: 4,
      errors: 3,
      badStatus: 3,
    })
  })

  it('says so when wrk printed no result line', () => {
    expect(() => parseWrkOutput('wrk: invalid URL')).toThrow(/no result line/)
  })
})

describe('rotate', () => {
  it('starts each round with another server', () => {
    expect(rotate(['a', 'b', 'c'], 1)).toEqual(['b', 'c', 'a'])
    expect(rotate(['a', 'b', 'c'], 5)).toEqual(['c', 'a', 'b'])
    expect(rotate([], 2)).toEqual([])
  })
})
