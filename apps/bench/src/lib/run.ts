// One benchmark run: start the upstream (three for the pool workloads) and every server as
// separate processes, check that each proxies correctly, then measure the workloads interleaved
// and repeated.
import { createHash } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import { connect as http2Connect, constants as http2Constants } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { createBenchCertificate } from './certificate.ts'
import type { BenchCertificate } from './certificate.ts'
import { runH2load } from './h2load.ts'
import { cpuMicros, peakRssBytes, resetPeakRss, rssBytes, startServerProcess } from './processes.ts'
import type { ServerProcess } from './processes.ts'
import { REDIS_ENV, startBenchRedis } from './redis.ts'
import type { BenchRedis } from './redis.ts'
import { download, runLoad } from './load.ts'
import type { DownloadClient, LoadResult, LoadTool } from './load.ts'
import type { Cell, Sample, Workload } from './report.ts'
import { REQUEST_COUNT_PATH, SMALL_BODY_BYTES } from './servers.ts'
import type { Front, ServerInfo } from './servers.ts'

/** Bytes of the echo workload's request body. */
export const ECHO_BYTES: number = 64 * 1024

/** A workload with the connections its load uses. */
export interface BenchWorkload extends Workload {
  connections: number
  /** HTTP/2: requests in flight on each connection (h2load's `-m`). Default 1. */
  streams?: number
}

/** HTTP/2 load: connections, and requests in flight on each (128 in all, as `get-1k-128`). */
export const H2_CLIENTS = 32
export const H2_STREAMS = 4

/**
 * The workloads of issue 5, then the pool's (GET 1 KiB over three upstreams), then GET 1 KiB over
 * HTTPS (wrk) and over HTTP/2 (h2load), then signed GET 1 KiB through a verifying backend, in
 * table order.
 */
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
  {
    id: 'https-get-1k-32',
    label: 'HTTPS GET 1 KiB, 32 conns',
    kind: 'load',
    connections: 32,
    front: 'https',
  },
  {
    id: 'https-get-1k-128',
    label: 'HTTPS GET 1 KiB, 128 conns',
    kind: 'load',
    connections: 128,
    front: 'https',
  },
  {
    id: `h2-get-1k-${H2_CLIENTS}x${H2_STREAMS}`,
    label: `HTTP/2 GET 1 KiB, ${H2_CLIENTS} conns × ${H2_STREAMS} streams`,
    kind: 'load',
    connections: H2_CLIENTS,
    streams: H2_STREAMS,
    front: 'h2',
  },
  {
    id: 'signing-get-1k-32',
    label: 'signed GET 1 KiB, 32 conns',
    kind: 'load',
    connections: 32,
    signing: true,
  },
]

/** How many upstream processes the pool workloads run over. */
export const POOL_UPSTREAMS = 3

/**
 * Whether a server is measured on a workload: the pool's servers on the pool's workloads only, the
 * signing servers on the signing workload only, and each server on the workloads of its front
 * (plain HTTP, HTTPS or HTTP/2) only.
 */
export function measures(
  server: Pick<ServerInfo, 'pool' | 'front' | 'signing'>,
  workload: Pick<Workload, 'pool' | 'front' | 'signing'>,
): boolean {
  return (
    (server.pool ?? false) === (workload.pool ?? false) &&
    (server.signing ?? false) === (workload.signing ?? false) &&
    (server.front ?? 'http') === (workload.front ?? 'http')
  )
}

/** Whether a workload's load speaks TLS to the proxy (HTTPS or HTTP/2). */
export const needsTls = (workload: Pick<Workload, 'front'>): boolean =>
  (workload.front ?? 'http') !== 'http'

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
  /** What reads the download (default: this process's `node:http` client). */
  downloadClient?: DownloadClient
}

/** Progress lines go here (stderr by default). */
export type Log = (line: string) => void

/** A response as {@link verifyServer} reads it, with the protocol it came over. */
interface Answer {
  status: number
  body: Buffer
  /** `HTTP/1.1` or `h2`. */
  protocol: string
}

