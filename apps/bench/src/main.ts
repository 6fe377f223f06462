// `pnpm bench`: this project against its peers in one run on one machine (docs/design.md §10).
// Markdown to stdout, JSON to --out (default results/bench-<time>.json), progress to stderr.
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, release, type } from 'node:os'
import { dirname, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { parseCheckouts, serversOfCheckouts, useCheckouts } from './lib/checkouts.ts'
import { detectH2load } from './lib/h2load.ts'
import { detectLoadTool, loadToolVersion, pickDownloadClient } from './lib/load.ts'
import type { LoadTool } from './lib/load.ts'
import { renderPoolMarkdown } from './lib/pool-report.ts'
import { POOL_SERVERS } from './lib/pool-servers.ts'
import { checkTargets, renderMarkdown, summarizeCells } from './lib/report.ts'
import {
  H2_CLIENTS,
  H2_STREAMS,
  measures,
  POOL_UPSTREAMS,
  runBenchmark,
  WORKLOADS,
} from './lib/run.ts'
import type { RunSettings } from './lib/run.ts'
import { SERVERS } from './lib/servers.ts'
import type { Front } from './lib/servers.ts'
import { renderSigningMarkdown } from './lib/signing-report.ts'
import { SIGNING_SERVERS } from './lib/signing-servers.ts'
import { renderTlsMarkdown } from './lib/tls-report.ts'
import { TLS_SERVERS } from './lib/tls-servers.ts'
import { runTracingCost, TRACING_WORKLOAD } from './lib/tracing-cost.ts'
import type { TracingCostResult } from './lib/tracing-cost.ts'
import { renderTracingMarkdown } from './lib/tracing-report.ts'

const ALL_SERVERS = [...SERVERS, ...POOL_SERVERS, ...TLS_SERVERS, ...SIGNING_SERVERS]
// `--workloads pool`, `https`, `h2` and `signing` name the workloads of the pool, of each TLS
// front and of the replay stores.
const GROUPS: Readonly<Record<string, readonly string[]>> = {
  pool: WORKLOADS.filter((w) => w.pool === true).map((w) => w.id),
  signing: WORKLOADS.filter((w) => w.signing === true).map((w) => w.id),
  https: WORKLOADS.filter((w) => w.front === 'https').map((w) => w.id),
  h2: WORKLOADS.filter((w) => w.front === 'h2').map((w) => w.id),
}

const USAGE = `usage: node dist/main.js [--quick | --smoke] [options]

  --quick              one round, 2 s per load, fewer servers (about 2½ minutes)
  --smoke              200 requests per load with autocannon, 8 MiB download: checks the plumbing
  --reps N             rounds (default 3)
  --duration S         seconds per load measurement (default 5)
  --warmup S           seconds of warm-up per server and workload (default 2)
  --download-mib N     size of the download workload (default 256)
  --servers a,b        server ids (default all): ${ALL_SERVERS.map((s) => s.id).join(', ')}
  --workloads a,b      workload ids (default all): ${WORKLOADS.map((w) => w.id).join(', ')};
                       pool = ${GROUPS['pool']?.join(',')} (only the pool-* servers run them)
                       https = ${GROUPS['https']?.join(',')} (only the https-* servers, wrk over TLS)
                       h2 = ${GROUPS['h2']?.join(',')} (only the h2-* servers; h2load, skipped
                       when it is not installed: apt-get install -y nghttp2-client)
                       signing = ${GROUPS['signing']?.join(',')} (only the signing-* servers:
                       MemoryReplayStore vs RedisReplayStore; needs redis-server)
                       ${TRACING_WORKLOAD.id} = the node listener with @opentelemetry/api installed and
                       no SDK against one that cannot import it (processes of its own)
  --load wrk|autocannon  load generator (default wrk when installed)
  --out FILE           where to write the JSON results
  --checkouts A=DIR,B=DIR  other built checkouts of this repository: a server id ending in @A is
                       that server as DIR builds it (pnpm bench:compare sets this)
`

function fail(message: string): never {
  console.error(`bench: ${message}\n\n${USAGE}`)
  process.exit(1)
}

// `pnpm bench -- --workloads pool` passes the `--` on: what follows it is ours all the same.
const args = process.argv.slice(2)
const { values } = parseArgs({
  args: args[0] === '--' ? args.slice(1) : args,
  options: {
    quick: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    reps: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    'download-mib': { type: 'string' },
    servers: { type: 'string' },
    workloads: { type: 'string' },
    load: { type: 'string' },
    out: { type: 'string' },
    checkouts: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
  strict: true,
})
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}

function positive(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value < 0)
    fail(`--${name} must be a non-negative number (got "${raw}")`)
  return value
}

