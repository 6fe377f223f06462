// The pool workloads' tables: each pool server's throughput, latency and CPU beside the same
// listener without a pool and the http-proxy round robin, and how the requests divided over the
// three upstreams.
import { fmt, rateRatio, tableHead } from './report.ts'
import type { Summaries, Workload } from './report.ts'

/** The server ids the pool's ratios refer to. */
export const POOL_REFERENCES = {
  baseline: 'pool-wsgiproxy-node-single',
  peer: 'pool-http-proxy-rr',
} as const

/** Requests per upstream and their shares: `500 / 300 / 200 (50.0 / 30.0 / 20.0 %)`. */
export function formatSpread(spread: readonly number[]): string {
  const total = spread.reduce((sum, n) => sum + n, 0)
  const shares = spread.map((n) => fmt(total > 0 ? (100 * n) / total : Number.NaN, 1))
  return `${spread.join(' / ')} (${shares.join(' / ')} %)`
}

/** Renders the pool workloads as Markdown, one table each; empty when none was measured. */
export function renderPoolMarkdown(
  servers: readonly { id: string; label: string }[],
  workloads: readonly Workload[],
  summaries: Summaries,
): string {
  const lines: string[] = []
  for (const w of workloads) {
    const rows = servers.filter((s) => summaries[s.id]?.[w.id] !== undefined)
    if (rows.length === 0) continue
    lines.push('', `### ${w.label} (medians)`, '')
    lines.push(
      ...tableHead([
        'proxy',
        'req/s (min–max)',
        'p50 / p99 ms',
        'CPU µs/req',
        '× no pool',
        '× http-proxy round robin',
        'requests per upstream (share)',
      ]),
    )
    for (const s of rows) {
      const c = summaries[s.id]?.[w.id]
      if (c === undefined) continue
      const errors = c.errors + c.badStatus > 0 ? ` ⚠ ${c.errors + c.badStatus} errors` : ''
      const cols = [
        `${fmt(c.rate)} (${fmt(c.rateMin)}–${fmt(c.rateMax)})${errors}`,
        `${fmt(c.p50Ms, 2)} / ${fmt(c.p99Ms, 2)}`,
        fmt(c.cpuMicrosPerRequest),
        fmt(rateRatio(summaries, s.id, POOL_REFERENCES.baseline, w.id), 2),
        fmt(rateRatio(summaries, s.id, POOL_REFERENCES.peer, w.id), 2),
        c.spread === undefined ? '–' : formatSpread(c.spread),
      ]
      lines.push(`| ${s.label} | ${cols.join(' | ')} |`)
    }
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`
}
