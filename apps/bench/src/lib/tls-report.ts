// The HTTPS and HTTP/2 workloads' tables: the same tables as the plain workloads (throughput,
// latency and CPU, peak RSS, this project's listener / each peer), and for HTTPS what TLS costs
// each proxy against its own plain-HTTP run.
import { fmt, renderTables, tableHead } from './report.ts'
import type { Summaries, Workload } from './report.ts'
import type { Front } from './servers.ts'
import { TLS_OURS } from './tls-servers.ts'

/** An HTTPS server or workload id is its plain twin's with this in front. */
export const HTTPS_PREFIX = 'https-'

/**
 * The plain-HTTP twin of an HTTPS server or workload (`https-http-proxy` → `http-proxy`,
 * `https-get-1k-32` → `get-1k-32`), or `undefined` for any other id.
 */
export function plainTwin(id: string): string | undefined {
  return id.startsWith(HTTPS_PREFIX) ? id.slice(HTTPS_PREFIX.length) : undefined
}

/** HTTPS / plain HTTP median throughput of the same proxy on the same load; NaN when either is missing. */
export function tlsCost(summaries: Summaries, server: string, workload: string): number {
  const plainServer = plainTwin(server)
  const plainWorkload = plainTwin(workload)
  const https = summaries[server]?.[workload]?.rate
  const plain =
    plainServer === undefined || plainWorkload === undefined
      ? undefined
      : summaries[plainServer]?.[plainWorkload]?.rate
  return https === undefined || plain === undefined || plain === 0 ? Number.NaN : https / plain
}

/**
 * Renders the HTTPS workloads, then the HTTP/2 one, as Markdown; empty when neither was measured.
 * The HTTPS part ends with each proxy's throughput over HTTPS against its own over plain HTTP,
 * when the run measured both.
 */
export function renderTlsMarkdown(
  servers: readonly { id: string; label: string; front?: Front }[],
  workloads: readonly Workload[],
  summaries: Summaries,
): string {
  const lines: string[] = []
  const section = (front: Exclude<Front, 'http'>): typeof servers => {
    const inFront = servers.filter((s) => s.front === front)
    return inFront.filter((s) =>
      workloads.some((w) => w.front === front && summaries[s.id]?.[w.id] !== undefined),
    )
  }

  const httpsServers = section('https')
  const httpsWorkloads = workloads.filter((w) => w.front === 'https')
  if (httpsServers.length > 0) {
    lines.push(
      '',
      '### HTTPS',
      '',
      "HTTP/1.1 over TLS to the proxy (the run's self-signed ECDSA P-256 certificate), plain " +
        'HTTP/1.1 from the proxy to the upstream.',
      '',
      ...renderTables({
        servers: httpsServers,
        workloads: httpsWorkloads,
        summaries,
        ours: [TLS_OURS.https],
        prefix: 'HTTPS: ',
      }),
    )
    const costs = httpsServers.map((s) => httpsWorkloads.map((w) => tlsCost(summaries, s.id, w.id)))
    if (costs.flat().some(Number.isFinite)) {
      lines.push(
        '',
        '### HTTPS: cost of TLS (HTTPS / plain HTTP, median throughput, same proxy and load)',
        '',
      )
      lines.push(...tableHead(['proxy', ...httpsWorkloads.map((w) => w.label)]))
      httpsServers.forEach((s, i) => {
        lines.push(`| ${s.label} | ${(costs[i] ?? []).map((c) => fmt(c, 2)).join(' | ')} |`)
      })
    }
  }

  const h2Servers = section('h2')
  if (h2Servers.length > 0) {
    lines.push(
      '',
      '### HTTP/2',
      '',
      'h2load over TLS, ALPN h2 only (one thread), plain HTTP/1.1 from the proxy to the upstream. ' +
        'h2load reports no latency percentiles: latency is the mean and the max of its "time for ' +
        'request".',
      '',
      ...renderTables({
        servers: h2Servers,
        workloads: workloads.filter((w) => w.front === 'h2'),
        summaries,
        ours: [TLS_OURS.h2],
        prefix: 'HTTP/2: ',
      }),
    )
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`
}
