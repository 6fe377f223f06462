import { allowEntryProblem } from '@wsgiproxy/core/adapter'
import * as z from 'zod'
import { DURATION_HINT } from './duration.ts'

// A number is milliseconds; a string carries a unit (docs/design.md §9).
const duration = z.union(
  [z.int().min(0).max(2_147_483_647), z.string().regex(/^\d+(\.\d+)?(ms|s|m)?$/, DURATION_HINT)],
  { error: DURATION_HINT },
)
const durationOrOff = z.union([duration, z.literal(false)], {
  error: `${DURATION_HINT}, or false`,
})

const routePath = z
  .string()
  .regex(
    /^\/([^/?#]+(\/[^/?#]+)*)?\/?$/,
    'expected a path prefix starting with "/" such as "/api" (no "//", "?" or "#")',
  )
  .describe('The path prefix this route answers under; it becomes SCRIPT_NAME for the app.')

// docs/design.md §6: extra environ keys.
const envKey = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/, 'expected an environ key such as REMOTE_USER')
const keyList = z.array(envKey)

const timeouts = z
  .strictObject({
    headers: durationOrOff
      .optional()
      .describe('Until the response headers arrive (504 when missed). Default 60s.'),
    body: durationOrOff
      .optional()
      .describe('The longest pause between two body chunks. Default 60s.'),
  })
  .describe('Timeouts of forwarded requests.')

const forwardFields = {
  timeouts: timeouts.optional(),
  exposeErrors: z
    .boolean()
    .optional()
    .describe(
      'Show error details (which may name internal addresses) in error bodies. Default false.',
    ),
}

// The one compatibility mode (route key `compat`, flag `--compat`).
const compat = z
  .literal('wsgiproxy-0.1', {
    error: 'expected "wsgiproxy-0.1", for Python Paste\'s WSGIProxy 0.1',
  })
  .optional()

const protocolFields = {
  ...forwardFields,
  stringKeys: keyList.optional().describe('Environ keys sent as X-WSGIProxy-Str-N headers.'),
  unicodeKeys: keyList.optional().describe('Environ keys sent as X-WSGIProxy-Unicode-N headers.'),
  jsonKeys: keyList.optional().describe('Environ keys sent as X-WSGIProxy-Json-N headers.'),
  keyFile: z
    .string()
    .min(1)
    .optional()
    .describe(
      'Sign every forwarded request with this key file (relative to the config file; reloaded when it changes).',
    ),
  forwarded: z.boolean().optional().describe('Also send an RFC 7239 Forwarded header.'),
  xForwarded: z
    .boolean()
    .optional()
    .describe(
      'Also send X-Forwarded-Host (the public host) and X-Forwarded-Proto (the scheme), the names most frameworks read. Default false.',
    ),
  compat: compat.describe(
    '"wsgiproxy-0.1": send what a WSGIProxy 0.1 backend (Python Paste\'s WSGIProxyMiddleware) accepts: X-WSGIProxy-Version 0.1, X-Script-Name, UTF-8 values. Default: protocol 0.2.',
  ),
  rewriteLocation: z
    .boolean()
    .optional()
    .describe('Rewrite Location headers that point at the backend. Default true.'),
}

const upstreamUrl = z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
const count = (min: number, max: number) => z.int().min(min).max(max)
// RFC 9110 §5.6.2: a header field name (and a cookie name) is a token.
const token = z.string().regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected a token such as x-user')

// The pool keys of a proxy route (docs/pools.md), as createProxyApp takes them, durations as
// everywhere in the file.
const poolFields = {
  targets: z
    .array(
      z.strictObject({
        href: upstreamUrl.describe('Where to forward: http://host:port/path?query.'),
        weight: count(1, 1000).optional().describe('Its share of the requests. Default 1.'),
      }),
    )
    .min(1, 'expected at least one target')
    .optional()
    .describe('A pool of weighted targets, instead of href.'),
  balance: z
    .union(
      [
        z.literal('least-outstanding'),
        z.literal('round-robin'),
        z.strictObject({
          hash: z.union([
            z.literal('client-address'),
            z.strictObject({ header: token }),
            z.strictObject({ cookie: token }),
          ]),
        }),
      ],
      {
        error:
          'expected "least-outstanding", "round-robin" or { "hash": "client-address" | { "header": NAME } | { "cookie": NAME } }',
      },
    )
    .optional()
    .describe(
      'How a target is chosen: least outstanding requests (default), round robin by weight, or sticky by a hash of the client address, a header or a cookie.',
    ),
  ejection: z
    .union([
      z.literal(false),
      z.strictObject({
        consecutiveFailures: count(1, 1000).optional().describe('Failures in a row. Default 5.'),
        baseTime: duration.optional().describe('The first ejection. Default 30s.'),
        maxTime: duration.optional().describe('The longest ejection. Default 5m.'),
        maxPercent: count(0, 100).optional().describe('Most targets ejected at once. Default 50.'),
      }),
    ])
    .optional()
    .describe('Passive health: leave out a target that keeps failing; false: never. Default on.'),
  healthCheck: z
    .strictObject({
      path: z
        .string()
        .startsWith('/', 'expected a path starting with "/"')
        .describe('GET this path.'),
      interval: duration.optional().describe('Between checks. Default 5s.'),
      timeout: duration.optional().describe('How long a check may take. Default 2s.'),
      healthyThreshold: count(1, 100).optional().describe('Passes to come back. Default 2.'),
      unhealthyThreshold: count(1, 100).optional().describe('Failures to go down. Default 2.'),
    })
    .optional()
    .describe('Active health checks of every target. Default: none.'),
  retries: z
    .union([
      z.literal(false),
      z.strictObject({
        attempts: count(1, 10).optional().describe('Tries per request. Default 3.'),
        budget: z
          .number()
          .min(0)
          .max(1)
          .optional()
          .describe('Retries in flight, as a fraction of requests in flight. Default 0.5.'),
        minConcurrency: count(0, 100_000).optional().describe('Retries always allowed. Default 3.'),
        header: token.optional().describe('Send the number of tries in this response header.'),
      }),
    ])
    .optional()
    .describe(
      'Retries on another target when a request never reached one; false: never. Default on.',
    ),
  limits: z
    .strictObject({
      maxConcurrent: count(1, 1_000_000)
        .optional()
        .describe('Requests in flight per target. Default: unlimited.'),
      maxQueue: count(0, 1_000_000)
        .optional()
        .describe('Requests waiting for a free target. Default 100.'),
      queueTimeout: duration.optional().describe('The longest wait. Default 10s.'),
      retryAfter: count(0, 86_400)
        .optional()
        .describe('Retry-After of the 503, in seconds. Default 1.'),
    })
    .optional()
    .describe('Per-target concurrency limits; beyond them and the queue, 503 with Retry-After.'),
}

const upstreamFile = z.string().min(1, 'expected a file name')
const upstreamSchema = z
  .strictObject({
    http2: z
      .boolean()
      .optional()
      .describe(
        'Speak HTTP/2 to the upstream: by ALPN to https:// hrefs, cleartext with prior knowledge (h2c) to http:// ones (each must speak it). Default false.',
      ),
    ca: z
      .union([upstreamFile, z.array(upstreamFile).min(1, 'expected at least one file')])
      .optional()
      .describe(
        'Trust these CA certificates (PEM files, relative to this file) for https:// hrefs instead of the system ones.',
      ),
    cert: upstreamFile.optional().describe('A client certificate (PEM) for mutual TLS.'),
    key: upstreamFile.optional().describe('The private key (PEM) of cert.'),
    servername: z
      .string()
      .min(1)
      .optional()
      .describe(
        'The name to send (SNI) and check the certificate against, if not the host of the href.',
      ),
    rejectUnauthorized: z
      .boolean()
      .optional()
      .describe('false accepts any certificate (a warning is logged once). Default true.'),
  })
  .describe('How to reach the upstream: HTTP/2 and TLS.')

const proxyRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('proxy'),
    href: z
      .union([upstreamUrl, z.array(upstreamUrl).min(1, 'expected at least one URL')], {
        error: 'expected an http:// or https:// URL, or a list of them',
      })
      .optional()
      .describe('Where to forward: http://host:port/path?query, or a list of them for a pool.'),
    upstream: upstreamSchema.optional(),
    ...protocolFields,
    ...poolFields,
  })
  .describe('Forward to another server (or a pool of them) with the wsgiproxy protocol headers.')

const spawnRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('spawn'),
    command: z
      .union([z.string().min(1), z.array(z.string()).min(1)], {
        error: 'expected a command line or an argv array',
      })
      .describe('The backend command; __PORT__ is replaced by its port, PORT is set too.'),
    name: z.string().min(1).optional().describe('The name in log lines.'),
    cwd: z.string().optional().describe('Working directory, relative to the config file.'),
    env: z
      .record(z.string(), z.string())
      .optional()
      .describe('Environment variables merged over the host environment.'),
    port: z.int().min(1).max(65535).optional().describe('A fixed port. Default: a free one.'),
    readyPath: z
      .string()
      .startsWith('/', 'expected a path starting with "/"')
      .optional()
      .describe('Also wait for GET readyPath to answer below 500 before forwarding.'),
    startTimeout: duration.optional().describe('How long a start may take. Default 60s.'),
    idleTimeout: durationOrOff
      .optional()
      .describe('Stop the backend after this long without requests. Default false (never).'),
    killTimeout: duration.optional().describe('SIGTERM to SIGKILL delay. Default 5s.'),
    maxQueue: z.int().min(0).optional().describe('Requests waiting for a start. Default 100.'),
    instances: z
      .strictObject({
        min: count(1, 64).optional().describe('Processes started on the first request. Default 1.'),
        max: count(1, 64)
          .optional()
          .describe('Processes at most: one more starts when every one is busy. Default min.'),
        busyAt: count(1, 1_000_000)
          .optional()
          .describe('Requests in flight that make an instance busy. Default 8.'),
        idleTimeout: duration
          .optional()
          .describe('Stop an instance above min after this long without requests. Default 30s.'),
      })
      .optional()
      .describe(
        'A pool of backend processes: least-busy routing, growth under load, rolling restarts (docs/spawner.md).',
      ),
    ...protocolFields,
  })
  .describe('Start a backend on the first request (or a pool of them) and forward to it.')

