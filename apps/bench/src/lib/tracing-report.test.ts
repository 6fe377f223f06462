import { describe, expect, it } from 'vitest'
import { summarize } from './report.ts'
import type { Sample } from './report.ts'
import { TRACING_VARIANTS, TRACING_WORKLOAD } from './tracing-cost.ts'
import type { TracingCostResult, TracingVariant } from './tracing-cost.ts'
import { renderTracingMarkdown, tracingCost } from './tracing-report.ts'

function sample(rate: number, cpuMicrosPerRequest: number, extra: Partial<Sample> = {}): Sample {
  return {
    rate,
    p50Ms: 1,
    p99Ms: 5,
    requests: 1000,
    errors: 0,
    badStatus: 0,
    cpuMicrosPerRequest,
    peakRssMB: 80,
    ...extra,
  }
}

/** A result whose processes (in TRACING_VARIANTS order) measured these samples, round by round. */
function result(...perProcess: Sample[][]): TracingCostResult {
  return {
    workload: TRACING_WORKLOAD.id,
    variants: perProcess.map((samples, i) => ({
      ...(TRACING_VARIANTS[i] as TracingVariant),
      samples,
      summary: summarize(samples),
    })),
  }
}

describe('tracingCost', () => {
  it('divides the installed API’s medians by the baseline’s, and each round’s throughputs', () => {
    const cost = tracingCost(
      result(
        [sample(900, 110), sample(1000, 100), sample(950, 105)],
        [sample(1000, 100), sample(1000, 100), sample(1000, 100)],
        [sample(1100, 100), sample(980, 100), sample(1000, 100)],
      ),
    )
    expect(cost.rate).toBeCloseTo(0.95)
    expect(cost.rateRange).toEqual([0.9, 1])
    expect(cost.cpu).toBeCloseTo(1.05)
    expect(cost.noise).toBeCloseTo(1)
    expect(cost.noiseRange).toEqual([0.98, 1.1])
  })

  it('is NaN for what a missing process would have measured', () => {
    const cost = tracingCost(result([sample(1000, 100)], [sample(1000, 100)]))
    expect(cost.rate).toBe(1)
    expect(cost.noise).toBeNaN()
    expect(cost.noiseRange).toEqual([Number.NaN, Number.NaN])
    expect(tracingCost(result([sample(1000, 100)])).rate).toBeNaN()
  })
})

describe('renderTracingMarkdown', () => {
  it('is empty when the workload did not run', () => {
    expect(renderTracingMarkdown(undefined)).toBe('')
  })

  it('shows every process, their errors and the cost ratios', () => {
    const markdown = renderTracingMarkdown(
      result([sample(990, 101, { errors: 2 })], [sample(1000, 100)], [sample(1010, 100)]),
    )
    expect(markdown).toContain('### Tracing off: @opentelemetry/api installed, no SDK registered')
    for (const variant of TRACING_VARIANTS) expect(markdown).toContain(`| ${variant.label} |`)
    expect(markdown).toContain('| 990 (990–990) ⚠ 2 errors | 1.00 / 5.00 | 101 |')
    expect(markdown).toContain(
      '- throughput, API installed / API absent: 0.990 (round by round 0.990–0.990)',
    )
    expect(markdown).toContain('- proxy CPU per request, API installed / API absent: 1.010')
    expect(markdown).toContain(
      '- noise floor, throughput of the two processes without the API: 1.010 (round by round 1.010–1.010)',
    )
  })
})
