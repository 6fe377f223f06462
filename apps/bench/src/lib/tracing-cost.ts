// The tracing-off workload: the `wsgiproxy-node` server in processes that differ in one
// thing. One finds `@opentelemetry/api` (installed, no SDK registered: tracing is off); the other
// is started with a resolve hook that hides the package (`tracing-off-hook.ts`), as an install
// without it. Same upstream, same load, rounds interleaved; the ratio of the two is what the
// installed API costs a proxy that nobody traces (docs/operations.md, "Tracing"). A third process,
// a second one without the API, gives the ratio two identical processes show on this machine: a
// cost smaller than that is not measurable here.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { runLoad } from './load.ts'
import {
  cpuMicros,
  peakRssBytes,
  resetPeakRss,
  startServerProcess,
  stopChild,
} from './processes.ts'
import type { ServerProcess } from './processes.ts'
import { summarize } from './report.ts'
import type { CellSummary, Sample } from './report.ts'
import { rotate, verifyServer } from './run.ts'
import type { Log, RunSettings } from './run.ts'

/** The workload: its `--workloads` id, its column label and its load. */
export const TRACING_WORKLOAD = {
  id: 'tracing-off',
  label: 'GET 1 KiB, 32 conns',
  connections: 32,
} as const

/** Whether `@opentelemetry/api` loads in a process (`otel-probe.ts` reports it). */
export type ApiState = 'present' | 'absent'

/** One of the processes. */
export interface TracingVariant {
  id: string
  label: string
  /** What the process must report, or it is not measured. */
  api: ApiState
  /** The second process without the API: the noise floor, not a variant. Default `false`. */
  control?: boolean
}

/** The processes, in table order: the installed API, the baseline, the baseline's twin. */
export const TRACING_VARIANTS: readonly TracingVariant[] = [
  {
    id: 'tracing-off-api',
    label: 'wsgiproxy node listener, @opentelemetry/api 1.9.0 installed, no SDK',
    api: 'present',
  },
  {
    id: 'tracing-off-no-api',
    label: 'wsgiproxy node listener, @opentelemetry/api not found (import hook)',
    api: 'absent',
  },
  {
    id: 'tracing-off-no-api-twin',
    label: 'the same, a second process (noise floor)',
    api: 'absent',
    control: true,
  },
]

/** A variant's samples (one per round, in round order) and their summary. */
export interface TracingVariantResult extends TracingVariant {
  samples: Sample[]
  summary: CellSummary
}

/** What {@link runTracingCost} measured. */
export interface TracingCostResult {
  workload: string
  variants: TracingVariantResult[]
}

/** A server process of this workload, with what its probe reported. */
export interface TracingProcess extends ServerProcess {
  api: ApiState
}

const SERVE_ONE = fileURLToPath(new URL('../serve-one.js', import.meta.url))
const HOOK = new URL('./tracing-off-hook.js', import.meta.url).href
const PROBE = new URL('./otel-probe.js', import.meta.url).href

/**
 * Starts `serve-one.js wsgiproxy-node <upstream>` for a variant (the hook first when it hides the
 * API, then the probe) and waits for the probe's line and `READY <port>`.
 *
 * @param variant - which process
 * @param upstream - the upstream's URL
 * @returns the process, with the API state its probe reported
 */
export function startTracingProcess(
  variant: TracingVariant,
  upstream: URL,
): Promise<TracingProcess> {
  const hook = variant.api === 'absent' ? ['--import', HOOK] : []
  const args = [...hook, '--import', PROBE, SERVE_ONE, 'wsgiproxy-node', upstream.href]
  const child = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, NODE_ENV: 'production' },
  })
  return new Promise((resolve, reject) => {
    let output = ''
    const onExit = (code: number | null): void =>
      reject(new Error(`${variant.id} exited with ${String(code)} before it was ready`))
    child.once('exit', onExit)
    child.once('error', reject)
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (text: string) => {
      output += text
      const api = /OTEL_API (present|absent)/.exec(output)?.[1] as ApiState | undefined
      const ready = /READY (\d+)/.exec(output)
      if (api === undefined || ready === null) return
      child.off('exit', onExit)
      child.stdout?.removeAllListeners('data')
      child.stdout?.resume()
      resolve({
        id: variant.id,
        pid: child.pid ?? -1,
        port: Number(ready[1]),
        api,
        stop: () => stopChild(child),
      })
    })
  })
}