// One allow entry, checked as exactProxy checks it, so an error names its place in the file.
const allowEntry = z.string().superRefine((entry, context) => {
  const problem = allowEntryProblem(entry)
  if (problem !== undefined) context.addIssue({ code: 'custom', message: problem })
})

const exactRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('exact'),
    ...forwardFields,
    allow: z
      .array(allowEntry)
      .optional()
      .describe(
        'Where the exact proxy may connect: host names (example.com, *.example.com), IP addresses and CIDR ranges (10.0.0.0/8, ::1), presets (public, loopback, linklocal, uniquelocal), each optionally with :port, :port,port or :* ([::1]:8080). Other targets get 403. Default ["public"]: no loopback, private, link-local or other internal address, in any spelling or through a name that resolves to one.',
      ),
  })
  .describe(
    'The exact proxy: send the request to the host its Host header names, if allow permits it (a request addressed to this server itself gets 508).',
  )

/**
 * An Upgrade protocol name, for the config file and `--upgrade-protocol`: a token
 * (RFC 9110 §5.6.2).
 */
export const protocolName: z.ZodString = z
  .string()
  .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected a protocol name such as "websocket"')

const upgradeSchema = z
  .strictObject({
    protocols: z
      .array(protocolName)
      .optional()
      .describe(
        'The Upgrade protocols forwarded, compared without regard to case; a request offering none of them is served with its Upgrade ignored. Default ["websocket"].',
      ),
    idleTimeout: durationOrOff
      .optional()
      .describe(
        'Close an upgraded tunnel after this long with no bytes either way; false (or 0) keeps idle tunnels open. Default 5m.',
      ),
    maxConnections: z
      .int()
      .min(1)
      .max(Number.MAX_SAFE_INTEGER)
      .optional()
      .describe('Upgraded tunnels open at once; one more gets 503. Default 1000.'),
  })
  .describe('Upgrade (WebSocket) forwarding, for every route.')

