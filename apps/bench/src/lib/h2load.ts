// HTTP/2 load from h2load (nghttp2's benchmark client; Debian's nghttp2-client): a separate native
// process like wrk. It has no latency percentiles: its "time for request" line gives min, max,
// mean and standard deviation, so HTTP/2 results carry the mean and the max instead of p50 / p99.
import { execFile, spawnSync } from 'node:child_process'
import type { LoadResult } from './load.ts'

/** One h2load run: `clients` connections with up to `streams` requests in flight on each. */
export interface H2LoadSpec {
  url: string
  clients: number
  streams: number
  /** Seconds; ignored when `amount` is set. */
  duration: number
  /** Stop after this many requests in all instead of after `duration`. */
  amount?: number
}

/** The `h2load --version` line, or `undefined` when h2load is not installed. */
export function detectH2load(): string | undefined {
  const probe = spawnSync('h2load', ['--version'], { encoding: 'utf8' })
  if (probe.error !== undefined || probe.status !== 0) return undefined
  return probe.stdout.split('\n')[0]?.trim() || 'h2load'
}

// h2load prints durations as a number and a unit: 310us, 25.84ms, 2.00s.
const DURATION_UNITS_MS: Readonly<Record<string, number>> = { us: 0.001, ms: 1, s: 1000 }

function durationMs(text: string | undefined, line: string): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(text ?? '')
  if (match === null) throw new Error(`h2load printed a duration it cannot read in "${line}"`)
  return Number(match[1]) * (DURATION_UNITS_MS[match[2] as string] as number)
}

function lineStarting(output: string, prefix: string): string {
  const line = output.split('\n').find((l) => l.trimStart().startsWith(prefix))
  if (line === undefined) throw new Error(`h2load printed no "${prefix}" line:\n${output}`)
  return line.trim()
}

/** The count before `name` in h2load's `requests:` line (`61728 succeeded`). */
function count(line: string, name: string): number {
  const match = new RegExp(`(\\d+) ${name}\\b`).exec(line)
  if (match === null) throw new Error(`h2load printed no "${name}" count in "${line}"`)
  return Number(match[1])
}

/**
 * Reads h2load's summary: requests/s from `finished in`, the requests done, the mean and max of
 * `time for request` in milliseconds (`p50Ms` and `p99Ms` are NaN: h2load has no percentiles),
 * network-level failures as errors and the other failed requests (HTTP 4xx/5xx) as bad statuses.
 *
 * @throws Error when a line is missing, or when the connections did not speak h2 (ALPN)
 */
export function parseH2loadOutput(output: string): LoadResult {
  const protocols = output
    .split('\n')
    .filter((l) => l.startsWith('Application protocol:'))
    .map((l) => l.slice('Application protocol:'.length).trim())
  const done = count(lineStarting(output, 'requests:'), 'done')
  if (done > 0 && (protocols.length === 0 || protocols.some((p) => p !== 'h2'))) {
    throw new Error(`h2load did not speak h2 (ALPN gave ${protocols.join(', ') || 'nothing'})`)
  }
  const finished = lineStarting(output, 'finished in')
  const finishedMatch = /^finished in (\S+), ([\d.]+) req\/s/.exec(finished)
  if (finishedMatch === null) throw new Error(`h2load printed an unexpected "${finished}"`)
  const requests = lineStarting(output, 'requests:')
  const failed = count(requests, 'failed')
  const errored = count(requests, 'errored')
  // time for request:  min  max  mean  sd  +/- sd
  const time = lineStarting(output, 'time for request:')
  const [, max, mean] = time.slice('time for request:'.length).trim().split(/\s+/)
  return {
    requests: done,
    seconds: durationMs(finishedMatch[1], finished) / 1000,
    requestsPerSecond: Number(finishedMatch[2]),
    p50Ms: Number.NaN,
    p99Ms: Number.NaN,
    meanMs: durationMs(mean, time),
    maxMs: durationMs(max, time),
    errors: errored,
    badStatus: failed - errored,
  }
}

/**
 * Runs h2load with one thread over TLS, offering only `h2` by ALPN (so a server that falls back to
 * HTTP/1.1 fails instead of being measured as HTTP/1.1). h2load does not verify certificates.
 */
export function runH2load(spec: H2LoadSpec): Promise<LoadResult> {
  const args = [
    '-t1',
    `-c${spec.clients}`,
    `-m${spec.streams}`,
    '--npn-list=h2',
    ...(spec.amount === undefined
      ? [`-D${Math.max(1, Math.round(spec.duration))}`]
      : [`-n${Math.max(spec.amount, spec.clients)}`]),
    spec.url,
  ]
  // h2load waits for ever on a server that stops answering: give up well after the load's end.
  const timeout = ((spec.amount === undefined ? spec.duration : 0) + 30) * 1000
  return new Promise((resolve, reject) => {
    execFile('h2load', args, { maxBuffer: 1 << 20, timeout }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`h2load failed: ${error.message}\n${stderr}`))
      else {
        try {
          resolve(parseH2loadOutput(stdout))
        } catch (parseError) {
          reject(parseError as Error)
        }
      }
    })
  })
}
