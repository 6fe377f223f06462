import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type * as z from 'zod'
import { errorResponse, problemResponse, WsgiProxyError } from '@wsgiproxy/core'
import {
  environFromParts,
  isAppResponse,
  parseOptions,
  startClientTrace,
  startServerTrace,
} from '@wsgiproxy/core/adapter'
import type { ServerTrace, TraceTrust } from '@wsgiproxy/core/adapter'
import type {
  AppResponse,
  Environ,
  EnvironApp,
  ToEnvironOptions,
  UpgradableApp,
  UpgradeTarget,
} from '@wsgiproxy/core'
import { toNodeListener, toTraceTrust } from './node-listener.ts'
import { headerLines, noop, release } from './_node-util.ts'
import {
  callback,
  flag,
  MAX_TIMER_MS,
  optionsObject,
  protocolNames,
  refuseBothNames,
  scriptName,
  trustList,
  wholeNumber,
} from './_options.ts'
import {
  earlyBytes,
  protocolName,
  serveOrdinary,
  upgradeTokens,
  writeAnswer,
} from './_upgrade-client.ts'
import { tunnel } from './_upgrade-upstream.ts'

/** Options of {@link toNodeUpgradeListener}. */
export interface NodeUpgradeListenerOptions {
  /** The mount prefix that becomes `SCRIPT_NAME`. Default `''`. */
  scriptName?: string
  /** Header lines accepted per request; more gives 431. Default 100. */
  maxHeaders?: number
  /** Show error messages in problem bodies (development only). Default `false`. */
  exposeErrors?: boolean
  /**
   * The `Upgrade` protocols forwarded, compared without regard to case (`websocket`, `h2c`, ...).
   * A request offering none of them is served as an ordinary request with its `Upgrade` ignored
   * (RFC 9110 §7.8 lets a server ignore it) and its connection closed after the response.
   * Default `['websocket']`: `h2c` and others are only tunnelled when named.
   */
  protocols?: readonly string[]
  /** How long connecting upstream may take before the client gets 504, in milliseconds. Default `10_000`. */
  connectTimeout?: number
  /**
   * How long the upstream may take to answer the upgrade (connecting included) before the client
   * gets 504, in milliseconds, when the app's upgrade target names no timeout of its own
   * (`createProxyApp` passes its `timeouts.upstreamHeaders`). Default `60_000`.
   */
  upstreamHeadersTimeout?: number
  /**
   * The same as `upstreamHeadersTimeout`. Giving both is an `INVALID_OPTIONS` error.
   *
   * @deprecated renamed `upstreamHeadersTimeout`, since it times the upstream while `serve`'s
   * `clientHeadersTimeout` times the client; removed in 0.3.
   */
  headersTimeout?: number
  /**
   * An upgraded tunnel with no bytes in either direction for this long is closed, in
   * milliseconds; `0` keeps idle tunnels open. Default `300_000` (5 minutes).
   */
  idleTimeout?: number
  /**
   * Upgraded tunnels open at once (those waiting for the upstream's answer included); one more
   * gets 503 with `Retry-After`. Default `1_000`.
   */
  maxConnections?: number
  /**
   * Serves the requests whose `Upgrade` is not forwarded, as ordinary requests. Default
   * `toNodeListener(app)` with this listener's `scriptName`, `maxHeaders` and `exposeErrors`.
   */
  requestListener?: (req: IncomingMessage, res: ServerResponse) => void
  /**
   * Peers whose W3C `traceparent` the upgrade's span continues, with OpenTelemetry tracing on;
   * as `toNodeListener`'s `trustTraceparent`. Default `[]`.
   */
  trustTraceparent?: readonly string[]
}

/** The `upgrade` event listener of a `node:http` server. */
export type NodeUpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void

/** The schemas of the tunnel options, which `serve` takes under names of its own. */
export const UPGRADE_FIELDS: {
  protocols: z.ZodOptional<z.ZodType<readonly string[]>>
  connectTimeout: z.ZodOptional<z.ZodType<number>>
  idleTimeout: z.ZodOptional<z.ZodType<number>>
  maxConnections: z.ZodOptional<z.ZodType<number>>
} = {
  protocols: protocolNames().optional(),
  connectTimeout: wholeNumber(1, MAX_TIMER_MS).optional(),
  idleTimeout: wholeNumber(0, MAX_TIMER_MS).optional(),
  maxConnections: wholeNumber(1, Number.MAX_SAFE_INTEGER).optional(),
}

