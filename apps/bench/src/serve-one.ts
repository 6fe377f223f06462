// One benchmarked server per process: `node dist/serve-one.js upstream` or
// `node dist/serve-one.js <server id> <upstream url>...`, with the run's TLS certificate in
// BENCH_TLS_KEY / BENCH_TLS_CERT for the servers that need one (and the run's Redis in
// BENCH_REDIS_URL for those that need it). Prints `READY <port>` once
// listening and exits cleanly on SIGTERM or when its parent goes away (stdin closes).
import { fromCertificateEnv } from './lib/certificate.ts'
import { POOL_SERVERS } from './lib/pool-servers.ts'
import { SERVERS, startUpstream } from './lib/servers.ts'
import type { RunningServer, ServerInfo } from './lib/servers.ts'
import { SIGNING_SERVERS } from './lib/signing-servers.ts'
import { TLS_SERVERS } from './lib/tls-servers.ts'

function usage(): never {
  console.error('usage: serve-one.js upstream | serve-one.js <server id> <upstream url>...')
  process.exit(1)
}

function serverInfo(id: string): ServerInfo {
  const all = [...SERVERS, ...POOL_SERVERS, ...TLS_SERVERS, ...SIGNING_SERVERS]
  const info = all.find((server) => server.id === id)
  if (info === undefined) {
    throw new Error(`unknown server "${id}": expected one of ${all.map((s) => s.id).join(', ')}`)
  }
  return info
}

const [id, ...hrefs] = process.argv.slice(2)
const [first, ...rest] = hrefs.map((href) => new URL(href))
if (id === undefined) usage()
const running: RunningServer =
  id === 'upstream'
    ? await startUpstream()
    : await serverInfo(id).start([first ?? usage(), ...rest], fromCertificateEnv(process.env))
process.stdout.write(`READY ${running.port}\n`)

let stopping = false
const stop = (): void => {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(0), 2_000)
  force.unref()
  void running.close().finally(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.on('error', stop)
process.stdin.resume()