// The shared replay store of an echo route: RedisReplayStore from @wsgiproxy/node/redis.
const replayStoreSchema = z.strictObject({
  redis: z
    .string()
    .regex(
      /^rediss?:\/\/[^/?#\s]+/,
      'expected a redis:// or rediss:// URL such as "redis://127.0.0.1:6379"',
    )
    .describe(
      'The Redis (or Valkey) every replica uses: redis://[[user]:password@]host[:port][/db], rediss:// for TLS.',
    ),
  prefix: z.string().optional().describe('Put before every nonce key. Default "wsgiproxy:nonce:".'),
  timeout: duration
    .optional()
    .describe(
      'The longest a check may take; a slower one counts as Redis being unavailable. Default 500ms.',
    ),
  onUnavailable: z
    .enum(['refuse', 'accept'], { error: 'expected "refuse" or "accept"' })
    .optional()
    .describe(
      'While Redis cannot be reached: "refuse" answers signed requests with 503 (code REPLAY_STORE_UNAVAILABLE), "accept" lets them through without a replay check (one warning per outage). Default "refuse".',
    ),
})

const echoRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('echo'),
    trustIps: z
      .array(z.string().min(1))
      .optional()
      .describe('Peers whose protocol headers are believed. Default ["loopback"].'),
    keyFile: z
      .string()
      .min(1)
      .optional()
      .describe('Verify signatures with this key file (relative to the config file).'),
    replayStore: replayStoreSchema
      .optional()
      .describe(
        'Where the nonces of verified signatures are kept (with keyFile). Default: in this process only; give a shared Redis so that replicas refuse a request replayed from one to another.',
      ),
    compat: compat.describe(
      '"wsgiproxy-0.1": also accept requests from a WSGIProxy 0.1 front (Python Paste\'s WSGIProxyApp) in trustIps, trusted by address only (0.1 had no working signatures). Default: protocol 0.2 only.',
    ),
  })
  .describe('Answer with the restored environ (HTML, or JSON for Accept: application/json).')

/** The keys of each route type, for a message about a key given to a route of another type. */
export const ROUTE_KEYS: Readonly<Record<RouteInput['type'], readonly string[]>> = {
  proxy: Object.keys(proxyRoute.shape),
  spawn: Object.keys(spawnRoute.shape),
  exact: Object.keys(exactRoute.shape),
  echo: Object.keys(echoRoute.shape),
}

const routeSchema = z.discriminatedUnion('type', [proxyRoute, spawnRoute, exactRoute, echoRoute], {
  error: 'expected "type" to be "proxy", "spawn", "exact" or "echo"',
})

const pemFile = z.string().min(1, 'expected a file name')
const tlsSchema = z
  .strictObject({
    cert: pemFile.describe('The certificate (PEM, intermediates after it), relative to this file.'),
    key: pemFile.describe('Its private key (PEM), relative to this file.'),
    sni: z
      .record(z.string(), z.strictObject({ cert: pemFile, key: pemFile }))
      .optional()
      .describe('More certificates by server name: "api.example.com" or "*.example.com".'),
    minVersion: z
      .enum(['TLSv1.2', 'TLSv1.3'])
      .optional()
      .describe('The oldest TLS version accepted. Default "TLSv1.2".'),
  })
  .describe(
    'Serve HTTPS with these files; they are read again when they change or on SIGHUP (--tls-cert and --tls-key replace cert and key).',
  )

