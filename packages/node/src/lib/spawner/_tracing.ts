// A spawner's lifecycle as OpenTelemetry span events (docs/operations.md, "Tracing"): on the span
// of the request that caused it (a start on demand, say), else as a span of its own. Nothing is
// recorded, and nothing allocated, when no SDK is registered.
import { recordTraceEvent } from '@wsgiproxy/core/adapter'
import type { Spawner } from './spawner.ts'

/**
 * Records `spawn`, `ready`, `idle_stop`, `stop`, `crash` (an exit nobody asked for), `exit` and
 * `backoff` events of a spawner as `wsgiproxy.spawner.<event>` span events.
 *
 * @param spawner - the spawner
 */
export function traceSpawnerEvents(spawner: Spawner): void {
  const name = spawner.name
  // Exits that follow a stop the spawner asked for; any other exit is a crash.
  const stopping = new Set<number>()
  spawner.on('spawn', ({ pid, port, attempt }) =>
    recordTraceEvent('wsgiproxy.spawner.spawn', {
      'wsgiproxy.spawner.name': name,
      'process.pid': pid,
      'server.port': port,
      'wsgiproxy.spawner.attempt': attempt,
    }),
  )
  spawner.on('ready', ({ pid, port, coldStartMs }) =>
    recordTraceEvent('wsgiproxy.spawner.ready', {
      'wsgiproxy.spawner.name': name,
      'process.pid': pid,
      'server.port': port,
      'wsgiproxy.spawner.cold_start_ms': coldStartMs,
    }),
  )
  spawner.on('idle', ({ pid }) =>
    recordTraceEvent('wsgiproxy.spawner.idle_stop', {
      'wsgiproxy.spawner.name': name,
      'process.pid': pid,
    }),
  )
  spawner.on('stop', ({ pid, reason }) => {
    stopping.add(pid)
    recordTraceEvent('wsgiproxy.spawner.stop', {
      'wsgiproxy.spawner.name': name,
      'process.pid': pid,
      'wsgiproxy.spawner.reason': reason,
    })
  })
  spawner.on('exit', ({ pid, code, signal }) => {
    const asked = pid !== null && stopping.delete(pid)
    recordTraceEvent(asked ? 'wsgiproxy.spawner.exit' : 'wsgiproxy.spawner.crash', {
      'wsgiproxy.spawner.name': name,
      ...(pid === null ? {} : { 'process.pid': pid }),
      ...(code === null ? {} : { 'process.exit.code': code }),
      ...(signal === null ? {} : { 'wsgiproxy.spawner.signal': signal }),
    })
  })
  spawner.on('backoff', ({ failures, delayMs }) =>
    recordTraceEvent('wsgiproxy.spawner.backoff', {
      'wsgiproxy.spawner.name': name,
      'wsgiproxy.spawner.failures': failures,
      'wsgiproxy.spawner.delay_ms': delayMs,
    }),
  )
}
