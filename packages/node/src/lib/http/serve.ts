import { createServer } from 'node:http'
import type { RequestListener, Server } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { Server as HttpsServer } from 'node:https'
import { createSecureServer, createServer as createH2cServer } from 'node:http2'
import type { Http2SecureServer, Http2Server } from 'node:http2'
import type { SecureContext } from 'node:tls'
import { Server as NetServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import * as z from 'zod'
import type { CopyableApp, EnvironApp } from '@wsgiproxy/core'
import { WsgiProxyError } from '@wsgiproxy/core'
import { parseOptions } from '@wsgiproxy/core/adapter'
import { NODE_LISTENER_FIELDS, toNodeListener } from './node-listener.ts'
import type { NodeListenerOptions } from './node-listener.ts'
import { flag, milliseconds, optionsObject, refuseBothNames, wholeNumber } from './_options.ts'
import { createByteCopyFront } from './_byte-copy.ts'
import type { ByteCopyFront } from './_byte-copy.ts'
import { toNodeUpgradeListener, UPGRADE_FIELDS } from './upgrade.ts'
import { trackConnections } from './_connections.ts'
import type { ServeTls } from './_tls.ts'
import { SERVE_TLS, TlsContexts } from './_tls.ts'

// node:http's default keepAliveTimeout, which serve() keeps: how long drain() leaves an idle
// HTTP/1.1 connection beside HTTP/2 open.
const KEEP_ALIVE_MS = 5_000

export type { ServeTls, TlsCertificate } from './_tls.ts'

/** Options of {@link serve}. */
export interface ServeOptions extends NodeListenerOptions {
  /** The port to listen on; `0` picks a free one. Default `0`. */
  port?: number
  /** The address to listen on. Default `127.0.0.1`: loopback only, so nothing is exposed by accident. */
  hostname?: string
  /**
   * Serve HTTPS with this key and certificate (PEM), more certificates by server name (`sni`),
   * TLS 1.2 or newer by default; `wsgi.url_scheme` is then `https`. `served.setTls()` replaces
   * them while serving. Default: plain HTTP. See docs/tls-http2.md.
   */
  tls?: ServeTls
  /**
   * With `tls`, `true`: speak HTTP/2 to clients that offer it (ALPN `h2`) and HTTP/1.1 to the
   * others on the same port; the environ's `SERVER_PROTOCOL` is then `HTTP/2` and `:authority` its
   * Host. WebSocket upgrades go over HTTP/1.1 as before.
   *
   * Without `tls`, `'h2c'`: speak only HTTP/2, in cleartext with prior knowledge
   * ([RFC 9113 §3.3](https://www.rfc-editor.org/rfc/rfc9113#section-3.3)), for a TLS-terminating
   * proxy or gRPC clients in front that speak h2c: no HTTP/1.1 client, and so no WebSocket, is
   * served, and the client timeouts do not apply. `true` without `tls` stays an error, so that
   * HTTP/1.1 clients are never shut out by accident.
   *
   * Default `false`. See docs/tls-http2.md.
   */
  http2?: boolean | 'h2c'
  /**
   * On `close()`, how long in-flight requests may run before their connections are cut, in
   * milliseconds. Default `10_000`.
   */
  closeTimeout?: number
  /**
   * For Upgrade (WebSocket) requests, how long connecting upstream may take before the client
   * gets 504, in milliseconds. Default `10_000`.
   */
  upgradeConnectTimeout?: number
  /**
   * The `Upgrade` protocols forwarded (compared without regard to case); a request offering none
   * of them is served as an ordinary request with its `Upgrade` ignored. Default `['websocket']`.
   */
  upgradeProtocols?: readonly string[]
  /**
   * An upgraded (WebSocket) tunnel with no bytes in either direction for this long is closed, in
   * milliseconds; `0` keeps idle tunnels open. Default `300_000` (5 minutes).
   */
  upgradeIdleTimeout?: number
  /**
   * Upgraded tunnels open at once; one more gets 503 with `Retry-After`. Default `1_000`.
   */
  maxUpgradeConnections?: number
  /**
   * How long a client may take to send a request's head (request line and headers), in
   * milliseconds, counted from its first byte; a slower client gets 408 and its connection is
   * closed. This is the defence against slowloris clients that trickle headers to hold
   * connections open. `0` turns it off. Default `60_000` (Node's default), or a shorter non-zero
   * `clientRequestTimeout`.
   */
  clientHeadersTimeout?: number
  /**
   * How long a client may take to send a whole request (head and body), in milliseconds; a slower
   * client gets 408 and its connection is closed. `0` turns it off. Default `300_000` (Node's).
   *
   * Both client timeouts are checked every tenth of the shorter one (at least every 50 ms, at most
   * every 30 s), so a connection is cut at most 10% late.
   */
  clientRequestTimeout?: number
  /**
   * The same as `clientHeadersTimeout`. Giving both is an `INVALID_OPTIONS` error.
   *
   * @deprecated renamed `clientHeadersTimeout`, since it times the client, not the upstream;
   * removed in 0.3.
   */
  headersTimeout?: number
  /**
   * The same as `clientRequestTimeout`. Giving both is an `INVALID_OPTIONS` error.
   *
   * @deprecated renamed `clientRequestTimeout`, since it times the client, not the upstream;
   * removed in 0.3.
   */
  requestTimeout?: number
  /**
   * Copy request and response bodies between the client's and the upstream's sockets, with no
   * `IncomingMessage`/`ServerResponse`/undici objects in between: the app prepares the upstream
   * request from the head alone (`prepareCopy`, which `createProxyApp` with one href and no pool
   * options has). Cleartext HTTP/1.1 only (no `tls`, no `http2`). A request this path does not
   * take (Upgrade or CONNECT, `Expect`, HTTP/1.0, a WSGIProxy 0.1 front, tracing on, a signer
   * digesting a body, an https upstream) is served by node:http from then on, on the same
   * connection. The client timeouts (the server's own `headersTimeout`, `requestTimeout`,
   * `keepAliveTimeout`) and `maxHeaders` hold as on node:http; 1xx interim answers and a
   * request's trailer fields are not passed on, as on the node listener; an answer of the app's
   * own (a 400, a 502) closes the connection after it. The server's `request` and `clientError`
   * events are not emitted for requests it copies. docs/performance.md has what it gains.
   * Default `false`.
   */
  byteCopy?: boolean
}

/**
 * A running server from {@link serve}; `S` is its server: `node:http`'s, `node:https`'s with
 * `tls`, `node:http2`'s secure server with `http2`, its cleartext server with `http2: 'h2c'`.
 */
export interface Served<
  S extends Server | HttpsServer | Http2SecureServer | Http2Server = Server | HttpsServer,
> {
  /** The server. */
  server: S
  /** The port it listens on. */
  port: number
  /** `http://hostname:port` (`https://` with `tls`). */
  url: string
  /**
   * Replaces the TLS certificates for new connections (open ones keep theirs): checked first, so
   * a key that does not match its certificate throws `INVALID_OPTIONS` and the old ones stay.
   * Throws `INVALID_OPTIONS` on a server started without `tls`.
   */
  setTls(tls: ServeTls): void
  /**
   * Stops accepting connections, closes idle keep-alive connections at once, waits for in-flight
   * requests to finish and cuts those still running after `closeTimeout`. Resolves once every
   * connection is closed; calling it again gives the same promise.
   */
  close(): Promise<void>
  /**
   * Stops accepting connections and lets the open ones end on their own: each HTTP/1.1 response
   * from now on carries `Connection: close` (the connection closes after it), an idle keep-alive
   * connection closes at the server's keep-alive timeout, HTTP/2 sessions get GOAWAY. Nothing is
   * closed under a client that is sending a request, unlike `close()`, which closes idle
   * connections at once. What is still open after `closeTimeout` is cut. Resolves once every
   * connection is closed; it and `close()` give the same promise, whichever came first.
   */
  drain(): Promise<void>
  /** The same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>
}

// Node's own defaults (https://nodejs.org/api/http.html#httpcreateserveroptions-requestlistener).
const NODE_REQUEST_TIMEOUT = 300_000
const NODE_HEADERS_TIMEOUT = 60_000
const NODE_CHECKING_INTERVAL = 30_000
const MIN_CHECKING_INTERVAL = 50

const serveOptions = optionsObject({
  ...NODE_LISTENER_FIELDS,
  port: wholeNumber(0, 65535, '0–65535').optional(),
  hostname: z
    .custom<string>((value) => typeof value === 'string' && value !== '', {
      error: (issue) => `expected a host name or address (got ${String(issue.input)})`,
    })
    .optional(),
  tls: SERVE_TLS.optional(),
  http2: z
    .union([z.boolean(), z.literal('h2c')], {
      error: (issue) => `expected true, false or 'h2c' (got ${JSON.stringify(issue.input)})`,
    })
    .optional(),
  closeTimeout: milliseconds(0).optional(),
  upgradeConnectTimeout: UPGRADE_FIELDS.connectTimeout,
  upgradeProtocols: UPGRADE_FIELDS.protocols,
  upgradeIdleTimeout: UPGRADE_FIELDS.idleTimeout,
  maxUpgradeConnections: UPGRADE_FIELDS.maxConnections,
  clientHeadersTimeout: milliseconds(0).optional(),
  clientRequestTimeout: milliseconds(0).optional(),
  headersTimeout: milliseconds(0).optional(),
  requestTimeout: milliseconds(0).optional(),
  byteCopy: flag().optional(),
}).superRefine((options, context) => {
  if (options.byteCopy === true && (options.tls !== undefined || options.http2 !== undefined)) {
    context.addIssue({
      code: 'custom',
      path: ['byteCopy'],
      message: 'is for cleartext HTTP/1.1: leave tls and http2 off, or byteCopy',
    })
  }
  if (options.http2 === true && options.tls === undefined) {
    context.addIssue({
      code: 'custom',
      path: ['http2'],
      message:
        "needs tls: HTTP/2 is offered over TLS (ALPN); for cleartext HTTP/2 only (h2c, no HTTP/1.1 clients) say http2: 'h2c'",
    })
  }
  if (options.http2 === 'h2c' && options.tls !== undefined) {
    context.addIssue({
      code: 'custom',
      path: ['http2'],
      message: "'h2c' is cleartext HTTP/2: with tls, say http2: true",
    })
  }
  refuseBothNames(context, options, 'serve', 'headersTimeout', 'clientHeadersTimeout')
  refuseBothNames(context, options, 'serve', 'requestTimeout', 'clientRequestTimeout')
  // The option names as the caller spelled them (the new ones when neither was given).
  const headersName =
    options.headersTimeout !== undefined ? 'headersTimeout' : 'clientHeadersTimeout'
  const requestName =
    options.requestTimeout !== undefined ||
    (options.clientRequestTimeout === undefined && headersName === 'headersTimeout')
      ? 'requestTimeout'
      : 'clientRequestTimeout'
  const { headers, request } = clientTimeouts(options)
  const headersGiven = (options.clientHeadersTimeout ?? options.headersTimeout) !== undefined
  if (headersGiven && request > 0 && headers > request) {
    context.addIssue({
      code: 'custom',
      path: [headersName],
      message: `expected at most serve.${requestName} (${request}) (got ${headers})`,
    })
  }
})

/**
 * Serves an {@link EnvironApp} on `node:http` through {@link toNodeListener}. Upgrade (WebSocket)
 * requests go to {@link toNodeUpgradeListener}: forwarded when the app has `prepareUpgrade` (the
 * proxy app), else answered 501. Upgraded connections still open after `closeTimeout` are cut on
 * `close()`.
 *
 * @param app - the environ app to serve
 * @param options - where to listen, how long to drain on close, and the listener's options
 * @returns the running server once it listens
 * @throws WsgiProxyError `INVALID_OPTIONS` naming the bad option; the `listen` error (`EADDRINUSE`, ...)
 * @example
 * const served = await serve(exactProxy(), { port: 8080 })
 * console.log(`listening on ${served.url}`)
 * process.once('SIGTERM', () => void served.close())
 */
export async function serve(
  app: EnvironApp,
  options: ServeOptions & { http2: true },
): Promise<Served<Http2SecureServer>>
/**
 * Serves an environ app in cleartext HTTP/2 only (h2c with prior knowledge); see the first form.
 *
 * @param app - the environ app to serve
 * @param options - `http2: 'h2c'` without `tls`, and the other options of the first form
 * @returns the running server once it listens
 */
export async function serve(
  app: EnvironApp,
  options: ServeOptions & { http2: 'h2c' },
): Promise<Served<Http2Server>>
/**
 * Serves an environ app; see the form above.
 *
 * @param app - the environ app to serve
 * @param options - where to listen, TLS, how long to drain on close, and the listener's options
 * @returns the running server once it listens
 */
export async function serve(app: EnvironApp, options?: ServeOptions): Promise<Served>
export async function serve(
  app: EnvironApp,
  options: ServeOptions = {},
): Promise<Served<Server | HttpsServer | Http2SecureServer | Http2Server>> {
  const opts = parseOptions(serveOptions, options, 'serve')
  const { port = 0, hostname = '127.0.0.1', closeTimeout = 10_000 } = opts
  const tls = opts.tls === undefined ? undefined : new TlsContexts(opts.tls, 'serve.tls')
  const { server, upgraded } = createNodeServer(app, opts, tls)
  const copy = opts.byteCopy === true ? byteCopyFront(app, opts, server as Server) : undefined
  const connections = trackConnections(server, (opts.http2 ?? false) !== false)
  let closing: Promise<void> | undefined
  let draining = false
  // A connection that finishes its last request while the server closes is idle: close it then.
  // While it drains, the response closes the connection instead.
  server.on(
    'request',
    (
      req: { httpVersionMajor: number },
      res: { shouldKeepAlive?: boolean; once(event: 'close', listener: () => void): unknown },
    ) => {
      if (draining && req.httpVersionMajor === 1) res.shouldKeepAlive = false
      res.once('close', () => {
        if (closing !== undefined && !draining) setImmediate(() => connections.closeIdle())
      })
    },
  )
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, hostname, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const bound = (server.address() as AddressInfo).port
  const host = hostname.includes(':') ? `[${hostname}]` : hostname
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        connections.closeAll()
        copy?.closeAll()
        for (const socket of upgraded) socket.destroy()
      }, closeTimeout)
      server.close(() => {
        clearTimeout(timer)
        resolve()
      })
      connections.closeIdle()
      copy?.closeIdle()
    })
    return closing
  }
  const drain = (): Promise<void> => {
    if (closing !== undefined) return closing
    draining = true
    copy?.drain()
    closing = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        connections.closeAll()
        copy?.closeAll()
        for (const socket of upgraded) socket.destroy()
      }, closeTimeout)
      // net.Server's close: stops accepting without node:http's closing of idle connections.
      NetServer.prototype.close.call(server, () => {
        clearTimeout(timer)
        resolve()
      })
      // As long as node:http keeps an idle keep-alive connection open (its default).
      connections.drainIdle(KEEP_ALIVE_MS)
    })
    return closing
  }
  const setTls = (next: ServeTls): void => {
    if (tls === undefined) {
      throw new WsgiProxyError(
        'INVALID_OPTIONS',
        'invalid options: setTls: this server was started without tls (serve({ tls }))',
        { expose: true },
      )
    }
    const checked = parseOptions<ServeTls>(SERVE_TLS, next, 'setTls')
    tls.replace(checked, 'setTls')
    ;(server as HttpsServer).setSecureContext(tls.serverOptions)
  }
  return {
    server,
    port: bound,
    url: `${tls === undefined ? 'http' : 'https'}://${host}:${bound}`,
    setTls,
    close,
    drain,
    [Symbol.asyncDispose]: close,
  }
}

