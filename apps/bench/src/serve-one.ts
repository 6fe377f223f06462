// One benchmarked server per process: `node dist/serve-one.js upstream` or
// `node dist/serve-one.js <server id> <upstream url>`. Prints `READY <port>` once listening and
// exits cleanly on SIGTERM or when its parent goes away (stdin closes).
import { serverInfo, startUpstream } from './lib/servers.ts'
import type { RunningServer } from './lib/servers.ts'

const [id, upstream] = process.argv.slice(2)
if (id === undefined || (id !== 'upstream' && upstream === undefined)) {
  console.error('usage: serve-one.js upstream | serve-one.js <server id> <upstream url>')
  process.exit(1)
}
const running: RunningServer =
  id === 'upstream' ? await startUpstream() : await serverInfo(id).start(new URL(upstream ?? ''))
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
