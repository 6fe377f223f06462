// The admin endpoints of `serve --workers`: the main process listens, asks its workers over the
// cluster's IPC channel (`wsgiproxy:admin` / `wsgiproxy:admin-reply`, typed in cluster/messages.ts)
// with a timeout, and merges: metrics with prom-client's AggregatorRegistry.aggregate (summed
// across processes, the main process's spawner metrics included), status route by route, and
// readiness needs every worker of the serving generation ready. prom-client's own cluster
// messages (AggregatorRegistry#clusterMetrics) are not used: a worker that is starting, draining
// or gone would make it wait its fixed 5 s and fail the whole scrape.
import type { Worker } from 'node:cluster'
import type { AdminSource, LocalState } from './admin-server.ts'
import { reportProcess } from './admin-server.ts'
import type { Metrics } from './metrics.ts'
import { combineReadiness, readinessOf } from './readiness.ts'
import { mergeRoutes, reportRoutes } from './status.ts'
import type { ProcessReport, Readiness, RouteEntry, WorkerReport } from './status.ts'

/** How long the main process waits for a worker's answer. */
export const ASK_TIMEOUT_MS = 2_000

/** What the main process asks a worker. */
export interface AdminRequest {
  type: 'wsgiproxy:admin'
  id: number
  what: 'metrics' | 'status'
}

/** A worker's answer: its metrics (`registry.getMetricsAsJSON()`) or its report. */
export interface AdminReply {
  type: 'wsgiproxy:admin-reply'
  id: number
  metrics?: object[]
  status?: ProcessReport
  error?: string
}

/** A worker as the main process sees it. */
export interface ClusterWorker {
  readonly worker: Worker
  /** Whether it has said it listens (and not yet that it drains). */
  readonly listening: boolean
  /** Whether it belongs to the generation that serves (not one draining after a reload). */
  readonly current: boolean
}

/** What the main process knows, for {@link createClusterAdmin}. */
export interface ClusterAdminOptions {
  /** The main process's metrics (its spawners, its process). */
  metrics: Metrics
  /** Every live worker. */
  workers(): readonly ClusterWorker[]
  /** The spawn routes of the serving generation, with the main process's spawners. */
  spawnerRoutes(): readonly RouteEntry[]
  /** The serving generation. */
  generation(): number
  /** The public URL. */
  url(): string
  /** Whether the command is shutting down. */
  draining(): boolean
  /** How long to wait for each worker. Default {@link ASK_TIMEOUT_MS}. */
  timeoutMs?: number
}

/** The cluster's admin source, and where the worker answers go. */
export interface ClusterAdmin {
  readonly source: AdminSource
  /** Takes a worker's `wsgiproxy:admin-reply`. */
  receive(reply: AdminReply): void
}

/**
 * The admin source of `serve --workers`.
 *
 * @param options - what the main process knows
 * @returns the source and the reply handler
 */
export function createClusterAdmin(options: ClusterAdminOptions): ClusterAdmin {
  const timeoutMs = options.timeoutMs ?? ASK_TIMEOUT_MS
  const pending = new Map<number, (reply: AdminReply) => void>()
  let last = 0

  // One answer per worker, `undefined` for one that did not answer in time (or could not).
  const ask = (
    workers: readonly ClusterWorker[],
    what: AdminRequest['what'],
  ): Promise<Array<AdminReply | undefined>> =>
    Promise.all(
      workers.map(
        ({ worker }) =>
          new Promise<AdminReply | undefined>((resolve) => {
            if (worker.isDead() || !worker.isConnected()) return resolve(undefined)
            const id = ++last
            const timer = setTimeout(() => {
              pending.delete(id)
              resolve(undefined)
            }, timeoutMs)
            const onExit = (): void => settle(undefined)
            const settle = (reply: AdminReply | undefined): void => {
              clearTimeout(timer)
              pending.delete(id)
              worker.off('exit', onExit)
              resolve(reply?.error === undefined ? reply : undefined)
            }
            pending.set(id, settle)
            worker.once('exit', onExit)
            const request: AdminRequest = { type: 'wsgiproxy:admin', id, what }
            worker.send(request)
          }),
      ),
    )

  const metrics = async (): Promise<{ contentType: string; text: string }> => {
    const { AggregatorRegistry } = await import('prom-client')
    // Every worker that serves, old generations draining after a reload included: their
    // requests count until they exit.
    const serving = options.workers().filter((entry) => entry.listening)
    const replies = await ask(serving, 'metrics')
    const own = await options.metrics.registry.getMetricsAsJSON()
    const parts: object[][] = [own]
    for (const reply of replies) if (reply?.metrics !== undefined) parts.push(reply.metrics)
    const aggregated = AggregatorRegistry.aggregate(parts)
    return { contentType: aggregated.contentType, text: await aggregated.metrics() }
  }

  const status: AdminSource['status'] = async () => {
    const current = options.workers().filter((entry) => entry.current)
    const listening = current.filter((entry) => entry.listening)
    const replies = await ask(listening, 'status')
    const workers: WorkerReport[] = []
    const parts: Readiness[] = []
    const reasons: string[] = []
    if (options.draining()) reasons.push('shutting down: the workers drain')
    if (current.length === 0) reasons.push('no worker serves')
    const reports: ProcessReport[] = []
    for (const entry of current) {
      const pid = entry.worker.process.pid ?? 0
      const index = listening.indexOf(entry)
      const report = index === -1 ? undefined : replies[index]?.status
      if (index === -1) reasons.push(`worker ${pid} is starting`)
      else if (report === undefined) reasons.push(`worker ${pid} did not answer in ${timeoutMs} ms`)
      const readiness =
        report === undefined ? undefined : readinessOf(report.listening, report.routes, pid)
      if (report !== undefined) reports.push(report)
      if (readiness !== undefined) parts.push(readiness)
      workers.push({
        pid,
        generation: report?.generation ?? options.generation(),
        answered: report !== undefined,
        ready: readiness?.ready ?? false,
      })
    }
    const spawners = reportRoutes(options.spawnerRoutes())
    parts.push(readinessOf(true, spawners))
    return {
      pid: process.pid,
      generation: options.generation(),
      url: options.url(),
      listening: !options.draining() && listening.length > 0,
      routes: mergeRoutes(
        reports.map((report) => report.routes),
        spawners,
      ),
      readiness: combineReadiness(parts, reasons),
      workers,
    }
  }

  return {
    source: { metrics, status },
    receive: (reply) => pending.get(reply.id)?.(reply),
  }
}

/**
 * A worker's answer to the main process's `wsgiproxy:admin` request.
 *
 * @param request - the request
 * @param state - what the worker knows, once it serves (`undefined` before)
 * @param send - sends the reply over the channel
 */
export async function answerAdmin(
  request: AdminRequest,
  state: LocalState | undefined,
  send: (reply: AdminReply) => void,
): Promise<void> {
  const reply: AdminReply = { type: 'wsgiproxy:admin-reply', id: request.id }
  try {
    if (state === undefined) reply.error = 'not serving yet'
    else if (request.what === 'metrics')
      reply.metrics = await state.metrics.registry.getMetricsAsJSON()
    else reply.status = reportProcess(state)
  } catch (error) {
    reply.error = error instanceof Error ? error.message : String(error)
  }
  send(reply)
}
