// A latency histogram per phase of each proxied request, for finding what makes the p99, loaded
// into a benchmarked server process with `node --import ./dist/phase-probe.js dist/serve-one.js
// <server id> <upstream url>`. It reads the diagnostics channels Node's HTTP server and undici
// publish, so the server's own code is measured as it is:
//
// - front: the request head parsed → the upstream request made, by undici or node:http's client
//   (the proxy's own work before it);
// - upstream: the upstream request made → its response head read (queueing for a connection,
//   the upstream's work, the loopback both ways);
// - tail: the upstream response head → the response to the client finished (head and body
//   written);
// - total: the request head parsed → the response finished.
//
// Beside them: every GC pause by kind, and the event loop's delay. `SIGUSR2` prints the
// histograms as one JSON line on stderr and starts them again (a harness sends it after the
// warm-up and after the measurement); they are printed once more when the process exits.
import { AsyncLocalStorage } from 'node:async_hooks'
import dc from 'node:diagnostics_channel'
import type { RecordableHistogram } from 'node:perf_hooks'
import {
  constants,
  createHistogram,
  monitorEventLoopDelay,
  PerformanceObserver,
} from 'node:perf_hooks'

const PHASES = ['front', 'upstream', 'tail', 'total'] as const
type Phase = (typeof PHASES)[number]

let phases = newHistograms()
let gcPauses = new Map<string, RecordableHistogram>()
const loopDelay = monitorEventLoopDelay({ resolution: 1 })
loopDelay.enable()

function newHistograms(): Record<Phase, RecordableHistogram> {
  return {
    front: createHistogram(),
    upstream: createHistogram(),
    tail: createHistogram(),
    total: createHistogram(),
  }
}

// The times of one proxied request, in ns from `process.hrtime.bigint()`.
interface Times {
  start: bigint
  made?: bigint
  headers?: bigint
}

const current = new AsyncLocalStorage<Times>()
const byResponse = new WeakMap<object, Times>()
const byUpstreamRequest = new WeakMap<object, Times>()

const record = (phase: Phase, from: bigint | undefined, to: bigint): void => {
  if (from !== undefined && to > from) phases[phase].record(to - from)
}

dc.subscribe('http.server.request.start', (message) => {
  const times: Times = { start: process.hrtime.bigint() }
  byResponse.set((message as { response: object }).response, times)
  current.enterWith(times)
})
// The upstream request made: by undici, or by node:http's client (http-proxy and the other
// peers on it).
const made = (message: unknown): void => {
  const times = current.getStore()
  if (times === undefined) return
  times.made = process.hrtime.bigint()
  byUpstreamRequest.set((message as { request: object }).request, times)
  record('front', times.start, times.made)
}
// Its response head read.
const answered = (message: unknown): void => {
  const times = byUpstreamRequest.get((message as { request: object }).request)
  if (times === undefined) return
  times.headers = process.hrtime.bigint()
  record('upstream', times.made, times.headers)
}
dc.subscribe('undici:request:create', made)
dc.subscribe('undici:request:headers', answered)
dc.subscribe('http.client.request.start', made)
dc.subscribe('http.client.response.finish', answered)
dc.subscribe('http.server.response.finish', (message) => {
  const times = byResponse.get((message as { response: object }).response)
  if (times === undefined) return
  const now = process.hrtime.bigint()
  record('tail', times.headers, now)
  record('total', times.start, now)
})

new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const { detail } = entry as { detail?: { kind?: number } }
    const kind = String(detail?.kind ?? 'unknown')
    let histogram = gcPauses.get(kind)
    if (histogram === undefined) gcPauses.set(kind, (histogram = createHistogram()))
    histogram.record(Math.max(1, Math.round(entry.duration * 1e6)))
  }
}).observe({ entryTypes: ['gc'] })

// perf_hooks' GC kinds by number.
const GC_KINDS: Record<string, string> = {
  [String(constants.NODE_PERFORMANCE_GC_MAJOR)]: 'major',
  [String(constants.NODE_PERFORMANCE_GC_MINOR)]: 'minor',
  [String(constants.NODE_PERFORMANCE_GC_INCREMENTAL)]: 'incremental',
  [String(constants.NODE_PERFORMANCE_GC_WEAKCB)]: 'weak callbacks',
}

const ms = (ns: number): number => Math.round(ns / 1e3) / 1e3

function summary(histogram: RecordableHistogram | ReturnType<typeof monitorEventLoopDelay>) {
  return {
    count: histogram.count,
    meanMs: ms(histogram.mean || 0),
    p50Ms: ms(histogram.percentile(50)),
    p99Ms: ms(histogram.percentile(99)),
    maxMs: ms(histogram.max || 0),
  }
}

function report(reason: string): void {
  const gc: Record<string, ReturnType<typeof summary> & { totalMs: number }> = {}
  for (const [kind, histogram] of gcPauses) {
    gc[GC_KINDS[kind] ?? kind] = {
      ...summary(histogram),
      totalMs: ms(histogram.mean * histogram.count),
    }
  }
  const line = {
    reason,
    phases: Object.fromEntries(PHASES.map((p) => [p, summary(phases[p])])),
    gc,
    loopDelay: summary(loopDelay),
  }
  process.stderr.write(`PHASES ${JSON.stringify(line)}\n`)
}

process.on('SIGUSR2', () => {
  report('signal')
  phases = newHistograms()
  gcPauses = new Map()
  loopDelay.reset()
})
process.on('exit', () => report('exit'))