const upgradeListenerOptions = optionsObject({
  ...UPGRADE_FIELDS,
  scriptName: scriptName().optional(),
  maxHeaders: wholeNumber(1, Infinity, 'a whole number ≥ 1').optional(),
  exposeErrors: flag().optional(),
  upstreamHeadersTimeout: wholeNumber(1, MAX_TIMER_MS).optional(),
  headersTimeout: wholeNumber(1, MAX_TIMER_MS).optional(),
  requestListener:
    callback<NonNullable<NodeUpgradeListenerOptions['requestListener']>>().optional(),
  trustTraceparent: trustList().optional(),
}).superRefine((options, context) => {
  refuseBothNames(
    context,
    options,
    'toNodeUpgradeListener',
    'headersTimeout',
    'upstreamHeadersTimeout',
  )
})

/** What a forwarded upgrade needs, resolved from the options. */
interface UpgradeSettings {
  prepareUpgrade: UpgradableApp['prepareUpgrade'] | undefined
  app: EnvironApp | UpgradableApp
  environOptions: ToEnvironOptions
  protocols: ReadonlySet<string>
  requestListener: (req: IncomingMessage, res: ServerResponse) => void
  connectTimeout: number
  headersTimeout: number
  idleTimeout: number
  maxConnections: number
  exposeErrors: boolean
  /** Tunnels open now, those waiting for the upstream's answer included. */
  open: number
  /** Whose `traceparent` continues their trace. */
  traceTrust: TraceTrust
}

/**
 * Forwards WebSocket (and other named) `Upgrade` requests through an app with `prepareUpgrade`
 * (the proxy app): the environ is built like a normal request's, the app gives the upstream
 * request (protocol headers and signature included), the listener sends it upstream and waits for
 * the answer. The listener never throws.
 *
 * - Only a `101 Switching Protocols` naming the requested protocol joins the two connections.
 *   Any other answer is passed on as an ordinary response with `Connection: close`, and both
 *   connections are closed after it: nothing the client sends after its upgrade request reaches
 *   the upstream unless the upstream switched protocols (no request smuggling past the front).
 * - A request whose `Upgrade` names no forwarded protocol (`protocols`) is an ordinary request.
 * - An answer instead of a target (a 400 or 401 problem) is written with `Connection: close`.
 *   An app without `prepareUpgrade` answers 501.
 * - Connecting upstream fails with 502, or 504 after `connectTimeout`; an upstream that does not
 *   answer within the headers timeout gives 504.
 * - A tunnel idle for `idleTimeout` is closed; past `maxConnections` tunnels the client gets 503.
 * - The environ's `wsgiproxy.signal` aborts when the client connection closes, also after the
 *   connections were joined, so an app can tell when a forwarded connection ends.
 *
 * @param app - the app; `createProxyApp` returns one with `prepareUpgrade`
 * @param options - forwarded protocols, timeouts, the tunnel cap, mount prefix, header cap
 * @returns a listener for the server's `upgrade` event
 * @throws WsgiProxyError `INVALID_OPTIONS` naming the bad option
 * @example
 * const server = createServer(toNodeListener(app))
 * server.on('upgrade', toNodeUpgradeListener(app))
 */
export function toNodeUpgradeListener(
  app: EnvironApp | UpgradableApp,
  options: NodeUpgradeListenerOptions = {},
): NodeUpgradeListener {
  const opts = parseOptions(upgradeListenerOptions, options, 'toNodeUpgradeListener')
  const environOptions: ToEnvironOptions = Object.freeze({
    ...(opts.scriptName === undefined ? {} : { scriptName: opts.scriptName }),
    ...(opts.maxHeaders === undefined ? {} : { maxHeaders: opts.maxHeaders }),
  })
  const settings: UpgradeSettings = {
    prepareUpgrade: (app as Partial<UpgradableApp>).prepareUpgrade,
    app,
    environOptions,
    protocols: new Set((opts.protocols ?? ['websocket']).map((p) => p.toLowerCase())),
    requestListener:
      opts.requestListener ??
      toNodeListener(app, {
        ...environOptions,
        ...(opts.exposeErrors === undefined ? {} : { exposeErrors: opts.exposeErrors }),
        ...(opts.trustTraceparent === undefined ? {} : { trustTraceparent: opts.trustTraceparent }),
      }),
    connectTimeout: opts.connectTimeout ?? 10_000,
    headersTimeout: opts.upstreamHeadersTimeout ?? opts.headersTimeout ?? 60_000,
    idleTimeout: opts.idleTimeout ?? 300_000,
    maxConnections: opts.maxConnections ?? 1_000,
    exposeErrors: opts.exposeErrors ?? false,
    open: 0,
    traceTrust: toTraceTrust(opts.trustTraceparent),
  }
  return (req, socket, head) => {
    // Neither side may crash the process with an unhandled 'error'.
    socket.on('error', noop)
    req.on('error', noop)
    handleUpgrade(req, socket, head, settings).catch(() => socket.destroy())
  }
}

