// One benchmark run: start the upstream (three for the pool workloads) and every server as
// separate processes, check that each proxies correctly, then measure the workloads interleaved
// and repeated.
import { createHash } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { cpuMicros, peakRssBytes, resetPeakRss, startServerProcess } from './processes.ts'
import type { ServerProcess } from './processes.ts'
import { download, runLoad } from './load.ts'
import type { LoadTool } from './load.ts'
import type { Cell, Sample, Workload } from './report.ts'
import { REQUEST_COUNT_PATH, SMALL_BODY_BYTES } from './servers.ts'
import type { ServerInfo } from './servers.ts'

/** Bytes of the echo workload's request body. */
export const ECHO_BYTES: number = 64 * 1024

/** A workload with the connections its load uses. */
export interface BenchWorkload extends Workload {
  connections: number
}

/** The workloads of issue 5, then the pool's (GET 1 KiB over three upstreams), in table order. */
export const WORKLOADS: readonly BenchWorkload[] = [
  { id: 'get-1k-32', label: 'GET 1 KiB, 32 conns', kind: 'load', connections: 32 },
  { id: 'get-1k-128', label: 'GET 1 KiB, 128 conns', kind: 'load', connections: 128 },
  { id: 'echo-64k', label: 'POST echo 64 KiB, 32 conns', kind: 'load', connections: 32 },
  { id: 'download', label: 'download', kind: 'download', connections: 1 },
  {
    id: 'pool-get-1k-32',
    label: 'pool of 3, GET 1 KiB, 32 conns',
    kind: 'load',
    connections: 32,
    pool: true,
  },
  {
    id: 'pool-get-1k-128',
    label: 'pool of 3, GET 1 KiB, 128 conns',
    kind: 'load',
    connections: 128,
    pool: true,
  },
]

/** How many upstream processes the pool workloads run over. */
export const POOL_UPSTREAMS = 3

/** Whether a server is measured on a workload: the pool's servers on the pool's workloads only. */
export function measures(server: Pick<ServerInfo, 'pool'>, workload: BenchWorkload): boolean {
  return (server.pool ?? false) === (workload.pool ?? false)
}

/** How long and how often to measure. */
export interface RunSettings {
  load: LoadTool
  /** Rounds over every server and workload; medians are taken across them. */
  reps: number
  /** Seconds per load measurement. */
  duration: number
  /** Seconds of unmeasured load per server and workload before the first round (JIT warm-up). */
  warmup: number
  /** Stop each load after this many requests instead (smoke runs; autocannon). */
  amount?: number
  /** Bytes of the download workload. */
  downloadBytes: number
}

/** Progress lines go here (stderr by default). */
export type Log = (line: string) => void

function requestOnce(
  url: string,
  method: 'GET' | 'POST',
  body?: Buffer,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
      res.once('error', reject)
    })
    req.once('error', reject)
    req.end(body)
  })
}

const digest = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

// How many requests each upstream has answered so far, in order.
function requestCounts(upstreams: readonly ServerProcess[]): Promise<number[]> {
  return Promise.all(
    upstreams.map(async ({ port }) => {
      const { body } = await requestOnce(`http://127.0.0.1:${port}${REQUEST_COUNT_PATH}`, 'GET')
      return Number(body.toString())
    }),
  )
}

/**
 * Checks that a server proxies the benchmark's requests correctly before it is measured: a
 * fast wrong answer must not win.
 */
export async function verifyServer(origin: string): Promise<void> {
  const small = await requestOnce(`${origin}/1k`, 'GET')
  if (small.status !== 200 || small.body.length !== SMALL_BODY_BYTES) {
    throw new Error(`GET /1k gave ${small.status} with ${small.body.length} bytes`)
  }
  const sent = Buffer.alloc(ECHO_BYTES)
  for (let i = 0; i < sent.length; i++) sent[i] = (i * 31) & 0xff
  const echo = await requestOnce(`${origin}/echo`, 'POST', sent)
  if (echo.status !== 200 || digest(echo.body) !== digest(sent)) {
    throw new Error(`POST /echo gave ${echo.status} with ${echo.body.length} different bytes`)
  }
}

async function measureLoad(
  server: ServerProcess,
  workload: BenchWorkload,
  settings: RunSettings,
  duration: number,
  upstreams: readonly ServerProcess[],
): Promise<Sample> {
  const echo = workload.id === 'echo-64k'
  const before = workload.pool === true ? await requestCounts(upstreams) : undefined
  resetPeakRss(server.pid)
  const cpuBefore = cpuMicros(server.pid)
  const result = await runLoad(settings.load, {
    url: `http://127.0.0.1:${server.port}${echo ? '/echo' : '/1k'}`,
    connections: workload.connections,
    duration,
    ...(settings.amount === undefined ? {} : { amount: settings.amount }),
    method: echo ? 'POST' : 'GET',
    ...(echo ? { bodyBytes: ECHO_BYTES } : {}),
  })
  const cpu = cpuMicros(server.pid) - cpuBefore
  const peakRssMB = peakRssBytes(server.pid) / 1e6
  const after = before === undefined ? undefined : await requestCounts(upstreams)
  return {
    rate: result.requestsPerSecond,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    requests: result.requests,
    errors: result.errors,
    badStatus: result.badStatus,
    cpuMicrosPerRequest: result.requests > 0 ? cpu / result.requests : Number.NaN,
    peakRssMB,
    ...(after === undefined ? {} : { spread: after.map((n, i) => n - (before?.[i] ?? 0)) }),
  }
}

