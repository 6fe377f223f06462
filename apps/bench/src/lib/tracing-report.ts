// The tracing-off workload's table: its processes side by side, and what the installed
// `@opentelemetry/api` costs with no SDK registered, as ratios to the process without it.
import { fmt, tableHead } from './report.ts'
import type { TracingCostResult, TracingVariantResult } from './tracing-cost.ts'
import { TRACING_WORKLOAD } from './tracing-cost.ts'

/** API installed / API absent, for throughput and for CPU per request. */
export interface TracingCost {
  /** Ratio of the median throughputs; 1 is no cost, below 1 a cost. */
  rate: number
  /** The lowest and highest ratio of the two throughputs measured in the same round. */
  rateRange: [number, number]
  /** Ratio of the median CPU µs per request; 1 is no cost, above 1 a cost. */
  cpu: number
  /** The same throughput ratios between the two processes without the API: this machine's noise. */
  noise: number
  noiseRange: [number, number]
}

/**
 * The cost of the installed API: its process against the one without, by the medians and round by
 * round. NaN where a variant is missing.
 *
 * @param result - the workload's result
 * @returns the ratios
 */
export function tracingCost(result: TracingCostResult): TracingCost {
  const present = result.variants.find((v) => v.api === 'present' && v.control !== true)
  const absent = result.variants.find((v) => v.api === 'absent' && v.control !== true)
  const twin = result.variants.find((v) => v.control === true)
  return {
    rate: ratio(present?.summary.rate, absent?.summary.rate),
    rateRange: roundRange(present, absent),
    cpu: ratio(present?.summary.cpuMicrosPerRequest, absent?.summary.cpuMicrosPerRequest),
    noise: ratio(twin?.summary.rate, absent?.summary.rate),
    noiseRange: roundRange(twin, absent),
  }
}

// `a / b`, NaN when either is missing or `b` is 0.
function ratio(a: number | undefined, b: number | undefined): number {
  return a === undefined || b === undefined || b === 0 ? Number.NaN : a / b
}

// The lowest and highest ratio of the throughputs of `a` and `b` measured in the same round.
function roundRange(
  a: TracingVariantResult | undefined,
  b: TracingVariantResult | undefined,
): [number, number] {
  const rounds = (a?.samples ?? []).flatMap((sample, i) => {
    const other = b?.samples[i]
    return other === undefined || other.rate === 0 ? [] : [sample.rate / other.rate]
  })
  return rounds.length === 0 ? [Number.NaN, Number.NaN] : [Math.min(...rounds), Math.max(...rounds)]
}

/**
 * Renders the tracing-off workload as Markdown: throughput, latency and CPU of each process,
 * then the cost ratios. Empty when the workload did not run.
 *
 * @param result - the workload's result, or `undefined`
 * @returns Markdown, ending in a newline, or `''`
 */
export function renderTracingMarkdown(result: TracingCostResult | undefined): string {
  if (result === undefined || result.variants.length === 0) return ''
  const lines = [
    '',
    '### Tracing off: @opentelemetry/api installed, no SDK registered',
    '',
    'The `wsgiproxy-node` server in processes that differ only in whether ' +
      "`import('@opentelemetry/api')` succeeds (those without it are started with a `--import` " +
      'resolve hook that makes it fail, as an install without the package); same upstream and ' +
      'load, the order ' +
      'rotated every round. A second process without the API measures the noise floor: what two ' +
      'identical processes differ by on this machine.',
    '',
    ...tableHead([
      'process',
      `${TRACING_WORKLOAD.label} (req/s, median, min–max)`,
      'p50 / p99 (ms)',
      'proxy CPU per request (µs)',
    ]),
  ]
  for (const { label, summary: c } of result.variants) {
    const errors = c.errors + c.badStatus > 0 ? ` ⚠ ${c.errors + c.badStatus} errors` : ''
    lines.push(
      `| ${label} | ${fmt(c.rate)} (${fmt(c.rateMin)}–${fmt(c.rateMax)})${errors} | ` +
        `${fmt(c.p50Ms, 2)} / ${fmt(c.p99Ms, 2)} | ${fmt(c.cpuMicrosPerRequest)} |`,
    )
  }
  const cost = tracingCost(result)
  lines.push(
    '',
    `- throughput, API installed / API absent: ${fmt(cost.rate, 3)} ` +
      `(round by round ${fmt(cost.rateRange[0], 3)}–${fmt(cost.rateRange[1], 3)})`,
    `- proxy CPU per request, API installed / API absent: ${fmt(cost.cpu, 3)}`,
    `- noise floor, throughput of the two processes without the API: ${fmt(cost.noise, 3)} ` +
      `(round by round ${fmt(cost.noiseRange[0], 3)}–${fmt(cost.noiseRange[1], 3)})`,
  )
  return `${lines.join('\n')}\n`
}