async function handleUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  settings: UpgradeSettings,
): Promise<void> {
  const { prepareUpgrade, maxConnections } = settings
  const offered = upgradeTokens(req.rawHeaders)
  const forwarded = offered.filter((token) => settings.protocols.has(protocolName(token)))
  if (forwarded.length === 0) {
    serveOrdinary(req, socket, settings.requestListener)
    return
  }
  if (typeof prepareUpgrade !== 'function') {
    await writeAnswer(
      socket,
      problemResponse(501, 'this server does not forward Upgrade requests', 'METHOD_NOT_SUPPORTED'),
    )
    return
  }
  if (settings.open >= maxConnections) {
    const answer = problemResponse(
      503,
      `too many upgraded connections are open (at most ${maxConnections}); try again later`,
      'UPGRADE_LIMIT',
    )
    await writeAnswer(socket, { ...answer, headers: [...answer.headers, ['retry-after', '1']] })
    return
  }
  settings.open++
  socket.once('close', () => settings.open--)
  const early = earlyBytes(socket, head)
  const controller = new AbortController()
  socket.once('close', () => {
    controller.abort(new WsgiProxyError('CLIENT_ABORTED', 'the client closed the connection'))
  })
  let prepared: UpgradeTarget | AppResponse
  let trace: ServerTrace | undefined
  let environ: Environ | undefined
  try {
    environ = environFromParts(
      {
        method: req.method ?? 'GET',
        target: req.url ?? '/',
        // Only the forwarded protocols are offered upstream.
        headers: withUpgrade(headerLines(req.rawHeaders), forwarded.join(', ')),
        scheme: (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http',
        input: null,
        signal: controller.signal,
        ...(req.socket.remoteAddress === undefined ? {} : { remoteAddr: req.socket.remoteAddress }),
      },
      settings.environOptions,
    )
    trace = startServerTrace(environ, settings.traceTrust)
    const env = environ
    const prepare = (): ReturnType<UpgradableApp['prepareUpgrade']> =>
      prepareUpgrade.call(settings.app, env)
    prepared = await (trace === undefined ? prepare() : trace.run(prepare))
  } catch (error) {
    prepared = errorResponse(error, settings.exposeErrors)
  }
  // The abort listener stays: the signal also tells the app when a forwarded connection ends
  // (the spawner counts an upgraded connection in flight until then).
  if (socket.destroyed) {
    if (isAppResponse(prepared)) release(prepared.body)
    trace?.end(new WsgiProxyError('CLIENT_ABORTED', 'the client closed the connection'))
    return
  }
  if (isAppResponse(prepared)) {
    trace?.respond(prepared.status)
    await writeAnswer(socket, prepared)
    trace?.end()
    return
  }
  // With tracing on: one client span for the upstream's upgrade request; both spans end with its
  // answer (the 101 or another), not with the tunnel.
  const client =
    trace === undefined || environ === undefined
      ? undefined
      : startClientTrace(environ, prepared.method, prepared.url, prepared.headers, 0)
  const target = client === undefined ? prepared : { ...prepared, headers: client.headers }
  tunnel(socket, early, target, forwarded, {
    connectTimeout: settings.connectTimeout,
    headersTimeout: prepared.headersTimeout ?? settings.headersTimeout,
    idleTimeout: settings.idleTimeout,
    exposeErrors: settings.exposeErrors,
    onAnswer:
      trace === undefined
        ? undefined
        : (answer) => {
            // The client left before the upstream answered: no status to record.
            if (typeof answer !== 'number' && answer.code === 'CLIENT_ABORTED') {
              client?.end(answer)
              trace.end(answer)
              return
            }
            const status = typeof answer === 'number' ? answer : answer.status
            client?.respond(status)
            client?.end(typeof answer === 'number' ? undefined : answer)
            trace.respond(status)
            trace.end()
          },
  })
}

function withUpgrade(lines: Array<[string, string]>, upgrade: string): Array<[string, string]> {
  const out = lines.filter(([name]) => name.toLowerCase() !== 'upgrade')
  out.push(['upgrade', upgrade])
  return out
}