async function measureDownload(server: ServerProcess, settings: RunSettings): Promise<Sample> {
  resetPeakRss(server.pid)
  const cpuBefore = cpuMicros(server.pid)
  const url = `http://127.0.0.1:${server.port}/download/${settings.downloadBytes}`
  const result = await download(url)
  const cpu = cpuMicros(server.pid) - cpuBefore
  const complete = result.status === 200 && result.bytes === settings.downloadBytes
  return {
    rate: result.mibPerSecond,
    p50Ms: result.seconds * 1000,
    p99Ms: result.seconds * 1000,
    requests: 1,
    errors: complete ? 0 : 1,
    badStatus: 0,
    cpuMicrosPerRequest: cpu,
    peakRssMB: peakRssBytes(server.pid) / 1e6,
  }
}

async function restart(server: ServerProcess, upstreams: readonly URL[]): Promise<ServerProcess> {
  await server.stop()
  const fresh = await startServerProcess(server.id, upstreams)
  // The same check as at the start, which also warms up the connection pool.
  await verifyServer(`http://127.0.0.1:${fresh.port}`)
  return fresh
}

/** Rotates a list left by `by` places, so each round starts with a different server. */
export function rotate<T>(items: readonly T[], by: number): T[] {
  if (items.length === 0) return []
  const k = ((by % items.length) + items.length) % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}

/**
 * Runs the benchmark: the upstream (three when a pool workload runs) and each server in their
 * own processes, verified, then every workload measured for every server that {@link measures}
 * it in each round, the server order rotated between rounds and workloads. Servers that measure
 * none of the workloads are not started. Every process is stopped before it returns.
 */
export async function runBenchmark(
  selected: readonly Pick<ServerInfo, 'id' | 'pool'>[],
  workloadIds: readonly string[],
  settings: RunSettings,
  log: Log,
): Promise<Cell[]> {
  const workloads = WORKLOADS.filter((w) => workloadIds.includes(w.id))
  const wanted = selected.filter((s) => workloads.some((w) => measures(s, w)))
  const pooled = new Set(wanted.filter((s) => s.pool === true).map((s) => s.id))
  const measured = (id: string, w: BenchWorkload): boolean => measures({ pool: pooled.has(id) }, w)
  const processes: ServerProcess[] = []
  try {
    const upstreams: ServerProcess[] = []
    while (upstreams.length < (pooled.size > 0 ? POOL_UPSTREAMS : 1)) {
      const upstream = await startServerProcess('upstream')
      processes.push(upstream)
      upstreams.push(upstream)
    }
    // Servers that are not a pool's use the first.
    const upstreamUrls = upstreams.map(({ port }) => new URL(`http://127.0.0.1:${port}/`))
    const servers: ServerProcess[] = []
    for (const { id } of wanted) {
      const server = await startServerProcess(id, upstreamUrls)
      processes.push(server)
      try {
        await verifyServer(`http://127.0.0.1:${server.port}`)
      } catch (error) {
        throw new Error(`${id} does not proxy correctly: ${(error as Error).message}`, {
          cause: error,
        })
      }
      servers.push(server)
    }
    log(
      `started ${upstreams.length} upstream(s) and ${servers.length} servers; all proxy correctly`,
    )

    const cells = new Map<string, Cell>()
    const warmed = new Set<string>()
    for (const s of servers) {
      for (const w of workloads) {
        if (measured(s.id, w))
          cells.set(`${s.id} ${w.id}`, { server: s.id, workload: w.id, samples: [] })
      }
    }
    for (let rep = 0; rep < settings.reps; rep++) {
      for (const [index, workload] of workloads.entries()) {
        const measuring = servers.filter((s) => measured(s.id, workload))
        for (const server of rotate(measuring, rep + index)) {
          // Every process is warmed up before its first measurement of each workload, including
          // one restarted for the download, which later rounds measure too: a cold process stays
          // slower for seconds (JIT tiers, heap limits), more so for some servers than others.
          const warmKey = `${server.pid} ${workload.id}`
          if (settings.warmup > 0 && workload.kind === 'load' && !warmed.has(warmKey)) {
            warmed.add(warmKey)
            await measureLoad(server, workload, settings, settings.warmup, upstreams)
          }
          let sample: Sample
          if (workload.kind === 'load') {
            sample = await measureLoad(server, workload, settings, settings.duration, upstreams)
          } else {
            // A fresh process, so its peak RSS is the download's and not the heap that earlier
            // workloads left behind.
            const fresh = await restart(server, upstreamUrls)
            processes.push(fresh)
            servers[servers.indexOf(server)] = fresh
            sample = await measureDownload(fresh, settings)
          }
          cells.get(`${server.id} ${workload.id}`)?.samples.push(sample)
          const unit = workload.kind === 'load' ? 'req/s' : 'MiB/s'
          const problems = sample.errors + sample.badStatus
          log(
            `[round ${rep + 1}/${settings.reps}] ${workload.id} ${server.id}: ` +
              `${sample.rate.toFixed(0)} ${unit}, p99 ${sample.p99Ms.toFixed(2)} ms, ` +
              `${sample.cpuMicrosPerRequest.toFixed(0)} µs CPU/req, RSS ${sample.peakRssMB.toFixed(0)} MB` +
              (sample.spread === undefined ? '' : `, per upstream ${sample.spread.join(' / ')}`) +
              (problems > 0 ? `, ${problems} errors` : ''),
          )
        }
      }
    }
    return [...cells.values()]
  } finally {
    await Promise.all(processes.map((p) => p.stop()))
  }
}
