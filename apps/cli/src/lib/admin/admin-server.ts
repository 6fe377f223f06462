// The admin listener: /metrics, /healthz, /readyz and /status on an address of its own (never the
// public port), for GET and HEAD only.
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { CliError, EXIT_RUNTIME, usageError } from '../errors.ts'
import { formatListen, listenFlag } from '../listen.ts'
import type { ListenAddress } from '../listen.ts'
import type { Logger } from '../log.ts'
import type { Metrics } from './metrics.ts'
import { readinessOf } from './readiness.ts'
import { reportRoutes } from './status.ts'
import type { ProcessReport, RouteEntry, StatusReport } from './status.ts'

/** What the admin endpoints answer from: one process's, or the cluster's. */
export interface AdminSource {
  /** The metrics in the Prometheus text format. */
  metrics(): Promise<{ contentType: string; text: string }>
  /** The status, readiness included. */
  status(): Promise<StatusReport>
}

/** A running admin listener. */
export interface AdminServer {
  /** Its URL, `http://host:port`. */
  readonly url: string
  /** Stops listening and closes its connections. */
  close(): Promise<void>
}

/**
 * The admin address of `--admin` or the config file's `admin.listen`.
 *
 * @param where - the flag or config key, for the message
 * @param text - its value, if given
 * @param listen - the public address, which the admin address must not be
 * @returns the address, or `undefined` when none is given (the admin listener is off)
 * @throws CliError (exit 1) for a value that is not an address, or the public port again
 */
export function adminAddress(
  where: string,
  text: string | number | undefined,
  listen: ListenAddress,
): ListenAddress | undefined {
  if (text === undefined) return undefined
  const address = listenFlag(where, String(text))
  if (address.port !== 0 && address.port === listen.port) {
    throw usageError(
      `${where} must not be the public port ${listen.port}: the admin endpoints are for operators only (for example ${formatListen({ hostname: '127.0.0.1', port: 9464 })})`,
    )
  }
  return address
}

/** What one process knows of itself, for its {@link AdminSource}. */
export interface LocalState {
  /** The metrics. */
  metrics: Metrics
  /** The config's generation. */
  generation(): number
  /** The routes of the config in use. */
  routes(): readonly RouteEntry[]
  /** The public URL once it listens. */
  url(): string | undefined
  /** Whether the public listener takes connections. */
  listening(): boolean
}

/**
 * What a serving process knows of itself, read live: the config in use (replaced by reloads),
 * its URL, whether it still accepts connections. The metrics' scrape-time part reads the same
 * routes.
 *
 * @param metrics - the process's metrics
 * @param generations - the config in use and its number
 * @param url - the public URL
 * @param listening - whether the public listener takes connections
 * @returns the state
 */
export function createLocalState(
  metrics: Metrics,
  generations: { readonly number: number; readonly current: { readonly routes: RouteEntry[] } },
  url: string,
  listening: () => boolean,
): LocalState {
  const routes = (): readonly RouteEntry[] => generations.current.routes
  metrics.collectFrom(routes)
  return {
    metrics,
    generation: () => generations.number,
    routes,
    url: () => url,
    listening,
  }
}

/**
 * This process's report.
 *
 * @param state - what it knows
 * @returns the report
 */
export function reportProcess(state: LocalState): ProcessReport {
  return {
    pid: process.pid,
    generation: state.generation(),
    url: state.url() ?? null,
    listening: state.listening(),
    routes: reportRoutes(state.routes()),
  }
}

/**
 * The admin source of a command serving from one process.
 *
 * @param state - what it knows
 * @returns the source
 */
export function localSource(state: LocalState): AdminSource {
  return {
    metrics: async () => ({
      contentType: state.metrics.registry.contentType,
      text: await state.metrics.registry.metrics(),
    }),
    status: async () => {
      const report = reportProcess(state)
      return { ...report, readiness: readinessOf(report.listening, report.routes) }
    },
  }
}

/**
 * Listens for the admin endpoints and logs the address (`admin listening on http://...`).
 *
 * @param address - where
 * @param source - what they answer from
 * @param logger - the command's logger
 * @returns the listener
 * @throws CliError (exit 2) when the address cannot be listened on
 */
export async function listenAdmin(
  address: ListenAddress,
  source: AdminSource,
  logger: Logger,
): Promise<AdminServer> {
  const server = createServer((request, response) => {
    answer(request, response, source).catch((error: unknown) => {
      logger.error(`admin ${request.url ?? ''}: ${error instanceof Error ? error.message : error}`)
      if (!response.headersSent) send(response, 500, 'text/plain; charset=utf-8', 'error\n')
      else response.destroy()
    })
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(address.port, address.hostname, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error)
    throw new CliError(
      `cannot listen for the admin endpoints on ${formatListen(address)}: ${code}; pass another --admin host:port (or admin.listen in the config file)`,
      EXIT_RUNTIME,
      { cause: error },
    )
  }
  const { port } = server.address() as AddressInfo
  const url = `http://${formatListen({ hostname: address.hostname, port })}`
  logger.event('admin-listening', `admin listening on ${url} (/metrics /healthz /readyz /status)`, {
    url,
  })
  return { url, close: () => closeServer(server) }
}

async function answer(
  request: IncomingMessage,
  response: ServerResponse,
  source: AdminSource,
): Promise<void> {
  const path = (request.url ?? '/').split('?')[0]
  if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz' && path !== '/status') {
    send(
      response,
      404,
      'text/plain; charset=utf-8',
      'not found: /metrics /healthz /readyz /status\n',
    )
    return
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('allow', 'GET, HEAD')
    send(response, 405, 'text/plain; charset=utf-8', 'method not allowed: GET or HEAD\n')
    return
  }
  switch (path) {
    case '/healthz':
      send(response, 200, 'text/plain; charset=utf-8', 'ok\n')
      return
    case '/metrics': {
      const { contentType, text } = await source.metrics()
      send(response, 200, contentType, text)
      return
    }
    case '/readyz': {
      const { readiness } = await source.status()
      if (readiness.ready) send(response, 200, 'text/plain; charset=utf-8', 'ok\n')
      else send(response, 503, 'application/json', `${JSON.stringify(readiness, null, 2)}\n`)
      return
    }
    case '/status':
      send(response, 200, 'application/json', `${JSON.stringify(await source.status(), null, 2)}\n`)
  }
}

function send(response: ServerResponse, status: number, type: string, body: string): void {
  response.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  })
  // HEAD: the same headers, no body (node:http drops it for HEAD).
  response.end(body)
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}
