// Pure summaries of a benchmark run: medians, ratios to the peers, the targets and the
// Markdown tables printed at the end.
import type { Front } from './servers.ts'

/** A workload of the run. */
export interface Workload {
  id: string
  label: string
  /** `load`: requests/s at fixed concurrency; `download`: one large body, MiB/s. */
  kind: 'load' | 'download'
  /** Through the pool servers, over three upstreams (`pool-report.ts`). Default `false`. */
  pool?: boolean
  /** How the load speaks to the proxy (`tls-servers.ts`). Default `http`. */
  front?: Front
  /** Signed requests through a verifying backend (`signing-servers.ts`). Default `false`. */
  signing?: boolean
}

/** One measurement of one server on one workload. */
export interface Sample {
  /** Requests/s (load) or MiB/s (download). */
  rate: number
  /** NaN (`null` in the JSON) when the load tool has no percentiles (h2load). */
  p50Ms: number
  /** NaN (`null` in the JSON) when the load tool has no percentiles (h2load). */
  p99Ms: number
  /** Mean latency, from a load tool without percentiles (h2load). */
  meanMs?: number
  /** Highest latency, from a load tool without percentiles (h2load). */
  maxMs?: number
  requests: number
  errors: number
  badStatus: number
  /** Proxy process CPU time per request in microseconds. */
  cpuMicrosPerRequest: number
  /** Proxy process peak RSS during this measurement, in MB (10^6 bytes). */
  peakRssMB: number
  /** Pool workloads: the requests each upstream answered during this measurement, in order. */
  spread?: number[]
}

/** All samples of one server on one workload, and their summary. */
export interface Cell {
  server: string
  workload: string
  samples: Sample[]
  /**
   * The server process's RSS in MB once started and checked (a few requests served), before any
   * load: what a proxy costs at rest.
   */
  restRssMB?: number
}

/** Medians (and the range of the rate) over a cell's samples. */
export interface CellSummary {
  rate: number
  rateMin: number
  rateMax: number
  p50Ms: number
  p99Ms: number
  /** Median of the samples' mean latencies, when every sample has one (h2load). */
  meanMs?: number
  /** Median of the samples' highest latencies, when every sample has one (h2load). */
  maxMs?: number
  cpuMicrosPerRequest: number
  peakRssMB: number
  /** See {@link Cell.restRssMB}. */
  restRssMB?: number
  errors: number
  badStatus: number
  /** Pool workloads: the requests each upstream answered, summed over the samples. */
  spread?: number[]
}

/** The median of a non-empty list (mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = values.toSorted((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/**
 * Summarizes a cell: medians of rate, latency and CPU, the highest peak RSS, summed errors and
 * (when every sample has one) summed requests per upstream.
 */
export function summarize(samples: readonly Sample[]): CellSummary {
  const rates = samples.map((s) => s.rate)
  const spread = sumSpreads(samples)
  const means = samples.flatMap((s) => (s.meanMs === undefined ? [] : [s.meanMs]))
  const maxes = samples.flatMap((s) => (s.maxMs === undefined ? [] : [s.maxMs]))
  return {
    rate: median(rates),
    rateMin: Math.min(...rates),
    rateMax: Math.max(...rates),
    p50Ms: median(samples.map((s) => s.p50Ms)),
    p99Ms: median(samples.map((s) => s.p99Ms)),
    ...(samples.length > 0 && means.length === samples.length ? { meanMs: median(means) } : {}),
    ...(samples.length > 0 && maxes.length === samples.length ? { maxMs: median(maxes) } : {}),
    cpuMicrosPerRequest: median(samples.map((s) => s.cpuMicrosPerRequest)),
    peakRssMB: Math.max(...samples.map((s) => s.peakRssMB)),
    errors: samples.reduce((sum, s) => sum + s.errors, 0),
    badStatus: samples.reduce((sum, s) => sum + s.badStatus, 0),
    ...(spread === undefined ? {} : { spread }),
  }
}

// Requests per upstream summed over the samples; undefined unless every sample counted them.
function sumSpreads(samples: readonly Sample[]): number[] | undefined {
  let total: number[] | undefined
  for (const { spread } of samples) {
    if (spread === undefined) return undefined
    total = total === undefined ? [...spread] : total.map((n, i) => n + (spread[i] ?? 0))
  }
  return total
}

/** A target of issue 20 checked against one run. */
export interface TargetCheck {
  description: string
  /** The measured value (a ratio, or MB for memory). */
  value: number
  /** The bound it must meet. */
  bound: number
  /** `min`: value ≥ bound; `max`: value ≤ bound. */
  direction: 'min' | 'max'
  met: boolean
}

/** Summaries indexed by server then workload. */
export type Summaries = Record<string, Record<string, CellSummary>>

/** Indexes cells by server and workload, summarized. */
export function summarizeCells(cells: readonly Cell[]): Summaries {
  const out: Summaries = {}
  for (const cell of cells) {
    if (cell.samples.length === 0) continue
    out[cell.server] ??= {}
    const summary = summarize(cell.samples)
    ;(out[cell.server] as Record<string, CellSummary>)[cell.workload] =
      cell.restRssMB === undefined ? summary : { ...summary, restRssMB: cell.restRssMB }
  }
  return out
}