function list(
  name: string,
  raw: string | undefined,
  known: readonly string[],
  fallback: readonly string[],
) {
  if (raw === undefined) return fallback
  const ids = raw.split(',').filter((id) => id !== '')
  const unknown = ids.filter((id) => !known.includes(id))
  if (unknown.length > 0)
    fail(`--${name}: unknown ${unknown.join(', ')} (known: ${known.join(', ')})`)
  return ids
}

const mode = values.smoke ? 'smoke' : values.quick ? 'quick' : 'full'
const load: LoadTool =
  values.load === undefined
    ? mode === 'smoke'
      ? 'autocannon'
      : detectLoadTool()
    : values.load === 'wrk' || values.load === 'autocannon'
      ? values.load
      : fail(`--load must be wrk or autocannon (got "${values.load}")`)

let checkouts: ReturnType<typeof parseCheckouts> = []
try {
  checkouts = values.checkouts === undefined ? [] : parseCheckouts(values.checkouts)
} catch (error) {
  fail((error as Error).message)
}
useCheckouts(checkouts)
// This checkout's servers, and each of them as every other checkout builds it.
const KNOWN_SERVERS = [...ALL_SERVERS, ...serversOfCheckouts(ALL_SERVERS, checkouts)]
const allServers = ALL_SERVERS.map((s) => s.id)
// Quick runs leave out the two variants that only explain the others (global fetch, Pool.request).
const quickServers = allServers.filter(
  (id) => id !== 'wsgiproxy-fetch-global' && id !== 'undici-request',
)
const serverIds = list(
  'servers',
  values.servers,
  KNOWN_SERVERS.map((s) => s.id),
  mode === 'quick' ? quickServers : allServers,
)
// The tracing-off workload runs its own processes after the others (lib/tracing-cost.ts).
const tracing =
  values.workloads === undefined || values.workloads.split(',').includes(TRACING_WORKLOAD.id)
const askedWorkloads = list(
  'workloads',
  values.workloads
    ?.split(',')
    .flatMap((id) => GROUPS[id] ?? [id])
    .filter((id) => id !== TRACING_WORKLOAD.id)
    .join(','),
  WORKLOADS.map((w) => w.id),
  WORKLOADS.map((w) => w.id),
)
// The HTTP/2 workload needs h2load; without it the run goes on without that workload.
const h2load = detectH2load()
const h2Skipped =
  h2load === undefined ? askedWorkloads.filter((id) => GROUPS['h2']?.includes(id)) : []
if (h2Skipped.length > 0) {
  console.error(
    `bench: skipping ${h2Skipped.join(', ')}: h2load is not installed (apt-get install -y nghttp2-client)`,
  )
}
const workloadIds = askedWorkloads.filter((id) => !h2Skipped.includes(id))
const selectedWorkloads = WORKLOADS.filter((w) => workloadIds.includes(w.id))
// Only servers that measure one of the workloads run: the pool's run the pool workloads only, the
// https-* and h2-* servers those of their front only.
const selectedServers = KNOWN_SERVERS.filter(
  (s) => serverIds.includes(s.id) && selectedWorkloads.some((w) => measures(s, w)),
)
if (selectedServers.length === 0 && !tracing) {
  fail(
    selectedWorkloads.length === 0
      ? 'no workload left to run'
      : 'none of the servers runs any of the workloads (the pool-* servers run only pool-* workloads, the https-* and h2-* servers only those of their front)',
  )
}

const defaults = {
  full: { reps: 3, duration: 5, warmup: 2, mib: 256 },
  quick: { reps: 1, duration: 2, warmup: 1, mib: 256 },
  smoke: { reps: 1, duration: 1, warmup: 0, mib: 8 },
}[mode]
const settings: RunSettings = {
  load,
  reps: Math.max(1, Math.round(positive('reps', values.reps, defaults.reps))),
  duration: positive('duration', values.duration, defaults.duration),
  warmup: positive('warmup', values.warmup, defaults.warmup),
  downloadBytes: Math.round(
    positive('download-mib', values['download-mib'], defaults.mib) * 1048576,
  ),
  ...(mode === 'smoke' ? { amount: 200 } : {}),
  downloadClient: pickDownloadClient(),
}