/**
 * The `node:http` server with the request and upgrade listeners and the client timeouts, and the
 * set of upgraded connections (they leave the server's bookkeeping, so `close()` cuts them).
 */
function createNodeServer(
  app: EnvironApp,
  options: ServeOptions,
  tls: TlsContexts | undefined,
): { server: Server | HttpsServer | Http2SecureServer | Http2Server; upgraded: Set<Duplex> } {
  const {
    port: _port,
    hostname: _hostname,
    tls: _tls,
    http2,
    closeTimeout: _closeTimeout,
    upgradeConnectTimeout,
    upgradeProtocols,
    upgradeIdleTimeout,
    maxUpgradeConnections,
    clientHeadersTimeout: _clientHeadersTimeout,
    clientRequestTimeout: _clientRequestTimeout,
    headersTimeout: _headersTimeout,
    requestTimeout: _requestTimeout,
    byteCopy: _byteCopy,
    ...listenerOptions
  } = options
  const { headers, request } = clientTimeouts(options)
  const requestListener: RequestListener = toNodeListener(app, listenerOptions)
  const httpOptions = {
    headersTimeout: headers,
    requestTimeout: request,
    connectionsCheckingInterval: checkingInterval(headers, request),
  }
  const secure =
    tls === undefined
      ? undefined
      : {
          ...httpOptions,
          ...tls.serverOptions,
          SNICallback: (
            name: string,
            callback: (error: Error | null, context?: SecureContext) => void,
          ) => callback(null, tls.lookup(name)),
        }
  const server =
    http2 === 'h2c'
      ? // HTTP/2 only: Node offers no HTTP/1.1 beside cleartext HTTP/2, nor its client timeouts.
        createH2cServer(requestListener as unknown as Parameters<typeof createH2cServer>[0])
      : secure === undefined
        ? createServer(httpOptions, requestListener)
        : http2 === true
          ? // One port for both: HTTP/2 by ALPN, HTTP/1.1 (and its upgrades) for the others.
            createSecureServer(
              { ...secure, allowHTTP1: true },
              requestListener as unknown as Parameters<typeof createSecureServer>[1],
            )
          : createHttpsServer(secure, requestListener)
  const onUpgrade = toNodeUpgradeListener(app, {
    requestListener,
    ...(upgradeProtocols === undefined ? {} : { protocols: upgradeProtocols }),
    ...(upgradeIdleTimeout === undefined ? {} : { idleTimeout: upgradeIdleTimeout }),
    ...(maxUpgradeConnections === undefined ? {} : { maxConnections: maxUpgradeConnections }),
    ...(listenerOptions.scriptName === undefined ? {} : { scriptName: listenerOptions.scriptName }),
    ...(listenerOptions.maxHeaders === undefined ? {} : { maxHeaders: listenerOptions.maxHeaders }),
    ...(listenerOptions.exposeErrors === undefined
      ? {}
      : { exposeErrors: listenerOptions.exposeErrors }),
    ...(upgradeConnectTimeout === undefined ? {} : { connectTimeout: upgradeConnectTimeout }),
    ...(listenerOptions.trustTraceparent === undefined
      ? {}
      : { trustTraceparent: listenerOptions.trustTraceparent }),
  })
  const upgraded = new Set<Duplex>()
  server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
    upgraded.add(socket)
    socket.once('close', () => upgraded.delete(socket))
    onUpgrade(req, socket, head)
  })
  return { server, upgraded }
}

