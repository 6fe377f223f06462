// The table of `pnpm bench:compare A B`: each server as B builds it against the same server as
// A builds it, workload by workload, from one run.
import { fmt, tableHead } from './report.ts'
import type { Summaries, Workload } from './report.ts'

/** B / A for one server on one workload. */
export interface CompareRow {
  server: string
  workload: string
  /** Median throughput, B / A: above 1, B is faster. */
  rate: number
  /** The lowest and highest B / A of the throughputs measured in the same round. */
  rateRange: [number, number]
  /** Median p99, B / A: below 1, B is better. */
  p99: number
  /** Median CPU µs per request, B / A: below 1, B is cheaper. */
  cpu: number
  /** Highest peak RSS, B − A in MB. */
  rssDeltaMB: number
}

/** A run's samples of one server on one workload, in round order (as in the JSON). */
export type RoundRates = Record<string, Record<string, number[]>>

/**
 * B / A for every server both checkouts ran on every workload.
 *
 * @param summaries - the run's summaries (ids `<server>@A`, `<server>@B`)
 * @param rounds - the throughput of each round, by id and workload
 * @param servers - the plain server ids
 * @param workloads - the workload ids
 * @param names - the two checkouts' names, A first
 * @returns one row per server and workload both measured
 */
export function compareRows(
  summaries: Summaries,
  rounds: RoundRates,
  servers: readonly string[],
  workloads: readonly string[],
  names: readonly [string, string],
): CompareRow[] {
  const [a, b] = names
  const rows: CompareRow[] = []
  for (const server of servers) {
    for (const workload of workloads) {
      const x = summaries[`${server}@${a}`]?.[workload]
      const y = summaries[`${server}@${b}`]?.[workload]
      if (x === undefined || y === undefined) continue
      const xs = rounds[`${server}@${a}`]?.[workload] ?? []
      const ys = rounds[`${server}@${b}`]?.[workload] ?? []
      const perRound = ys.flatMap((rate, i) => {
        const base = xs[i]
        return base === undefined || base === 0 ? [] : [rate / base]
      })
      rows.push({
        server,
        workload,
        rate: y.rate / x.rate,
        rateRange:
          perRound.length === 0
            ? [Number.NaN, Number.NaN]
            : [Math.min(...perRound), Math.max(...perRound)],
        p99: y.p99Ms / x.p99Ms,
        cpu: y.cpuMicrosPerRequest / x.cpuMicrosPerRequest,
        rssDeltaMB: y.peakRssMB - x.peakRssMB,
      })
    }
  }
  return rows
}

/**
 * Renders the rows as Markdown under a heading that names both checkouts.
 *
 * @param rows - from {@link compareRows}
 * @param labels - the two checkouts as shown (name and commit), A first
 * @param workloads - the run's workloads, for their labels
 * @returns Markdown ending in a newline, or `''` without rows
 */
export function renderCompareMarkdown(
  rows: readonly CompareRow[],
  labels: readonly [string, string],
  workloads: readonly Pick<Workload, 'id' | 'label'>[],
): string {
  if (rows.length === 0) return ''
  const [a, b] = labels
  const label = (id: string): string => workloads.find((w) => w.id === id)?.label ?? id
  const lines = [
    '',
    `### ${b} / ${a}`,
    '',
    'Each server as B builds it against the same server as A builds it, in one run (rounds ' +
      'interleaved). Throughput above 1 and p99, CPU below 1 favour B; round by round shows ' +
      'how far the ratio moves between rounds, so a difference inside it is noise.',
    '',
    ...tableHead([
      'server',
      'workload',
      'throughput B / A',
      'round by round',
      'p99 B / A',
      'CPU/req B / A',
      'peak RSS B − A (MB)',
    ]),
  ]
  for (const row of rows) {
    lines.push(
      `| ${row.server} | ${label(row.workload)} | ${fmt(row.rate, 3)} | ` +
        `${fmt(row.rateRange[0], 3)}–${fmt(row.rateRange[1], 3)} | ${fmt(row.p99, 3)} | ` +
        `${fmt(row.cpu, 3)} | ${row.rssDeltaMB >= 0 ? '+' : ''}${fmt(row.rssDeltaMB)} |`,
    )
  }
  return `${lines.join('\n')}\n`
}