/** `a / b` of the median rates of two servers on a workload; NaN when either is missing. */
export function rateRatio(summaries: Summaries, a: string, b: string, workload: string): number {
  const x = summaries[a]?.[workload]?.rate
  const y = summaries[b]?.[workload]?.rate
  return x === undefined || y === undefined || y === 0 ? Number.NaN : x / y
}

function check(
  description: string,
  value: number,
  bound: number,
  direction: 'min' | 'max',
): TargetCheck {
  const met = direction === 'min' ? value >= bound : value <= bound
  return { description, value, bound, direction, met: Number.isFinite(value) && met }
}

/** The server ids the targets refer to. */
export const OURS = {
  node: 'wsgiproxy-node',
  nodeCopy: 'wsgiproxy-node-copy',
  fetch: 'wsgiproxy-fetch',
} as const

/**
 * Checks the targets of issue 20 (performance, round two) that the measured servers and
 * workloads allow: the node path against http-proxy (throughput, p99, memory on the download
 * and at rest), as the node listener and as `serve({ byteCopy: true })`, the fetch path against hono's proxy helper (throughput, download, memory under
 * 128 connections).
 */
export function checkTargets(summaries: Summaries): TargetCheck[] {
  const checks: TargetCheck[] = []
  const { fetch } = OURS
  const hono = 'hono-proxy'
  const at = (server: string, workload: string): CellSummary | undefined =>
    summaries[server]?.[workload]
  const both = (a: string, b: string, w: string): boolean =>
    at(a, w) !== undefined && at(b, w) !== undefined
  for (const [node, name] of [
    [OURS.node, 'node path'],
    [OURS.nodeCopy, 'node byteCopy'],
  ] as const) {
    checks.push(...nodeTargets(summaries, node, name))
  }
  const dl = 'download'
  for (const w of ['get-1k-32', 'get-1k-128']) {
    if (both(fetch, hono, w)) {
      checks.push(
        check(`fetch path / ${hono}, ${w}`, rateRatio(summaries, fetch, hono, w), 2.5, 'min'),
      )
    }
  }
  if (both(fetch, hono, dl)) {
    checks.push(
      check(`fetch path / ${hono}, ${dl} MiB/s`, rateRatio(summaries, fetch, hono, dl), 1.0, 'min'),
    )
  }
  const busy = at(fetch, 'get-1k-128')?.peakRssMB
  if (busy !== undefined)
    checks.push(check('fetch path peak RSS, get-1k-128 (MB)', busy, 150, 'max'))
  return checks
}

// The node path's targets (issue 20) for one server measured as the node path.
function nodeTargets(summaries: Summaries, node: string, name: string): TargetCheck[] {
  const checks: TargetCheck[] = []
  const peer = 'http-proxy'
  const at = (server: string, workload: string): CellSummary | undefined =>
    summaries[server]?.[workload]
  const both = (a: string, b: string, w: string): boolean =>
    at(a, w) !== undefined && at(b, w) !== undefined
  for (const [w, bound] of [
    ['get-1k-32', 1.25],
    ['get-1k-128', 1.25],
    ['echo-64k', 1.1],
  ] as const) {
    if (both(node, peer, w)) {
      checks.push(
        check(`${name} / ${peer}, ${w}`, rateRatio(summaries, node, peer, w), bound, 'min'),
      )
    }
  }
  for (const w of ['get-1k-32', 'get-1k-128', 'echo-64k']) {
    const ours = at(node, w)?.p99Ms
    const theirs = at(peer, w)?.p99Ms
    if (ours !== undefined && theirs !== undefined) {
      checks.push(check(`${name} p99 / ${peer} p99, ${w}`, ours / theirs, 1.0, 'max'))
    }
  }
  const dl = 'download'
  const theirPeak = at(peer, dl)?.peakRssMB
  const ourPeak = at(node, dl)?.peakRssMB
  if (ourPeak !== undefined && theirPeak !== undefined) {
    checks.push(check(`${name} peak RSS, ${dl} (MB, ${peer} + 15)`, ourPeak, theirPeak + 15, 'max'))
  }
  const rest = restRss(summaries, node)
  if (rest !== undefined) checks.push(check(`${name} RSS at rest (MB)`, rest, 60, 'max'))
  return checks
}

/** A server's RSS at rest: the lowest over its cells (each cell of a process holds the same). */
export function restRss(summaries: Summaries, server: string): number | undefined {
  const values = Object.values(summaries[server] ?? {}).flatMap((c) =>
    c.restRssMB === undefined ? [] : [c.restRssMB],
  )
  return values.length === 0 ? undefined : Math.min(...values)
}

const unit = (w: Workload): string => (w.kind === 'download' ? 'MiB/s' : 'req/s')

/** A number with `digits` decimals, or `–` when it is not finite. */
export const fmt = (value: number, digits = 0): string =>
  Number.isFinite(value) ? value.toFixed(digits) : '–'

