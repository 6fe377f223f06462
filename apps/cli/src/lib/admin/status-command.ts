// `wsgiproxy status`: fetches /status from a running server's admin listener and prints it as a
// table (or the JSON).
import { get } from 'node:http'
import { help, parseCommandArgs } from '../cli-args.ts'
import type { CliIo } from '../cli-args.ts'
import { CliError, usageError } from '../errors.ts'
import { parseListen } from '../listen.ts'
import type { RouteReport, StatusReport } from './status.ts'

/** The admin address `wsgiproxy status` asks without `--admin`. */
export const DEFAULT_ADMIN = '127.0.0.1:9464'

// How long to wait for the answer.
const FETCH_TIMEOUT_MS = 10_000

/**
 * Runs `wsgiproxy status`.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status: 0, or 1 when nothing answers (or not with a status)
 */
export async function runStatus(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs('status', args, {
    options: {
      help: { type: 'boolean', short: 'h' },
      admin: { type: 'string' },
      json: { type: 'boolean' },
    },
  })
  if (values.help === true) return help('status', io)
  const url = statusUrl(values.admin ?? DEFAULT_ADMIN)
  let text: string
  try {
    const response = await getText(url)
    text = response.text
    if (response.status !== 200) throw new Error(`status ${response.status}`)
  } catch (error) {
    throw new CliError(
      `nothing answers on ${url} (${reasonOf(error)}): start the server with --admin ${new URL(url).host} (or "admin": { "listen": "${new URL(url).host}" } in the config file), or pass the address it uses with wsgiproxy status --admin host:port`,
    )
  }
  let report: StatusReport
  try {
    report = JSON.parse(text) as StatusReport
    if (!Array.isArray(report.routes)) throw new Error('no routes')
  } catch {
    throw new CliError(`${url} did not answer with a wsgiproxy status (is it the admin address?)`)
  }
  io.stdout(values.json === true ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report))
  return 0
}

/**
 * The status URL of an `--admin` value: a URL (`http://host:port`, its path replaced) or an
 * address (`host:port`, `port`).
 *
 * @param value - the value
 * @returns the URL of `/status`
 * @throws CliError (exit 1) for anything else
 */
export function statusUrl(value: string): string {
  if (/^http:\/\//i.test(value)) {
    const url = URL.parse(value)
    if (url !== null) return new URL('/status', url).href
  } else {
    const address = parseListen(value)
    if (address !== undefined) {
      const host = address.hostname.includes(':') ? `[${address.hostname}]` : address.hostname
      return `http://${host}:${address.port}/status`
    }
  }
  throw usageError(
    `status: --admin must be host:port or an http:// URL such as http://127.0.0.1:9464 (got ${JSON.stringify(value)})`,
  )
}

/**
 * The status as a readable table: the server, its routes with their targets and spawned
 * backends, and what is not ready.
 *
 * @param report - the status
 * @returns the text
 */
export function formatStatus(report: StatusReport): string {
  const { readiness } = report
  const lines = [
    `wsgiproxy pid ${report.pid}, config generation ${report.generation}, ${report.url ?? 'not listening'}: ${readiness.ready ? 'ready' : 'NOT READY'}`,
  ]
  if (report.workers !== undefined) {
    const workers = report.workers.map(
      (worker) =>
        `${worker.pid} ${worker.answered ? (worker.ready ? 'ready' : 'not ready') : 'no answer'}`,
    )
    lines.push(`workers: ${workers.join(', ') || 'none'}`)
  }
  lines.push('')
  const rows: string[][] = [
    ['ROUTE', 'KIND', 'TARGET', 'STATE', 'IN FLIGHT', 'REQUESTS', 'FAILURES', 'EJECTIONS'],
  ]
  for (const route of report.routes) rows.push(...routeRows(route))
  lines.push(...table(rows))
  if (!readiness.ready) {
    lines.push('', 'not ready:')
    for (const reason of readiness.reasons) lines.push(`  ${reason}`)
    for (const route of readiness.routes) {
      const where = route.worker === undefined ? '' : ` (worker ${route.worker})`
      lines.push(`  ${route.path}${where}: ${route.reason}`)
    }
  }
  return `${lines.join('\n')}\n`
}

function routeRows(route: RouteReport): string[][] {
  const name = route.name === undefined ? route.path : `${route.path} (${route.name})`
  const rows: string[][] = []
  const row = (target: string, state: string, numbers: Array<number | undefined> = []): void => {
    const cells = numbers.map((value) => (value === undefined ? '' : String(value)))
    rows.push([
      rows.length === 0 ? name : '',
      rows.length === 0 ? route.kind : '',
      target,
      state,
      ...cells,
    ])
  }
  for (const target of route.targets ?? []) {
    row(target.href, target.state, [
      target.inFlight,
      target.requests,
      target.failures,
      target.ejections,
    ])
  }
  const spawner = route.spawner
  if (spawner !== undefined) {
    for (const backend of spawner.backends) {
      row(`pid ${backend.pid} port ${backend.port}`, backend.state, [backend.inFlight])
    }
    if (spawner.backends.length === 0) row('no backend running', spawner.state)
  }
  if (rows.length === 0) {
    const target =
      route.href ??
      (route.kind === 'spawn'
        ? 'backends of the main process'
        : route.kind === 'forward'
          ? 'any allowed host'
          : '-')
    row(target, '')
  }
  return rows
}

// Columns padded to their widest cell, two spaces apart; trailing blanks trimmed.
function table(rows: string[][]): string[] {
  const widths: number[] = []
  for (const row of rows) {
    row.forEach((cell, index) => {
      widths[index] = Math.max(widths[index] ?? 0, cell.length)
    })
  }
  return rows.map((row) =>
    row
      .map((cell, index) => cell.padEnd(widths[index] ?? 0))
      .join('  ')
      .trimEnd(),
  )
}

// GET with node:http (fetch refuses ports it deems unsafe, such as 6000, which an admin address
// may well use).
function getText(url: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = get(url, { timeout: FETCH_TIMEOUT_MS }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => (text += chunk))
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text }))
      response.on('error', reject)
    })
    request.on('timeout', () =>
      request.destroy(new Error(`no answer in ${FETCH_TIMEOUT_MS / 1000} s`)),
    )
    request.on('error', reject)
  })
}

function reasonOf(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code
  if (code !== undefined) return code
  return error instanceof Error ? error.message : String(error)
}