const tracingSchema = z
  .strictObject({
    otlp: z
      .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
      .optional()
      .describe(
        'The OTLP/HTTP traces endpoint, such as "http://127.0.0.1:4318/v1/traces". Default: from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT.',
      ),
    serviceName: z
      .string()
      .min(1, 'expected a service name')
      .optional()
      .describe('service.name of the spans. Default OTEL_SERVICE_NAME, else "wsgiproxy".'),
    sampleRatio: z
      .number()
      .min(0, 'expected a number from 0 to 1')
      .max(1, 'expected a number from 0 to 1')
      .optional()
      .describe(
        'The share of new traces recorded, 0 to 1; a request from a trusted front follows its sampling decision. Default 1.',
      ),
    trustTraceparent: z
      .array(z.string())
      .optional()
      .describe(
        'Peers (addresses, CIDR ranges, "loopback", "linklocal", "uniquelocal") whose traceparent continues their trace; any other client\'s starts a new trace linked to it. Default: none.',
      ),
  })
  .describe(
    'Send OpenTelemetry traces to an OTLP/HTTP collector: a span per request and per upstream try.',
  )

const adminSchema = z
  .strictObject({
    listen: z
      .union([z.string(), z.int().min(0).max(65535)], {
        error: 'expected "host:port" or a port number',
      })
      .describe(
        'Where to listen: "host:port" or a port, never the public one (--admin overrides it). Keep it on loopback or a private network: anyone who reaches it sees the routes and targets.',
      ),
  })
  .describe(
    'An admin listener for operators: GET /metrics (Prometheus), /healthz, /readyz and /status (JSON, what wsgiproxy status prints). Default: off.',
  )

/** The zod schema of `wsgiproxy.config.json`. */
export const configSchema: z.ZodType<ConfigInput> = z
  .strictObject({
    $schema: z.string().optional().describe('The JSON Schema of this file, for editors.'),
    listen: z
      .union([z.string(), z.int().min(0).max(65535)], {
        error: 'expected "host:port" or a port number',
      })
      .optional()
      .describe('Where to listen: "host:port" or a port. Default "127.0.0.1:8080".'),
    logFormat: z.enum(['text', 'json']).optional().describe('Log lines as text or JSON.'),
    tls: tlsSchema.optional(),
    http2: z
      .union([z.boolean(), z.literal('h2c')], { error: 'expected true, false or "h2c"' })
      .optional()
      .describe(
        'true (with tls): also speak HTTP/2 (by ALPN), HTTP/1.1 on the same port; "h2c" (without tls): cleartext HTTP/2 only, no HTTP/1.1 clients. Default false.',
      ),
    upgrade: upgradeSchema.optional(),
    admin: adminSchema.optional(),
    workers: z
      .union([z.int().min(1).max(256), z.literal('auto')], {
        error: 'expected a number of worker processes from 1 to 256, or "auto"',
      })
      .optional()
      .describe(
        'Serve from this many worker processes sharing the port ("auto": one per core); the main process owns the spawned backends. Default: one process.',
      ),
    drainTimeout: duration
      .optional()
      .describe(
        'On shutdown (and with workers, on reload), how long requests and WebSocket connections in flight may go on before they are cut; in one process, those of a replaced config finish on their own. Default 10s.',
      ),
    tracing: tracingSchema.optional(),
    routes: z
      .array(routeSchema)
      .min(1, 'expected at least one route')
      .describe('The mounted apps.'),
  })
  .describe('wsgiproxy serve configuration')

/** Timeouts as written in the config file. */
export interface TimeoutsInput {
  headers?: string | number | false | undefined
  body?: string | number | false | undefined
}

interface ForwardInput {
  timeouts?: TimeoutsInput | undefined
  exposeErrors?: boolean | undefined
}

interface ProtocolInput extends ForwardInput {
  stringKeys?: string[] | undefined
  unicodeKeys?: string[] | undefined
  jsonKeys?: string[] | undefined
  keyFile?: string | undefined
  forwarded?: boolean | undefined
  xForwarded?: boolean | undefined
  compat?: 'wsgiproxy-0.1' | undefined
  rewriteLocation?: boolean | undefined
}

/** A proxy route: one href, a list of them, or weighted targets, and the pool keys. */
/** How a proxy route reaches its upstream, as written in the config file. */
export interface UpstreamInput {
  http2?: boolean | undefined
  ca?: string | string[] | undefined
  cert?: string | undefined
  key?: string | undefined
  servername?: string | undefined
  rejectUnauthorized?: boolean | undefined
}