async function measure(
  server: ServerProcess,
  settings: RunSettings,
  duration: number,
): Promise<Sample> {
  resetPeakRss(server.pid)
  const cpuBefore = cpuMicros(server.pid)
  const result = await runLoad(settings.load, {
    url: `http://127.0.0.1:${server.port}/1k`,
    connections: TRACING_WORKLOAD.connections,
    duration,
    method: 'GET',
    ...(settings.amount === undefined ? {} : { amount: settings.amount }),
  })
  const cpu = cpuMicros(server.pid) - cpuBefore
  return {
    rate: result.requestsPerSecond,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    requests: result.requests,
    errors: result.errors,
    badStatus: result.badStatus,
    cpuMicrosPerRequest: result.requests > 0 ? cpu / result.requests : Number.NaN,
    peakRssMB: peakRssBytes(server.pid) / 1e6,
  }
}

/**
 * Runs the tracing-off workload: an upstream and the three processes, each checked (its probe must
 * report the API state of its variant, and it must proxy `GET /1k` and the 64 KiB echo), warmed
 * up, then measured once per round, the order rotated every round. Every process is stopped
 * before it returns.
 *
 * @param settings - rounds, durations, load tool (as the other workloads)
 * @param log - progress lines
 * @returns the samples and summaries of every process
 * @throws Error when a process reports the wrong API state or does not proxy correctly
 */
export async function runTracingCost(settings: RunSettings, log: Log): Promise<TracingCostResult> {
  const processes: ServerProcess[] = []
  try {
    const upstream = await startServerProcess('upstream')
    processes.push(upstream)
    const upstreamUrl = new URL(`http://127.0.0.1:${upstream.port}/`)
    const entries: Array<{ variant: TracingVariant; server: TracingProcess; samples: Sample[] }> =
      []
    for (const variant of TRACING_VARIANTS) {
      const server = await startTracingProcess(variant, upstreamUrl)
      processes.push(server)
      if (server.api !== variant.api) {
        throw new Error(
          `${variant.id} must run with @opentelemetry/api ${variant.api} (its probe says ${server.api})`,
        )
      }
      try {
        await verifyServer(`http://127.0.0.1:${server.port}`)
      } catch (error) {
        throw new Error(`${variant.id} does not proxy correctly: ${(error as Error).message}`, {
          cause: error,
        })
      }
      entries.push({ variant, server, samples: [] })
    }
    log(`${TRACING_WORKLOAD.id}: @opentelemetry/api loads in one process, not in the other two`)
    if (settings.warmup > 0) {
      for (const { server } of entries) await measure(server, settings, settings.warmup)
    }
    for (let rep = 0; rep < settings.reps; rep++) {
      for (const { variant, server, samples } of rotate(entries, rep)) {
        const sample = await measure(server, settings, settings.duration)
        samples.push(sample)
        const problems = sample.errors + sample.badStatus
        log(
          `[round ${rep + 1}/${settings.reps}] ${TRACING_WORKLOAD.id} ${variant.id}: ` +
            `${sample.rate.toFixed(0)} req/s, p99 ${sample.p99Ms.toFixed(2)} ms, ` +
            `${sample.cpuMicrosPerRequest.toFixed(0)} µs CPU/req` +
            (problems > 0 ? `, ${problems} errors` : ''),
        )
      }
    }
    return {
      workload: TRACING_WORKLOAD.id,
      variants: entries.map(({ variant, samples }) => ({
        ...variant,
        samples,
        summary: summarize(samples),
      })),
    }
  } finally {
    await Promise.all(processes.map((p) => p.stop()))
  }
}