const started = new Date()
const cells =
  selectedServers.length === 0
    ? []
    : await runBenchmark(selectedServers, workloadIds, settings, (line) => console.error(line))
const tracingCost: TracingCostResult | undefined = tracing
  ? await runTracingCost(settings, (line) => console.error(line))
  : undefined
const summaries = summarizeCells(cells)
const targets = checkTargets(summaries)
const cpu = cpus()
const mib = settings.downloadBytes / 1048576
const hasFront = (front: Front): boolean => selectedWorkloads.some((w) => w.front === front)
const context = [
  `date: ${started.toISOString()}`,
  `machine: ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${type()} ${release()}, Node ${process.version}`,
  // The HTTP/2 workload has its own line: without any other, neither wrk nor autocannon runs.
  `load: ${tracing || selectedWorkloads.some((w) => w.front !== 'h2') ? `${loadToolVersion(load)}, one thread` : 'h2load only'}, loopback; upstream and every proxy in separate processes` +
    (selectedWorkloads.some((w) => w.pool === true)
      ? ` (${POOL_UPSTREAMS} upstreams for the pool workloads)`
      : '') +
    (hasFront('https') ? `; HTTPS with the same tool over TLS` : ''),
  ...(selectedServers.some((s) => s.redis === true)
    ? [
        'signing: front and verifying backend in one process; RedisReplayStore on a redis-server (no persistence) on loopback, started for the run',
      ]
    : []),
  ...(hasFront('h2')
    ? [
        `HTTP/2 load: ${h2load ?? 'h2load'}, one thread, ${H2_CLIENTS} connections × ${H2_STREAMS} streams, TLS with ALPN h2; latency is its mean and max (no percentiles)`,
      ]
    : []),
  ...(hasFront('https') || hasFront('h2')
    ? [
        "TLS: a self-signed ECDSA P-256 certificate made for this run, Node's default TLS settings on every server; the upstream stays plain HTTP/1.1",
      ]
    : []),
  ...(h2Skipped.length > 0
    ? [
        `skipped: ${h2Skipped.join(', ')} (h2load is not installed: apt-get install -y nghttp2-client)`,
      ]
    : []),
  `mode: ${mode}; ${settings.reps} round(s) of ${settings.amount === undefined ? `${settings.duration} s` : `${settings.amount} requests`} per load after ${settings.warmup} s warm-up, order rotated each round; download: ${mib} MiB once per round, read by ${settings.downloadClient === 'curl' ? 'curl' : 'a node:http client in the benchmark process'}`,
]
const workloads = selectedWorkloads.map((w) =>
  w.kind === 'download' ? { ...w, label: `${mib} MiB download` } : w,
)
const servers = selectedServers.map(({ id, label, pool, front, signing }) => ({
  id,
  label,
  pool: pool ?? false,
  front: front ?? 'http',
  signing: signing ?? false,
}))
// The plain-HTTP tables hold neither the pool's servers, the TLS fronts' nor the signing ones.
const ofPool =
  (pool: boolean) =>
  (item: { pool?: boolean; front?: Front; signing?: boolean }): boolean =>
    (item.pool ?? false) === pool &&
    (item.front ?? 'http') === 'http' &&
    (item.signing ?? false) === false
const ofSigning = (item: { signing?: boolean }): boolean => item.signing === true
const ofTls = (item: { front?: Front }): boolean => (item.front ?? 'http') !== 'http'
process.stdout.write(
  renderMarkdown({
    title: `wsgiproxy benchmark (${mode})`,
    context,
    servers: servers.filter(ofPool(false)),
    workloads: workloads.filter(ofPool(false)),
    summaries,
    targets,
  }) +
    renderPoolMarkdown(servers.filter(ofPool(true)), workloads.filter(ofPool(true)), summaries) +
    renderTlsMarkdown(servers.filter(ofTls), workloads.filter(ofTls), summaries) +
    renderSigningMarkdown(servers.filter(ofSigning), workloads.filter(ofSigning), summaries) +
    renderTracingMarkdown(tracingCost),
)

const out = resolve(
  values.out ??
    `results/bench-${started.toISOString().replaceAll(':', '-').replace(/\..*/, '')}.json`,
)
mkdirSync(dirname(out), { recursive: true })
writeFileSync(
  out,
  `${JSON.stringify({ mode, started: started.toISOString(), context, settings, servers, workloads, cells, summaries, targets, tracing: tracingCost }, null, 2)}\n`,
)
console.error(`results written to ${out}`)