export interface ProxyRoute extends ProtocolInput {
  path: string
  type: 'proxy'
  upstream?: UpstreamInput | undefined
  href?: string | string[] | undefined
  targets?: Array<{ href: string; weight?: number | undefined }> | undefined
  balance?:
    | 'least-outstanding'
    | 'round-robin'
    | { hash: 'client-address' | { header: string } | { cookie: string } }
    | undefined
  ejection?:
    | false
    | {
        consecutiveFailures?: number | undefined
        baseTime?: string | number | undefined
        maxTime?: string | number | undefined
        maxPercent?: number | undefined
      }
    | undefined
  healthCheck?:
    | {
        path: string
        interval?: string | number | undefined
        timeout?: string | number | undefined
        healthyThreshold?: number | undefined
        unhealthyThreshold?: number | undefined
      }
    | undefined
  retries?:
    | false
    | {
        attempts?: number | undefined
        budget?: number | undefined
        minConcurrency?: number | undefined
        header?: string | undefined
      }
    | undefined
  limits?:
    | {
        maxConcurrent?: number | undefined
        maxQueue?: number | undefined
        queueTimeout?: string | number | undefined
        retryAfter?: number | undefined
      }
    | undefined
}

/** A spawned backend route. */
export interface SpawnRoute extends ProtocolInput {
  path: string
  type: 'spawn'
  command: string | string[]
  name?: string | undefined
  cwd?: string | undefined
  env?: Record<string, string> | undefined
  port?: number | undefined
  readyPath?: string | undefined
  startTimeout?: string | number | undefined
  idleTimeout?: string | number | false | undefined
  killTimeout?: string | number | undefined
  maxQueue?: number | undefined
  instances?:
    | {
        min?: number | undefined
        max?: number | undefined
        busyAt?: number | undefined
        idleTimeout?: string | number | undefined
      }
    | undefined
}

/** An exact proxy route. */
export interface ExactRoute extends ForwardInput {
  path: string
  type: 'exact'
  allow?: string[] | undefined
}

/** An echo route. */
export interface EchoRoute {
  path: string
  type: 'echo'
  trustIps?: string[] | undefined
  keyFile?: string | undefined
  replayStore?: ReplayStoreInput | undefined
  compat?: 'wsgiproxy-0.1' | undefined
}

/** The shared replay store of an echo route, as written in the config file. */
export interface ReplayStoreInput {
  redis: string
  prefix?: string | undefined
  timeout?: string | number | undefined
  onUnavailable?: 'refuse' | 'accept' | undefined
}

/** One route of the config file. */
export type RouteInput = ProxyRoute | SpawnRoute | ExactRoute | EchoRoute

/** The `upgrade` section as written in the config file. */
export interface UpgradeInput {
  protocols?: string[] | undefined
  idleTimeout?: string | number | false | undefined
  maxConnections?: number | undefined
}

/** The `admin` section as written in the config file. */
export interface AdminInput {
  listen: string | number
}

/** The `tls` section as written in the config file. */
export interface TlsInput {
  cert: string
  key: string
  sni?: Record<string, { cert: string; key: string }> | undefined
  minVersion?: 'TLSv1.2' | 'TLSv1.3' | undefined
}

/** The config file as written. */
export interface ConfigInput {
  $schema?: string | undefined
  listen?: string | number | undefined
  logFormat?: 'text' | 'json' | undefined
  tls?: TlsInput | undefined
  http2?: boolean | 'h2c' | undefined
  upgrade?: UpgradeInput | undefined
  admin?: AdminInput | undefined
  workers?: number | 'auto' | undefined
  drainTimeout?: string | number | undefined
  tracing?: TracingInput | undefined
  routes: RouteInput[]
}

/** The `tracing` settings as written. */
export interface TracingInput {
  otlp?: string | undefined
  serviceName?: string | undefined
  sampleRatio?: number | undefined
  trustTraceparent?: string[] | undefined
}

/**
 * The JSON Schema of the config file, generated from {@link configSchema}.
 *
 * @returns the schema as a plain object
 */
export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(configSchema, { io: 'input', target: 'draft-2020-12' }) as Record<
    string,
    unknown
  >
}
