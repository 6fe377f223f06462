// What the main process of `serve --workers` and its workers tell each other over the cluster's
// IPC channel: the worker's setup, drain, listening or failed, and the leases of backends of the
// main process's spawners (one round trip per request to a spawn route).
import { WsgiProxyError } from '@wsgiproxy/core'
import type { WsgiProxyErrorCode } from '@wsgiproxy/core'
import { SpawnerError } from '@wsgiproxy/node'
import type { AdminReply, AdminRequest } from '../admin/cluster-admin.ts'
import type { RouteInput } from '../config-schema.ts'
import type { ListenChoice } from '../listen.ts'
import type { LogFormat } from '../log.ts'
import type { UpgradeSettings } from '../upgrade-settings.ts'
import type { TracingSettings } from '../tracing.ts'

/** The environment variable that makes a forked process a worker of `serve --workers`. */
export const WORKER_ENV = 'WSGIPROXY_CLUSTER_WORKER'

/** What a worker serves: one generation of the config. */
export interface WorkerSetup {
  /** The config's generation: 1 at start, one more per reload. */
  generation: number
  listen: ListenChoice
  format: LogFormat
  upgrade: UpgradeSettings
  drainTimeout: number
  /** Whether the main process serves the admin endpoints: the worker records metrics. */
  admin: boolean
  tracing: TracingSettings | undefined
  routes: RouteInput[]
}

/** A failure to lease, as it crosses the channel. */
export interface LeaseFailure {
  code: WsgiProxyErrorCode
  message: string
  expose: boolean
  recentLogs: string[]
  retryAfter: number | undefined
}

/** Messages from the main process to a worker. */
export type ToWorker =
  | { type: 'wsgiproxy:setup'; setup: WorkerSetup }
  | { type: 'wsgiproxy:drain'; why: 'reload' | 'stop' }
  | { type: 'wsgiproxy:leased'; id: number; pid: number; host: string; port: number }
  | { type: 'wsgiproxy:lease-failed'; id: number; error: LeaseFailure }
  | AdminRequest

/** Messages from a worker to the main process. */
export type ToPrimary =
  | { type: 'wsgiproxy:hello' }
  | { type: 'wsgiproxy:listening'; url: string }
  | { type: 'wsgiproxy:draining' }
  | { type: 'wsgiproxy:failed'; message: string; exitCode: number }
  | { type: 'wsgiproxy:lease'; id: number; key: string }
  | { type: 'wsgiproxy:release'; id: number }
  | { type: 'wsgiproxy:lease-abort'; id: number }
  | AdminReply

/**
 * Whether a message is one of ours (the channel also carries Node's own cluster messages, and
 * would carry prom-client's `prom-client:getMetricsReq` were its AggregatorRegistry used).
 *
 * @param message - what arrived
 * @returns `true` for a wsgiproxy message
 */
export function isOurs(message: unknown): message is { type: string } {
  return (
    typeof message === 'object' &&
    message !== null &&
    typeof (message as { type?: unknown }).type === 'string' &&
    (message as { type: string }).type.startsWith('wsgiproxy:')
  )
}

/**
 * A lease failure for the channel.
 *
 * @param error - what `spawner.lease()` threw
 * @returns the failure's parts
 */
export function toLeaseFailure(error: unknown): LeaseFailure {
  if (error instanceof WsgiProxyError) {
    return {
      code: error.code,
      message: error.message,
      expose: error.expose,
      recentLogs: error instanceof SpawnerError ? [...error.recentLogs] : [],
      retryAfter: error instanceof SpawnerError ? error.retryAfter : undefined,
    }
  }
  return {
    code: 'APP_ERROR',
    message: `the spawner failed: ${error instanceof Error ? error.message : String(error)}`,
    expose: false,
    recentLogs: [],
    retryAfter: undefined,
  }
}

/**
 * The error a lease failure stands for, answered by the worker as the spawner's app answers it.
 *
 * @param failure - as it came over the channel
 * @returns the error
 */
export function fromLeaseFailure(failure: LeaseFailure): SpawnerError {
  return new SpawnerError(failure.code, failure.message, {
    expose: failure.expose,
    recentLogs: failure.recentLogs,
    ...(failure.retryAfter === undefined ? {} : { retryAfter: failure.retryAfter }),
  })
}