// The byte-copying front in front of node:http: it takes every new connection and hands one to
// node:http's own connection listener when a request needs it.
function byteCopyFront(app: EnvironApp, options: ServeOptions, server: Server): ByteCopyFront {
  if (typeof (app as Partial<CopyableApp>).prepareCopy !== 'function') {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      'invalid options: serve.byteCopy needs an app that prepares a request from its head ' +
        '(prepareCopy): createProxyApp with one href and no pool options',
      { expose: true },
    )
  }
  const nodeListeners = server.listeners('connection') as Array<(socket: Socket) => void>
  server.removeAllListeners('connection')
  const front = createByteCopyFront({
    app: app as CopyableApp,
    handOff: (socket) => {
      for (const listener of nodeListeners) listener.call(server, socket)
    },
    environOptions: Object.freeze({
      ...(options.scriptName === undefined ? {} : { scriptName: options.scriptName }),
      ...(options.maxHeaders === undefined ? {} : { maxHeaders: options.maxHeaders }),
    }),
    // The server's own: node:http set them from the options, and a change to them holds here too.
    timeouts: server,
    exposeErrors: options.exposeErrors ?? false,
    onError: options.onError,
  })
  server.on('connection', (socket: Socket) => front.accept(socket))
  return front
}

type ClientTimeoutName =
  'clientHeadersTimeout' | 'clientRequestTimeout' | 'headersTimeout' | 'requestTimeout'

/** The client's header and request timeouts from either name, with Node's defaults. */
function clientTimeouts(options: {
  [Name in ClientTimeoutName]?: number | undefined
}): { headers: number; request: number } {
  const request = options.clientRequestTimeout ?? options.requestTimeout ?? NODE_REQUEST_TIMEOUT
  const headers =
    options.clientHeadersTimeout ??
    options.headersTimeout ??
    (request > 0 ? Math.min(NODE_HEADERS_TIMEOUT, request) : NODE_HEADERS_TIMEOUT)
  return { headers, request }
}

// Node checks both timeouts on an interval (30 s by default), so a 2 s header timeout would only
// fire after up to 32 s: check every tenth of the shorter timeout instead.
function checkingInterval(headersTimeout: number, requestTimeout: number): number {
  const shortest = Math.min(...[headersTimeout, requestTimeout].filter((ms) => ms > 0))
  if (!Number.isFinite(shortest)) return NODE_CHECKING_INTERVAL
  return Math.min(
    NODE_CHECKING_INTERVAL,
    Math.max(MIN_CHECKING_INTERVAL, Math.floor(shortest / 10)),
  )
}