// One request over a new connection: plain HTTP, or HTTPS trusting only the run's certificate.
function requestOnce(
  url: string,
  method: 'GET' | 'POST',
  body?: Buffer,
  ca?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const onResponse = (res: IncomingMessage): void => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.once('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks),
          protocol: `HTTP/${res.httpVersion}`,
        }),
      )
      res.once('error', reject)
    }
    const req = url.startsWith('https:')
      ? httpsRequest(url, { method, agent: false, ...(ca === undefined ? {} : { ca }) }, onResponse)
      : httpRequest(url, { method, agent: false }, onResponse)
    req.once('error', reject)
    req.end(body)
  })
}

// One request over a new HTTP/2 session (ALPN h2 only), trusting only the run's certificate.
function requestOnceH2(
  origin: string,
  path: string,
  method: 'GET' | 'POST',
  body: Buffer | undefined,
  ca: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(origin, { ca, ALPNProtocols: ['h2'] })
    const fail = (error: Error): void => {
      session.destroy()
      reject(error)
    }
    session.once('error', fail)
    // With its length, as curl and browsers send a body they hold: fastify reads an HTTP/2
    // request without content-length (there is no chunked encoding in HTTP/2) as having no body.
    const headers: OutgoingHttpHeaders = {
      [http2Constants.HTTP2_HEADER_METHOD]: method,
      [http2Constants.HTTP2_HEADER_PATH]: path,
      ...(body === undefined
        ? {}
        : { 'content-type': 'application/octet-stream', 'content-length': body.length }),
    }
    const stream = session.request(headers)
    let status = 0
    const chunks: Buffer[] = []
    stream.once('response', (head) => {
      status = Number(head[http2Constants.HTTP2_HEADER_STATUS])
    })
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.once('error', fail)
    stream.once('end', () => {
      const protocol = session.alpnProtocol ?? 'none'
      session.close()
      resolve({ status, body: Buffer.concat(chunks), protocol })
    })
    stream.end(body)
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

/** The origin a server answers on for a front: `http://` or, over TLS, `https://` 127.0.0.1. */
export function originOf(port: number, front: Front = 'http'): string {
  return `${front === 'http' ? 'http' : 'https'}://127.0.0.1:${port}`
}

/**
 * Checks that a server proxies the benchmark's requests correctly before it is measured (a fast
 * wrong answer must not win): `GET /1k` and a 64 KiB `POST /echo` byte for byte, over the
 * protocol of its front. Over TLS only the run's certificate (`ca`) is trusted; `https` must
 * answer HTTP/1.1 and `h2` must negotiate h2 by ALPN.
 *
 * @throws Error saying what was expected and what came back
 */
export async function verifyServer(
  origin: string,
  front: Front = 'http',
  ca?: string,
): Promise<void> {
  if (front !== 'http' && ca === undefined) {
    throw new Error(`checking a server over ${front} needs the run's certificate`)
  }
  const ask = (path: string, method: 'GET' | 'POST', body?: Buffer): Promise<Answer> =>
    front === 'h2'
      ? requestOnceH2(origin, path, method, body, ca as string)
      : requestOnce(`${origin}${path}`, method, body, ca)
  const expected = front === 'h2' ? 'h2' : 'HTTP/1.1'
  const small = await ask('/1k', 'GET')
  if (small.status !== 200 || small.body.length !== SMALL_BODY_BYTES) {
    throw new Error(`GET /1k gave ${small.status} with ${small.body.length} bytes`)
  }
  if (small.protocol !== expected) {
    throw new Error(`GET /1k over ${front} came back over ${small.protocol}, not ${expected}`)
  }
  const sent = Buffer.alloc(ECHO_BYTES)
  for (let i = 0; i < sent.length; i++) sent[i] = (i * 31) & 0xff
  const echo = await ask('/echo', 'POST', sent)
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
  const url = `${originOf(server.port, workload.front)}${echo ? '/echo' : '/1k'}`
  const amount = settings.amount === undefined ? {} : { amount: settings.amount }
  resetPeakRss(server.pid)
  const cpuBefore = cpuMicros(server.pid)
  const result: LoadResult =
    workload.front === 'h2'
      ? await runH2load({
          url,
          clients: workload.connections,
          streams: workload.streams ?? 1,
          duration,
          ...amount,
        })
      : await runLoad(settings.load, {
          url,
          connections: workload.connections,
          duration,
          ...amount,
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
    ...(result.meanMs === undefined ? {} : { meanMs: result.meanMs }),
    ...(result.maxMs === undefined ? {} : { maxMs: result.maxMs }),
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
  const result = await download(url, settings.downloadClient)
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

async function restart(
  server: ServerProcess,
  upstreams: readonly URL[],
  certificate: BenchCertificate | undefined,
): Promise<ServerProcess> {
  await server.stop()
  const fresh = await startServerProcess(server.id, upstreams, certificate)
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
 * own processes, verified (their RSS at rest read then), then every workload measured for every server that {@link measures}
 * it in each round, the server order rotated between rounds and workloads. Servers that measure
 * none of the workloads are not started. When a workload speaks TLS, one self-signed certificate
 * is made for the run and given to every server process; when a server needs Redis, one
 * `redis-server` is started for the run and its URL given to every server process. Every process
 * is stopped before it returns.
 */
export async function runBenchmark(
  selected: readonly Pick<ServerInfo, 'id' | 'pool' | 'front' | 'signing' | 'redis'>[],
  workloadIds: readonly string[],
  settings: RunSettings,
  log: Log,
): Promise<Cell[]> {
  const workloads = WORKLOADS.filter((w) => workloadIds.includes(w.id))
  const wanted = selected.filter((s) => workloads.some((w) => measures(s, w)))
  const byId = new Map(wanted.map((s) => [s.id, s]))
  const measured = (id: string, w: BenchWorkload): boolean => measures(byId.get(id) ?? {}, w)
  const pooled = wanted.some((s) => s.pool === true)
  const certificate = workloads.some(needsTls) ? await createBenchCertificate() : undefined
  if (certificate !== undefined) log('made a self-signed ECDSA P-256 certificate for this run')
  const processes: ServerProcess[] = []
  let redis: BenchRedis | undefined
  try {
    if (wanted.some((s) => s.redis === true)) {
      redis = await startBenchRedis()
      log(`started redis-server on ${redis.url} (pid ${redis.pid}) for the signing workload`)
    }
    const env: Record<string, string> = redis === undefined ? {} : { [REDIS_ENV]: redis.url }
    const upstreams: ServerProcess[] = []
    while (upstreams.length < (pooled ? POOL_UPSTREAMS : 1)) {
      const upstream = await startServerProcess('upstream')
      processes.push(upstream)
      upstreams.push(upstream)
    }
    // Servers that are not a pool's use the first.
    const upstreamUrls = upstreams.map(({ port }) => new URL(`http://127.0.0.1:${port}/`))
    const servers: ServerProcess[] = []
    const rest = new Map<string, number>()
    for (const { id, front } of wanted) {
      const server = await startServerProcess(id, upstreamUrls, certificate, env)
      processes.push(server)
      try {
        await verifyServer(originOf(server.port, front), front, certificate?.cert)
      } catch (error) {
        throw new Error(`${id} does not proxy correctly: ${(error as Error).message}`, {
          cause: error,
        })
      }
      rest.set(id, rssBytes(server.pid) / 1e6)
      servers.push(server)
    }
    log(
      `started ${upstreams.length} upstream(s) and ${servers.length} servers; all proxy correctly`,
    )

    const cells = new Map<string, Cell>()
    const warmed = new Set<string>()
    for (const s of servers) {
      for (const w of workloads) {
        if (!measured(s.id, w)) continue
        const restRssMB = rest.get(s.id)
        cells.set(`${s.id} ${w.id}`, {
          server: s.id,
          workload: w.id,
          samples: [],
          ...(restRssMB === undefined ? {} : { restRssMB }),
        })
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
            const fresh = await restart(server, upstreamUrls, certificate)
            processes.push(fresh)
            servers[servers.indexOf(server)] = fresh
            sample = await measureDownload(fresh, settings)
          }
          cells.get(`${server.id} ${workload.id}`)?.samples.push(sample)
          const unit = workload.kind === 'load' ? 'req/s' : 'MiB/s'
          const problems = sample.errors + sample.badStatus
          const latency =
            sample.meanMs === undefined
              ? `p99 ${sample.p99Ms.toFixed(2)} ms`
              : `mean ${sample.meanMs.toFixed(2)} ms, max ${(sample.maxMs ?? Number.NaN).toFixed(2)} ms`
          log(
            `[round ${rep + 1}/${settings.reps}] ${workload.id} ${server.id}: ` +
              `${sample.rate.toFixed(0)} ${unit}, ${latency}, ` +
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
    await redis?.stop()
  }
}
