import type { WsgiProxyError } from './errors.ts'

/**
 * The environ record: one runtime-neutral description of a request, as close to PEP 3333 as a
 * Fetch world allows. Every wsgiproxy component reads and writes it.
 *
 * - `SCRIPT_NAME` and `PATH_INFO` are percent-decoded; the path as received stays in
 *   `wsgiproxy.raw_path` so that `%2F` and other information decoding loses can be restored.
 * - `QUERY_STRING` is raw (not decoded), without the `?`.
 * - `HTTP_*` keys hold every other request header: upper-case, `-` mapped to `_`, repeats joined
 *   with `, `. Header names that contain `_` are dropped when an environ is built.
 */
export interface Environ {
  /** The request method as the runtime normalized it (`GET`, `POST`, ... upper-case). */
  REQUEST_METHOD: string
  /** The mount prefix: `''` or starting with `/`, no trailing `/`, percent-decoded. */
  SCRIPT_NAME: string
  /** The rest of the path: `''` or starting with `/`, percent-decoded. */
  PATH_INFO: string
  /** The raw query string without `?`, not decoded. */
  QUERY_STRING: string
  /** The request's `Content-Type` header, when present. */
  CONTENT_TYPE?: string
  /** The request's `Content-Length` header, when present. */
  CONTENT_LENGTH?: string
  /** Where the request was sent / where to connect: a host name or a bare IP address (no brackets). */
  SERVER_NAME: string
  /** The port as a decimal string. */
  SERVER_PORT: string
  /** `HTTP/1.1` unless known otherwise. */
  SERVER_PROTOCOL: string
  /** The client address, as the adapter or the trust walk determined it. */
  REMOTE_ADDR?: string
  /** The URL scheme the client used. */
  'wsgi.url_scheme': 'http' | 'https'
  /** The request body, streamed; `null` when the request has none. */
  'wsgi.input': AsyncIterable<Uint8Array> | null
  /** The path as received (percent-encoded), used to restore what decoding loses. */
  'wsgiproxy.raw_path'?: string
  /** Aborts when the client goes away; forwarded requests are cancelled with it. */
  'wsgiproxy.signal'?: AbortSignal
  /** Every other request header. */
  [key: `HTTP_${string}`]: string | undefined
  /** Extension keys: `REMOTE_USER`, `wsgiproxy.*`, decoded forwarded keys. */
  [key: string]: unknown
}

/** What an {@link EnvironApp} answers: status, headers in order with repeats, streamed body. */
export interface AppResponse {
  /** Any integer 100–999 the upstream sent; adapters map what their runtime cannot represent. */
  status: number
  /** The reason phrase, kept where the runtime allows. */
  statusText?: string
  /** Header lines in order; repeated names (several `Set-Cookie`) stay separate. */
  headers: Array<[string, string]>
  /** The body, streamed; `null` for none. */
  body: AsyncIterable<Uint8Array> | null
  /**
   * The trailer fields that followed the body (gRPC's `grpc-status` travels here), in order with
   * repeats. They are known only once the body has ended, so this is a function: call it after
   * the body's iterator answered `done` (for a `null` body, at any time); before that it may answer
   * fewer lines or none. It is a plain property, so a response copied with a new body
   * (`{ ...response, body }`) keeps it. Absent: no trailers.
   *
   * Writers send the lines only where the response can carry them (HTTP/2, or HTTP/1.1 with
   * chunked framing), without the fields a trailer must not hold (`readTrailers` from
   * `@wsgiproxy/core/adapter`); a Fetch `Response` cannot, so `toResponse` drops them.
   */
  trailers?: () => Array<[string, string]>
}

/** The WSGI application of this world: environ in, status + headers + body out. */
export type EnvironApp = (environ: Environ) => AppResponse | Promise<AppResponse>

/** The request to send upstream for an Upgrade (WebSocket) request; its body is the spliced socket. */
export interface UpgradeTarget {
  /** Where to connect (scheme, host, port) and the request target (path and query). */
  url: URL
  /** The request method. */
  method: string
  /** Header lines to send, `host` included, with `Connection: upgrade` and `Upgrade`. */
  headers: Array<[string, string]>
  /**
   * How long the upstream may take to answer (connecting included), in milliseconds, as for any
   * request of the app (`createProxyApp`'s `timeouts.upstreamHeaders`). Absent: the upgrade listener's
   * own default.
   */
  headersTimeout?: number
  /**
   * Maps the header lines of an ordinary answer (anything but a `101`) before it goes to the
   * client, as the app maps any response (`createProxyApp` rewrites `Location` here). Absent:
   * passed as they are.
   */
  answerHeaders?: (headers: Array<[string, string]>) => Array<[string, string]>
  /**
   * Called once with how the upstream took the upgrade: `true` for a `101` or an ordinary answer
   * below 500, `false` when it could not be reached, timed out or answered 5xx; not called when
   * the client left first. A pool counts it for passive health. Absent: nobody asks.
   */
  onResult?: (ok: boolean) => void
}

