// Load generation: wrk when it is installed (a separate native process), else autocannon in this
// process. Both report the same fields, latency in milliseconds, and both speak HTTPS (neither
// checks the certificate). HTTP/2 load is h2load's (`h2load.ts`).
import { execFile, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'

/** A load generator. */
export type LoadTool = 'wrk' | 'autocannon'

/** One run of fixed concurrency against one URL. */
export interface LoadSpec {
  url: string
  connections: number
  /** Seconds; ignored when `amount` is set. */
  duration: number
  /** Stop after this many requests instead of after `duration` (autocannon only). */
  amount?: number
  method: 'GET' | 'POST'
  /** Request body size in bytes (POST). */
  bodyBytes?: number
}

/** What a load run measured. */
export interface LoadResult {
  requests: number
  seconds: number
  requestsPerSecond: number
  /** NaN when the tool has no percentiles (h2load). */
  p50Ms: number
  /** NaN when the tool has no percentiles (h2load). */
  p99Ms: number
  /** The mean latency, from a tool without percentiles (h2load). */
  meanMs?: number
  /** The highest latency, from a tool without percentiles (h2load). */
  maxMs?: number
  /** Socket errors and timeouts. */
  errors: number
  /** Responses with a status outside 2xx/3xx. */
  badStatus: number
}

/** `wrk` when it runs here, else `autocannon`. */
export function detectLoadTool(): LoadTool {
  const probe = spawnSync('wrk', ['--version'], { encoding: 'utf8' })
  return probe.error === undefined ? 'wrk' : 'autocannon'
}

/** The `wrk --version` line, or the autocannon version. */
export function loadToolVersion(tool: LoadTool): string {
  if (tool === 'autocannon') return 'autocannon 9.0.0'
  const probe = spawnSync('wrk', ['--version'], { encoding: 'utf8' })
  return `${probe.stdout}${probe.stderr}`.split('\n')[0]?.trim() ?? 'wrk'
}

// wrk's Lua hooks: the request shape comes from the environment, and `done` prints one JSON line
// (latency in microseconds) so nothing has to parse wrk's human-readable units.
const WRK_SCRIPT = `
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "0")
if size > 0 then
  wrk.body = string.rep("x", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
`

let wrkScriptPath: string | undefined

/** Parses the JSON line the benchmark's wrk script prints. */
export function parseWrkOutput(output: string): LoadResult {
  const line = output.split('\n').find((l) => l.startsWith('WRK_JSON '))
  if (line === undefined) throw new Error(`wrk printed no result line:\n${output}`)
  const raw = JSON.parse(line.slice('WRK_JSON '.length)) as Record<string, number>
  const n = (key: string): number => raw[key] ?? 0
  const seconds = n('duration_us') / 1e6
  return {
    requests: n('requests'),
    seconds,
    requestsPerSecond: seconds > 0 ? n('requests') / seconds : 0,
    p50Ms: n('p50_us') / 1000,
    p99Ms: n('p99_us') / 1000,
    errors: n('connect') + n('read') + n('write') + n('timeout'),
    badStatus: n('status'),
  }
}

function runWrk(spec: LoadSpec): Promise<LoadResult> {
  if (wrkScriptPath === undefined) {
    wrkScriptPath = join(tmpdir(), `wsgiproxy-bench-${process.pid}.lua`)
    writeFileSync(wrkScriptPath, WRK_SCRIPT)
  }
  const args = [
    '-t1',
    `-c${spec.connections}`,
    `-d${Math.max(1, Math.round(spec.duration))}s`,
    '--timeout',
    '10s',
    '-s',
    wrkScriptPath,
    spec.url,
  ]
  const env = {
    ...process.env,
    BENCH_METHOD: spec.method,
    BENCH_BODY_BYTES: String(spec.bodyBytes ?? 0),
  }
  return new Promise((resolve, reject) => {
    execFile('wrk', args, { env, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error !== null) reject(new Error(`wrk failed: ${error.message}\n${stderr}`))
      else {
        try {
          resolve(parseWrkOutput(stdout))
        } catch (parseError) {
          reject(parseError as Error)
        }
      }
    })
  })
}

async function runAutocannon(spec: LoadSpec): Promise<LoadResult> {
  const body = spec.bodyBytes === undefined ? undefined : Buffer.alloc(spec.bodyBytes, 0x78)
  const result = await autocannon({
    url: spec.url,
    connections: spec.connections,
    method: spec.method,
    ...(spec.amount === undefined ? { duration: spec.duration } : { amount: spec.amount }),
    ...(body === undefined
      ? {}
      : { body, headers: { 'content-type': 'application/octet-stream' } }),
    timeout: 10,
  })
  const seconds = (result.finish.getTime() - result.start.getTime()) / 1000
  const requests = result.requests.total
  return {
    requests,
    seconds,
    requestsPerSecond: seconds > 0 ? requests / seconds : 0,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    badStatus: result.non2xx - result['3xx'],
  }
}

/** Runs one load with the given tool. */
export function runLoad(tool: LoadTool, spec: LoadSpec): Promise<LoadResult> {
  return tool === 'wrk' && spec.amount === undefined ? runWrk(spec) : runAutocannon(spec)
}

/** What one download measured. */
export interface DownloadResult {
  bytes: number
  seconds: number
  mibPerSecond: number
  status: number
}

/** What downloads with: curl when it is installed, else a Node client in this process. */
export type DownloadClient = 'curl' | 'node'

/** curl when it runs here, else this process's own `node:http` client. */
export function pickDownloadClient(): DownloadClient {
  return spawnSync('curl', ['--version']).error === undefined ? 'curl' : 'node'
}

/**
 * Downloads `url` once over a fresh connection, discarding the bytes, and times it. curl reads
 * in a process of its own: the benchmark's process, which also samples every server and holds
 * every result, made every proxy look alike at 110–180 MiB/s as the reader (2026-12-07).
 */
export function download(url: string, client: DownloadClient = 'node'): Promise<DownloadResult> {
  return client === 'curl' ? downloadWithCurl(url) : downloadWithNode(url)
}

function downloadWithCurl(url: string): Promise<DownloadResult> {
  return new Promise((resolve, reject) => {
    const format = '%{http_code} %{size_download} %{time_total}'
    execFile('curl', ['-s', '-o', '/dev/null', '-w', format, url], (error, stdout) => {
      if (error !== null) {
        reject(error)
        return
      }
      const [status, bytes, seconds] = stdout.trim().split(' ').map(Number)
      resolve({
        bytes: bytes ?? 0,
        seconds: seconds ?? 0,
        mibPerSecond: (bytes ?? 0) / 1048576 / (seconds ?? 1),
        status: status ?? 0,
      })
    })
  })
}

function downloadWithNode(url: string): Promise<DownloadResult> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint()
    const req = httpRequest(url, { agent: false }, (res) => {
      let bytes = 0
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length
      })
      res.once('error', reject)
      res.once('end', () => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9
        resolve({
          bytes,
          seconds,
          mibPerSecond: bytes / 1048576 / seconds,
          status: res.statusCode ?? 0,
        })
      })
    })
    req.once('error', reject)
    req.end()
  })
}
