// One benchmark run: start the upstream and every server as separate processes, check that each
// proxies correctly, then measure the workloads interleaved and repeated.
import { createHash } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { cpuMicros, peakRssBytes, resetPeakRss, startServerProcess } from './processes.ts'
import type { ServerProcess } from './processes.ts'
import { download, runLoad } from './load.ts'
import type { LoadTool } from './load.ts'
import type { Cell, Sample, Workload } from './report.ts'
import { SMALL_BODY_BYTES } from './servers.ts'

/** Bytes of the echo workload's request body. */
export const ECHO_BYTES: number = 64 * 1024

/** A workload with the connections its load uses. */
export interface BenchWorkload extends Workload {
  connections: number
}

/** The workloads of issue 5, in table order. */
export const WORKLOADS: readonly BenchWorkload[] = [
  { id: 'get-1k-32', label: 'GET 1 KiB, 32 conns', kind: 'load', connections: 32 },
  { id: 'get-1k-128', label: 'GET 1 KiB, 128 conns', kind: 'load', connections: 128 },
  { id: 'echo-64k', label: 'POST echo 64 KiB, 32 conns', kind: 'load', connections: 32 },
  { id: 'download', label: 'download', kind: 'download', connections: 1 },
]

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
): Promise<Sample> {
  const echo = workload.id === 'echo-64k'
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

async function restart(server: ServerProcess, upstream: URL): Promise<ServerProcess> {
  await server.stop()
  const fresh = await startServerProcess(server.id, upstream)
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
 * Runs the benchmark: the upstream and each server in their own processes, verified, then every
 * workload measured for every server in each round, the server order rotated between rounds and
 * workloads. Every process is stopped before it returns.
 */
export async function runBenchmark(
  serverIds: readonly string[],
  workloadIds: readonly string[],
  settings: RunSettings,
  log: Log,
): Promise<Cell[]> {
  const workloads = WORKLOADS.filter((w) => workloadIds.includes(w.id))
  const processes: ServerProcess[] = []
  try {
    const upstream = await startServerProcess('upstream')
    processes.push(upstream)
    const upstreamUrl = new URL(`http://127.0.0.1:${upstream.port}/`)
    const servers: ServerProcess[] = []
    for (const id of serverIds) {
      const server = await startServerProcess(id, upstreamUrl)
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
    log(`started upstream and ${servers.length} servers; all proxy correctly`)

    const cells = new Map<string, Cell>()
    const warmed = new Set<string>()
    for (const s of servers) {
      for (const w of workloads)
        cells.set(`${s.id} ${w.id}`, { server: s.id, workload: w.id, samples: [] })
    }
    for (let rep = 0; rep < settings.reps; rep++) {
      for (const [index, workload] of workloads.entries()) {
        for (const server of rotate(servers, rep + index)) {
          // Every process is warmed up before its first measurement of each workload, including
          // one restarted for the download, which later rounds measure too: a cold process stays
          // slower for seconds (JIT tiers, heap limits), more so for some servers than others.
          const warmKey = `${server.pid} ${workload.id}`
          if (settings.warmup > 0 && workload.kind === 'load' && !warmed.has(warmKey)) {
            warmed.add(warmKey)
            await measureLoad(server, workload, settings, settings.warmup)
          }
          let sample: Sample
          if (workload.kind === 'load') {
            sample = await measureLoad(server, workload, settings, settings.duration)
          } else {
            // A fresh process, so its peak RSS is the download's and not the heap that earlier
            // workloads left behind.
            const fresh = await restart(server, upstreamUrl)
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