/** An {@link EnvironApp} that can also forward Upgrade requests (the proxy app). */
export interface UpgradableApp extends EnvironApp {
  /**
   * Builds the request to send upstream for an Upgrade request (protocol headers and signature
   * included, `Connection: upgrade` and `Upgrade` kept), or a response to answer instead (e.g. a
   * 400/401 problem).
   */
  prepareUpgrade(environ: Environ): Promise<UpgradeTarget | AppResponse>
}

/**
 * A request whose body goes upstream as the client sends it, byte for byte: what a server that
 * copies bytes between the two sockets (`serve({ byteCopy: true })` of `@wsgiproxy/node`) needs
 * from the app. The app sees the head only; the server frames and copies the bodies both ways.
 */
export interface CopyTarget {
  /** Where to connect (scheme, host, port) and the request target (path and query). */
  url: URL
  /** The request method. */
  method: string
  /**
   * Header lines to send, `host` included; no framing (`Content-Length`, `Transfer-Encoding`),
   * which the server writes from the client's request.
   */
  headers: Array<[string, string]>
  /** How long the upstream may take to answer (connecting included), in ms; `false`: no limit. */
  headersTimeout: number | false
  /** How long the response body may stall between two chunks, in ms; `false`: no limit. */
  bodyTimeout: number | false
  /**
   * Maps the response's header lines (hop-by-hop fields already removed) before they go to the
   * client, as the app maps any response (`createProxyApp` rewrites `Location` here).
   */
  answerHeaders: (headers: Array<[string, string]>) => Array<[string, string]>
  /** The response to send for a failure before the upstream answered (the app's error hook). */
  fail: (error: WsgiProxyError) => Promise<AppResponse>
}

/** An {@link EnvironApp} that can also prepare a request from its head alone. */
export interface CopyableApp extends EnvironApp {
  /**
   * The request to send upstream with its body copied as it comes (`wsgi.input` is a stand-in
   * there, never read), a response to answer instead (a 400, say), or `undefined` when this
   * request must go through the app whole (tracing is on, or a signer must digest its body).
   */
  prepareCopy(environ: Environ): Promise<CopyTarget | AppResponse | undefined>
}

/** One request as a {@link Transport} sends it. */
export interface OutboundRequest {
  /** Where to connect (scheme, host, port) and the request target (path and query). */
  url: URL
  /** The request method. */
  method: string
  /** Header lines to send; may include `host` (the exact proxy sends the client's Host). */
  headers: Array<[string, string]>
  /** The request body, streamed; `null` for none. */
  body: AsyncIterable<Uint8Array> | null
  /** Aborts the request: client gone or a timeout (the reason is a `WsgiProxyError`). */
  signal: AbortSignal
}

/**
 * Sends one {@link OutboundRequest} and resolves with the upstream response once its headers
 * arrive. Rejects with a `WsgiProxyError` when the request cannot be completed.
 */
export type Transport = (outbound: OutboundRequest) => Promise<AppResponse>

/**
 * The one error hook of wsgiproxy, wherever a failure becomes a response: the forwarding apps
 * (`exactProxy`, `createProxyApp`, the spawner) and the server adapters (`toFetchHandler`,
 * `toNodeListener` and `serve` for ordinary requests, the Hono adapters). Return a response to
 * send instead of the default problem+json one, or nothing to keep it. Also called, for logging
 * only, when an upstream body fails after the headers were sent. The error is a `WsgiProxyError`
 * (see its `code` and `status`; a thrown non-WsgiProxyError arrives as `APP_ERROR` with it as
 * `cause`). `environ` is `undefined` only where a server adapter could not build one (a malformed
 * request, answered 400 or 431); the forwarding apps always have one, so their option is an
 * `ErrorHook<Environ>` (a hook written for `Environ | undefined` fits both). A hook that throws
 * gives a fixed 500.
 */
export type ErrorHook<E extends Environ | undefined = Environ | undefined> = (
  error: WsgiProxyError,
  environ: E,
) => AppResponse | void | Promise<AppResponse | void>

/**
 * The error hook of the forwarding apps.
 *
 * @deprecated the same as `ErrorHook<Environ>`; use that name (removed in 0.3).
 */
export type ProxyErrorHook = ErrorHook<Environ>

/** One HMAC key: a public key id and at least 32 secret bytes (docs/design.md §7). */
export interface SigningKey {
  /** The key id sent in `keyid`; public, never derived from the secret. */
  id: string
  /** The secret bytes. */
  secret: Uint8Array
}

/**
 * What a replay store answers for a nonce: first seen, seen before, no room to record it, or the
 * store (a shared one such as Redis) cannot be reached. The verifier answers `full` with 503
 * `store_full` and `unavailable` with 503 `replay_store_unavailable`.
 */
export type ReplayCheck = 'fresh' | 'replay' | 'full' | 'unavailable'

/**
 * Remembers signature nonces for their validity window. Several replicas may share one store
 * (`RedisReplayStore` from `@wsgiproxy/node/redis`: `SET key 1 NX PX ttl`) so a request cannot be
 * replayed to another replica.
 */
export interface ReplayStore {
  /**
   * Records `key` for `ttlMs` unless it is already there; `full` when it has no room for it,
   * `unavailable` when the store cannot be reached (a rejection counts as `unavailable` too).
   */
  checkAndSet(key: string, ttlMs: number): Promise<ReplayCheck>
}