/** Everything the Markdown report needs. */
export interface ReportInput {
  title: string
  /** Lines printed under the title (machine, versions, settings). */
  context: readonly string[]
  servers: readonly { id: string; label: string }[]
  workloads: readonly Workload[]
  summaries: Summaries
  targets: readonly TargetCheck[]
}

/** The head of a Markdown table: the first column left-aligned, the others right-aligned. */
export function tableHead(cols: readonly string[]): string[] {
  return [
    `| ${cols.join(' | ')} |`,
    `|${cols.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
  ]
}

/**
 * Renders the run as Markdown: rates, latency, CPU and memory, ratios, targets. The tables are
 * left out when no server was measured on any workload.
 */
export function renderMarkdown(input: ReportInput): string {
  const { servers, workloads } = input
  const lines: string[] = [`## ${input.title}`, '', ...input.context.map((c) => `- ${c}`), '']
  if (servers.length > 0 && workloads.length > 0) {
    lines.push(...renderTables({ ...input, ours: [OURS.node, OURS.fetch] }))
  }
  if (input.targets.length > 0) {
    lines.push('', '### Targets', '')
    for (const t of input.targets) {
      const op = t.direction === 'min' ? '≥' : '≤'
      lines.push(
        `- ${t.met ? 'met' : 'MISSED'}: ${t.description} = ${fmt(t.value, 2)} (${op} ${t.bound})`,
      )
    }
  }
  return `${lines.join('\n')}\n`
}

/** What {@link renderTables} shows. */
export interface TablesInput {
  servers: readonly { id: string; label: string }[]
  workloads: readonly Workload[]
  summaries: Summaries
  /** This project's servers: one ratio table each, against every other server. */
  ours: readonly string[]
  /** Put before every table's heading (`HTTPS: `). Default: nothing. */
  prefix?: string
}

/**
 * The tables of one group of servers and workloads as Markdown lines: throughput, latency and CPU
 * (mean / max where the load tool has no percentiles), peak RSS and each of `ours` / every peer.
 */
export function renderTables(input: TablesInput): string[] {
  const { servers, workloads, summaries, ours: oursIds, prefix = '' } = input
  const lines: string[] = []
  const head = (cols: readonly string[]): void => {
    lines.push(...tableHead(cols))
  }

  lines.push(`### ${prefix}Throughput (median, min–max)`, '')
  head(['proxy', ...workloads.map((w) => `${w.label} (${unit(w)})`)])
  for (const s of servers) {
    const row = workloads.map((w) => {
      const c = summaries[s.id]?.[w.id]
      if (c === undefined) return '–'
      const errors = c.errors + c.badStatus > 0 ? ` ⚠ ${c.errors + c.badStatus} errors` : ''
      return `${fmt(c.rate)} (${fmt(c.rateMin)}–${fmt(c.rateMax)})${errors}`
    })
    lines.push(`| ${s.label} | ${row.join(' | ')} |`)
  }

  const loads = workloads.filter((w) => w.kind === 'load')
  const cells = servers.flatMap((s) => loads.map((w) => summaries[s.id]?.[w.id]))
  const meanMax = cells.some((c) => c?.meanMs !== undefined)
  const latency = meanMax
    ? cells.some((c) => c !== undefined && c.meanMs === undefined)
      ? 'p50 / p99, or mean / max where the load tool has no percentiles (ms, medians)'
      : 'mean / max (ms, medians; the load tool has no percentiles)'
    : 'p50 / p99 (ms, medians)'
  lines.push('', `### ${prefix}Latency ${latency} and proxy CPU per request (µs)`, '')
  head(['proxy', ...loads.map((w) => w.label)])
  for (const s of servers) {
    const row = loads.map((w) => {
      const c = summaries[s.id]?.[w.id]
      if (c === undefined) return '–'
      const [a, b] = c.meanMs === undefined ? [c.p50Ms, c.p99Ms] : [c.meanMs, c.maxMs ?? Number.NaN]
      return `${fmt(a, 2)} / ${fmt(b, 2)}, ${fmt(c.cpuMicrosPerRequest)} µs`
    })
    lines.push(`| ${s.label} | ${row.join(' | ')} |`)
  }

  lines.push('', `### ${prefix}Proxy RSS (MB): at rest, and the peak under each workload`, '')
  head(['proxy', 'at rest', ...workloads.map((w) => w.label)])
  for (const s of servers) {
    const row = workloads.map((w) => fmt(summaries[s.id]?.[w.id]?.peakRssMB ?? Number.NaN))
    lines.push(
      `| ${s.label} | ${fmt(restRss(summaries, s.id) ?? Number.NaN)} | ${row.join(' | ')} |`,
    )
  }

  for (const ours of oursIds) {
    const label = servers.find((s) => s.id === ours)?.label
    if (label === undefined) continue
    lines.push('', `### ${prefix}Ratios: ${label} / peer (median throughput)`, '')
    head(['peer', ...workloads.map((w) => w.label)])
    for (const s of servers) {
      if (s.id === ours) continue
      const row = workloads.map((w) => fmt(rateRatio(summaries, ours, s.id, w.id), 2))
      lines.push(`| ${s.label} | ${row.join(' | ')} |`)
    }
  }
  return lines
}
