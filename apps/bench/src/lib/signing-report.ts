// The signing workload's table: signed requests through a verifying backend with each replay
// store, and what the shared store (Redis) costs against the in-process one.
import { fmt, rateRatio, tableHead } from './report.ts'
import type { Summaries, Workload } from './report.ts'
import { SIGNING_IDS } from './signing-servers.ts'

/** Renders the signing workloads as Markdown, one table each; empty when none was measured. */
export function renderSigningMarkdown(
  servers: readonly { id: string; label: string }[],
  workloads: readonly Workload[],
  summaries: Summaries,
): string {
  const lines: string[] = []
  for (const w of workloads) {
    const rows = servers.filter((s) => summaries[s.id]?.[w.id] !== undefined)
    if (rows.length === 0) continue
    lines.push(
      '',
      `### Signing: replay store, ${w.label} (medians)`,
      '',
      'Each request is signed by a wsgiproxy front (a fresh nonce) and verified by a backend in ' +
        'the same process, which records the nonce in its replay store before it answers. CPU is ' +
        "that process's; Redis's own is not counted.",
      '',
    )
    lines.push(
      ...tableHead([
        'front → backend',
        'req/s (min–max)',
        'p50 / p99 ms',
        'CPU µs/req',
        '× MemoryReplayStore',
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
        fmt(rateRatio(summaries, s.id, SIGNING_IDS.memory, w.id), 2),
      ]
      lines.push(`| ${s.label} | ${cols.join(' | ')} |`)
    }
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`
}
